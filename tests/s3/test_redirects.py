"""On S3, blob GETs are redirected to presigned URLs of the object store.

The registry never carries the bytes of a pulled blob: it checks the
repository's link, then answers ``307`` with a URL that the object store
itself will honour for ``storage.s3.redirectexpiry`` seconds. ``HEAD`` is
answered by the registry (a client only wants the size and digest), and with
``storage.redirect.disable`` the registry streams the body itself.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from cargohold.api.app import create_app
from cargohold.config import parse_config
from cargohold.errors import ConfigError
from tests.s3.conftest import (
    AiohttpClient,
    app_client,
    error_codes,
    registry_config,
    serving,
    sha256,
    write_config,
)
from tests.support import skopeo
from tests.support.accesslog import ACCESS_LOG_ENV, requests
from tests.support.images import assert_sound, build_image, image_tree, layers_of
from tests.support.seaweed import SeaweedS3

NAME = "redirects/app"
EXPIRY = 321  # seconds; unlike the default (1200), so the URL shows it came from the config


async def push(client: TestClient[web.Request, web.Application], data: bytes) -> str:
    """A monolithic upload of ``data`` into ``NAME``; its digest."""
    digest = sha256(data)
    # A file object: aiohttp warns that a large bytes body stalls the event loop.
    reply = await client.post(f"/v2/{NAME}/blobs/uploads/?digest={digest}", data=io.BytesIO(data))
    assert reply.status == 201, await reply.text()
    return digest


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET ``url`` exactly as given: a presigned URL must not be re-encoded."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(URL(url, encoded=True), headers=headers) as reply,
    ):
        return reply.status, await reply.read()


async def test_blob_get_is_redirected_to_a_presigned_url_of_the_object_store(
    aiohttp_client: AiohttpClient, seaweedfs: SeaweedS3, s3_parameters: dict[str, Any]
) -> None:
    client = await app_client(
        aiohttp_client, registry_config({**s3_parameters, "redirectexpiry": f"{EXPIRY}s"})
    )
    data = os.urandom(300 * 1024 + 17)
    digest = await push(client, data)

    reply = await client.get(f"/v2/{NAME}/blobs/{digest}", allow_redirects=False)
    assert reply.status == 307
    assert reply.headers["Docker-Content-Digest"] == digest
    assert await reply.read() == b"", "a redirect carries no content"
    location = URL(reply.headers["Location"], encoded=True)
    # The object store's own endpoint, the blob's key (path style), signed with SigV4.
    assert str(location.origin()) == seaweedfs.endpoint
    hex_ = digest.removeprefix("sha256:")
    root = s3_parameters["rootdirectory"].strip("/")
    key = f"{root}/docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data"
    assert location.path == f"/{seaweedfs.bucket}/{key}"
    assert location.query["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256"
    assert location.query["X-Amz-Expires"] == str(EXPIRY)
    assert location.query["X-Amz-Signature"]

    assert await fetch(str(location)) == (200, data)
    # A client that asks for a range asks the object store, which honours it.
    assert await fetch(str(location), {"Range": "bytes=1000-1999"}) == (206, data[1000:2000])

    head = await client.head(f"/v2/{NAME}/blobs/{digest}", allow_redirects=False)
    assert head.status == 200
    assert "Location" not in head.headers
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Docker-Content-Digest"] == digest


async def test_a_missing_blob_is_not_redirected(
    aiohttp_client: AiohttpClient, s3_parameters: dict[str, Any]
) -> None:
    # The link is checked before any URL is signed: no URL for content the repository lacks.
    client = await app_client(aiohttp_client, registry_config(s3_parameters))
    other = await push(client, os.urandom(100))
    reply = await client.get(f"/v2/{NAME}-other/blobs/{other}", allow_redirects=False)
    assert reply.status == 404
    assert "Location" not in reply.headers
    assert error_codes(await reply.read()) == ["BLOB_UNKNOWN"]


async def test_the_presigned_url_expires_after_redirectexpiry(
    aiohttp_client: AiohttpClient, s3_parameters: dict[str, Any]
) -> None:
    expiry = 2
    client = await app_client(
        aiohttp_client, registry_config({**s3_parameters, "redirectexpiry": f"{expiry}s"})
    )
    data = os.urandom(1000)
    digest = await push(client, data)
    reply = await client.get(f"/v2/{NAME}/blobs/{digest}", allow_redirects=False)
    location = URL(reply.headers["Location"], encoded=True)
    assert await fetch(str(location)) == (200, data)
    # The signature dates to the second; the object store refuses it once that plus the
    # expiry has passed.
    signed = datetime.strptime(location.query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    await asyncio.sleep(max(0.0, signed.timestamp() + expiry + 1.1 - time.time()))
    status, body = await fetch(str(location))
    assert status == 403
    assert b"expired" in body


def test_a_redirect_expiry_below_one_second_is_refused(s3_parameters: dict[str, Any]) -> None:
    # A Go duration: a bare 600 is 600 ns, which signed URLs that expire at once.
    document = registry_config({**s3_parameters, "redirectexpiry": 600})
    with pytest.raises(ConfigError) as refused:
        create_app(parse_config(yaml.safe_dump(document), environ={}))
    assert refused.value.key == "storage.s3.redirectexpiry"
    assert "nanoseconds" in refused.value.reason


async def test_with_redirects_disabled_the_registry_streams_the_blob(
    aiohttp_client: AiohttpClient, s3_parameters: dict[str, Any]
) -> None:
    client = await app_client(aiohttp_client, registry_config(s3_parameters, redirect=False))
    data = os.urandom(3 * 1024 * 1024 + 5)  # several chunks of the streamed reply
    digest = await push(client, data)

    reply = await client.get(f"/v2/{NAME}/blobs/{digest}", allow_redirects=False)
    assert reply.status == 200
    assert "Location" not in reply.headers
    assert reply.headers["Docker-Content-Digest"] == digest
    assert await reply.read() == data

    ranged = await client.get(
        f"/v2/{NAME}/blobs/{digest}", headers={"Range": "bytes=2000000-"}, allow_redirects=False
    )
    assert ranged.status == 206
    assert await ranged.read() == data[2000000:]


def test_skopeo_pulls_an_image_through_the_redirects(
    tmp_path: Path, s3_parameters: dict[str, Any]
) -> None:
    layout = tmp_path / "layout"
    build_image(layout, "v1", (64 * 1024, 1024 * 1024))
    config = write_config(tmp_path / "config.yml", registry_config(s3_parameters))
    with serving(config, 1, tmp_path, env=ACCESS_LOG_ENV) as (url,):
        skopeo.copy(f"oci:{layout}:v1", skopeo.docker(url, f"{NAME}:v1"))
        skopeo.copy(skopeo.docker(url, f"{NAME}:v1"), f"oci:{tmp_path / 'pulled'}:v1")
    pulled = image_tree(tmp_path / "pulled", "v1")
    assert pulled == image_tree(layout, "v1"), "every manifest and blob, byte for byte"
    assert_sound(pulled)

    # The access log shows who served the bytes: every blob GET was a redirect.
    blob_gets = {
        r.path.rpartition("/")[2]: r.status
        for r in requests(tmp_path / "cargohold-0.log")
        if r.method == "GET" and r.path.startswith(f"/v2/{NAME}/blobs/sha256:")
    }
    layers = layers_of(layout, "v1")
    assert set(layers) <= set(blob_gets), f"skopeo fetched {sorted(blob_gets)}"
    assert set(blob_gets.values()) == {307}, blob_gets
