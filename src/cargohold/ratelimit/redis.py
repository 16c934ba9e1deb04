"""Buckets in Redis: shared by every process, on every host, that uses the same server.

With ``ratelimit.redis: true`` the buckets live on the ``redis`` section's
server. A request is charged by one Lua script (``_TAKE``) in one round
trip: it reads every bucket of the request, admits it only when each has a
token, and then moves each bucket's ``tat`` (``bucket.py``), atomically, as
Redis runs one script at a time. Time is the server's (``TIME``), so hosts
whose clocks disagree still share buckets fairly. A bucket is the key
``cargohold:ratelimit:<bucket>``, its ``tat`` in microseconds, expiring when
the bucket is full again: an idle client leaves nothing behind.

The fast path cannot wait for a round trip, so with Redis it hands limited
requests to aiohttp (``take_now`` says None), where the check is awaited.

A limit is a protection, not a gate: when Redis cannot be reached, requests
are let through (fail open), never answered 5xx, and it is logged once a
minute (``log.Recurring``). After a failure the limiter leaves Redis alone for
``PAUSE`` seconds, so that a server that hangs slows no request meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

from cargohold.log import Recurring
from cargohold.ratelimit.bucket import Charge

__all__ = ["KEY_PREFIX", "PAUSE", "RedisBuckets"]

log = logging.getLogger("cargohold.ratelimit")

KEY_PREFIX: Final = "cargohold:ratelimit:"
#: Seconds without asking Redis after it failed: every request is admitted meanwhile.
PAUSE: Final = 1.0

# KEYS: the buckets; ARGV: each bucket's interval and span, in microseconds.
# Numbers are written with %.0f: Lua's own conversion would print 1.7e+15.
_TAKE: Final = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local wait = 0
local after = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local span = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then
    tat = now
  elseif tat > now + span then
    tat = now + span
  end
  after[i] = tat + interval
  local waits = after[i] - now - span
  if waits > wait then
    wait = waits
  end
end
if wait > 0 then
  return wait
end
for i = 1, #KEYS do
  local full_in = math.ceil((after[i] - now) / 1000)
  redis.call('SET', KEYS[i], string.format('%.0f', after[i]), 'PX', full_in)
end
return 0
"""


class RedisBuckets:
    """Buckets on a Redis server (see the module docstring); ``client`` is closed by ``close``."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._take = client.register_script(_TAKE)
        self._recurring = Recurring(log)
        #: ``time.monotonic`` before which Redis is not asked (it failed just before).
        self._resume = 0.0

    def take_now(self, charges: Sequence[Charge]) -> int | None:
        return None

    async def take(self, charges: Sequence[Charge]) -> int:
        if time.monotonic() < self._resume:
            return 0
        keys = [KEY_PREFIX + key for key, _ in charges]
        args: list[int] = []
        for _, limit in charges:
            args += (limit.interval, limit.span)
        try:
            wait = await self._take(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._resume = time.monotonic() + PAUSE
            self._recurring.warning(
                "redis", "rate limits are not applied: Redis is unavailable: %s", exc
            )
            return 0
        return int(wait)

    async def close(self) -> None:
        await self._client.aclose()
