"""Garbage collection with the Redis cache: what it clears, and when Redis dies mid-sweep."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cargohold.digest import Digest
from cargohold.storage.cache.redis import RedisBlobDescriptorCache
from cargohold.storage.driver.inmemory import InMemoryDriver
from cargohold.storage.gc import CacheUnreachable, collect_garbage
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from tests.support.redis import RedisServer, running_redis
from tests.support.servers import free_port


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


async def registry_on(url: str) -> AsyncIterator[StorageRegistry]:
    registry = StorageRegistry(
        InMemoryDriver(),
        cache=RedisBlobDescriptorCache(url),
        options=RegistryOptions(delete_enabled=True),
    )
    try:
        yield registry
    finally:
        await registry.close()


@pytest.fixture
async def registry(private_redis: RedisServer) -> AsyncIterator[StorageRegistry]:
    async for registry in registry_on(private_redis.url()):
        yield registry


async def test_a_sweep_that_loses_redis_midway_says_the_cache_may_be_stale(
    registry: StorageRegistry, private_redis: RedisServer
) -> None:
    repo = registry.repository("midway/app")
    orphans = [(await repo.blobs.put(f"orphan {i}".encode())).digest for i in range(3)]
    forget = registry.blobs.forget

    async def forget_then_lose_redis(digest: Digest) -> None:
        # The first blob the sweep deletes takes Redis down with it.
        await forget(digest)
        if private_redis.process.poll() is None:
            private_redis.process.kill()
            private_redis.process.wait()

    registry.blobs.forget = forget_then_lose_redis  # type: ignore[method-assign]
    result = await collect_garbage(registry)
    assert sorted(result.deleted_blobs) == sorted(orphans)
    assert result.cache_stale


async def test_a_sweep_that_reaches_redis_throughout_is_not_stale(
    registry: StorageRegistry, private_redis: RedisServer
) -> None:
    repo = registry.repository("fine/app")
    orphan = (await repo.blobs.put(b"orphan")).digest
    await repo.blobs.stat(orphan)
    raw = private_redis.client()
    try:
        assert raw.exists(f"blobs::{orphan}")
        result = await collect_garbage(registry)
        assert result.deleted_blobs == [orphan]
        assert not result.cache_stale
        assert raw.keys("*") == []  # the global hash and the repository's entry alike
    finally:
        raw.close()


async def test_a_sweep_without_redis_deletes_nothing_but_a_dry_run_still_reports() -> None:
    async for registry in registry_on(f"redis://127.0.0.1:{free_port()}/0"):
        orphan = (await registry.repository("no/redis").blobs.put(b"orphan")).digest
        dry = await collect_garbage(registry, dry_run=True)
        assert dry.deleted_blobs == [orphan]
        with pytest.raises(CacheUnreachable):
            await collect_garbage(registry)
        assert await registry.blobs.exists(orphan)
