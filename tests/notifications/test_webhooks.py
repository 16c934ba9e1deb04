"""Distribution's webhooks, as a receiver sees them.

A registry with one endpoint, a real receiver on a loopback port: each push,
pull, mount and delete arrives as Distribution's envelope with its fields;
a write's event is on disk before the client hears the write succeeded; a
receiver that fails, stalls or goes away gets every event later, with the
same id; filters, CloudEvents and signatures shape what each endpoint gets.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from cargohold import cli
from cargohold.config import parse_config
from cargohold.errors import ConfigError
from cargohold.notifications import notifier, spool
from cargohold.notifications.spool import EVENTS
from tests.api.conftest import MakeRegistry, Registry, image_manifest, random_blob
from tests.api.test_metrics import Scraper
from tests.support.waiting import until
from tests.support.webhooks import Receiver, webhook_receiver

EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

Notified = Callable[..., Awaitable[Registry]]


@pytest.fixture
def receiver() -> AsyncIterator[Receiver]:
    with webhook_receiver() as running:
        yield running  # type: ignore[misc]


@pytest.fixture
def notified(make_registry: MakeRegistry, receiver: Receiver, tmp_path: Path) -> Notified:
    """A registry whose one endpoint is ``receiver``; ``endpoint`` adds to its settings."""

    async def make(**endpoint: Any) -> Registry:
        settings = {
            "notifications": {
                "endpoints": [
                    {"name": "hook", "url": receiver.url, "timeout": "500ms", **endpoint}
                ],
                "spool": {"directory": str(tmp_path / "spool")},
            }
        }
        return await make_registry(settings)

    return make


def by_action(events: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [event for event in events if event["action"] == action]


async def test_a_push_is_told_in_distributions_envelope(
    notified: Notified, receiver: Receiver
) -> None:
    registry = await notified(headers={"Authorization": ["Bearer t0ken"]})
    image = await registry.push_image("team/app", "v1", layers=1)
    # config and layer blobs, then the manifest
    events = await receiver.arrived(3)
    delivery = receiver.deliveries[0]
    assert delivery.headers["Content-Type"] == EVENTS_MEDIA_TYPE
    assert delivery.headers["Authorization"] == "Bearer t0ken"
    assert delivery.path == "/events"
    assert [event["action"] for event in events] == ["push", "push", "push"]
    blob, manifest = events[0], events[2]
    assert blob["target"]["digest"] == image.config.digest
    assert blob["target"]["size"] == blob["target"]["length"] == image.config.size
    assert blob["target"]["repository"] == "team/app"
    assert blob["target"]["url"].endswith(f"/v2/team/app/blobs/{image.config.digest}")
    assert "tag" not in blob["target"]
    target = manifest["target"]
    assert target["mediaType"] == OCI_MANIFEST
    assert target["digest"] == image.digest
    assert target["size"] == target["length"] == image.size
    assert target["tag"] == "v1"
    assert target["url"] == (
        f"http://{registry.client.host}:{registry.client.port}/v2/team/app/manifests/{image.digest}"
    )
    request = manifest["request"]
    assert request["method"] == "PUT"
    assert request["host"] == f"{registry.client.host}:{registry.client.port}"
    assert request["addr"].startswith("127.0.0.1")
    assert request["useragent"].startswith("Python")
    assert len(request["id"]) > 8
    assert manifest["actor"] == {}
    assert manifest["source"]["addr"].endswith(":5000")
    assert manifest["source"]["instanceID"]
    assert len({event["id"] for event in events}) == 3
    assert all(event["timestamp"].endswith("Z") for event in events)


async def test_pulls_mounts_and_deletes_are_told(notified: Notified, receiver: Receiver) -> None:
    registry = await notified()
    image = await registry.push_image("team/app", "v1", layers=1)
    await receiver.arrived(3)
    layer = image.layers[0]
    for method, path in (
        ("GET", "/v2/team/app/manifests/v1"),
        ("HEAD", f"/v2/team/app/blobs/{layer.digest}"),
        ("GET", f"/v2/team/app/blobs/{layer.digest}"),
    ):
        status, _ = await registry.request_anew(method, path)
        assert status == 200
    response = await registry.request(
        "POST", "/v2/other/blobs/uploads/", params={"mount": layer.digest, "from": "team/app"}
    )
    assert response.status == 201
    for path in ("/v2/team/app/manifests/v1", f"/v2/team/app/manifests/{image.digest}"):
        response = await registry.request("DELETE", path)
        assert response.status == 202
    events = await receiver.arrived(9)
    pulls = by_action(events, "pull")
    assert [(p["request"]["method"], p["target"]["digest"]) for p in pulls] == [
        ("GET", image.digest),
        ("HEAD", layer.digest),
        ("GET", layer.digest),
    ]
    assert pulls[0]["target"]["tag"] == "v1"
    [mount] = by_action(events, "mount")
    assert mount["target"]["repository"] == "other"
    assert mount["target"]["fromRepository"] == "team/app"
    assert mount["target"]["digest"] == layer.digest
    tag_delete, manifest_delete = by_action(events, "delete")
    assert tag_delete["target"] == {"repository": "team/app", "tag": "v1"}
    assert manifest_delete["target"] == {"repository": "team/app", "digest": image.digest}


async def test_a_writes_event_is_on_disk_before_its_reply(
    notified: Notified, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.stop()  # nothing is delivered: the spool is all there is
    registry = await notified()
    image = await registry.push_image("team/app", "v1", layers=1)
    lines = (tmp_path / "spool" / EVENTS).read_bytes().splitlines()
    kept = [json.loads(line)["event"] for line in lines]
    assert [event["target"].get("digest") for event in kept][-1] == image.digest
    assert kept[-1]["action"] == "push"


async def test_a_failing_receiver_gets_the_event_again_with_the_same_id(
    notified: Notified, receiver: Receiver
) -> None:
    receiver.status = 500
    registry = await notified(threshold=3, backoff="100ms")
    blob = await registry.push_blob("team/app", random_blob())
    await until(lambda: receiver.attempts >= 5, 10, "the receiver was not retried")
    assert receiver.events() == []
    receiver.status = 200
    [event] = await receiver.arrived(1)
    assert event["target"]["digest"] == blob.digest
    receiver.status = 500
    attempts = receiver.attempts
    await registry.push_blob("team/app", random_blob())
    await until(lambda: receiver.attempts >= attempts + 2, 10, "not retried")
    receiver.status = 200
    events = await receiver.arrived(2)
    assert len({e["id"] for e in events}) == 2  # each retry repeated its event's id


async def test_a_receiver_that_goes_away_gets_everything_when_it_comes_back(
    notified: Notified, receiver: Receiver
) -> None:
    receiver.stop()
    registry = await notified(backoff="50ms", threshold=2)
    pushed = [await registry.push_blob("team/app", random_blob()) for _ in range(5)]
    receiver.start()
    events = await receiver.arrived(5)
    assert [event["target"]["digest"] for event in events] == [b.digest for b in pushed]


async def test_a_stalled_receiver_never_slows_a_client(
    notified: Notified, receiver: Receiver
) -> None:
    receiver.delay = 3.0  # far beyond the endpoint's 500ms timeout
    registry = await notified()
    started = time.monotonic()
    for _ in range(3):
        await registry.push_blob("team/app", random_blob())
    assert time.monotonic() - started < 2.0
    await until(lambda: receiver.attempts >= 1, 10, "never tried")
    receiver.delay = 0.0
    await receiver.arrived(3, within=30)


async def test_a_redirect_loop_and_a_huge_reply_are_bounded(
    notified: Notified, receiver: Receiver
) -> None:
    receiver.redirect = receiver.url
    registry = await notified(threshold=2, backoff="50ms")
    await registry.push_blob("team/app", random_blob())
    await until(lambda: receiver.attempts >= 6, 10, "the redirects were not followed")
    receiver.redirect = None
    receiver.reply_body = b"x" * (4 << 20)
    [event] = await receiver.arrived(1)
    assert event["action"] == "push"


async def test_filters_pick_what_an_endpoint_is_told(
    notified: Notified, receiver: Receiver
) -> None:
    registry = await notified(
        repositories=["team/*"],
        tags=["v[0-9]+"],
        ignore={"actions": ["pull"]},
    )
    await registry.push_image("other/app", "v1", layers=0)  # repository filtered out
    await registry.push_image("team/app", "latest", layers=0)  # tag filtered out
    kept = await registry.push_image("team/app", "v2", layers=0)
    status, _ = await registry.request_anew("GET", "/v2/team/app/manifests/v2")  # pull ignored
    assert status == 200
    [event] = await receiver.arrived(1)
    assert event["target"]["digest"] == kept.digest
    await registry.push_image("team/app", "v3", layers=0)
    events = await receiver.arrived(2)
    assert [e["target"]["tag"] for e in events] == ["v2", "v3"]  # nothing else slipped through


@pytest.mark.parametrize(
    "setting",
    [{"ignoredmediatypes": [OCI_MANIFEST]}, {"ignore": {"mediatypes": [OCI_MANIFEST]}}],
    ids=["ignoredmediatypes", "ignore.mediatypes"],
)
async def test_ignored_media_types_are_left_out(
    notified: Notified, receiver: Receiver, setting: dict[str, Any]
) -> None:
    registry = await notified(**setting)
    blob = await registry.push_blob("team/app", random_blob())
    await registry.push_image("team/app", "v1", layers=0)
    marker = await registry.push_blob("team/app", random_blob())
    events = await receiver.arrived(3)
    assert all(event["target"].get("mediaType") != OCI_MANIFEST for event in events)
    assert events[0]["target"]["digest"] == blob.digest
    assert events[-1]["target"]["digest"] == marker.digest


async def test_cloudevents_signed_for_the_receiver_to_verify(
    notified: Notified, receiver: Receiver
) -> None:
    registry = await notified(format="cloudevents", secret="s3cret")
    image = await registry.push_image("team/app", "v1", layers=0)
    await receiver.arrived(2)
    delivery = receiver.deliveries[-1]
    assert delivery.headers["Content-Type"] == "application/cloudevents+json"
    expected = hmac.new(b"s3cret", delivery.body, hashlib.sha256).hexdigest()
    assert delivery.headers["X-Cargohold-Signature"] == f"sha256={expected}"
    cloud = json.loads(delivery.body)
    assert cloud["specversion"] == "1.0"
    assert cloud["type"] == "io.cargohold.manifest.pushed"
    assert cloud["subject"] == "team/app:v1"
    assert cloud["data"]["target"]["digest"] == image.digest
    assert cloud["id"] == cloud["data"]["id"]
    first = json.loads(receiver.deliveries[0].body)
    assert first["type"] == "io.cargohold.blob.pushed"


async def test_old_undeliverable_events_become_dead_letters(
    notified: Notified, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.status = 500
    registry = await notified(maxage="200ms", threshold=1, backoff="50ms")
    blob = await registry.push_blob("team/app", random_blob())
    dead = tmp_path / "spool" / "dead" / "hook.log"
    await until(dead.exists, 10, "no dead letter")
    [kept] = [json.loads(line) for line in dead.read_bytes().splitlines()]
    assert kept["event"]["target"]["digest"] == blob.digest
    receiver.status = 200
    after = await registry.push_blob("team/app", random_blob())
    [event] = await receiver.arrived(1)
    assert event["target"]["digest"] == after.digest  # the dead one is not sent again

    # The CLI lists the dead letter, and puts it back for the endpoint to send again.
    config = tmp_path / "config.yml"
    endpoint = {"name": "hook", "url": receiver.url}
    spool = {"directory": str(tmp_path / "spool")}
    config.write_text(
        yaml.safe_dump(
            {
                "version": "0.1",
                "storage": {"inmemory": {}},
                "notifications": {"endpoints": [endpoint], "spool": spool},
            }
        )
    )
    listing = ["notifications", "dead-letters", str(config), "-e", "hook"]
    listed = await asyncio.to_thread(CliRunner().invoke, cli.app, listing)
    assert listed.exit_code == 0, listed.output
    [line] = listed.output.splitlines()
    assert line.split()[0] == kept["event"]["id"]
    assert line.endswith(f"team/app@{blob.digest}")
    replay = ["notifications", "replay", str(config), "-e", "hook"]
    replayed = await asyncio.to_thread(CliRunner().invoke, cli.app, replay)
    assert replayed.exit_code == 0, replayed.output
    assert replayed.output.strip() == "1 event put back for hook"
    events = await receiver.arrived(2)
    assert events[1]["id"] == kept["event"]["id"]
    assert events[1]["target"]["digest"] == blob.digest
    assert not dead.exists()
    nope = ["notifications", "replay", str(config), "-e", "nope"]
    unknown = await asyncio.to_thread(CliRunner().invoke, cli.app, nope)
    assert unknown.exit_code == 2


@pytest.mark.parametrize("url", ["ftp://example.test/hook", "file:///tmp/x", "example.test", ""])
def test_an_endpoint_that_is_not_http_is_refused(url: str) -> None:
    endpoint = {"name": "a", "url": url}
    text = yaml.safe_dump({"version": "0.1", "notifications": {"endpoints": [endpoint]}})
    with pytest.raises(ConfigError, match=r"^notifications\.endpoints\.0\.url: .*http") as caught:
        parse_config(text + "storage: {inmemory: {}}\n", environ={})
    assert "\n" not in str(caught.value)


async def test_a_disabled_endpoint_is_told_nothing(
    make_registry: MakeRegistry, receiver: Receiver, tmp_path: Path
) -> None:
    with webhook_receiver() as disabled:
        endpoints = [
            {"name": "off", "url": disabled.url, "disabled": True},
            {"name": "on", "url": receiver.url},
        ]
        spool = {"directory": str(tmp_path / "spool")}
        registry = await make_registry({"notifications": {"endpoints": endpoints, "spool": spool}})
        for _ in range(3):
            await registry.push_blob("team/app", random_blob())
        await receiver.arrived(3)
        assert disabled.attempts == 0


async def test_without_a_local_disk_the_spool_directory_must_be_given(
    make_registry: MakeRegistry, receiver: Receiver, storage: str
) -> None:
    settings = {"notifications": {"endpoints": [{"name": "a", "url": receiver.url}]}}
    if storage == "filesystem":
        registry = await make_registry(settings)
        await registry.push_blob("team/app", random_blob())
        [event] = await receiver.arrived(1)
        assert event["action"] == "push"
        assert registry.root is not None
        assert (registry.root / "cargohold" / "notifications" / EVENTS).exists()
        return
    with pytest.raises(ConfigError, match=r"^notifications\.spool\.directory: must be set"):
        await make_registry(settings)


async def test_delivery_is_counted_under_distributions_names(
    make_registry: MakeRegistry, receiver: Receiver, tmp_path: Path, scraper: Scraper
) -> None:
    receiver.status = 500
    endpoint = {"name": "hook", "url": receiver.url, "threshold": 2, "backoff": "50ms"}
    registry = await make_registry(
        {
            "http": {"debug": {"addr": "127.0.0.1:0", "prometheus": {"enabled": True}}},
            "notifications": {
                "endpoints": [endpoint],
                "spool": {"directory": str(tmp_path / "spool")},
            },
        }
    )
    await registry.push_blob("team/app", random_blob())
    await until(lambda: receiver.attempts >= 3, 10, "not retried")
    await registry.push_blob("team/app", random_blob())
    attempts = receiver.attempts
    await until(lambda: receiver.attempts > attempts, 10, "not retried")  # and counted again
    found = await scraper(registry)
    assert found.value("registry_notifications_pending", endpoint="hook") == 2
    receiver.status = 200
    await receiver.arrived(2)
    for _ in range(500):  # the receiver has the event a moment before its sender knows it
        found = await scraper(registry)
        if found.value("registry_notifications_pending", endpoint="hook") == 0:
            break
    events = "registry_notifications_events_total"
    assert found.value(events, endpoint="hook", type="Events") == 2
    assert found.value(events, endpoint="hook", type="Successes") == 2
    failures = found.value(events, endpoint="hook", type="Failures")
    assert failures >= 3
    statuses = "registry_notifications_status_total"
    assert found.value(statuses, code="200 OK", endpoint="hook") == 2
    assert found.value(statuses, code="500 Internal Server Error", endpoint="hook") == failures
    assert found.value("registry_notifications_pending", endpoint="hook") == 0


async def test_includereferences_lists_what_a_manifest_references(
    make_registry: MakeRegistry, receiver: Receiver, tmp_path: Path
) -> None:
    endpoints = [{"name": "hook", "url": receiver.url, "ignore": {"actions": ["push"]}}]
    spool = {"directory": str(tmp_path / "spool")}
    events = {"includereferences": True}
    registry = await make_registry(
        {"notifications": {"endpoints": endpoints, "spool": spool, "events": events}}
    )
    image = await registry.push_image("team/app", "v1", layers=2)
    index = await registry.push_index("team/app", [image], tag="all")
    for reference in ("v1", "all"):
        status, _ = await registry.request_anew("GET", f"/v2/team/app/manifests/{reference}")
        assert status == 200
    blob = image.layers[0]
    status, _ = await registry.request_anew("GET", f"/v2/team/app/blobs/{blob.digest}")
    assert status == 200
    manifest, listed, pulled_blob = await receiver.arrived(3)
    assert [(r["mediaType"], r["digest"], r["size"]) for r in manifest["target"]["references"]] == [
        (b.media_type, b.digest, b.size) for b in (image.config, *image.layers)
    ]
    assert [r["digest"] for r in listed["target"]["references"]] == [image.digest]
    assert listed["target"]["digest"] == index.digest
    assert "references" not in pulled_blob["target"]


def _intent(digest: str, media_type: str, pid: int) -> bytes:
    """A spool line as a process that died mid-push leaves it: an intent with no outcome."""
    event = {
        "id": f"intent-{digest[-8:]}",
        "timestamp": "2026-12-04T00:00:00Z",
        "action": "push",
        "target": {"mediaType": media_type, "digest": digest, "repository": "team/app"},
        "request": {"id": "r", "method": "PUT", "useragent": "u"},
        "actor": {},
        "source": {},
    }
    writer = {"pid": pid, "started": 1}
    return json.dumps({"kind": "manifest", "event": event, "intent": writer}).encode() + b"\n"


async def test_a_push_whose_process_died_is_told_if_the_storage_has_it(
    notified: Notified, receiver: Receiver, tmp_path: Path
) -> None:
    registry = await notified()
    image = await registry.push_image("team/app", "v1", layers=0)
    await receiver.arrived(2)
    gone = subprocess.Popen(["true"])
    gone.wait()
    never_stored = "sha256:" + "0" * 64
    with open(tmp_path / "spool" / EVENTS, "ab") as spool:
        spool.write(_intent(image.digest, "application/x-announced", gone.pid))
        spool.write(_intent(never_stored, OCI_MANIFEST, gone.pid))
    marker = await registry.push_blob("team/app", random_blob())
    events = await receiver.arrived(4)
    settled, last = events[2], events[3]
    assert settled["target"]["digest"] == image.digest
    assert settled["target"]["mediaType"] == OCI_MANIFEST  # as stored, not as announced
    assert settled["id"] == f"intent-{image.digest[-8:]}"
    assert last["target"]["digest"] == marker.digest  # the push never stored is not told
    assert len(receiver.events()) == 4


async def test_a_refused_manifest_push_is_not_told(
    notified: Notified, receiver: Receiver, tmp_path: Path
) -> None:
    registry = await notified()
    config = random_blob()
    missing = random_blob()
    payload = image_manifest(config, [missing])  # neither blob is in the repository
    response = await registry.request(
        "PUT",
        "/v2/team/app/manifests/v1",
        data=payload,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert response.status == 400
    assert (await response.json())["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
    image = await registry.push_image("team/app", "v2", layers=0)
    events = await receiver.arrived(2)
    assert [e["target"]["digest"] for e in events] == [image.config.digest, image.digest]
    kept = [json.loads(line) for line in (tmp_path / "spool" / EVENTS).read_bytes().splitlines()]
    intents = [k for k in kept if "intent" in k]
    outcomes = {k["outcome"]: k for k in kept if "outcome" in k}
    assert len(intents) == 2  # each manifest push was kept before it was stored...
    refused, stored = (outcomes[i["event"]["id"]] for i in intents)
    assert "event" not in refused  # ...and the refused one came to nothing
    assert stored["event"]["target"]["digest"] == image.digest


async def test_what_every_endpoint_was_sent_is_given_back_to_the_disk(
    notified: Notified, receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notifier, "RECLAIM_EVERY", 0.05)
    monkeypatch.setattr(spool, "RECLAIM_STEP", 4096)
    registry = await notified()
    blob = await registry.push_blob("team/app", random_blob())
    for _ in range(300):  # each HEAD is a pull event, a line of the spool
        response = await registry.request("HEAD", f"/v2/team/app/blobs/{blob.digest}")
        assert response.status == 200
    await receiver.arrived(301)
    events = tmp_path / "spool" / EVENTS

    def allocated() -> int:
        return os.stat(events).st_blocks * 512

    await until(lambda: allocated() < os.stat(events).st_size // 4, 10, "never reclaimed")
    reclaimed = int((tmp_path / "spool" / "reclaimed").read_text())
    assert 0 < reclaimed <= os.stat(events).st_size
    after = await registry.push_blob("team/app", random_blob())
    assert (await receiver.arrived(302))[-1]["target"]["digest"] == after.digest


def test_two_endpoints_of_one_name_are_refused() -> None:
    endpoints = [{"name": "a", "url": "http://127.0.0.1:9/a"}, {"name": "a", "url": "http://b/"}]
    text = yaml.safe_dump({"version": "0.1", "notifications": {"endpoints": endpoints}})
    with pytest.raises(
        ConfigError, match=r"^notifications\.endpoints: .*two endpoints are named 'a'"
    ):
        parse_config(text + "storage: {inmemory: {}}\n", environ={})
