"""Token buckets: their arithmetic, the table workers share, and Redis.

Time is a clock the test moves (whole microseconds), except in Redis, whose
own clock the script reads: its tests use rates slow enough that no token
comes back while they run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from redis.asyncio import Redis

from cargohold.config import parse_config
from cargohold.ratelimit import Limit, Limiter, admit
from cargohold.ratelimit.redis import KEY_PREFIX, RedisBuckets
from cargohold.ratelimit.table import MAGIC, SharedBuckets
from cargohold.storage.cache.redis import client_from_config
from tests.support.redis import RedisServer
from tests.support.servers import free_port

SECOND = 1_000_000
START = 1_700_000_000 * SECOND


class Clock:
    """A wall clock in microseconds that moves only when told."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> int:
        return self.now


# -- the arithmetic ----------------------------------------------------------------------


def test_a_full_bucket_admits_its_burst_then_one_request_per_interval() -> None:
    limit = Limit(rate=4, burst=3)
    assert (limit.interval, limit.span) == (250_000, 750_000)
    tat, now, admitted = 0, START, 0
    while True:
        after, wait = admit(tat, limit, now)
        if wait:
            break
        tat, admitted = after, admitted + 1
    assert admitted == 3
    assert wait == limit.interval, "the next token comes one interval later"
    after, wait = admit(tat, limit, now + limit.interval - 1)
    assert wait == 1
    after, wait = admit(tat, limit, now + limit.interval)
    assert wait == 0
    assert after == tat + limit.interval


def test_an_idle_bucket_refills_to_its_burst_and_no_further() -> None:
    limit = Limit(rate=10, burst=5)
    tat = START + limit.span  # empty
    later = START + 10 * SECOND  # long enough for a hundred tokens
    admitted = 0
    while admit(tat, limit, later)[1] == 0:
        tat = admit(tat, limit, later)[0]
        admitted += 1
    assert admitted == 5


def test_a_bucket_from_the_future_is_empty_not_longer() -> None:
    # A wall clock set back an hour: the bucket must not lock its client out for an hour.
    limit = Limit(rate=1, burst=2)
    _, wait = admit(START + 3600 * SECOND, limit, START)
    assert wait == limit.interval


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_a_limit_needs_a_rate_and_a_burst(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="a limit needs"):
        Limit(rate, burst)


# -- which buckets -----------------------------------------------------------------------


def limiter(settings: str, buckets: SharedBuckets | None = None) -> Limiter:
    config = parse_config(
        f"version: 0.1\nstorage: {{inmemory: {{}}}}\nratelimit: {settings}\n", environ={}
    )
    return Limiter(config.ratelimit, buckets or SharedBuckets())


def test_a_request_is_charged_to_each_configured_bucket_of_its_kind() -> None:
    limits = limiter(
        "{enabled: true, perclient: {read: {rate: 10, burst: 20}, write: {rate: 1}},"
        " peruser: {write: {rate: 2.5}}, perrepository: {read: {rate: 5, burst: 5}}}"
    )
    reads = limits.charges("GET", "192.0.2.7", "alice", "library/alpine")
    assert reads == [
        ("client:read:192.0.2.7", Limit(10, 20)),
        ("repository:read:library/alpine", Limit(5, 5)),
    ]
    assert limits.charges("HEAD", "192.0.2.7", None, None) == [reads[0]]
    writes = limits.charges("PATCH", "192.0.2.7", "alice", "library/alpine")
    # No burst given: the rate, rounded up.
    assert writes == [("client:write:192.0.2.7", Limit(1, 1)), ("user:write:alice", Limit(2.5, 3))]
    assert limits.charges("DELETE", "192.0.2.7", None, "") == [writes[0]]


# -- the table ---------------------------------------------------------------------------


async def test_a_request_takes_a_token_from_every_bucket_or_from_none() -> None:
    clock = Clock()
    table = SharedBuckets(clock=clock)
    roomy, tight = Limit(1, 5), Limit(1, 1)
    assert table.take_now([("a", roomy), ("b", tight)]) == 0
    assert table.take_now([("a", roomy), ("b", tight)]) == SECOND, "b is empty"
    assert table.take_now([("a", roomy), ("b", tight)]) == SECOND
    # The two refusals cost "a" nothing: four of its five tokens are left.
    assert [table.take_now([("a", roomy)]) for _ in range(5)] == [0, 0, 0, 0, SECOND]
    clock.now += SECOND
    assert await table.take([("b", tight)]) == 0, "a second later, b has its token back"
    await table.close()


