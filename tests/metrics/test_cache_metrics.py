"""The descriptor cache's metrics: lookups counted, Redis round trips timed, failures counted.

Against a real ``redis-server``, then against a port where nothing listens.
"""

from __future__ import annotations

from cargohold.descriptor import Descriptor
from cargohold.digest import digest_of
from cargohold.metrics.exposition import render
from cargohold.metrics.recorders import CacheMetrics
from cargohold.metrics.store import Store
from cargohold.storage.cache import BlobDescriptorCache
from cargohold.storage.cache.memory import MemoryBlobDescriptorCache
from cargohold.storage.cache.redis import RedisBlobDescriptorCache
from cargohold.storage.cache.watched import WatchedCache
from tests.support.metrics import Scrape, parse
from tests.support.redis import RedisServer
from tests.support.servers import free_port


def scrape(store: Store) -> Scrape:
    return parse(render([store.as_file()], None)[0].decode())


def counted(cache: BlobDescriptorCache, store: Store) -> WatchedCache:
    return WatchedCache(cache, CacheMetrics(cache, store))


def descriptor(content: bytes) -> Descriptor:
    return Descriptor("application/octet-stream", digest_of(content), len(content))


async def test_redis_lookups_are_counted_and_each_call_timed(redis_db: RedisServer) -> None:
    store = Store()
    cache = counted(RedisBlobDescriptorCache(redis_db.url()), store)
    known, unknown = descriptor(b"known"), descriptor(b"unknown")
    await cache.set(known)
    await cache.set_linked("app", known)
    assert await cache.get(known.digest) == known
    assert await cache.get(unknown.digest) is None
    assert (await cache.get_linked("app", known.digest)) is not None
    await cache.clear_linked("app", known.digest)
    found = scrape(store)
    assert found.value("registry_storage_cache_total", type="Request") == 3
    assert found.value("registry_storage_cache_total", type="Hit") == 2
    assert found.value("registry_storage_cache_total", type="Miss") == 1
    assert found.value("registry_storage_cache_errors_total") == 0
    operations = found.by("registry_storage_cache_redis_seconds_count", "operation")
    assert operations == {
        "SetDescriptor": 1,
        "RepoSetDescriptor": 1,
        "Stat": 2,
        "RepoStat": 1,
        "RepoClear": 1,
    }
    await cache.close()
    store.close()


async def test_a_redis_that_does_not_answer_counts_errors_and_misses() -> None:
    store = Store()
    cache = counted(RedisBlobDescriptorCache(f"redis://127.0.0.1:{free_port()}/0"), store)
    known = descriptor(b"known")
    for _ in range(3):
        await cache.set(known)
        assert await cache.get(known.digest) is None
    found = scrape(store)
    assert found.value("registry_storage_cache_errors_total") == 6
    assert found.value("registry_storage_cache_total", type="Error") == 6
    assert found.value("registry_storage_cache_total", type="Miss") == 3
    await cache.close()
    store.close()


async def test_a_cache_in_memory_is_counted_but_not_timed() -> None:
    store = Store()
    cache = counted(MemoryBlobDescriptorCache(), store)
    known = descriptor(b"known")
    await cache.set(known)
    assert await cache.get(known.digest) == known
    found = scrape(store)
    assert found.value("registry_storage_cache_hits_total") == 1
    assert "registry_storage_cache_redis_seconds_count" not in found.names()
    store.close()
