"""Which buckets a request is charged to, from the ``ratelimit`` section.

A request is a read (GET, HEAD) or a write (anything else), and is charged
to the buckets of its kind that are configured: its client's address
(``perclient``), its user (``peruser``: only requests whose credentials
named one), its repository (``perrepository``: only requests about one).
Each bucket is a key: ``client:read:192.0.2.7``, ``user:write:alice``,
``repository:read:library/alpine``.
"""

from __future__ import annotations

import math
import os

from cargohold import config
from cargohold.ratelimit.bucket import Buckets, Charge, Limit
from cargohold.ratelimit.table import SharedBuckets

__all__ = ["READS", "TABLE_NAME", "Limiter", "build_limiter"]

#: The methods that read; every other method writes.
READS = frozenset({"GET", "HEAD"})
#: The table's file in the directory ``serve`` makes for its workers (``table.py``).
TABLE_NAME = "ratelimit.table"


def _limit(bucket: config.RateLimitBucket | None) -> Limit | None:
    if bucket is None:
        return None
    return Limit(bucket.rate, bucket.burst or max(1, math.ceil(bucket.rate)))


#: Where each kind's subject is in ``(client, user, repository)``.
_KINDS = (("client", 0), ("user", 1), ("repository", 2))

#: What a request of one direction is charged to: a key's prefix, its limit, and which
#: subject completes the key.
_Plan = tuple[tuple[str, Limit, int], ...]


class Limiter:
    """Charges requests to their buckets (see the module docstring), kept in ``buckets``."""

    def __init__(self, section: config.RateLimit, buckets: Buckets) -> None:
        self.buckets = buckets
        kinds = (section.perclient, section.peruser, section.perrepository)
        self._reads = self._plan(kinds, "read")
        self._writes = self._plan(kinds, "write")

    @staticmethod
    def _plan(kinds: tuple[config.RateLimits, ...], direction: str) -> _Plan:
        plan = []
        for (name, which), limits in zip(_KINDS, kinds, strict=True):
            limit = _limit(limits.read if direction == "read" else limits.write)
            if limit is not None:
                plan.append((f"{name}:{direction}:", limit, which))
        return tuple(plan)

    def charges(
        self, method: str, client: str, user: str | None, repository: str | None
    ) -> list[Charge]:
        """The buckets a request is charged to, each with its limit."""
        subjects = (client, user, repository)
        plan = self._reads if method in READS else self._writes
        return [
            (prefix + subject, limit)
            for prefix, limit, which in plan
            if (subject := subjects[which])
        ]

    def check_now(
        self, method: str, client: str, user: str | None, repository: str | None
    ) -> float | None:
        """Seconds the request must wait (0: admitted, charged), or None when that cannot
        be known at once (``check`` then decides)."""
        charges = self.charges(method, client, user, repository)
        if not charges:
            return 0.0
        wait = self.buckets.take_now(charges)
        return None if wait is None else wait / 1e6

    async def check(
        self, method: str, client: str, user: str | None, repository: str | None
    ) -> float:
        """Seconds the request must wait; 0: admitted, and charged to its buckets."""
        charges = self.charges(method, client, user, repository)
        if not charges:
            return 0.0
        return await self.buckets.take(charges) / 1e6

    async def close(self) -> None:
        await self.buckets.close()


def build_limiter(settings: config.Config, directory: str | None = None) -> Limiter | None:
    """The limiter ``ratelimit`` describes; None when it is off.

    Its buckets are in Redis with ``ratelimit.redis``; else in a table in
    ``directory``, shared with every process that names the same one (the
    workers of ``serve``), or in this process's memory without one.
    """
    ratelimit = settings.ratelimit
    if not ratelimit.enabled:
        return None
    buckets: Buckets
    if ratelimit.redis:
        from cargohold.ratelimit.redis import RedisBuckets
        from cargohold.storage.cache.redis import client_from_config

        buckets = RedisBuckets(client_from_config(settings.redis))
    else:
        path = os.path.join(directory, TABLE_NAME) if directory else None
        buckets = SharedBuckets(path)
    return Limiter(ratelimit, buckets)
