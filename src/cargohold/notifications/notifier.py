"""The notifier of one process: it spools every event, and delivers when it holds the lock.

Events reach it two ways through the request pipeline (``api/pipeline.py``):

- a write's (push, mount, delete) through ``commit``, which the pipeline
  awaits before the reply goes out: the event is on disk before the client
  hears the write succeeded, so no acknowledged write goes unreported;
- a pull's through ``request_finished``, as a hook, once the reply is out:
  appended without waiting for the disk (best effort, as documented).

Every process serving the storage runs one. Whichever holds the spool's
delivery lock runs a ``Delivery`` per endpoint; the others try for the lock
every ``TAKEOVER`` seconds, so when the holder dies another carries on from
the cursors it left.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Sequence
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import aiohttp

from cargohold import config as settings
from cargohold.api.events import DELETE, PULL, Event
from cargohold.api.http import origin
from cargohold.api.pipeline import Exchange
from cargohold.api.routes import Endpoint
from cargohold.digest import Digest
from cargohold.errors import ConfigError, RegistryError, StorageDriverError
from cargohold.manifest import parse_manifest
from cargohold.notifications import envelope
from cargohold.notifications.backlog import EventLog, retrieve
from cargohold.notifications.delivery import Delivery, DeliveryWatch, Filter
from cargohold.notifications.spool import Spool
from cargohold.registry import Namespace

__all__ = ["Notifier", "event_log", "spool_directory"]

log = logging.getLogger("cargohold.notifications")

#: How often a process that does not deliver tries to take over.
TAKEOVER = 1.0
#: How often what every endpoint was sent is given back, once there is this much of it.
RECLAIM_EVERY = 5.0
#: The subdirectory of a filesystem storage's root where the spool is by default.
DEFAULT_SUBDIRECTORY = Path("cargohold", "notifications")


def spool_directory(config: settings.Config) -> Path | None:
    """Where the spool is: ``notifications.spool.directory``, or beside the filesystem
    storage's ``docker/`` folder; None when neither is there to use."""
    given = config.notifications.spool.directory
    if given:
        return Path(given)
    filesystem = config.storage.filesystem
    if filesystem is not None:
        return Path(filesystem.rootdirectory) / DEFAULT_SUBDIRECTORY
    return None


def event_log(config: settings.Config, threads: Executor | None = None) -> EventLog:
    """Where the configured notifications keep their events (``ConfigError`` if nowhere)."""
    if config.notifications.spool.redis:
        if not config.redis.addresses:
            raise ConfigError("notifications.spool.redis", "needs the redis section's addr")
        if config.notifications.spool.directory:
            raise ConfigError("notifications.spool", "either a directory or redis, not both")
        from cargohold.notifications.redisstream import RedisEventLog
        from cargohold.storage.cache.redis import client_from_config

        return RedisEventLog(client_from_config(config.redis))
    directory = spool_directory(config)
    if directory is None:
        raise ConfigError(
            "notifications.spool.directory",
            "must be set: the storage is not a local filesystem to keep the spool beside",
        )
    return Spool(directory, threads)


def _source_addr(config: settings.Config) -> str:
    # As Distribution: this host's name, with the port it listens on.
    http = config.http
    try:
        return f"{socket.gethostname()}:{http.listen_port}"
    except (ValueError, OSError):
        return http.addr


def _encode(kept: dict[str, Any]) -> bytes:
    return json.dumps(kept, separators=(",", ":")).encode() + b"\n"


class Intent:
    """A manifest push's event, kept before the push (``Journal.intend``).

    The spool then holds the intent, and later its outcome: the event as the
    write made it (``confirm``), or nothing to tell (``abort``). Delivery tells
    the outcome in the intent's place. An intent whose process died before
    its outcome is settled by looking at the storage (``Delivery``).
    """

    def __init__(
        self, notifier: Notifier, exchange: Exchange, event_id: str, synced: asyncio.Future[None]
    ) -> None:
        self._notifier = notifier
        self._exchange = exchange
        self._id = event_id
        self._synced = synced

    def confirm(self, event: Event) -> None:
        kept = self._notifier._record(self._exchange, event)
        kept["event"]["id"] = self._id
        kept["outcome"] = self._id
        self._outcome(kept)
        self._exchange.kept = self._synced

    def abort(self) -> None:
        self._outcome({"outcome": self._id})

    def _outcome(self, kept: dict[str, Any]) -> None:
        # Not fsynced: lost only with the machine, and then the storage settles the intent.
        try:
            self._notifier.log.append(_encode(kept))
        except OSError as exc:
            log.warning("notifications: the outcome of event %s was not spooled: %s", self._id, exc)


