"""Events in a Redis stream: one queue for every process of every host on one storage.

With ``notifications.spool.redis: true``, events go to the stream
``cargohold:notifications`` on the server of the ``redis`` section instead of
a spool file. Each endpoint is a consumer group of that stream, read by one
consumer (``deliverer``) in whichever process leads: the group's pending
entries are what the last leader took and did not finish, so a new leader
sends them first. Leading is a lease (``SET NX PX``) the leader renews; when
it dies, the lease runs out and another process leads. Every process also
keeps a lease of its own alive (``…:alive:<token>``), so that an intent
whose process died can be told from one still being written.

An entry is as durable as the server makes it: with ``appendonly yes`` and
``appendfsync always`` a reply means the entry is on the server's disk;
with Redis' defaults it is in its memory (and its replicas').
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import suppress
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from cargohold.notifications.backlog import Backlog, Position, retrieve, woken

__all__ = ["RedisEventLog"]

log = logging.getLogger("cargohold.notifications")

STREAM = "cargohold:notifications"
LEADER = "cargohold:notifications:leader"
ALIVE = "cargohold:notifications:alive:"
DEAD = "cargohold:notifications:dead:"
CONSUMER = "deliverer"
#: Seconds a lease lasts unless renewed; renewed three times as often.
LEASE = 3.0
BATCH = 100
POLL = 0.2

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class RedisEventLog:
    """The stream, for one process: appends in order, and leadership of delivery."""

    def __init__(self, client: Redis, *, lease: float = LEASE) -> None:
        self.appended = asyncio.Event()
        self._client = client
        self._lease = lease
        # The pid first: an operator (or a test) can tell which process leads.
        self._token = f"{os.getpid()}-{uuid.uuid4().hex}"
        self._queue: list[tuple[bytes, asyncio.Future[None]]] = []
        self._writer: asyncio.Future[None] | None = None
        self._renewing: asyncio.Future[None] | None = None
        self._leading = False
        #: Set when this process led and lost its lease: its deliveries must stop.
        self.lost = asyncio.Event()

    # -- every process ------------------------------------------------------------------

    async def open(self) -> None:
        # A Redis that is down does not keep the registry from starting: pulls are served,
        # writes answer 503 until their events can be kept, and the lease follows.
        try:
            await self._client.set(ALIVE + self._token, "1", px=int(self._lease * 1000))
        except (RedisError, OSError) as exc:
            log.warning("notifications: redis: %s", exc)
        self._renewing = asyncio.ensure_future(self._renew())

    async def close(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            with suppress(asyncio.CancelledError):
                await self._renewing
        if self._writer is not None:
            with suppress(RedisError, OSError):
                await self._writer
        with suppress(RedisError, OSError):
            await self.step_down()
            await self._client.delete(ALIVE + self._token)
        await self._client.aclose()

    def writer(self) -> dict[str, Any]:
        return {"token": self._token}

    def append(self, lines: bytes) -> None:
        self.append_syncing(lines).add_done_callback(retrieve)

    async def append_durably(self, lines: bytes) -> None:
        await self.append_syncing(lines)

    def append_syncing(self, lines: bytes) -> asyncio.Future[None]:
        """Queue the lines; one task sends what is queued, in order, in one round trip."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((lines, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write())
        return done

    async def _write(self) -> None:
        while self._queue:
            batch, self._queue = self._queue, []
            pipe = self._client.pipeline(transaction=False)
            for lines, _ in batch:
                for line in lines.splitlines():
                    pipe.xadd(STREAM, {"e": line})
            try:
                await pipe.execute()
            except (RedisError, OSError) as exc:
                for _, done in batch:
                    if not done.done():
                        done.set_exception(OSError(f"redis: {exc}"))
                continue
            for _, done in batch:
                if not done.done():
                    done.set_result(None)
            self.appended.set()

    async def _renew(self) -> None:
        every = self._lease / 3
        milliseconds = int(self._lease * 1000)
        while True:
            await asyncio.sleep(every)
            try:
                await self._client.set(ALIVE + self._token, "1", px=milliseconds)
                if self._leading:
                    kept = await self._client.eval(
                        _RENEW, 1, LEADER, self._token, str(milliseconds)
                    )
                    if not kept:
                        log.warning("notifications: this process lost the lead")
                        self._leading = False
                        self.lost.set()
            except (RedisError, OSError) as exc:
                log.warning("notifications: redis: %s", exc)

    # -- the leader -----------------------------------------------------------------------

    async def lead(self) -> bool:
        try:
            taken = await self._client.set(LEADER, self._token, nx=True, px=int(self._lease * 1000))
        except (RedisError, OSError) as exc:
            log.warning("notifications: redis: %s", exc)
            return False
        self._leading = bool(taken)
        if self._leading:
            self.lost.clear()
        return self._leading

    async def step_down(self) -> None:
        if self._leading:
            self._leading = False
            await self._client.eval(_RELEASE, 1, LEADER, self._token)

    def backlog(self, endpoint: str) -> RedisBacklog:
        return RedisBacklog(self, self._client, endpoint)

    async def reclaim(self, backlogs: list[Backlog]) -> None:
        positions = [str(backlog.position) for backlog in backlogs]
        if not positions or any(p == "0-0" for p in positions):
            return
        oldest = min(positions, key=_id_key)
        with suppress(RedisError, OSError):
            await self._client.xtrim(STREAM, minid=oldest, approximate=False)

    async def dead(self, endpoint: str) -> list[bytes]:
        return [line for _, line in _entries(await self._client.xrange(DEAD + endpoint))]

    async def replay(self, endpoint: str) -> int:
        from cargohold.notifications.spool import for_only

        entries = _entries(await self._client.xrange(DEAD + endpoint))
        lines = [for_only(line, endpoint) for _, line in entries]
        kept = [line for line in lines if line is not None]
        pipe = self._client.pipeline(transaction=True)
        for line in kept:
            pipe.xadd(STREAM, {"e": line.rstrip(b"\n")})
        for entry_id, _ in entries:
            pipe.xdel(DEAD + endpoint, entry_id)
        await pipe.execute()
        return len(kept)


