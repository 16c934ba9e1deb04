"""A mirror adopts a Distribution proxy's storage: its cache, and its schedule.

The Go registry (Distribution 2.8) in proxy mode pulls an image through and
writes its schedule to ``scheduler-state.json``; cargohold then serves the
same root, keeps each entry's expiry as a record of use, and serves the
cached content without asking the upstream.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import aiohttp

from tests.api.conftest import OCI_MANIFEST, Registry
from tests.proxy.conftest import MakeMirror
from tests.proxy.relay import Relay
from tests.support.distribution import distribution
from tests.support.waiting import until

ACCEPT = {"Accept": OCI_MANIFEST}


def _schedule(root: Path) -> dict[str, dict[str, object]]:
    try:
        document: dict[str, dict[str, object]] = json.loads(
            (root / "scheduler-state.json").read_text()
        )
    except (FileNotFoundError, ValueError):
        return {}
    return document


def _seconds(text: str) -> float:
    """An RFC 3339 time to the second (Go writes nanoseconds, Python reads micro)."""
    return datetime.fromisoformat(text[:19] + "+00:00").timestamp()


def _records(root: Path) -> int:
    return len(list((root / "docker/registry/v2/repositories").rglob("_proxy/*/*/*/used")))


async def test_a_distribution_proxys_cache_and_schedule_are_taken_over(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror, tmp_path: Path
) -> None:
    image = await upstream.push_image("library/app", "1")
    root = tmp_path / "shared"
    wanted = 2 + len(image.layers)  # the manifest, the config, each layer
    # Started from a thread: the Go registry asks the relay, served on this loop, at start.
    running = distribution(root, proxy=relay.url)
    go = await asyncio.to_thread(running.__enter__)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{go}/v2/library/app/manifests/1", headers=ACCEPT) as reply:
                assert reply.status == 200
                assert await reply.read() == image.payload
            for blob in (image.config, *image.layers):
                assert blob is not None
                async with session.get(f"{go}/v2/library/app/blobs/{blob.digest}") as reply:
                    assert (reply.status, await reply.read()) == (200, blob.data)
        # Distribution saves its schedule every five seconds.
        await until(lambda: len(_schedule(root)) >= wanted, within=30)
    finally:
        await asyncio.to_thread(running.__exit__, None, None, None)
    schedule = _schedule(root)

    mirror = await make_mirror(None, root=root, ttl="168h")
    await until(lambda: _records(root) == len(schedule), within=15)
    relay.reset()
    path = f"/v2/library/app/manifests/{image.digest}"
    assert await mirror.request_anew("GET", path, headers=ACCEPT) == (200, image.payload)
    for blob in (image.config, *image.layers):
        assert blob is not None
        assert await mirror.pull_blob("library/app", blob.digest) == blob.data
    assert sum(relay.counts.values()) == 0
    # Each entry's expiry is kept: its use is recorded one ttl before it.
    key, entry = next(iter(schedule.items()))
    name, _, digest = key.partition("@")
    kind = "blobs" if entry["EntryType"] == 0 else "manifests"
    algorithm, _, encoded = digest.partition(":")
    repository = root / "docker/registry/v2/repositories" / name
    used = repository / "_proxy" / kind / algorithm / encoded / "used"
    recorded, expiry = _seconds(used.read_text()), _seconds(str(entry["ExpiryData"]))
    assert abs(expiry - recorded - 168 * 3600) <= 1
