"""A mirror serves an upstream's images: tags checked with a HEAD, content kept and served.

The upstream is cargohold behind a counting relay (``conftest.py``), so each
test says exactly which requests reached it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import tracemalloc

import pytest

from cargohold.manifest import OCI_INDEX
from tests.api.conftest import (
    OCI_MANIFEST,
    Registry,
    assert_error,
    random_blob,
)
from tests.api.test_metrics import Scraper
from tests.proxy.conftest import MakeMirror
from tests.proxy.relay import Fault, Relay
from tests.support.servers import free_port
from tests.support.waiting import until

ACCEPT = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}


async def test_a_tag_is_checked_with_a_head_and_its_image_kept(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    image = await upstream.push_image("library/alpine", "3.20")
    mirror = await make_mirror(recheck="1h")
    relay.reset()

    response = await mirror.request(
        "GET", "/v2/docker.io/library/alpine/manifests/3.20", headers=ACCEPT
    )
    assert response.status == 200
    assert await response.read() == image.payload
    assert response.headers["Docker-Content-Digest"] == image.digest
    # One HEAD for the tag, one GET for the manifest it names.
    assert relay.count("HEAD", "/manifests/3.20") == 1
    assert relay.count("GET", "/manifests/") == 1
    for blob in (image.config, *image.layers):
        assert blob is not None
        assert await mirror.pull_blob("docker.io/library/alpine", blob.digest) == blob.data

    relay.reset()
    again = await mirror.request_anew(
        "GET", "/v2/docker.io/library/alpine/manifests/3.20", headers=ACCEPT
    )
    assert again == (200, image.payload)
    for blob in (image.config, *image.layers):
        assert blob is not None
        await mirror.pull_blob("docker.io/library/alpine", blob.digest)
    # Within the recheck interval, and every byte cached: the upstream hears nothing.
    assert sum(relay.counts.values()) == 0


async def test_after_the_recheck_interval_one_head_and_a_moved_tag_is_fetched(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    first = await upstream.push_image("app", "latest")
    mirror = await make_mirror(recheck="0s")
    status, body = await mirror.request_anew(
        "GET", "/v2/docker.io/app/manifests/latest", headers=ACCEPT
    )
    assert (status, body) == (200, first.payload)

    relay.reset()
    status, body = await mirror.request_anew(
        "GET", "/v2/docker.io/app/manifests/latest", headers=ACCEPT
    )
    assert (status, body) == (200, first.payload)
    assert (relay.count("HEAD"), relay.count("GET")) == (1, 0)

    second = await upstream.push_image("app", "latest")
    relay.reset()
    status, body = await mirror.request_anew(
        "GET", "/v2/docker.io/app/manifests/latest", headers=ACCEPT
    )
    assert (status, body) == (200, second.payload)
    assert (relay.count("HEAD"), relay.count("GET", "/manifests/")) == (1, 1)


async def test_a_manifest_by_digest_is_served_from_the_cache_without_asking(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    image = await upstream.push_image("app", "v1")
    mirror = await make_mirror()
    path = f"/v2/docker.io/app/manifests/{image.digest}"
    assert await mirror.request_anew("GET", path, headers=ACCEPT) == (200, image.payload)
    relay.reset()
    assert await mirror.request_anew("GET", path, headers=ACCEPT) == (200, image.payload)
    head = await mirror.request("HEAD", path, headers=ACCEPT)
    assert head.status == 200
    assert sum(relay.counts.values()) == 0


@pytest.mark.parametrize("failure", [503, 500, 429])
async def test_when_the_upstream_fails_the_cached_tag_is_served_with_a_warning(
    upstream: Registry,
    relay: Relay,
    make_mirror: MakeMirror,
    caplog: pytest.LogCaptureFixture,
    failure: int,
) -> None:
    image = await upstream.push_image("app", "stable")
    mirror = await make_mirror(recheck="0s")
    path = "/v2/docker.io/app/manifests/stable"
    assert await mirror.request_anew("GET", path, headers=ACCEPT) == (200, image.payload)

    relay.fault = Fault("status", failure, {"Retry-After": "0"})
    with caplog.at_level(logging.WARNING, "cargohold.proxy"):
        assert await mirror.request_anew("GET", path, headers=ACCEPT) == (200, image.payload)
    assert any("serving the cached" in r.getMessage() for r in caplog.records)
    # A tag never cached has nothing stale to serve.
    response = await mirror.request("GET", "/v2/docker.io/app/manifests/other", headers=ACCEPT)
    code = "TOOMANYREQUESTS" if failure == 429 else "UNAVAILABLE"
    await assert_error(response, 429 if failure == 429 else 503, code)


async def test_an_upstream_that_is_gone_leaves_the_cache_serving(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    image = await upstream.push_image("app", "stable")
    mirror = await make_mirror(recheck="0s")
    path = "/v2/docker.io/app/manifests/stable"
    assert await mirror.request_anew("GET", path, headers=ACCEPT) == (200, image.payload)
    for blob in (image.config, *image.layers):
        assert blob is not None
        await mirror.pull_blob("docker.io/app", blob.digest)
    await upstream.client.listener.close()  # refused connections from now on
    assert await mirror.request_anew("GET", path, headers=ACCEPT) == (200, image.payload)
    for blob in (image.config, *image.layers):
        assert blob is not None
        await mirror.pull_blob("docker.io/app", blob.digest)


async def test_an_index_and_the_platform_manifests_pulled_through_it_are_cached(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    children = [await upstream.push_image("multi") for _ in range(2)]
    index = await upstream.push_index("multi", children, "latest")
    mirror = await make_mirror(recheck="1h")
    status, body = await mirror.request_anew(
        "GET", "/v2/docker.io/multi/manifests/latest", headers=ACCEPT
    )
    assert (status, body) == (200, index.payload)
    child = json.loads(body)["manifests"][1]["digest"]
    path = f"/v2/docker.io/multi/manifests/{child}"
    assert await mirror.request_anew("GET", path, headers=ACCEPT) == (200, children[1].payload)
    relay.reset()
    assert await mirror.request_anew("GET", path, headers=ACCEPT) == (200, children[1].payload)
    status, _ = await mirror.request_anew(
        "GET", "/v2/docker.io/multi/manifests/latest", headers=ACCEPT
    )
    assert status == 200
    assert sum(relay.counts.values()) == 0
    assert mirror.root is not None
    revisions = (
        mirror.root / "docker/registry/v2/repositories/docker.io/multi/_manifests/revisions/sha256"
    )
    assert {p.name for p in revisions.iterdir()} == {
        index.digest.split(":")[1],
        children[1].digest.split(":")[1],
    }


async def test_twenty_pulls_of_an_uncached_blob_make_one_upstream_get(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    blob = random_blob(64 * 1024 * 1024)
    await upstream.push_blob("big", blob, chunked=True)
    mirror = await make_mirror()
    relay.reset()

    async def pull() -> str:
        digest = hashlib.sha256()
        # A connection each, as twenty nodes would.
        async with mirror.client.session.get(
            mirror.client.make_url(f"/v2/docker.io/big/blobs/{blob.digest}")
        ) as response:
            assert response.status == 200
            async for chunk in response.content.iter_chunked(1 << 20):
                digest.update(chunk)
        return f"sha256:{digest.hexdigest()}"

    tracemalloc.start()
    try:
        copies = await asyncio.gather(*(pull() for _ in range(20)))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert copies == [blob.digest] * 20
    # 1.25 GiB went out; the process (mirror, relay, upstream, twenty clients) held
    # a few chunks per stream at a time, never a blob.
    assert peak < 48 * 1024 * 1024, peak
    assert relay.blob_gets() == 1
    await until(lambda: mirror.blob_files() == {blob.digest}, what="the fill never committed")


async def test_a_client_that_leaves_mid_blob_does_not_stop_the_fill(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    blob = random_blob(16 * 1024 * 1024)
    await upstream.push_blob("big", blob, chunked=True)
    mirror = await make_mirror()
    relay.reset()
    url = mirror.client.make_url(f"/v2/docker.io/big/blobs/{blob.digest}")
    response = await mirror.client.session.get(url)
    assert response.status == 200
    await response.content.readexactly(1 << 20)
    response.close()  # gone, a sixteenth of the way in
    assert await mirror.pull_blob("docker.io/big", blob.digest) == blob.data
    assert relay.blob_gets() == 1
    # The last bytes go out once verified; the commit to storage follows them.
    await until(lambda: mirror.blob_files() == {blob.digest}, what="the fill never committed")


async def test_a_head_of_an_uncached_blob_pulls_nothing_in(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    blob = await upstream.push_blob("app")
    mirror = await make_mirror()
    relay.reset()
    response = await mirror.request("HEAD", f"/v2/docker.io/app/blobs/{blob.digest}")
    assert response.status == 200
    assert int(response.headers["Content-Length"]) == blob.size
    assert (relay.count("HEAD", "/blobs/"), relay.blob_gets()) == (1, 0)
    assert mirror.blob_files() == set()


async def test_a_range_of_an_uncached_blob_is_served_and_the_whole_blob_kept(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    blob = random_blob(3 * 1024 * 1024)
    await upstream.push_blob("app", blob, chunked=True)
    mirror = await make_mirror()
    response = await mirror.request(
        "GET", f"/v2/docker.io/app/blobs/{blob.digest}", headers={"Range": "bytes=1000-1999"}
    )
    assert response.status == 206
    assert await response.read() == blob.data[1000:2000]
    await mirror.pull_blob("docker.io/app", blob.digest)
    assert relay.blob_gets() == 1


async def test_a_failing_upstream_url_fails_over_to_the_next(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    image = await upstream.push_image("app", "v1")
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    mirror = await make_mirror(remoteurl=dead, failover=[relay.url])
    status, body = await mirror.request_anew(
        "GET", "/v2/docker.io/app/manifests/v1", headers=ACCEPT
    )
    assert (status, body) == (200, image.payload)
    assert image.layers
    assert await mirror.pull_blob("docker.io/app", image.layers[0].digest) == image.layers[0].data
    assert relay.count("GET", "/manifests/") == 1


async def test_hits_misses_and_pulled_bytes_are_counted_under_distributions_names(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror, scraper: Scraper
) -> None:
    image = await upstream.push_image("app", "v1")
    mirror = await make_mirror(
        recheck="1h", settings={"http": {"debug": {"prometheus": {"enabled": True}}}}
    )
    assert image.layers
    layer = image.layers[0]
    for _ in range(3):
        status, _body = await mirror.request_anew(
            "GET", "/v2/docker.io/app/manifests/v1", headers=ACCEPT
        )
        assert status == 200
        await mirror.pull_blob("docker.io/app", layer.digest)
    found = await scraper(mirror)
    blob, manifest = {"type": "blob"}, {"type": "manifest"}
    assert found.value("registry_proxy_misses_total", **blob) == 1
    assert found.value("registry_proxy_hits_total", **blob) == 2
    assert found.value("registry_proxy_pulled_bytes_total", **blob) == layer.size
    assert found.value("registry_proxy_pushed_bytes_total", **blob) == 3 * layer.size
    assert found.value("registry_proxy_misses_total", **manifest) == 1
    assert found.value("registry_proxy_hits_total", **manifest) == 2
    assert found.value("registry_proxy_pulled_bytes_total", **manifest) == image.size
    host = relay.url.removeprefix("http://")
    assert found.value("cargohold_proxy_upstream_hits_total", upstream=host, type="blob") == 2
