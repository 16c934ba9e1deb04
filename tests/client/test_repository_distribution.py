"""The repository suite through the HTTP client against Distribution 2.8.2 (the Go registry).

Its gaps are spelled out per test in ``repository_suite``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cargohold.client import RemoteRegistry
from tests.client.repository_suite import RepositorySuite


class TestClientOnDistribution(RepositorySuite):
    @pytest.fixture
    def implementation(self) -> str:
        return "distribution"

    @pytest.fixture
    async def namespace(self, distribution_url: str) -> AsyncIterator[RemoteRegistry]:
        async with RemoteRegistry(distribution_url) as registry:
            yield registry
