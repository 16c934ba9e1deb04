"""A token bucket kept as one number: when it will be full again.

A bucket holds up to ``burst`` tokens and gains ``rate`` a second; a request
takes one, and waits when there is none. Kept as counts of tokens, it needs
two numbers (tokens, and when they were counted) and a refill on every
look. Kept as its *theoretical arrival time* (the generic cell rate
algorithm, GCRA), it needs one: ``tat``, the moment at which the bucket would
be full again if no request came. A request at ``now`` moves it one
``interval`` (``1/rate``) later, and is admitted while that leaves it at most
``span`` (``burst`` intervals) ahead of ``now``. A bucket whose ``tat`` is past
is full, so it is the same as a bucket never seen: a store may forget it,
and a Redis key may expire then.

Times are whole microseconds (``time.time_ns() // 1000``): the sums are exact,
so the last of ``burst`` tokens is never lost to rounding, and Lua's doubles
hold them exactly too (``redis.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Buckets", "Charge", "Clock", "Limit", "admit", "microseconds"]

#: The time in whole microseconds; a test gives a clock of its own.
Clock = Callable[[], int]


def microseconds() -> int:
    """Now, in whole microseconds of the wall clock (shared by every process of a host)."""
    return time.time_ns() // 1000


@dataclass(frozen=True, slots=True)
class Limit:
    """``rate`` requests a second on average, and up to ``burst`` at once."""

    rate: float
    burst: int
    #: Microseconds between two tokens.
    interval: int = field(init=False)
    #: How far ahead of now a bucket's ``tat`` may be: ``burst`` intervals.
    span: int = field(init=False)

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:  # the configuration refuses both first
            raise ValueError(f"a limit needs rate > 0 and burst >= 1: {self.rate}, {self.burst}")
        interval = max(1, round(1_000_000 / self.rate))
        object.__setattr__(self, "interval", interval)
        object.__setattr__(self, "span", interval * self.burst)


#: A request's charge to one bucket: the bucket's key, and its limit.
Charge = tuple[str, Limit]


def admit(tat: int, limit: Limit, now: int) -> tuple[int, int]:
    """The bucket's ``tat`` once a request at ``now`` took a token, and how long that
    request must wait first (microseconds; 0: it is admitted now).

    A ``tat`` more than ``span`` ahead (a wall clock set back, a burst lowered since)
    counts as an empty bucket, never as a longer wait.
    """
    if tat < now:
        tat = now
    elif tat > now + limit.span:
        tat = now + limit.span
    after = tat + limit.interval
    wait = after - now - limit.span
    return after, wait if wait > 0 else 0


class Buckets(Protocol):
    """Where buckets live: one process's memory, a table every worker maps, or Redis.

    A request is charged to every bucket of its ``charges`` at once: it takes a
    token from each when each has one, and from none otherwise (so a request
    refused by one bucket costs nothing in the others).
    """

    def take_now(self, charges: Sequence[Charge]) -> int | None:
        """Microseconds to wait (0: admitted, the tokens taken), or None when the answer
        needs waiting for (Redis): then ``take`` decides."""
        ...

    async def take(self, charges: Sequence[Charge]) -> int:
        """Microseconds to wait; 0: admitted, the tokens taken."""
        ...

    async def close(self) -> None: ...
