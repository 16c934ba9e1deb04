"""A descriptor cache whose calls a watch sees: how metrics and traces observe a cache.

The cache's counterpart of the storage driver's ``DriverWatch``: each call is
made inside ``watch.call(operation)``, under Distribution's name for the
operation (those of ``registry_storage_cache_redis_seconds``), and the watch
hears ``called`` once it returns, with what a lookup found.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from cargohold.descriptor import Descriptor
from cargohold.digest import Digest
from cargohold.storage.cache import BlobDescriptorCache

__all__ = ["CacheWatch", "WatchedCache"]


class CacheWatch(Protocol):
    def call(self, operation: str) -> AbstractContextManager[object]: ...

    def called(self, found: Descriptor | None = None, lookup: bool = False) -> None:
        """A call returned; ``lookup`` for ``get`` and ``get_linked``, with what they found."""
        ...


class WatchedCache:
    """``cache`` (a ``BlobDescriptorCache``), each of its calls seen by ``watch``."""

    def __init__(self, cache: BlobDescriptorCache, watch: CacheWatch) -> None:
        self._cache = cache
        self._watch = watch
        self.shared = cache.shared

    @property
    def errors(self) -> int:
        return self._cache.errors

    async def get(self, digest: Digest) -> Descriptor | None:
        with self._watch.call("Stat"):
            found = await self._cache.get(digest)
        self._watch.called(found, lookup=True)
        return found

    async def set(self, descriptor: Descriptor) -> None:
        with self._watch.call("SetDescriptor"):
            await self._cache.set(descriptor)
        self._watch.called()

    async def clear(self, digest: Digest) -> None:
        with self._watch.call("Clear"):
            await self._cache.clear(digest)
        self._watch.called()

    async def get_linked(self, repository: str, digest: Digest) -> Descriptor | None:
        with self._watch.call("RepoStat"):
            found = await self._cache.get_linked(repository, digest)
        self._watch.called(found, lookup=True)
        return found

    async def set_linked(self, repository: str, descriptor: Descriptor) -> None:
        with self._watch.call("RepoSetDescriptor"):
            await self._cache.set_linked(repository, descriptor)
        self._watch.called()

    async def clear_linked(self, repository: str, digest: Digest) -> None:
        with self._watch.call("RepoClear"):
            await self._cache.clear_linked(repository, digest)
        self._watch.called()

    async def ping(self) -> bool:
        return await self._cache.ping()

    async def close(self) -> None:
        await self._cache.close()
