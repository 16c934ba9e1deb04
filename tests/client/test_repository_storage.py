"""The repository suite on the storage-backed registry (in-memory driver): the reference."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from cargohold.storage.driver.inmemory import InMemoryDriver
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from tests.client.repository_suite import RepositorySuite


class TestStorageRepository(RepositorySuite):
    @pytest.fixture
    def implementation(self) -> str:
        return "storage"

    @pytest.fixture
    async def namespace(self) -> AsyncIterator[StorageRegistry]:
        registry = StorageRegistry(InMemoryDriver(), options=RegistryOptions(delete_enabled=True))
        yield registry
        await registry.close()
