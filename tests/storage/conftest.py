"""Every storage-layer test runs against the inmemory and the filesystem driver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cargohold.storage.catalog import LocalScan
from cargohold.storage.driver.base import StorageDriver
from cargohold.storage.driver.filesystem import FilesystemDriver
from cargohold.storage.driver.inmemory import InMemoryDriver
from cargohold.storage.registry import RegistryOptions, StorageRegistry


@pytest.fixture(params=["inmemory", "filesystem"])
async def storage_driver(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[StorageDriver]:
    driver: StorageDriver
    if request.param == "inmemory":
        driver = InMemoryDriver()
    else:
        driver = FilesystemDriver(str(tmp_path / "root"))
    yield driver
    await driver.close()


@pytest.fixture
def registry(storage_driver: StorageDriver) -> StorageRegistry:
    return StorageRegistry(storage_driver, options=RegistryOptions(delete_enabled=True))


def fresh(registry: StorageRegistry) -> StorageRegistry:
    """Another registry on the same storage: what a second process would see."""
    return StorageRegistry(registry.driver, options=registry.options)


async def stored_files(driver: StorageDriver) -> dict[str, bytes]:
    """Every file in storage and its content."""
    try:
        return {
            info.path: await driver.get_content(info.path)
            async for info in driver.walk("/")
            if not info.is_dir
        }
    except Exception:
        return {}


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the local catalog's scans of the whole repositories tree."""
    counted: list[int] = []
    original = LocalScan._scan

    def scan(self: LocalScan, watch: object, path: str, *args: object) -> None:
        if path.endswith("/repositories"):
            counted.append(1)
        original(self, watch, path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalScan, "_scan", scan)
    return counted
