from __future__ import annotations

import pytest

from cargohold.storage.cache.memory import MemoryBlobDescriptorCache
from tests.storage.cache_suite import BlobDescriptorCacheSuite, descriptor


class TestMemoryBlobDescriptorCache(BlobDescriptorCacheSuite):
    @pytest.fixture
    def cache(self) -> MemoryBlobDescriptorCache:
        return MemoryBlobDescriptorCache()


def test_an_in_process_cache_is_not_shared() -> None:
    # Another process may unlink a blob behind its back: links must still be read.
    assert MemoryBlobDescriptorCache.shared is False


async def test_the_entry_past_the_bound_evicts_the_least_recently_used() -> None:
    cache = MemoryBlobDescriptorCache(size=3)
    first, second, third, fourth = (descriptor() for _ in range(4))
    for known in (first, second, third):
        await cache.set(known)
    assert await cache.get(first.digest) == first  # now the most recently used
    await cache.set(fourth)
    assert await cache.get(second.digest) is None
    for known in (first, third, fourth):
        assert await cache.get(known.digest) == known


async def test_repository_entries_are_bounded_too() -> None:
    cache = MemoryBlobDescriptorCache(size=3)
    blobs = [descriptor() for _ in range(3)]
    for known in blobs:
        await cache.set(known)
    # Four entries for two blobs in two repositories: the oldest one goes.
    await cache.set_linked("a", blobs[0])
    await cache.set_linked("b", blobs[0])
    await cache.set_linked("a", blobs[1])
    assert await cache.get_linked("a", blobs[0].digest) == blobs[0]  # refreshed
    await cache.set_linked("b", blobs[1])
    assert await cache.get_linked("b", blobs[0].digest) is None
    assert await cache.get_linked("a", blobs[0].digest) == blobs[0]
    assert await cache.get_linked("a", blobs[1].digest) == blobs[1]
    assert await cache.get_linked("b", blobs[1].digest) == blobs[1]


async def test_overwriting_an_entry_does_not_grow_the_cache() -> None:
    cache = MemoryBlobDescriptorCache(size=2)
    kept, rewritten = descriptor(), descriptor()
    await cache.set(kept)
    for _ in range(5):
        await cache.set(rewritten)
    assert await cache.get(kept.digest) == kept