async def test_two_processes_mapping_one_table_share_its_buckets(tmp_path: Path) -> None:
    path = tmp_path / "ratelimit.table"
    ours = SharedBuckets(str(path))
    limit = Limit(0.001, 4)  # no token comes back while the test runs
    assert ours.take_now([("client:read:127.0.0.1", limit)]) == 0
    # Another process takes two more of the same bucket from the same file.
    script = f"""
        from cargohold.ratelimit import Limit
        from cargohold.ratelimit.table import SharedBuckets
        theirs = SharedBuckets({str(path)!r})
        limit = Limit(0.001, 4)
        print([theirs.take_now([("client:read:127.0.0.1", limit)]) == 0 for _ in range(2)])
    """
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["[True,", "True]"]
    assert ours.take_now([("client:read:127.0.0.1", limit)]) == 0
    assert ours.take_now([("client:read:127.0.0.1", limit)]) > 0, "four taken in all"
    await ours.close()


async def test_a_file_that_is_not_a_table_is_made_one(tmp_path: Path) -> None:
    path = tmp_path / "ratelimit.table"
    path.write_bytes(b"something else entirely")
    table = SharedBuckets(str(path), slots=64)
    assert path.read_bytes()[:8] == MAGIC
    assert path.stat().st_size == 16 + (64 + 8) * 16
    assert table.take_now([("k", Limit(1, 1))]) == 0
    await table.close()
    again = SharedBuckets(str(path), slots=64)
    assert again.take_now([("k", Limit(1, 1))]) > 0, "a table is kept as it is"
    await again.close()


async def test_more_keys_than_slots_evict_the_fullest_buckets() -> None:
    clock = Clock()
    table = SharedBuckets(slots=8, clock=clock)
    limit = Limit(1, 1)
    assert table.take_now([("first", limit)]) == 0
    clock.now += 2 * SECOND  # "first" is full again: its slot may go to anyone
    for n in range(200):
        assert table.take_now([(f"key-{n}", limit)]) == 0, "a new key starts full"
    # However many came, each key's bucket is still a bucket: an empty one refuses.
    assert table.take_now([("key-199", limit)]) == SECOND
    await table.close()


# -- Redis -------------------------------------------------------------------------------


async def test_two_clients_of_one_redis_share_a_bucket(redis_db: RedisServer) -> None:
    first = RedisBuckets(Redis.from_url(redis_db.url(), decode_responses=True))
    second = RedisBuckets(Redis.from_url(redis_db.url(), decode_responses=True))
    charges = [("user:write:alice", Limit(0.01, 3)), ("client:write:192.0.2.7", Limit(0.01, 9))]
    assert first.take_now(charges) is None, "a round trip is awaited, never made at once"
    taken = [await first.take(charges), await second.take(charges), await first.take(charges)]
    assert taken == [0, 0, 0]
    wait = await second.take(charges)
    assert 0 < wait <= 100 * SECOND, "the next token is at most one interval away"
    raw = redis_db.client()
    ttl = raw.pttl(KEY_PREFIX + "user:write:alice")
    assert 0 < ttl <= 300_000, "the key expires when the bucket is full again"
    # The refused request took nothing from the other bucket: 3 of its 9 are gone.
    client_tat = int(raw.get(KEY_PREFIX + "client:write:192.0.2.7") or 0)
    user_tat = int(raw.get(KEY_PREFIX + "user:write:alice") or 0)
    assert user_tat - client_tat == 0, "both moved three intervals from the same now"
    raw.close()
    await first.close()
    await second.close()


async def test_requests_are_let_through_while_redis_is_down(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = parse_config(
        f"version: 0.1\nstorage: {{inmemory: {{}}}}\nredis: {{addr: '127.0.0.1:{free_port()}'}}\n",
        environ={},
    )
    down = RedisBuckets(client_from_config(config.redis))  # as the registry connects
    charges = [("client:read:192.0.2.7", Limit(0.01, 1))]
    assert [await down.take(charges) for _ in range(5)] == [0] * 5
    told = [r for r in caplog.records if r.name == "cargohold.ratelimit"]
    assert len(told) == 1, "told once, not once per request"
    assert "rate limits are not applied" in told[0].getMessage()
    await down.close()
