"""Delivery to one endpoint: in spool order, each event until it is taken, or dead-lettered.

Distribution's rules (``notifications/sinks.go``, ``http.go``): a POST is
accepted when the receiver answers 2xx or 3xx; anything else, or no answer
within ``timeout``, is a failure and the event is sent again at once, until
``threshold`` failures in a row; after that, one try per ``backoff`` until
one succeeds (its breaker). Events are sent one at a time, each in an
envelope of its own, so the order is the spool's.

Beyond Distribution: an event still undelivered ``maxage`` after it happened
goes to the endpoint's dead letters, where ``cargohold notifications``
lists and replays it; filters by repository glob and tag pattern; a signature
over the body; CloudEvents.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, Protocol

import aiohttp

from cargohold import config as settings
from cargohold.notifications import envelope
from cargohold.notifications.backlog import Backlog, Position, stop_if_cancelled

__all__ = ["Delivery", "DeliveryWatch", "Filter"]

log = logging.getLogger("cargohold.notifications")

#: The most of a receiver's reply that is read: its status is all that counts.
REPLY_LIMIT = 64 * 1024
#: How many redirects are followed (within the timeout) before it counts as a failure.
REDIRECTS = 5
#: How often an intent's outcome is looked for while its write is under way.
SETTLE_POLL = 0.005

#: Whether an intent's write was made, by the storage: the event to tell, or None.
Settle = Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]


class Filter:
    """Which events an endpoint wants: Distribution's ignores, and cargohold's filters."""

    def __init__(self, endpoint: settings.Endpoint) -> None:
        self._media_types = frozenset(endpoint.ignoredmediatypes + endpoint.ignore.mediatypes)
        self._actions = frozenset(endpoint.ignore.actions)
        self._repositories = [re.compile(fnmatch.translate(g)) for g in endpoint.repositories]
        self._tags = [re.compile(pattern) for pattern in endpoint.tags]

    @property
    def pulls(self) -> bool:
        return "pull" not in self._actions

    def wants(self, event: Mapping[str, Any]) -> bool:
        target = event["target"]
        if event["action"] in self._actions or target.get("mediaType") in self._media_types:
            return False
        if self._repositories and not any(
            glob.fullmatch(target["repository"]) for glob in self._repositories
        ):
            return False
        tag = target.get("tag")
        return not (self._tags and (tag is None or not any(p.fullmatch(tag) for p in self._tags)))


class DeliveryWatch(Protocol):
    """Told how delivery goes, per endpoint (``metrics``: ``registry_notifications_*``)."""

    def event(self, endpoint: str) -> None:
        """An event the endpoint wants is up for delivery."""

    def answered(self, endpoint: str, status: int) -> None: ...

    def unanswered(self, endpoint: str) -> None:
        """No answer: refused, reset, timed out."""

    def buried(self, endpoint: str) -> None:
        """An event was dead-lettered."""

    def pending(self, endpoint: str, count: int) -> None:
        """Events in the spool past the endpoint's cursor."""


def _age(event: Mapping[str, Any]) -> float:
    try:
        when = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return 0.0
    return time.time() - when


