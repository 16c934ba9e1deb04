"""Cached content expires when unused for its upstream's ttl; shared content never early.

Each cached manifest and blob records its last use in storage; the mirror's
background sweep (every half ttl, at least a second) removes what went unused,
frees the space of content no repository still links, and never touches a
blob that a live cached manifest anywhere references (Distribution #2367,
#4191, #4957), whatever ``storage.delete`` says (#4249).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cargohold.api.app import API_KEY
from cargohold.proxy import MirrorRegistry
from tests.api.conftest import OCI_MANIFEST, Image, Registry
from tests.proxy.conftest import MakeMirror, Mirror
from tests.proxy.relay import Relay
from tests.support.waiting import until

ACCEPT = {"Accept": OCI_MANIFEST}


async def _pull(mirror: Mirror, name: str, tag: str, image: Image) -> None:
    status, body = await mirror.request_anew("GET", f"/v2/{name}/manifests/{tag}", headers=ACCEPT)
    assert (status, body) == (200, image.payload)
    for blob in (image.config, *image.layers):
        assert blob is not None
        await mirror.pull_blob(name, blob.digest)


def _upstreams(relay: Relay, **ttls: str) -> dict[str, Any]:
    return {
        "proxy": {
            "upstreams": [
                {"prefix": f"{prefix}/", "remoteurl": relay.url, "ttl": ttl}
                for prefix, ttl in ttls.items()
            ]
        }
    }


def _repositories(mirror: Mirror) -> set[str]:
    """Every repository folder left in storage (those holding any of its ``_`` folders)."""
    assert mirror.root is not None
    top = mirror.root / "docker/registry/v2/repositories"
    while True:
        try:  # the sweep may remove a folder while it is walked: walk again
            return {str(p.parent.relative_to(top)) for p in top.rglob("_*") if p.is_dir()}
        except FileNotFoundError:
            continue


def _manifest_links(mirror: Mirror, name: str) -> int:
    assert mirror.root is not None
    revisions = mirror.root / "docker/registry/v2/repositories" / name / "_manifests/revisions"
    while True:
        try:
            return len(list(revisions.rglob("link"))) if revisions.exists() else 0
        except FileNotFoundError:
            continue


async def test_a_layer_shared_with_a_live_repository_outlives_the_one_that_expired(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    image = await upstream.push_image("app", "v1", layers=3)
    mirror = await make_mirror(settings=_upstreams(relay, short="1s", long="1h"))
    await _pull(mirror, "short/app", "v1", image)
    await _pull(mirror, "long/app", "v1", image)
    shared = mirror.blob_files()
    assert len(shared) == 5  # config, three layers, the manifest

    await until(lambda: _manifest_links(mirror, "short/app") == 0, within=15)
    await until(lambda: "short/app" not in _repositories(mirror), within=15)
    assert mirror.blob_files() == shared
    relay.reset()
    await _pull(mirror, "long/app", "v1", image)
    assert relay.blob_gets() == 0


@pytest.mark.parametrize("prefix", [None, "docker.io/"], ids=["pure-proxy", "upstreams"])
async def test_when_everything_expires_storage_is_empty_of_it(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror, prefix: str | None
) -> None:
    image = await upstream.push_image("app", "v1")
    # storage.delete is off (the default): expiry does not depend on it.
    mirror = await make_mirror(prefix, ttl="1s")
    name = f"{prefix or ''}app"
    await _pull(mirror, name, "v1", image)
    assert len(mirror.blob_files()) == 4
    await until(lambda: not mirror.blob_files() and not _repositories(mirror), within=15)
    catalog = await mirror.request("GET", "/v2/_catalog")
    assert (await catalog.json())["repositories"] == []
    # And it comes back on the next pull.
    await _pull(mirror, name, "v1", image)


async def test_use_keeps_content_cached_past_its_ttl(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    image = await upstream.push_image("app", "v1")
    mirror = await make_mirror(ttl="3s", recheck="1h")
    await _pull(mirror, "docker.io/app", "v1", image)
    relay.reset()
    loop = asyncio.get_running_loop()
    end = loop.time() + 5
    while loop.time() < end:  # pulled every 300 ms for longer than the ttl
        await _pull(mirror, "docker.io/app", "v1", image)
        await asyncio.sleep(0.3)
    assert relay.blob_gets() + relay.count("GET", "/manifests/") == 0
    await until(lambda: not mirror.blob_files(), within=15)


async def test_uses_are_kept_in_storage_for_every_process_and_restart(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    image = await upstream.push_image("app", "v1")
    first = await make_mirror(ttl="1h")
    await _pull(first, "docker.io/app", "v1", image)
    assert first.root is not None
    await first.client.listener.close()
    # Another process over the same storage, with a ttl the recorded uses are past.
    second = await make_mirror(root=first.root, ttl="1s")
    await until(lambda: not second.blob_files(), within=15)


async def test_a_ttl_of_zero_never_expires(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    image = await upstream.push_image("app", "v1")
    mirror = await make_mirror(ttl="0s")
    await _pull(mirror, "docker.io/app", "v1", image)
    namespace = mirror.app[API_KEY].registry
    assert isinstance(namespace, MirrorRegistry)
    assert namespace.sweep_interval() is None
    await namespace.sweep()
    assert len(mirror.blob_files()) == 4
    assert _manifest_links(mirror, "docker.io/app") == 1
