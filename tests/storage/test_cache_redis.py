"""The Redis blob descriptor cache against a real ``redis-server``.

Besides the shared suite: the keys and fields are Distribution's, read and
written both ways with plain Redis commands, and Redis being down or broken only
ever costs a miss.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio
from redis.asyncio import BlockingConnectionPool, SSLConnection

from cargohold.config import Redis as RedisConfig
from cargohold.descriptor import OCTET_STREAM, Descriptor
from cargohold.errors import BlobUnknown, ConfigError
from cargohold.manifest.mediatypes import OCI_MANIFEST
from cargohold.storage.cache.redis import RedisBlobDescriptorCache
from cargohold.storage.driver.inmemory import InMemoryDriver
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from tests.storage.cache_suite import (
    CONFIG,
    LAYER,
    BlobDescriptorCacheSuite,
    descriptor,
    random_digest,
)
from tests.support.redis import RedisServer, running_redis
from tests.support.servers import free_port

LOGGER = "cargohold.cache"


class TestRedisBlobDescriptorCache(BlobDescriptorCacheSuite):
    @pytest.fixture
    async def cache(self, redis_db: RedisServer) -> AsyncIterator[RedisBlobDescriptorCache]:
        cache = RedisBlobDescriptorCache(redis_db.url())
        yield cache
        await cache.close()


@pytest.fixture
async def cache(redis_db: RedisServer) -> AsyncIterator[RedisBlobDescriptorCache]:
    cache = RedisBlobDescriptorCache(redis_db.url())
    yield cache
    await cache.close()


@pytest.fixture
def raw(redis_db: RedisServer) -> Iterator[redis.Redis]:
    """Plain commands on the same database, as another registry would send them."""
    client = redis_db.client()
    yield client
    client.close()


def test_the_cache_is_shared() -> None:
    assert RedisBlobDescriptorCache.shared is True


# -- Distribution's key layout, written by cargohold ------------------------------------


async def test_set_linked_writes_distributions_keys_and_fields(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    linked = descriptor(LAYER, 1234)
    digest = str(linked.digest)
    await cache.set_linked("foo/bar", linked)
    assert set(raw.keys("*")) == {
        f"blobs::{digest}",
        "repository::foo/bar::blobs",
        f"repository::foo/bar::blobs::{digest}",
    }
    assert raw.type(f"blobs::{digest}") == "hash"
    assert raw.hgetall(f"blobs::{digest}") == {
        "digest": digest,
        "size": "1234",
        "mediatype": LAYER,
    }
    assert raw.type("repository::foo/bar::blobs") == "set"
    assert raw.sismember("repository::foo/bar::blobs", digest)
    assert raw.smembers("repository::foo/bar::blobs") == {digest}
    # Distribution keeps only the media type per repository: no digest, no size.
    assert raw.hgetall(f"repository::foo/bar::blobs::{digest}") == {"mediatype": LAYER}


async def test_set_writes_only_the_global_hash(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    known = descriptor(OCTET_STREAM, 0)
    await cache.set(known)
    assert raw.keys("*") == [f"blobs::{known.digest}"]
    assert raw.hgetall(f"blobs::{known.digest}") == {
        "digest": str(known.digest),
        "size": "0",
        "mediatype": OCTET_STREAM,
    }


async def test_linking_keeps_the_first_global_media_type_like_hsetnx(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    first = descriptor(OCTET_STREAM)
    await cache.set_linked("a", first)
    await cache.set_linked("b", Descriptor(CONFIG, first.digest, first.size))
    assert raw.hget(f"blobs::{first.digest}", "mediatype") == OCTET_STREAM
    assert raw.hget(f"repository::a::blobs::{first.digest}", "mediatype") == OCTET_STREAM
    assert raw.hget(f"repository::b::blobs::{first.digest}", "mediatype") == CONFIG


async def test_clear_linked_leaves_nothing_distribution_would_read_as_linked(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    linked = descriptor()
    digest = str(linked.digest)
    await cache.set_linked("foo/bar", linked)
    await cache.set_linked("foo/baz", linked)
    await cache.clear_linked("foo/bar", linked.digest)
    assert not raw.sismember("repository::foo/bar::blobs", digest)
    assert not raw.exists(f"repository::foo/bar::blobs::{digest}")
    assert raw.sismember("repository::foo/baz::blobs", digest)
    assert raw.hgetall(f"blobs::{digest}")["size"] == str(linked.size)


async def test_clear_deletes_the_global_hash(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    known = descriptor()
    await cache.set_linked("foo/bar", known)
    await cache.clear(known.digest)
    assert not raw.exists(f"blobs::{known.digest}")


# -- Distribution's key layout, written by Distribution --------------------------------


def write_like_distribution(
    raw: redis.Redis, repository: str, known: Descriptor, repository_media_type: str
) -> None:
    """The commands of Distribution's repository-scoped SetDescriptor, in its order."""
    digest = str(known.digest)
    raw.sadd(f"repository::{repository}::blobs", digest)
    raw.hset(f"blobs::{digest}", mapping={"digest": digest, "size": known.size})
    raw.hsetnx(f"blobs::{digest}", "mediatype", known.media_type)
    raw.hset(f"repository::{repository}::blobs::{digest}", "mediatype", repository_media_type)


