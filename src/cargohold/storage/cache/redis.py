"""A blob descriptor cache in Redis, shared by every registry process, in Distribution's keys.

Key layout (CNCF Distribution's ``registry/storage/cache/redis/redis.go``, so a Go
registry and cargohold can share one Redis and read each other's entries)::

    blobs::<digest>                          hash: digest, size, mediatype
    repository::<name>::blobs                set: the digests linked in the repository
    repository::<name>::blobs::<digest>      hash: mediatype (the repository's own)

Distribution writes a repository entry with SADD on the set, HMSET ``digest`` and
``size`` plus HSETNX ``mediatype`` on the global hash (the first media type seen
stays), and HSET ``mediatype`` on the repository hash; the repository hash holds no
digest or size. It reads a repository entry with SISMEMBER, then HMGET on the global
hash (a missing ``digest`` or ``size`` is a miss), then HGET of the repository's
media type (missing: a miss; empty: keep the global one). cargohold does the same,
pipelined into one round trip, and differs only where noted:

- ``set`` (a global stat of storage, the truth) overwrites the global media type;
  ``set_linked`` leaves an existing one alone, as Distribution's HSETNX does.
- ``clear_linked`` removes the digest from the repository's set and deletes the
  repository hash. Distribution's repository-scoped Clear instead deletes the
  *global* hash, which would make the blob miss in every repository; removing the
  membership is enough for both registries to miss in this repository only.
- ``clear`` deletes the global hash (Distribution HDELs its three fields, which
  leaves the same nothing). Repository entries of that digest stay, but every
  repository lookup needs the global hash, so they all miss.
- Entries carry a TTL (``ttl``, 10 minutes by default); Distribution sets none.

Redis is an accelerator, never the truth, so it must never fail a request: every
Redis error (refused, timed out, a wrong-type key someone else wrote) turns a read
into a miss and a write into a no-op, and is logged on ``cargohold.cache`` at most
once per ``warning_interval`` (30 s), not once per call. Clients built here retry a
command once at most (a pooled connection may have died with a restarted server)
and time out like go-redis: 5 s to connect, 3 s to read.

Why a failed clear cannot leave a lie behind
--------------------------------------------
A miss costs one stat; a stale hit is worse: an entry for a blob that was deleted
says it still exists (a HEAD answers 200, a mount or a manifest referencing it is
accepted), and with ``shared`` set the linked blob store answers from Redis without
reading the link. A clear must therefore survive Redis being unreachable when it
is issued. Three things make it so:

1. Clears are journalled before they are sent (write-ahead), in this process, and
   leave the journal only when Redis has acknowledged them. Every later call to
   Redis first replays the journal in the same pipeline, ahead of its own
   commands, so it costs no extra round trip. A read of a digest whose clear is
   still pending therefore either reaches Redis (the replayed DEL runs first and
   the read misses) or does not (a miss). The same holds when the clear's reply
   timed out, or its task was cancelled: DEL and SREM are idempotent. ``ping``,
   which the health check calls periodically, drains the journal even when no
   request comes.
2. While clears are pending, the rate-limited log record is an ERROR naming how
   many, not a WARNING: other processes that can still reach Redis may see those
   entries until the journal drains.
3. The TTL bounds what the journal cannot cover: this process dying with a
   non-empty journal (it is in memory), more than ``MAX_PENDING_CLEARS`` pending
   clears, and entries a Go registry left (its repository Clear keeps the
   membership, so a later re-push of the digest elsewhere revives the old
   repository's entry in both registries). No entry outlives its TTL after its
   last write.

A Redis that comes back
-----------------------
The journal covers clears that never reached Redis. It cannot cover clears that
did, and were then lost: a Redis that crashes and restarts from its snapshot or
append-only file comes back with entries from before, the ones whose clear it
had acknowledged since included; and a clear journalled by one process while
Redis was down replays only when *that* process next reaches it, while the
others may read the old entry first. So no entry of a restarted Redis is
trusted until its entries are dropped. Every new connection (a restart closes
them all, so every process makes new ones) first reads the server's
``run_id`` and, once per new ``run_id`` in each process:

- if the server loaded no key when it started (``rdb_last_load_keys_loaded``
  is 0) and keeps no append-only file, it started empty: nothing to drop;
- otherwise, unless ``VETTED_KEY`` already holds that ``run_id`` (another
  process dropped them), it deletes every cache key (SCAN, then DEL) on that
  connection before any command of its own runs, and then writes the
  ``run_id`` to ``VETTED_KEY``; the drop is logged as a WARNING.

Until a connection has done this, nothing is read on it; while a process drops
entries, its other new connections wait. A process that finds ``VETTED_KEY``
set to the ``run_id`` knows no entry from before is left. Entries written
after the drop are lost with it at worst (misses). A Go registry sharing the
Redis does none of this. A server that does not answer ``INFO`` (an ACL
without ``@dangerous``) cannot be told apart from its restart: its entries are
trusted, and that is logged once as a WARNING.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from cargohold.descriptor import OCTET_STREAM, Descriptor
from cargohold.digest import Digest
from cargohold.errors import ConfigError, DigestInvalid
from cargohold.reference import validate_name

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline
    from redis.asyncio.connection import AbstractConnection

    from cargohold import config

__all__ = [
    "DEFAULT_TTL",
    "MAX_PENDING_CLEARS",
    "VETTED_KEY",
    "WARNING_INTERVAL",
    "RedisBlobDescriptorCache",
    "client_from_config",
]

log = logging.getLogger("cargohold.cache")

#: How long an entry lives after its last write, in seconds.
DEFAULT_TTL: Final = 600.0
#: At most one log record about Redis trouble per this many seconds.
WARNING_INTERVAL: Final = 30.0
#: Clears kept for replay; beyond this the oldest are dropped (the TTL still bounds them).
MAX_PENDING_CLEARS: Final = 10_000
#: The ``run_id`` of the Redis whose entries from before its start were dropped.
VETTED_KEY: Final = "cargohold::blobdescriptors::vetted"
#: Every key of the cache, for SCAN's MATCH.
_ENTRY_PATTERNS: Final = ("blobs::*", "repository::*::blobs*")

# go-redis's defaults, which Distribution inherits when its config leaves these at 0.
_DIAL_TIMEOUT: Final = 5.0
_READ_TIMEOUT: Final = 3.0
_DEFAULT_PORT: Final = 6379

# A journal entry: ("blob", "", digest) for clear, ("link", repository, digest) for clear_linked.
_Clear = tuple[str, str, Digest]


def _blob_key(digest: Digest) -> str:
    return f"blobs::{digest}"


def _repository_set_key(repository: str) -> str:
    return f"repository::{repository}::blobs"


def _repository_blob_key(repository: str, digest: Digest) -> str:
    return f"repository::{repository}::blobs::{digest}"


def _text(value: object) -> str | None:
    # A client handed in by the caller may not decode responses.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


class RedisBlobDescriptorCache:
    """Blob descriptors in Redis, readable and writable by Distribution too.

    ::

        cache = RedisBlobDescriptorCache.from_config(config.redis)
        # or RedisBlobDescriptorCache("redis://127.0.0.1:6379/0")
        await cache.set_linked("library/alpine", descriptor)
        await cache.get_linked("library/alpine", descriptor.digest)
        healthy = await cache.ping()
        await cache.close()

    ``client`` is a ``redis.asyncio.Redis`` (left open by ``close``) or a URL (the
    client built from it is closed by ``close``).
    """

    shared = True
    #: Failed round trips so far (for metrics): each one was answered from storage.
    errors = 0

    def __init__(
        self,
        client: Redis | str,
        *,
        ttl: float | None = DEFAULT_TTL,
        warning_interval: float = WARNING_INTERVAL,
    ) -> None:
        if isinstance(client, str):
            self._client: Redis = Redis.from_url(
                client,
                decode_responses=True,
                socket_connect_timeout=_DIAL_TIMEOUT,
                socket_timeout=_READ_TIMEOUT,
                retry=_retry_once(),
            )
            self._owns_client = True
            self._where = _redact(client)
        else:
            self._client = client
            self._owns_client = False
            self._where = _describe(client)
        self._ttl = None if ttl is None or ttl <= 0 else max(1, round(ttl))
        self._warning_interval = warning_interval
        self._next_warning = 0.0
        self._suppressed = 0
        self._unavailable = False
        self._pending: dict[_Clear, int] = {}
        self._generation = 0
        # The run_id whose entries this process knows hold nothing from before it.
        self._vetted: str | None = None
        self._vetting = asyncio.Lock()
        self._blind = False
        self._client.connection_pool.connection_kwargs["redis_connect_func"] = self._on_connect

    @classmethod
    def from_config(
        cls,
        redis_config: config.Redis,
        *,
        ttl: float | None = DEFAULT_TTL,
        warning_interval: float = WARNING_INTERVAL,
    ) -> RedisBlobDescriptorCache:
        """A cache on the server of the ``redis`` section, with its timeouts, pool and TLS.

        ``pool.maxidle``, ``pool.idletimeout`` and their 3.x spellings have no
        counterpart in redis-py's asyncio pool and are ignored; several ``addrs``
        (a cluster) are refused, since a repository entry spans keys of any slot.
        """
        cache = cls(client_from_config(redis_config), ttl=ttl, warning_interval=warning_interval)
        cache._owns_client = True
        return cache

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def ping(self) -> bool:
        """Whether Redis answers; for the health check, which also drains pending clears."""
        return await self._execute(lambda pipe: pipe.ping()) is not None

    # -- global ---------------------------------------------------------------------------

    async def get(self, digest: Digest) -> Descriptor | None:
        results = await self._execute(
            lambda pipe: pipe.hmget(_blob_key(digest), ["digest", "size", "mediatype"])
        )
        return None if results is None else self._descriptor(digest, results[0])

    async def set(self, descriptor: Descriptor) -> None:
        key = _blob_key(descriptor.digest)

        def build(pipe: Pipeline) -> None:
            pipe.hset(
                key,
                mapping={
                    "digest": str(descriptor.digest),
                    "size": descriptor.size,
                    "mediatype": descriptor.media_type,
                },
            )
            self._expire(pipe, key)

        await self._execute(build)

    async def clear(self, digest: Digest) -> None:
        await self._clear(("blob", "", digest))

    # -- per repository -------------------------------------------------------------------

    async def get_linked(self, repository: str, digest: Digest) -> Descriptor | None:
        validate_name(repository)

        def build(pipe: Pipeline) -> None:
            pipe.sismember(_repository_set_key(repository), str(digest))
            pipe.hmget(_blob_key(digest), ["digest", "size", "mediatype"])
            pipe.hget(_repository_blob_key(repository, digest), "mediatype")

        results = await self._execute(build)
        if results is None or not results[0]:
            return None
        descriptor = self._descriptor(digest, results[1])
        media_type = _text(results[2])
        if descriptor is None or media_type is None:
            return None
        if media_type and media_type != descriptor.media_type:
            # Distribution keeps the global media type when the repository's is empty.
            descriptor = Descriptor(media_type, descriptor.digest, descriptor.size)
        return descriptor

    async def set_linked(self, repository: str, descriptor: Descriptor) -> None:
        validate_name(repository)
        digest = descriptor.digest
        blob_key = _blob_key(digest)
        set_key = _repository_set_key(repository)
        repository_key = _repository_blob_key(repository, digest)

        def build(pipe: Pipeline) -> None:
            pipe.hset(blob_key, mapping={"digest": str(digest), "size": descriptor.size})
            pipe.hsetnx(blob_key, "mediatype", descriptor.media_type)
            pipe.hset(repository_key, "mediatype", descriptor.media_type)
            pipe.sadd(set_key, str(digest))
            for key in (blob_key, repository_key, set_key):
                self._expire(pipe, key)

        await self._execute(build)

    async def clear_linked(self, repository: str, digest: Digest) -> None:
        validate_name(repository)
        await self._clear(("link", repository, digest))

    # -- the machinery --------------------------------------------------------------------

    async def _clear(self, clear: _Clear) -> None:
        # Written ahead: _execute replays it, and keeps it until Redis acknowledges.
        self._generation += 1
        self._pending.pop(clear, None)
        self._pending[clear] = self._generation
        if len(self._pending) > MAX_PENDING_CLEARS:
            dropped = next(iter(self._pending))
            del self._pending[dropped]
            log.error(
                "more than %d blob descriptor cache clears could not reach Redis at %s; "
                "dropped the one for %s, whose entry may be served for up to %s s",
                MAX_PENDING_CLEARS,
                self._where,
                dropped[2],
                self._ttl,
            )
        await self._execute(lambda pipe: None)

    async def _execute(self, build: Callable[[Pipeline], object]) -> list[Any] | None:
        """Pending clears, then ``build``'s commands, in one round trip; None when Redis failed."""
        journal = list(self._pending.items())
        pipe = self._client.pipeline(transaction=False)
        for (kind, repository, digest), _ in journal:
            if kind == "blob":
                pipe.delete(_blob_key(digest))
            else:
                pipe.srem(_repository_set_key(repository), str(digest))
                pipe.delete(_repository_blob_key(repository, digest))
        replayed = len(pipe)
        build(pipe)
        try:
            results = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            self._trouble("unavailable", exc)
            return None
        self._reached()
        for clear, generation in journal:
            if self._pending.get(clear) == generation:
                del self._pending[clear]
        own = results[replayed:]
        for result in own:
            if isinstance(result, Exception):
                self._trouble("refused a command", result)
                return None
        return own

    async def _on_connect(self, connection: AbstractConnection) -> None:
        """redis-py's connect hook: its own handshake, then vetting the server's entries."""
        await connection.on_connect()
        await self._vet(connection)

    async def _vet(self, connection: AbstractConnection) -> None:
        """Drop the entries of a Redis that came back with data from before (module docstring)."""
        try:
            info = _info(_text(await _command(connection, "INFO")) or "")
        except ResponseError as exc:
            if not self._blind:
                self._blind = True
                log.warning(
                    "Redis at %s refuses INFO (%s); a restart of it that brings back "
                    "entries of deleted blobs cannot be noticed",
                    self._where,
                    exc,
                )
            return
        run_id = info.get("run_id")
        if run_id is None or run_id == self._vetted:
            return
        async with self._vetting:
            if run_id == self._vetted:
                return
            started_empty = (
                info.get("rdb_last_load_keys_loaded") == "0" and info.get("aof_enabled") == "0"
            )
            vetted = started_empty or _text(await _command(connection, "GET", VETTED_KEY)) == run_id
            if not vetted:
                dropped = await _drop_entries(connection)
                await _command(connection, "SET", VETTED_KEY, run_id)
                log.warning(
                    "the Redis server at %s started with data from before (run id %s); "
                    "dropped its %d blob descriptor cache keys, which may describe blobs "
                    "deleted since",
                    self._where,
                    run_id,
                    dropped,
                )
            self._vetted = run_id

    def _expire(self, pipe: Pipeline, key: str) -> None:
        if self._ttl is not None:
            pipe.expire(key, self._ttl)

    def _descriptor(self, digest: Digest, fields: object) -> Descriptor | None:
        """The global hash's ``[digest, size, mediatype]`` as a descriptor; None if unusable."""
        if not isinstance(fields, list) or len(fields) != 3:
            return None
        stored, size, media_type = (_text(field) for field in fields)
        # Distribution's rule: without digest and size there is no entry (an old
        # "length" field instead of "size" migrates by missing).
        if stored is None or size is None:
            return None
        try:
            # A Go registry may file a descriptor under another algorithm's digest
            # and store the canonical one; like Distribution, answer with what is stored.
            parsed = Digest.parse(stored)
            length = int(size)
        except (DigestInvalid, ValueError):
            self._trouble("holds a malformed entry", ValueError(f"{_blob_key(digest)}"))
            return None
        if length < 0:
            return None
        return Descriptor(media_type or OCTET_STREAM, parsed, length)

    def _trouble(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        self._unavailable = self._unavailable or what == "unavailable"
        now = time.monotonic()
        if now < self._next_warning:
            self._suppressed += 1
            return
        self._next_warning = now + self._warning_interval
        suppressed, self._suppressed = self._suppressed, 0
        if self._pending:
            log.error(
                "Redis at %s %s (%s: %s); serving blob descriptors from storage; "
                "clears waiting to reach it: %d (until they do or expire in %s s, other "
                "registry processes may serve those entries); "
                "%d more failures since the last report",
                self._where,
                what,
                type(exc).__name__,
                exc,
                len(self._pending),
                self._ttl,
                suppressed,
            )
        else:
            log.warning(
                "Redis at %s %s (%s: %s); serving blob descriptors from storage; "
                "%d more failures since the last report",
                self._where,
                what,
                type(exc).__name__,
                exc,
                suppressed,
            )

    def _reached(self) -> None:
        if self._unavailable:
            self._unavailable = False
            log.info("Redis at %s is reachable again", self._where)


# -- vetting a server ---------------------------------------------------------------------


async def _command(connection: AbstractConnection, *args: str | int) -> Any:
    await connection.send_command(*args)
    return await connection.read_response()


def _info(text: str) -> dict[str, str]:
    """INFO's ``field:value`` lines."""
    fields = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon and not name.startswith("#"):
            fields[name] = value.strip()
    return fields


async def _drop_entries(connection: AbstractConnection) -> int:
    dropped = 0
    for pattern in _ENTRY_PATTERNS:
        cursor = "0"
        while True:
            reply = await _command(connection, "SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            if not isinstance(reply, list) or len(reply) != 2 or not isinstance(reply[1], list):
                # A RedisError, so the caller takes it as Redis failing: a miss, never a 500.
                raise ResponseError(f"SCAN answered {reply!r:.100}")
            cursor, keys = _text(reply[0]) or "0", reply[1]
            if keys:
                await _command(connection, "DEL", *keys)
                dropped += len(keys)
            if cursor == "0":
                break
    return dropped


# -- building a client --------------------------------------------------------------------


def _retry_once() -> Retry:
    # redis-py retries 10 times with backoff by default: seconds of waiting per call
    # for a cache that is only there to save milliseconds. One retry on a fresh
    # connection still rides out a server restart that killed a pooled connection.
    return Retry(NoBackoff(), 1)


def client_from_config(redis_config: config.Redis) -> Redis:
    """A client of the server the ``redis`` section names, with its timeouts, pool and TLS."""
    addresses = redis_config.addresses
    if not addresses:
        raise ConfigError("redis.addr", "the redis blob descriptor cache needs an address")
    if len(addresses) > 1:
        raise ConfigError(
            "redis.addrs", "cargohold speaks to one Redis server; cluster is not supported"
        )
    host, port = _split_address(addresses[0])
    read_timeout = _timeout(redis_config.readtimeout, _READ_TIMEOUT)
    write_timeout = _timeout(redis_config.writetimeout, read_timeout)
    # redis-py has one timeout for both directions: the longer one, so neither is cut short.
    socket_timeout = (
        None if read_timeout is None or write_timeout is None else max(read_timeout, write_timeout)
    )
    max_connections = redis_config.pool.maxactive or redis_config.poolsize
    kwargs: dict[str, Any] = {
        "host": host,
        "port": port,
        "db": redis_config.db,
        "username": redis_config.username or None,
        "password": redis_config.password or None,
        "socket_connect_timeout": _timeout(redis_config.dialtimeout, _DIAL_TIMEOUT),
        "socket_timeout": socket_timeout,
        "retry": _retry_once(),
        "decode_responses": True,
    }
    tls = redis_config.tls
    if tls.enabled or tls.certificate or tls.key:
        kwargs["connection_class"] = SSLConnection
        kwargs["ssl_certfile"] = tls.certificate or None
        kwargs["ssl_keyfile"] = tls.key or None
        # Distribution hands these to Go's tls.Config.ClientCAs, which a client never
        # consults; whoever sets them means "the CAs my Redis server's certificate is
        # signed by", so they are trusted here in addition to the system's.
        if tls.rootcas or tls.clientcas:
            kwargs["ssl_ca_data"] = _read_cas([*tls.rootcas, *tls.clientcas])
    pool = BlockingConnectionPool(
        # go-redis: 10 connections per CPU unless told, and a caller waits for a free
        # one for the read timeout plus a second before giving up (a miss here).
        max_connections=max_connections or 10 * (os.cpu_count() or 1),
        timeout=None if socket_timeout is None else socket_timeout + 1,
        **kwargs,
    )
    return Redis.from_pool(pool)


def _timeout(value: float, default: float | None) -> float | None:
    # go-redis: 0 takes the default, a negative duration means no timeout at all.
    if value < 0:
        return None
    return value or default


def _split_address(address: str) -> tuple[str, int]:
    """``host:port``, ``[v6]:port`` or ``host`` (port 6379)."""
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port = rest.removeprefix(":")
    elif address.count(":") == 1:
        host, _, port = address.partition(":")
    else:
        host, port = address, ""
    try:
        return host, int(port) if port else _DEFAULT_PORT
    except ValueError:
        raise ConfigError("redis.addr", f"not host:port: {address!r}") from None


def _read_cas(paths: list[str]) -> str:
    pems = []
    for path in paths:
        try:
            with open(path, encoding="ascii") as file:
                pems.append(file.read())
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError("redis.tls.rootcas", f"cannot read {path}: {exc}") from None
    return "\n".join(pems)


def _redact(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or parts.path or "?"
    where = f"{host}:{parts.port}" if parts.port else host
    return f"{where}{parts.path}" if parts.hostname and parts.path else where


def _describe(client: Redis) -> str:
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return str(kwargs["path"])
    return f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', _DEFAULT_PORT)}"
