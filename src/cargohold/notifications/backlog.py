"""Where events wait: the seam between the notifier and the store that keeps them.

Two stores keep events (``EventLog``): a spool file on a local disk shared by
the processes of one host (``spool.py``), and a Redis stream shared by every
host (``redisstream.py``). Each gives an endpoint's delivery its ``Backlog``:
the events past where that endpoint has got to, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

__all__ = ["Backlog", "EventLog", "Position", "retrieve", "stop_if_cancelled", "woken"]

#: Where an event is in its store: a byte offset in a spool file, an id in a stream.
Position = int | str


async def woken(event: asyncio.Event, within: float) -> None:
    """Return once ``event`` is next set (it is cleared first), or after ``within`` seconds.

    Not ``asyncio.timeout``: on Python 3.11 a cancellation that arrives as the
    timeout fires can be taken for the timeout's own, and the task then runs on
    as if never cancelled. ``asyncio.wait`` times out without cancelling anyone.
    """
    event.clear()
    waiter = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter}, timeout=within)
    finally:
        waiter.cancel()


def retrieve(future: asyncio.Future[None]) -> None:
    """A done callback for a future no one may await: its failure is not "never retrieved"."""
    if not future.cancelled():
        future.exception()


def stop_if_cancelled() -> None:
    """Raise ``CancelledError`` if this task was cancelled and the cancellation got lost
    (in a timeout that fired at the same moment: see ``woken``)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class Backlog(Protocol):
    """One endpoint's events, from where its delivery has got to."""

    @property
    def position(self) -> Position:
        """Where the endpoint has got to: every event up to here was dealt with."""
        ...

    async def batch(self) -> list[tuple[bytes, Position]]:
        """The next events past the cursor, each with its position; [] when there are none."""
        ...

    async def done(self, position: Position) -> None:
        """The event at ``position`` was dealt with: move the cursor past it."""
        ...

    def ahead(self, position: Position) -> AsyncIterator[tuple[bytes, Position]]:
        """Every event after ``position``, to the end (to find an intent's outcome)."""
        ...

    async def count(self) -> int:
        """How many events are past the cursor."""
        ...

    async def wait(self) -> None:
        """Return when new events may have come (or after a short while)."""
        ...

    async def bury(self, line: bytes) -> None:
        """Keep an event given up on among the endpoint's dead letters."""
        ...

    async def alive(self, writer: Mapping[str, Any]) -> bool:
        """Whether the process that wrote an intent (its ``intent`` record) still runs."""
        ...


class EventLog(Protocol):
    """The store of events every process serving the storage appends to."""

    #: Set on every append in this process, for its delivery to look at once.
    appended: asyncio.Event
    #: Set when this process led and lost the lead: its deliveries must stop.
    lost: asyncio.Event

    async def open(self) -> None: ...

    async def close(self) -> None:
        """Step down if leading, and let go of what ``open`` took."""
        ...

    def append(self, lines: bytes) -> None:
        """Append lines at once, without waiting for the disk (a pull's event)."""
        ...

    async def append_durably(self, lines: bytes) -> None:
        """Append lines and return once they are kept for good."""
        ...

    def append_syncing(self, lines: bytes) -> asyncio.Future[None]:
        """Append lines; the future is done once they are kept for good."""
        ...

    def writer(self) -> dict[str, Any]:
        """What identifies this process in an intent, for ``Backlog.alive``."""
        ...

    async def lead(self) -> bool:
        """Try to become the one process that delivers; True while it is."""
        ...

    async def step_down(self) -> None: ...

    def backlog(self, endpoint: str) -> Backlog: ...

    async def reclaim(self, backlogs: list[Backlog]) -> None:
        """Give back what every endpoint's backlog is past."""
        ...

    async def dead(self, endpoint: str) -> list[bytes]:
        """The endpoint's dead letters, oldest first."""
        ...

    async def replay(self, endpoint: str) -> int:
        """Put the endpoint's dead letters back, for it alone; how many."""
        ...
