"""The repository suite through the HTTP client against a running cargohold."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cargohold.client import RemoteRegistry
from tests.client.repository_suite import RepositorySuite


class TestClientOnCargohold(RepositorySuite):
    @pytest.fixture
    def implementation(self) -> str:
        return "cargohold"

    @pytest.fixture
    async def namespace(self, cargohold_url: str) -> AsyncIterator[RemoteRegistry]:
        async with RemoteRegistry(cargohold_url) as registry:
            yield registry
