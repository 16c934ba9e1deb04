"""An upstream that answers wrongly gets the client a clean error, and nothing is cached from it.

Each case is a fault of the counting relay (``relay.py``): a manifest whose
digest does not match, a blob cut short, corrupted or longer than announced,
a redirect loop, an HTML page. The mirror answers 502 (``UNKNOWN``) with an
error body, logs what happened, and its storage holds nothing of it.
"""

from __future__ import annotations

import logging

import aiohttp
import pytest

from cargohold.manifest import OCI_INDEX
from tests.api.conftest import OCI_MANIFEST, Registry, assert_error, random_blob
from tests.proxy.conftest import MakeMirror, Mirror
from tests.proxy.relay import Fault, Relay

ACCEPT = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}


def _cached_manifests(mirror: Mirror) -> set[str]:
    assert mirror.root is not None
    revisions = mirror.root / "docker/registry/v2/repositories"
    return {p.parent.name for p in revisions.rglob("_manifests/revisions/*/*/link")}


async def _read_into(received: bytearray, mirror: Mirror, path: str) -> None:
    async with mirror.client.session.get(mirror.client.make_url(path)) as response:
        assert response.status == 200
        async for chunk in response.content.iter_chunked(1 << 16):
            received += chunk


def _blob_gets(method: str, path: str) -> bool:
    return method == "GET" and "/blobs/" in path


async def test_a_manifest_that_does_not_match_its_digest_is_a_502_and_not_kept(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror, caplog: pytest.LogCaptureFixture
) -> None:
    image = await upstream.push_image("app", "v1")
    mirror = await make_mirror()
    relay.fault = Fault("other-manifest", applies=lambda m, p: m == "GET" and "/manifests/" in p)
    with caplog.at_level(logging.WARNING, "cargohold.proxy"):
        response = await mirror.request("GET", "/v2/docker.io/app/manifests/v1", headers=ACCEPT)
        await assert_error(response, 502, "UNKNOWN")
        by_digest = await mirror.request(
            "GET", f"/v2/docker.io/app/manifests/{image.digest}", headers=ACCEPT
        )
        await assert_error(by_digest, 502, "UNKNOWN")
    assert _cached_manifests(mirror) == set()
    assert any("invalid content" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kind", ["corrupt", "truncate", "longer"])
async def test_a_small_blob_that_is_wrong_is_a_502_and_never_stored(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror, kind: str
) -> None:
    blob = await upstream.push_blob("app", random_blob(200_000))
    mirror = await make_mirror()
    relay.fault = Fault(kind, applies=_blob_gets)
    response = await mirror.request("GET", f"/v2/docker.io/app/blobs/{blob.digest}")
    await assert_error(response, 502, "UNKNOWN")
    assert mirror.blob_files() == set()
    # Once the upstream behaves, the same blob is filled and served.
    relay.fault = None
    assert await mirror.pull_blob("docker.io/app", blob.digest) == blob.data


@pytest.mark.parametrize("kind", ["corrupt", "truncate"])
async def test_a_large_blob_that_is_wrong_is_cut_short_and_never_stored(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror, kind: str
) -> None:
    """Past the first MiB the reply is already under way: the connection is cut before the
    last bytes, which go out only once the content verified."""
    blob = random_blob(4 * 1024 * 1024)
    await upstream.push_blob("app", blob, chunked=True)
    mirror = await make_mirror()
    relay.fault = Fault(kind, applies=_blob_gets)
    received = bytearray()
    with pytest.raises(aiohttp.ClientPayloadError):
        await _read_into(received, mirror, f"/v2/docker.io/app/blobs/{blob.digest}")
    assert len(received) < blob.size
    assert mirror.blob_files() == set()


async def test_a_large_blob_sent_without_a_length_is_served_only_once_verified(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    """With no length announced there is no reply to start: a wrong body is a clean 502."""
    blob = random_blob(4 * 1024 * 1024)
    await upstream.push_blob("app", blob, chunked=True)
    mirror = await make_mirror()
    relay.fault = Fault("longer", applies=_blob_gets)
    response = await mirror.request("GET", f"/v2/docker.io/app/blobs/{blob.digest}")
    await assert_error(response, 502, "UNKNOWN")
    assert mirror.blob_files() == set()


async def test_a_redirect_loop_is_a_502(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    await upstream.push_image("app", "v1")
    mirror = await make_mirror()
    relay.fault = Fault("loop", applies=lambda m, p: "/manifests/" in p)
    response = await mirror.request("GET", "/v2/docker.io/app/manifests/v1", headers=ACCEPT)
    await assert_error(response, 502, "UNKNOWN")
    assert _cached_manifests(mirror) == set()


async def test_a_reply_that_is_not_a_registrys_is_a_502(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    image = await upstream.push_image("app", "v1")
    mirror = await make_mirror()
    relay.fault = Fault("html", applies=lambda m, p: p != "/v2/")
    response = await mirror.request(
        "GET", f"/v2/docker.io/app/manifests/{image.digest}", headers=ACCEPT
    )
    await assert_error(response, 502, "UNKNOWN")
    assert image.layers
    blob = await mirror.request("GET", f"/v2/docker.io/app/blobs/{image.layers[0].digest}")
    assert blob.status == 502
    assert _cached_manifests(mirror) == set()
    assert mirror.blob_files() == set()


async def test_an_unknown_manifest_or_blob_upstream_is_a_404(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    await upstream.push_image("app", "v1")
    mirror = await make_mirror()
    response = await mirror.request("GET", "/v2/docker.io/app/manifests/nope", headers=ACCEPT)
    await assert_error(response, 404, "MANIFEST_UNKNOWN")
    missing = random_blob()
    response = await mirror.request("GET", f"/v2/docker.io/app/blobs/{missing.digest}")
    await assert_error(response, 404, "BLOB_UNKNOWN")