async def test_reads_entries_distribution_wrote(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    known = descriptor(OCTET_STREAM, 42)
    write_like_distribution(raw, "foo/bar", known, LAYER)
    assert await cache.get(known.digest) == known
    assert await cache.get_linked("foo/bar", known.digest) == Descriptor(LAYER, known.digest, 42)
    assert await cache.get_linked("foo/baz", known.digest) is None


async def test_distributions_repository_clear_makes_every_lookup_miss(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    # Distribution's repository-scoped Clear HDELs the global hash and keeps the rest.
    known = descriptor()
    write_like_distribution(raw, "foo/bar", known, LAYER)
    raw.hdel(f"blobs::{known.digest}", "digest", "size", "mediatype")
    assert await cache.get(known.digest) is None
    assert await cache.get_linked("foo/bar", known.digest) is None


async def test_an_empty_repository_media_type_means_the_global_one(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    known = descriptor(CONFIG)
    write_like_distribution(raw, "foo/bar", known, "")
    assert await cache.get_linked("foo/bar", known.digest) == known


async def test_membership_without_the_repository_hash_is_a_miss(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    known = descriptor()
    write_like_distribution(raw, "foo/bar", known, LAYER)
    raw.delete(f"repository::foo/bar::blobs::{known.digest}")
    assert await cache.get_linked("foo/bar", known.digest) is None


async def test_a_repository_hash_without_membership_is_a_miss(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    known = descriptor()
    write_like_distribution(raw, "foo/bar", known, LAYER)
    raw.srem("repository::foo/bar::blobs", str(known.digest))
    assert await cache.get_linked("foo/bar", known.digest) is None


async def test_an_old_entry_with_length_instead_of_size_is_a_miss(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    digest = random_digest()
    raw.hset(f"blobs::{digest}", mapping={"digest": digest, "length": 10, "mediatype": LAYER})
    assert await cache.get(digest) is None


async def test_a_global_entry_without_media_type_is_an_octet_stream(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    digest = random_digest()
    raw.hset(f"blobs::{digest}", mapping={"digest": digest, "size": 10})
    assert await cache.get(digest) == Descriptor(OCTET_STREAM, digest, 10)


async def test_an_entry_filed_under_another_algorithm_answers_the_stored_digest(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    # Distribution files a descriptor under the asked-for digest and stores the
    # canonical one; like Distribution, the stored one is what comes back.
    alias, canonical = random_digest("sha512"), random_digest("sha256")
    raw.hset(f"blobs::{alias}", mapping={"digest": canonical, "size": 7, "mediatype": LAYER})
    assert await cache.get(alias) == Descriptor(LAYER, canonical, 7)


@pytest.mark.parametrize(
    "fields",
    [
        {"digest": "not a digest", "size": "10"},
        {"digest": "{digest}", "size": "ten"},
        {"digest": "{digest}", "size": "-1"},
        {"digest": "{digest}", "size": ""},
    ],
)
async def test_a_malformed_entry_is_a_miss(
    cache: RedisBlobDescriptorCache,
    raw: redis.Redis,
    fields: dict[str, str],
) -> None:
    digest = random_digest()
    write_like_distribution(raw, "foo/bar", Descriptor(LAYER, digest, 1), LAYER)
    raw.hset(f"blobs::{digest}", mapping={k: v.format(digest=digest) for k, v in fields.items()})
    assert await cache.get(digest) is None
    assert await cache.get_linked("foo/bar", digest) is None


async def test_a_key_of_the_wrong_type_is_a_miss_and_a_no_op(
    cache: RedisBlobDescriptorCache, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    known = descriptor()
    raw.set(f"blobs::{known.digest}", "someone else's string")
    raw.set("repository::foo/bar::blobs", "not a set either")
    assert await cache.get(known.digest) is None
    assert await cache.get_linked("foo/bar", known.digest) is None
    await cache.set(known)
    await cache.set_linked("foo/bar", known)
    await cache.clear_linked("foo/bar", known.digest)
    assert [r.levelname for r in caplog.records if r.name == LOGGER] == ["WARNING"]
    await cache.clear(known.digest)  # a DEL takes any type
    await cache.set(known)
    assert await cache.get(known.digest) == known


# -- time to live ----------------------------------------------------------------------


async def test_every_key_written_carries_the_ttl(redis_db: RedisServer, raw: redis.Redis) -> None:
    cache = RedisBlobDescriptorCache(redis_db.url(), ttl=60)
    await cache.set_linked("foo/bar", descriptor())
    await cache.set(descriptor())
    await cache.close()
    keys = raw.keys("*")
    assert len(keys) == 4
    for key in keys:
        assert 0 < raw.ttl(key) <= 60, key


async def test_without_ttl_entries_stay(redis_db: RedisServer, raw: redis.Redis) -> None:
    cache = RedisBlobDescriptorCache(redis_db.url(), ttl=None)
    await cache.set_linked("foo/bar", descriptor())
    await cache.close()
    assert [raw.ttl(key) for key in raw.keys("*")] == [-1, -1, -1]


async def test_an_entry_is_gone_after_its_ttl(redis_db: RedisServer) -> None:
    cache = RedisBlobDescriptorCache(redis_db.url(), ttl=1)
    known = descriptor()
    await cache.set_linked("foo/bar", known)
    assert await cache.get_linked("foo/bar", known.digest) == known
    await asyncio.sleep(1.3)
    assert await cache.get(known.digest) is None
    assert await cache.get_linked("foo/bar", known.digest) is None
    await cache.close()


# -- Redis down ------------------------------------------------------------------------


def cargohold_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == LOGGER]


async def test_redis_down_is_a_miss_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cache = RedisBlobDescriptorCache(f"redis://127.0.0.1:{free_port()}/0")
    known = descriptor()
    for _ in range(20):
        await cache.set(known)
        await cache.set_linked("foo/bar", known)
        assert await cache.get(known.digest) is None
        assert await cache.get_linked("foo/bar", known.digest) is None
    assert await cache.ping() is False
    records = cargohold_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING
    assert "unavailable" in records[0].getMessage()
    assert "ConnectionError" in records[0].getMessage()
    await cache.close()


async def test_the_warning_comes_again_after_the_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cache = RedisBlobDescriptorCache(f"redis://127.0.0.1:{free_port()}/0", warning_interval=0.2)
    for _ in range(5):
        assert await cache.get(random_digest()) is None
    await asyncio.sleep(0.25)
    assert await cache.get(random_digest()) is None
    records = cargohold_records(caplog)
    assert len(records) == 2
    assert "4 more failures since the last report" in records[1].getMessage()
    await cache.close()


async def test_a_clear_that_cannot_reach_redis_is_reported_as_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    cache = RedisBlobDescriptorCache(f"redis://127.0.0.1:{free_port()}/0")
    await cache.clear(random_digest())
    await cache.clear_linked("foo/bar", random_digest())
    records = cargohold_records(caplog)
    assert [r.levelno for r in records] == [logging.ERROR]
    assert "clears waiting to reach it: 1" in records[0].getMessage()
    await cache.close()


async def test_a_slow_redis_times_out_into_a_miss(
    redis_db: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    cache = RedisBlobDescriptorCache(redis_db.url() + "?socket_timeout=0.2")
    known = descriptor()
    await cache.set(known)
    pauser = redis_db.client()
    pauser.client_pause(800, all=True)  # lifts itself
    pauser.close()
    started = asyncio.get_running_loop().time()
    assert await cache.get(known.digest) is None
    # One retry at most: two timeouts, not redis-py's default of ten tries.
    assert asyncio.get_running_loop().time() - started < 0.7
    assert "TimeoutError" in cargohold_records(caplog)[0].getMessage()
    await asyncio.sleep(0.8)
    assert await cache.get(known.digest) == known
    await cache.close()


async def test_a_clear_lost_to_an_outage_is_replayed_before_anything_is_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The stale-entry hazard: the blob is deleted while Redis is down, and Redis
    # comes back with the entry (here from its dump; in life, a partition).
    caplog.set_level(logging.INFO, logger=LOGGER)
    port, directory = free_port(), tmp_path / "redis"
    gone, kept = descriptor(), descriptor()
    with running_redis(directory, port) as server:
        cache = RedisBlobDescriptorCache(server.url(), ttl=600)
        await cache.set_linked("foo/bar", gone)
        await cache.set_linked("foo/bar", kept)
        server.shutdown_keeping_data()
    await cache.clear(gone.digest)
    await cache.clear_linked("foo/bar", kept.digest)
    assert await cache.get_linked("foo/bar", gone.digest) is None
    assert [r.levelno for r in cargohold_records(caplog)] == [logging.ERROR]

    with running_redis(directory, port) as server:
        raw = server.client()
        try:
            assert raw.exists(f"blobs::{gone.digest}")
            assert 0 < raw.ttl(f"blobs::{gone.digest}") <= 600
            # Another process reads nothing the restarted server brought back: its first
            # connection drops every entry (storage/cache/redis.py, "A Redis that comes back").
            other = RedisBlobDescriptorCache(server.url())
            assert await other.get(gone.digest) is None
            await other.close()
            # This process's first call replays the clears ahead of its own read.
            assert await cache.get(gone.digest) is None
            assert not raw.exists(f"blobs::{gone.digest}")
            assert await cache.get_linked("foo/bar", kept.digest) is None
            assert not raw.sismember("repository::foo/bar::blobs", str(kept.digest))
            assert await cache.get(kept.digest) is None  # dropped with the rest
        finally:
            raw.close()
    assert "reachable again" in cargohold_records(caplog)[-1].getMessage()
    await cache.close()


async def test_ping_drains_pending_clears(tmp_path: Path) -> None:
    port, directory = free_port(), tmp_path / "redis"
    gone = descriptor()
    with running_redis(directory, port) as server:
        cache = RedisBlobDescriptorCache(server.url())
        await cache.set(gone)
        server.shutdown_keeping_data()
    await cache.clear(gone.digest)
    assert await cache.ping() is False
    with running_redis(directory, port) as server:
        raw = server.client()
        assert raw.exists(f"blobs::{gone.digest}")
        assert await cache.ping() is True
        assert not raw.exists(f"blobs::{gone.digest}")
        raw.close()
    await cache.close()


async def test_ping(cache: RedisBlobDescriptorCache) -> None:
    assert await cache.ping() is True


# -- building from the configuration ---------------------------------------------------


def pool_of(cache: RedisBlobDescriptorCache) -> BlockingConnectionPool:
    pool = cache._client.connection_pool
    assert isinstance(pool, BlockingConnectionPool)
    return pool


async def test_from_config_uses_address_db_timeouts_and_pool(
    redis_db: RedisServer, raw: redis.Redis
) -> None:
    settings = RedisConfig.model_validate(
        {
            "addr": f"127.0.0.1:{redis_db.port}",
            "db": 5,
            "dialtimeout": "2s",
            "readtimeout": "1s",
            "writetimeout": "4s",
            "pool": {"maxactive": 7},
        }
    )
    cache = RedisBlobDescriptorCache.from_config(settings)
    pool = pool_of(cache)
    assert pool.max_connections == 7
    assert pool.timeout == 5
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("127.0.0.1", redis_db.port, 5)
    assert kwargs["socket_connect_timeout"] == 2
    assert kwargs["socket_timeout"] == 4
    known = descriptor()
    await cache.set(known)
    assert await cache.get(known.digest) == known
    await cache.close()
    assert raw.keys("*") == []
    other_db = redis_db.client(db=5)
    assert other_db.keys("*") == [f"blobs::{known.digest}"]
    other_db.close()


async def test_from_config_defaults_are_go_redis_ones() -> None:
    cache = RedisBlobDescriptorCache.from_config(RedisConfig(addr="redis.example"))
    pool = pool_of(cache)
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"], kwargs["db"]) == ("redis.example", 6379, 0)
    assert kwargs["socket_connect_timeout"] == 5
    assert kwargs["socket_timeout"] == 3
    assert kwargs["username"] is None
    assert kwargs["password"] is None
    assert pool.max_connections == 10 * (os.cpu_count() or 1)
    assert pool.connection_class is not SSLConnection
    await cache.close()


async def test_from_config_reads_ipv6_addresses_and_negative_timeouts() -> None:
    settings = RedisConfig.model_validate(
        {"addrs": ["[::1]:6380"], "readtimeout": "-1s", "poolsize": 3}
    )
    cache = RedisBlobDescriptorCache.from_config(settings)
    pool = pool_of(cache)
    assert (pool.connection_kwargs["host"], pool.connection_kwargs["port"]) == ("::1", 6380)
    assert pool.connection_kwargs["socket_timeout"] is None
    assert pool.timeout is None
    assert pool.max_connections == 3
    await cache.close()


async def test_from_config_with_tls(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    settings = RedisConfig.model_validate(
        {
            "addr": "redis.example:6380",
            "tls": {
                "enabled": True,
                "certificate": "/etc/cert.pem",
                "key": "/etc/key.pem",
                "clientcas": [str(ca)],
            },
        }
    )
    cache = RedisBlobDescriptorCache.from_config(settings)
    pool = pool_of(cache)
    assert pool.connection_class is SSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["ssl_certfile"], kwargs["ssl_keyfile"]) == ("/etc/cert.pem", "/etc/key.pem")
    assert kwargs["ssl_ca_data"] == ca.read_text()
    await cache.close()


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({}, "redis.addr"),
        ({"addrs": ["a:1", "b:2"]}, "redis.addrs"),
        ({"addr": "host:port"}, "redis.addr"),
        (
            {"addr": "h:1", "tls": {"enabled": True, "clientcas": ["/nonexistent"]}},
            "redis.tls.rootcas",  # Distribution 3's name for what 2.x called clientcas
        ),
        (
            {"addr": "h:1", "tls": {"enabled": True, "rootcas": ["/nonexistent"]}},
            "redis.tls.rootcas",
        ),
    ],
)
def test_from_config_refuses_what_it_cannot_use(settings: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RedisBlobDescriptorCache.from_config(RedisConfig.model_validate(settings))
    assert caught.value.key == key


async def test_from_config_authenticates_with_username_and_password(
    redis_db: RedisServer,
) -> None:
    admin = redis_db.client()
    admin.acl_setuser(
        "cargohold", enabled=True, passwords=["+s3cret"], keys=["*"], commands=["+@all"]
    )
    try:
        address = f"127.0.0.1:{redis_db.port}"
        right = RedisBlobDescriptorCache.from_config(
            RedisConfig(addr=address, username="cargohold", password="s3cret")
        )
        wrong = RedisBlobDescriptorCache.from_config(
            RedisConfig(addr=address, username="cargohold", password="wrong")
        )
        assert await right.ping() is True
        assert await wrong.ping() is False
        await right.close()
        await wrong.close()
    finally:
        admin.acl_deluser("cargohold")
        admin.close()


# -- a client handed in ----------------------------------------------------------------


async def test_a_client_handed_in_is_used_and_left_open(redis_db: RedisServer) -> None:
    # Not decoding responses is the redis-py default: the cache copes with bytes.
    client = redis.asyncio.Redis(port=redis_db.port)
    cache = RedisBlobDescriptorCache(client)
    known = descriptor(LAYER)
    await cache.set_linked("foo/bar", known)
    assert await cache.get(known.digest) == known
    assert await cache.get_linked("foo/bar", known.digest) == known
    await cache.close()
    assert await client.ping() is True
    await client.aclose()


# -- what the storage layer puts in it -------------------------------------------------


def _registry(driver: InMemoryDriver, cache: RedisBlobDescriptorCache) -> StorageRegistry:
    return StorageRegistry(driver, cache=cache, options=RegistryOptions(delete_enabled=True))


async def test_a_manifest_digest_never_enters_the_repository_blob_set(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    # Distribution answers the blob endpoints from this set: a manifest digest in it
    # would make HEAD /v2/<name>/blobs/<manifest digest> a 200 on either registry.
    repo = _registry(InMemoryDriver(), cache).repository("shared/app")
    config = await repo.blobs.put(b"{}", CONFIG)
    payload = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG, "digest": str(config.digest), "size": 2},
            "layers": [],
        }
    ).encode()
    stored = await repo.manifests.put(payload, OCI_MANIFEST, ["v1"])
    assert await repo.manifests.exists(stored.digest)

    members = raw.smembers("repository::shared/app::blobs")
    assert members == {str(config.digest)}
    with pytest.raises(BlobUnknown):
        await repo.blobs.stat(stored.digest)


class _DeleteAfterLinkRead(InMemoryDriver):
    """Deletes a link through another registry right after this driver first reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.on_link_read: Callable[[], Awaitable[None]] | None = None

    async def get_content(self, path: str) -> bytes:
        content = await super().get_content(path)
        hook, self.on_link_read = self.on_link_read, None
        if hook is not None and path.endswith("/link"):
            await hook()
        return content


async def test_a_delete_racing_a_stat_leaves_no_stale_entry(
    cache: RedisBlobDescriptorCache, raw: redis.Redis
) -> None:
    # Registry B reads the link, A deletes it and clears the entry, then B writes the
    # entry it looked up: without a second look, the deleted blob would stay "linked".
    driver = _DeleteAfterLinkRead()
    a = _registry(driver, cache).repository("race/app")
    b = _registry(driver, cache).repository("race/app")
    digest = (await a.blobs.put(b"soon deleted")).digest
    await cache.clear_linked("race/app", digest)  # B must look in storage

    async def delete_through_a() -> None:
        await a.blobs.delete(digest)

    driver.on_link_read = delete_through_a
    with pytest.raises(BlobUnknown):
        await b.blobs.stat(digest)
    assert not raw.sismember("repository::race/app::blobs", str(digest))
    assert await cache.get_linked("race/app", digest) is None
    with pytest.raises(BlobUnknown):
        await b.blobs.stat(digest)