class Delivery:
    """Sends one endpoint's backlog, in order, from where it has got to."""

    def __init__(
        self,
        endpoint: settings.Endpoint,
        backlog: Backlog,
        session: aiohttp.ClientSession,
        *,
        watch: DeliveryWatch | None = None,
        storage: Settle | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoint = endpoint
        self.filter = Filter(endpoint)
        self.backlog = backlog
        self._watch = watch
        self._storage = storage
        self._session = session
        self._clock = clock
        self._recent_failures = 0
        self._last_failure = 0.0
        self._pending = 0
        headers: dict[str, str] = {}
        for name, values in endpoint.headers.items():
            headers[name] = ", ".join(values)
        self._headers = headers

    async def _count_pending(self) -> None:
        """Count the events past the cursor: at each batch, and while an event is stuck."""
        if self._watch is None:
            return
        self._pending = await self.backlog.count()
        self._watch.pending(self.endpoint.name, self._pending)

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            stop_if_cancelled()
            await self._count_pending()
            batch = await self.backlog.batch()
            for line, position in batch:
                await self._deliver_line(line, position)
                await self.backlog.done(position)
                if self._watch is not None:
                    self._pending = max(self._pending - 1, 0)
                    self._watch.pending(self.endpoint.name, self._pending)
            if not batch:
                await self.backlog.wait()

    async def _deliver_line(self, line: bytes, after: Position) -> None:
        try:
            kept = json.loads(line)
            if "outcome" in kept:
                return  # told in its intent's place
            if "intent" in kept:
                settled = await self._settle(kept, after)
                if settled is None:
                    return  # the write was not made
                kept = settled
            event = kept["event"]
        except (ValueError, KeyError, TypeError):
            if line.strip():
                log.warning("notifications: skipping a damaged spool line of %d bytes", len(line))
            return
        only = kept.get("only")
        if (only is not None and only != self.endpoint.name) or not self.filter.wants(event):
            return
        if self._watch is not None:
            self._watch.event(self.endpoint.name)
        await self.deliver(kept)

    async def deliver(self, kept: Mapping[str, Any]) -> None:
        """Send one kept event until the receiver takes it, or it is too old and dead-lettered."""
        body = self._body(kept)
        while True:
            stop_if_cancelled()
            if not self._proceed():
                await asyncio.sleep(self._wait())
                continue
            if await self._post(body):
                self._recent_failures = 0
                return
            self._recent_failures += 1
            self._last_failure = self._clock()
            await self._count_pending()
            if _age(kept["event"]) > self.endpoint.maxage:
                await self._bury(kept)
                return

    async def _settle(self, intent: dict[str, Any], after: Position) -> dict[str, Any] | None:
        """An intent's outcome: the event the write made, or None when it was not made.

        The outcome follows the intent in the spool, once the write is done. While
        the process that wrote the intent lives, it will come; once that process
        is gone without one, the storage says whether the write was made.
        """
        wanted = intent["event"]["id"]
        marker = f'"outcome":"{wanted}"'.encode()
        writer = intent["intent"]
        while True:
            alive = await self.backlog.alive(writer)
            async for line, position in self.backlog.ahead(after):
                after = position
                if marker in line:
                    outcome: dict[str, Any] = json.loads(line)
                    return outcome if "event" in outcome else None
            if not alive:  # and it wrote no outcome before it died: none will come
                return await self._settled_by_storage(intent)
            await asyncio.sleep(SETTLE_POLL)
            stop_if_cancelled()

    async def _settled_by_storage(self, intent: dict[str, Any]) -> dict[str, Any] | None:
        if self._storage is None:
            return intent
        return await self._storage(intent)

    def _proceed(self) -> bool:
        # Distribution's breaker: retry at once below the threshold, then once per backoff.
        return (
            self._recent_failures < self.endpoint.failures
            or self._clock() >= self._last_failure + self.endpoint.delay
        )

    def _wait(self) -> float:
        return max(self._last_failure + self.endpoint.delay - self._clock(), 0.0)

    def _body(self, kept: Mapping[str, Any]) -> bytes:
        if self.endpoint.format == "cloudevents":
            return envelope.cloudevent(kept)
        return envelope.distribution([kept["event"]])

    async def _post(self, body: bytes) -> bool:
        endpoint = self.endpoint
        headers = dict(self._headers)
        headers["Content-Type"] = (
            envelope.CLOUDEVENTS_MEDIA_TYPE
            if endpoint.format == "cloudevents"
            else envelope.EVENTS_MEDIA_TYPE
        )
        if endpoint.secret:
            headers[envelope.SIGNATURE_HEADER] = envelope.sign(endpoint.secret, body)
        try:
            async with asyncio.timeout(endpoint.deadline):
                async with self._session.post(
                    endpoint.url, data=body, headers=headers, max_redirects=REDIRECTS
                ) as reply:
                    status = reply.status
                    # Only the status counts; a little of the body is read so the
                    # connection can be reused, never more.
                    await reply.content.read(REPLY_LIMIT)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            if self._watch is not None:
                self._watch.unanswered(endpoint.name)
            log.warning("notifications: %s: %s", endpoint.name, exc or type(exc).__name__)
            return False
        if self._watch is not None:
            self._watch.answered(endpoint.name, status)
        if 200 <= status < 400:
            return True
        log.warning("notifications: %s answered %d", endpoint.name, status)
        return False

    async def _bury(self, kept: Mapping[str, Any]) -> None:
        """Move an event that is too old to the endpoint's dead letters."""
        await self.backlog.bury(json.dumps(dict(kept)).encode() + b"\n")
        if self._watch is not None:
            self._watch.buried(self.endpoint.name)
        log.error(
            "notifications: %s: event %s dead-lettered after %.0f s undelivered",
            self.endpoint.name,
            kept["event"].get("id"),
            _age(kept["event"]),
        )
