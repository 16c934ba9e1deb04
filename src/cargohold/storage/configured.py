"""The storage registry a configuration describes: its driver, cache and options.

Kept apart from the application (``api/app.py``) so that commands working on
storage alone (``cargohold gc``) start without importing the HTTP stack.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from cargohold.config import Config
from cargohold.config import Maintenance as MaintenanceConfig
from cargohold.manifest.urls import URLPolicy
from cargohold.storage.cache import BlobDescriptorCache
from cargohold.storage.cache.memory import MemoryBlobDescriptorCache
from cargohold.storage.driver import create_driver
from cargohold.storage.driver.base import DriverWatch, Watches
from cargohold.storage.maintenance import GcSchedule
from cargohold.storage.manifeststore import IndexChildren
from cargohold.storage.middleware import build_redirects
from cargohold.storage.registry import RegistryOptions, StorageRegistry

if TYPE_CHECKING:
    from cargohold.metrics.recorders import Metrics
    from cargohold.tracing import Tracing

__all__ = ["build_cache", "build_registry", "pull_interval", "registry_options"]


def build_cache(config: Config) -> BlobDescriptorCache | None:
    """The configured blob descriptor cache (``storage.cache.blobdescriptor``), if any."""
    cache = config.storage.cache
    if cache.blobdescriptor == "redis":
        from cargohold.storage.cache.redis import RedisBlobDescriptorCache

        return RedisBlobDescriptorCache.from_config(config.redis)
    if cache.blobdescriptor == "inmemory":
        # Distribution reads a size of 0 as "no bound".
        return MemoryBlobDescriptorCache(cache.blobdescriptorsize or sys.maxsize)
    return None


def build_registry(
    config: Config,
    threads: Executor | None = None,
    metrics: Metrics | None = None,
    tracing: Tracing | None = None,
) -> StorageRegistry:
    """The registry on the configured storage; ``threads`` runs its blocking calls,
    ``metrics`` times its storage calls, counts its cache lookups and records its
    collection passes, and ``tracing`` makes spans of its calls and lookups."""
    storage = config.storage
    driver = create_driver(storage.driver_name, storage.driver_parameters.model_dump())
    cache = build_cache(config)
    watches: list[DriverWatch] = []
    if metrics is not None:
        watches.append(metrics.storage)
        cache = None if cache is None else metrics.cache(cache)
    if tracing is not None and tracing.watch is not None:
        watches.append(tracing.watch)
        cache = None if cache is None else tracing.cache(cache)
    if watches:
        driver.watch = watches[0] if len(watches) == 1 else Watches(*watches)
    return StorageRegistry(
        driver,
        cache=cache,
        options=registry_options(config),
        threads=threads,
        gc_watch=metrics.gc if metrics is not None else None,
        redirects=build_redirects(config.middleware.storage, driver, _key_root(config)),
    )


def _key_root(config: Config) -> str:
    """What comes before a driver path in its object's key: an object store's root
    directory is part of every key, a local disk's is no part of a URL."""
    storage = config.storage
    if storage.driver_name in ("filesystem", "inmemory"):
        return ""
    return str(getattr(storage.driver_parameters, "rootdirectory", ""))


def _collecting(maintenance: MaintenanceConfig) -> bool:
    # A read-only registry writes nothing, collection included.
    return maintenance.gc.enabled and not maintenance.readonly.enabled


def _gc_schedule(maintenance: MaintenanceConfig) -> GcSchedule | None:
    gc = maintenance.gc
    if not _collecting(maintenance):
        return None
    return GcSchedule(gc.interval, maintenance.grace, gc.dryrun, gc.deleteuntagged, gc.policies())


def pull_interval(maintenance: MaintenanceConfig) -> float | None:
    """How often a manifest's pull is written down, when a retention policy reads pulls:
    a tenth of the shortest ``pulledwithin`` (a minute without one), within 1 s to 1 h."""
    retention = maintenance.gc.policies()
    if not _collecting(maintenance) or retention is None or not retention.uses_pulls:
        return None
    window = retention.shortest_pull_window
    return 60.0 if window is None else min(3600.0, max(1.0, window / 10))


def registry_options(config: Config) -> RegistryOptions:
    """What the configuration decides of the storage layer's behaviour."""
    validation, storage = config.validation, config.storage
    # Distribution: ``enabled`` is the deprecated spelling; either one may turn validation on.
    validating = validation.enabled or not validation.disabled
    if validating:
        urls, indexes = validation.manifests.urls, validation.manifests.indexes
        url_policy = URLPolicy.compile(urls.allow, urls.deny)
        platforms = frozenset((p.architecture, p.os) for p in indexes.platformlist)
        index_children = IndexChildren(indexes.platforms, platforms)
    else:
        url_policy, index_children = URLPolicy.permissive(), IndexChildren("none")
    limit = storage.tag.concurrencylimit or os.cpu_count() or 1
    schema1 = config.compatibility.schema1
    signing_key = None
    if schema1.signingkeyfile:
        from cargohold.manifest.schema1 import load_signing_key

        signing_key = load_signing_key(schema1.signingkeyfile)
    maintenance = storage.maintenance
    return RegistryOptions(
        # Collection while serving spares what was found within its grace period.
        reuse_interval=min(maintenance.grace / 4, 3600) if _collecting(maintenance) else None,
        heartbeat=not maintenance.readonly.enabled,
        gc=_gc_schedule(maintenance),
        pull_interval=pull_interval(maintenance),
        delete_enabled=storage.delete.enabled,
        url_policy=url_policy,
        index_children=index_children,
        tag_lookup_limit=limit,
        # Accepted unless explicitly turned off: cargohold verifies schema1 pushes.
        schema1_pushes=schema1.enabled or "enabled" not in schema1.model_fields_set,
        schema1_key=signing_key,
    )