def _entries(raw: Any) -> list[tuple[str, bytes]]:
    """Stream entries as redis-py gives them (decoded): each id and its line."""
    return [(str(entry_id), str(fields["e"]).encode()) for entry_id, fields in raw or []]


def _id_key(entry_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition("-")
    return int(milliseconds), int(sequence or 0)


class RedisBacklog:
    """An endpoint's consumer group on the stream (a ``Backlog``)."""

    def __init__(self, events: RedisEventLog, client: Redis, endpoint: str) -> None:
        self._events = events
        self._client = client
        self._group = endpoint
        self._created = False
        #: Its own pending entries first (a previous leader's unfinished), then new ones.
        self._from = "0"
        self._position = "0-0"

    @property
    def position(self) -> Position:
        return self._position

    async def _ensure_group(self) -> None:
        if self._created:
            return
        try:
            await self._client.xgroup_create(STREAM, self._group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._created = True

    async def batch(self) -> list[tuple[bytes, Position]]:
        try:
            await self._ensure_group()
            found: Any = await self._client.xreadgroup(
                self._group, CONSUMER, {STREAM: self._from}, count=BATCH
            )
        except (RedisError, OSError) as exc:
            if "NOGROUP" in str(exc):
                # The stream is gone (a Redis that restarted without persistence): anew.
                self._created, self._from = False, "0"
            log.warning("notifications: redis: %s", exc)
            return []
        entries = _entries(found[0][1] if found else [])
        if not entries and self._from == "0":
            self._from = ">"  # nothing left of a previous leader's: on to new entries
            return await self.batch()
        return [(line, entry_id) for entry_id, line in entries]

    async def done(self, position: Position) -> None:
        assert isinstance(position, str)
        while True:
            try:
                await self._client.xack(STREAM, self._group, position)
                break
            except (RedisError, OSError) as exc:
                log.warning("notifications: redis: %s", exc)
                await asyncio.sleep(POLL)
        self._position = position

    async def ahead(self, position: Position) -> AsyncIterator[tuple[bytes, Position]]:
        assert isinstance(position, str)
        start = "(" + position
        while True:
            entries = _entries(await self._client.xrange(STREAM, min=start, count=BATCH))
            if not entries:
                return
            for entry_id, line in entries:
                yield line, entry_id
            start = "(" + entries[-1][0]

    async def count(self) -> int:
        try:
            groups = await self._client.xinfo_groups(STREAM)
        except (RedisError, OSError):
            return 0
        for group in groups:
            if group.get("name") == self._group:
                return int(group.get("lag") or 0) + int(group.get("pending") or 0)
        return 0

    async def wait(self) -> None:
        # Another process's appends set nothing here: look again after POLL at the latest.
        await woken(self._events.appended, POLL)

    async def bury(self, line: bytes) -> None:
        await self._client.xadd(DEAD + self._group, {"e": line.rstrip(b"\n")})

    async def alive(self, writer: Mapping[str, Any]) -> bool:
        token = writer.get("token")
        if not token:
            return False
        return bool(await self._client.exists(ALIVE + str(token)))
