"""Events in a Redis stream (``notifications.spool.redis``): one queue for every host.

The same receiver-side guarantees as the spool file's, on a real
``redis-server``: every event, in order, retried with its id, dead letters
replayed; a refused push untold and a push whose process vanished settled by
the storage; what every endpoint was sent trimmed from the stream; and two
``cargohold serve`` processes, the leader killed for good, losing nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cargohold import cli
from cargohold.errors import ConfigError
from cargohold.notifications import notifier, redisstream
from tests.api.conftest import MakeRegistry, Registry, image_manifest, random_blob
from tests.notifications.test_crashes import first_arrivals, owns, push_blob, serving
from tests.support.redis import RedisServer
from tests.support.waiting import until, wait_until
from tests.support.webhooks import Receiver, webhook_receiver

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with webhook_receiver() as running:
        yield running


def address(redis: RedisServer) -> str:
    return f"{redis.host}:{redis.port}"


def settings(redis: str, receiver: Receiver, **endpoint: Any) -> dict[str, Any]:
    hook = {"name": "hook", "url": receiver.url, "timeout": "500ms", **endpoint}
    return {
        "redis": {"addr": redis},
        "notifications": {"endpoints": [hook], "spool": {"redis": True}},
    }


async def make(
    make_registry: MakeRegistry, redis: RedisServer | str, receiver: Receiver, **endpoint: Any
) -> Registry:
    where = redis if isinstance(redis, str) else address(redis)
    return await make_registry(settings(where, receiver, **endpoint))


async def test_pushes_and_pulls_arrive_in_order_through_the_stream(
    make_registry: MakeRegistry, redis_db: RedisServer, receiver: Receiver
) -> None:
    registry = await make(make_registry, redis_db, receiver)
    image = await registry.push_image("team/app", "v1", layers=1)
    status, _ = await registry.request_anew("GET", "/v2/team/app/manifests/v1")
    assert status == 200
    events = await receiver.arrived(4)
    assert [(e["action"], e["target"]["digest"]) for e in events] == [
        ("push", image.config.digest),
        ("push", image.layers[0].digest),
        ("push", image.digest),
        ("pull", image.digest),
    ]
    assert events[2]["target"]["tag"] == "v1"
    assert redis_db.client().xlen(redisstream.STREAM) >= 1


async def test_a_failing_receiver_gets_each_event_again_with_its_id(
    make_registry: MakeRegistry, redis_db: RedisServer, receiver: Receiver
) -> None:
    receiver.status = 500
    registry = await make(make_registry, redis_db, receiver, threshold=2, backoff="50ms")
    pushed = [await registry.push_blob("team/app", random_blob()) for _ in range(3)]
    await until(lambda: receiver.attempts >= 4, 10, "not retried")
    receiver.status = 200
    events = await receiver.arrived(3)
    assert [e["target"]["digest"] for e in events] == [b.digest for b in pushed]
    assert len({e["id"] for e in events}) == 3


async def test_refused_and_vanished_pushes_are_settled(
    make_registry: MakeRegistry, redis_db: RedisServer, receiver: Receiver
) -> None:
    registry = await make(make_registry, redis_db, receiver)
    refused = image_manifest(random_blob(), [random_blob()])
    response = await registry.request(
        "PUT", "/v2/team/app/manifests/v0", data=refused, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status == 400
    image = await registry.push_image("team/app", "v1", layers=0)
    await receiver.arrived(2)
    # An intent left by a process whose lease has run out, for a manifest the storage has.
    event = {
        "id": "vanished",
        "timestamp": "2026-12-04T00:00:00Z",
        "action": "push",
        "target": {"mediaType": "x/announced", "digest": image.digest, "repository": "team/app"},
        "request": {"id": "r", "method": "PUT", "useragent": "u"},
        "actor": {},
        "source": {},
    }
    intent = {"kind": "manifest", "event": event, "intent": {"token": "1-gone"}}
    redis_db.client().xadd(redisstream.STREAM, {"e": json.dumps(intent)})
    marker = await registry.push_blob("team/app", random_blob())
    events = await receiver.arrived(4)
    assert [e["target"]["digest"] for e in events] == [
        image.config.digest,
        image.digest,
        image.digest,
        marker.digest,
    ]
    assert events[2]["id"] == "vanished"
    assert events[2]["target"]["mediaType"] == OCI_MANIFEST


async def test_dead_letters_are_kept_in_redis_and_replayed(
    make_registry: MakeRegistry, redis_db: RedisServer, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.status = 500
    registry = await make(
        make_registry, redis_db, receiver, maxage="200ms", threshold=1, backoff="50ms"
    )
    blob = await registry.push_blob("team/app", random_blob())
    dead = redisstream.DEAD + "hook"
    await until(lambda: redis_db.client().xlen(dead) == 1, 10, "no dead letter")
    receiver.status = 200
    config = tmp_path / "config.yml"
    document = {
        "version": "0.1",
        "storage": {"inmemory": {}},
        **settings(address(redis_db), receiver),
    }
    config.write_text(yaml.safe_dump(document))
    listing = ["notifications", "dead-letters", str(config), "-e", "hook"]
    listed = await asyncio.to_thread(CliRunner().invoke, cli.app, listing)
    assert listed.exit_code == 0, listed.output
    assert listed.output.strip().endswith(f"team/app@{blob.digest}")
    replay = ["notifications", "replay", str(config), "-e", "hook"]
    replayed = await asyncio.to_thread(CliRunner().invoke, cli.app, replay)
    assert replayed.output.strip() == "1 event put back for hook", replayed.output
    [event] = await receiver.arrived(1)
    assert event["target"]["digest"] == blob.digest
    assert redis_db.client().xlen(dead) == 0


async def test_what_every_endpoint_was_sent_is_trimmed_from_the_stream(
    make_registry: MakeRegistry,
    redis_db: RedisServer,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notifier, "RECLAIM_EVERY", 0.05)
    registry = await make(make_registry, redis_db, receiver)
    for _ in range(20):
        await registry.push_blob("team/app", random_blob())
    await receiver.arrived(20)
    await until(lambda: redis_db.client().xlen(redisstream.STREAM) <= 1, 10, "never trimmed")


def test_two_processes_the_leader_killed_for_good_lose_nothing(
    tmp_path: Path, redis_db: RedisServer
) -> None:
    root = tmp_path / "root"
    with webhook_receiver() as receiver, ExitStack() as stack:
        receiver.delay = 0.02
        endpoint = {"name": "hook", "url": receiver.url, "timeout": "2s", "backoff": "100ms"}
        config = tmp_path / "config.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "version": "0.1",
                    "log": {"level": "warn"},
                    "storage": {"filesystem": {"rootdirectory": str(root)}},
                    "redis": {"addr": f"{redis_db.host}:{redis_db.port}"},
                    "notifications": {"endpoints": [endpoint], "spool": {"redis": True}},
                }
            )
        )
        servers = [stack.enter_context(serving(config)) for _ in range(2)]
        acknowledged = [push_blob(servers[n % 2][0], "pair/app", n) for n in range(20)]
        client = redis_db.client()
        wait_until(lambda: client.get(redisstream.LEADER) is not None, 20, "nobody leads")
        leader = int(str(client.get(redisstream.LEADER)).split("-")[0])
        victim = next(s for s in servers if owns(s[1], leader))
        survivor = next(s for s in servers if s is not victim)
        os.killpg(victim[1].pid, signal.SIGKILL)
        victim[1].wait(10)
        acknowledged += [push_blob(survivor[0], "pair/app", n) for n in range(20, 30)]
        wait_until(
            lambda: len(first_arrivals(receiver)) >= len(acknowledged), 60, "events were lost"
        )
        assert sorted(first_arrivals(receiver)) == sorted(acknowledged)
        assert int(str(client.get(redisstream.LEADER)).split("-")[0]) != leader


@pytest.mark.parametrize(
    ("spool", "redis", "refused"),
    [
        ({"redis": True}, None, r"^notifications\.spool\.redis: needs the redis section's addr$"),
        (
            {"redis": True, "directory": "/tmp/x"},
            {"addr": "127.0.0.1:6379"},
            r"^notifications\.spool: either a directory or redis, not both$",
        ),
    ],
    ids=["no-redis", "both"],
)
async def test_a_redis_spool_it_cannot_use_is_refused_at_start(
    make_registry: MakeRegistry,
    receiver: Receiver,
    spool: dict[str, Any],
    redis: dict[str, Any] | None,
    refused: str,
) -> None:
    endpoints = [{"name": "hook", "url": receiver.url}]
    document: dict[str, Any] = {"notifications": {"endpoints": endpoints, "spool": spool}}
    if redis is not None:
        document["redis"] = redis
    with pytest.raises(ConfigError, match=refused):
        await make_registry(document)
