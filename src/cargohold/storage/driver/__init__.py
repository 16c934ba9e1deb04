"""Storage drivers, chosen by the name of their section in ``config.yml``.

The registry maps each name to the dotted path of its class, so a driver's
dependencies (an S3 client, say) are imported only when it is configured.
"""

from __future__ import annotations

import importlib
from typing import Any

from cargohold.errors import ConfigError
from cargohold.storage.driver.base import FileInfo, FileWriter, StorageDriver

__all__ = ["DRIVERS", "FileInfo", "FileWriter", "StorageDriver", "create_driver"]

#: Driver name → ``module:Class``.
DRIVERS: dict[str, str] = {
    "inmemory": "cargohold.storage.driver.inmemory:InMemoryDriver",
    "filesystem": "cargohold.storage.driver.filesystem:FilesystemDriver",
    "s3": "cargohold.storage.driver.s3:S3Driver",
    "azure": "cargohold.storage.driver.azure:AzureDriver",
    "gcs": "cargohold.storage.driver.gcs:GCSDriver",
}


def create_driver(name: str, parameters: dict[str, Any] | None = None) -> StorageDriver:
    """A driver of the named kind, built from its configuration parameters."""
    try:
        module_name, _, class_name = DRIVERS[name].partition(":")
    except KeyError:
        raise ConfigError("storage", f"unknown storage driver {name!r}") from None
    cls: type[StorageDriver] = getattr(importlib.import_module(module_name), class_name)
    return cls(**(parameters or {}))