class Notifier:
    """Spools each event of the configured endpoints' interest, and delivers them."""

    def __init__(
        self,
        config: settings.Config,
        events: EventLog,
        *,
        scheme: str = "http",
        watch: DeliveryWatch | None = None,
        registry: Namespace | None = None,
    ) -> None:
        notifications = config.notifications
        self.endpoints = notifications.active
        self.log = events
        self._references = notifications.events.includereferences
        self._pulls = any(Filter(endpoint).pulls for endpoint in self.endpoints)
        self._source = {"addr": _source_addr(config), "instanceID": str(uuid.uuid4())}
        http = config.http
        self._host, self._relative, self._scheme = http.host, http.relativeurls, scheme
        self._prefix = http.prefix.rstrip("/")
        self._watch = watch
        self._registry = registry

    # -- the pipeline's side ------------------------------------------------------------

    def request_started(self, exchange: Exchange) -> None:
        pass

    def request_finished(self, exchange: Exchange) -> None:
        event = exchange.event
        if event is None or event.action != PULL or not self._pulls or exchange.status >= 300:
            return
        try:
            self.log.append(self._line(exchange, event))
        except OSError as exc:  # a pull's event is best effort: the request was answered
            log.warning("notifications: a pull event was not spooled: %s", exc)

    async def commit(self, exchange: Exchange) -> None:
        """Put a write's event on disk before its reply goes out; raises ``OSError`` if not."""
        event = exchange.event
        if event is None or event.action == PULL:
            return
        lines = self._line(exchange, event)
        for tag in event.untagged:  # as Distribution: a tag delete for each tag it took along
            lines += self._line(exchange, Event(DELETE, event.repository, tag=tag))
        await self.log.append_durably(lines)

    def intend(self, exchange: Exchange, event: Event) -> Intent:
        """Keep ``event`` before its write: the fsync runs while the write is made."""
        kept = self._record(exchange, event)
        kept["intent"] = self.log.writer()
        try:
            synced = self.log.append_syncing(_encode(kept))
        except OSError as exc:
            synced = asyncio.get_running_loop().create_future()
            synced.set_exception(exc)
        # An aborted write never awaits it: its failure must not be reported as unretrieved.
        synced.add_done_callback(retrieve)
        return Intent(self, exchange, kept["event"]["id"], synced)

    def _line(self, exchange: Exchange, event: Event) -> bytes:
        return _encode(self._record(exchange, event))

    def _record(self, exchange: Exchange, event: Event) -> dict[str, Any]:
        headers = exchange.headers
        route = exchange.route
        manifest = route is not None and route.endpoint is Endpoint.MANIFEST
        kind = "tag" if event.digest is None else "manifest" if manifest else "blob"
        url = ""
        if event.action != DELETE and event.digest is not None:
            base = origin(
                headers, self._scheme, headers.get("Host", ""), self._host, self._relative
            )
            what = "manifests" if manifest else "blobs"
            url = f"{base}{self._prefix}/v2/{event.repository}/{what}/{event.digest}"
        return envelope.record(
            event,
            kind=kind,
            when=exchange.started or time.time(),
            url=url,
            request={
                "id": exchange.id,
                "addr": exchange.remote,
                "host": headers.get("Host", ""),
                "method": exchange.method,
                "useragent": headers.get("User-Agent", ""),
            },
            actor=exchange.user,
            source=self._source,
            references=self._references_of(event) if self._references else None,
        )

    def _references_of(self, event: Event) -> list[dict[str, Any]] | None:
        """What a pushed or pulled manifest references, as Distribution lists it."""
        if event.payload is None:
            return None
        try:
            manifest = parse_manifest(event.payload, event.media_type)
        except RegistryError:
            return None  # stored long ago under rules since tightened: no references to tell
        return [descriptor.to_json() for descriptor in manifest.references()]

    async def _reclaiming(self, deliveries: list[Delivery]) -> None:
        """Give back what every endpoint was sent, every ``RECLAIM_EVERY`` seconds."""
        backlogs = [delivery.backlog for delivery in deliveries]
        while True:
            await asyncio.sleep(RECLAIM_EVERY)
            try:
                await self.log.reclaim(backlogs)
            except OSError as exc:
                log.warning("notifications: the spool could not be reclaimed: %s", exc)

    async def _settle(self, intent: dict[str, Any]) -> dict[str, Any] | None:
        """Whether an intent's manifest push was made, by the storage; the event if it was."""
        assert self._registry is not None
        target = intent["event"]["target"]
        while True:
            try:
                repository = self._registry.repository(target["repository"])
                manifest = await repository.manifests.get(Digest.parse(target["digest"]))
            except RegistryError:
                return None  # not there: the push was not made
            except StorageDriverError as exc:
                log.warning("notifications: cannot settle event %s yet: %s", target, exc)
                await asyncio.sleep(TAKEOVER)
                continue
            settled = {key: value for key, value in intent.items() if key != "intent"}
            target["mediaType"] = manifest.media_type  # as stored, not as announced
            return settled

    # -- delivery -----------------------------------------------------------------------

    async def open(self) -> None:
        """Open the log: before the first request, so that no event finds it closed."""
        await self.log.open()

    async def running(self) -> None:
        """Deliver whenever this process leads, until cancelled; then close the log."""
        try:
            while True:
                # The leader is another process: no event here says when it lets go.
                while not await self.log.lead():  # noqa: ASYNC110
                    await asyncio.sleep(TAKEOVER)
                log.info("notifications: this process delivers (pid %d)", os.getpid())
                await self._deliver()  # until this process loses the lead
        finally:
            await self.log.close()  # stepping down, if it leads

    async def _deliver(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, force_close=True)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            deliveries = [
                Delivery(
                    endpoint,
                    self.log.backlog(endpoint.name),
                    session,
                    watch=self._watch,
                    storage=self._settle if self._registry is not None else None,
                )
                for endpoint in self.endpoints
            ]
            work: list[Awaitable[object]] = [delivery.run() for delivery in deliveries]
            work += [self._reclaiming(deliveries), self.log.lost.wait()]
            tasks = [asyncio.ensure_future(each) for each in work]
            try:
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await _cancelled(tasks)
                for task in tasks:
                    outcome = None if task.cancelled() else task.exception()
                    if isinstance(outcome, Exception):
                        # A bug: delivery starts over (from the cursors) rather than stop.
                        log.error("notifications: delivery failed", exc_info=outcome)


async def _cancelled(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    A task can lose a cancellation (a client library's own timeout firing at the same
    moment may take it for its own), and would then run on, and a plain wait for it
    never end: so whatever is still running after a second is cancelled again.
    ``asyncio.wait`` never cancels what it waits for, so a cancellation of this task
    while it waits reaches it and is not taken for one of the tasks' own.
    """
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=1.0)
