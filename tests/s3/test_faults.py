"""When the object store dies: 503 UNAVAILABLE, and nothing half-written becomes visible.

These tests kill a SeaweedFS of their own (``object_store``) with SIGKILL, as
a crash would, and start it again on the same ports and data. The registry
runs in process, so a test can kill the store at an exact step of a request.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import os
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from cargohold.api.app import API_KEY
from cargohold.digest import Digest
from cargohold.storage.driver.s3 import S3Driver
from cargohold.storage.paths import BlobData, path_for
from tests.s3.conftest import (
    AiohttpClient,
    MiB,
    ObjectStore,
    app_client,
    error_codes,
    registry_config,
    sha256,
)
from tests.s3.operations import watch_operations
from tests.support.redis import RedisServer
from tests.support.seaweed import SeaweedS3

NAME = "faults/app"
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def registry(aiohttp_client: AiohttpClient, object_store: ObjectStore) -> Client:
    """A registry on the killable store, under a root of its own, with 5 MiB parts."""
    parameters = object_store.server.parameters(
        rootdirectory=f"/t-{secrets.token_hex(6)}", chunksize=5 * MiB
    )
    return await app_client(aiohttp_client, registry_config(parameters))


def driver_of(client: Client) -> S3Driver:
    driver = client.app[API_KEY].registry.driver  # type: ignore[attr-defined]
    assert isinstance(driver, S3Driver)
    return driver


async def start_upload(client: Client) -> str:
    reply = await client.post(f"/v2/{NAME}/blobs/uploads/")
    assert reply.status == 202, await reply.text()
    return reply.headers["Location"]


async def patch(client: Client, location: str, offset: int, piece: bytes) -> str:
    reply = await client.patch(
        URL(location).raw_path_qs,
        data=io.BytesIO(piece),
        headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(piece) - 1}",
        },
    )
    assert reply.status == 202, await reply.text()
    return reply.headers["Location"]


def closing_put(location: str, digest: str) -> str:
    return URL(location).update_query(digest=digest).raw_path_qs


async def push_chunked(client: Client, data: bytes, head: int) -> str:
    """POST, PATCHes of 3 MiB up to ``head`` bytes, and the closing PUT's location."""
    location = await start_upload(client)
    for offset in range(0, head, 3 * MiB):
        location = await patch(client, location, offset, data[offset : min(offset + 3 * MiB, head)])
    return closing_put(location, sha256(data))


async def push(client: Client, data: bytes) -> str:
    digest = sha256(data)
    reply = await client.post(f"/v2/{NAME}/blobs/uploads/?digest={digest}", data=io.BytesIO(data))
    assert reply.status == 201, await reply.text()
    return digest


async def pulled(client: Client, digest: str) -> bytes:
    """The blob's bytes, from where the registry's redirect points."""
    reply = await client.get(f"/v2/{NAME}/blobs/{digest}", allow_redirects=False)
    assert reply.status == 307, await reply.text()
    async with (
        aiohttp.ClientSession() as session,
        session.get(URL(reply.headers["Location"], encoded=True)) as fetched,
    ):
        assert fetched.status == 200
        return await fetched.read()


def manifest_of(config: bytes, layer: bytes) -> bytes:
    def descriptor(media_type: str, blob: bytes) -> dict[str, Any]:
        return {"mediaType": media_type, "digest": sha256(blob), "size": len(blob)}

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": descriptor("application/vnd.oci.image.config.v1+json", config),
            "layers": [descriptor("application/vnd.oci.image.layer.v1.tar+gzip", layer)],
        }
    ).encode()


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing was logged as an error or with a traceback (aiohttp's way of reporting a 500)."""
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [f"{r.name}: {r.getMessage()}" for r in bad]


# -- (a) every endpoint answers 503 while the store is down ----------------------------


async def test_a_dead_object_store_makes_every_endpoint_answer_503_unavailable(
    registry: Client, object_store: ObjectStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    layer, config = os.urandom(100_000), b'{"architecture":"amd64","os":"linux"}'
    layer_digest, _ = await push(registry, layer), await push(registry, config)
    manifest = manifest_of(config, layer)
    media_type = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    reply = await registry.put(f"/v2/{NAME}/manifests/v1", data=manifest, headers=media_type)
    assert reply.status == 201
    # Everything answers while the store is up; one upload is left open for later.
    assert await pulled(registry, layer_digest) == layer
    assert (await registry.head(f"/v2/{NAME}/blobs/{layer_digest}")).status == 200
    assert (await registry.get(f"/v2/{NAME}/manifests/v1")).status == 200
    location = URL(await start_upload(registry)).raw_path_qs

    object_store.kill()
    manifest_digest = sha256(manifest)
    body = os.urandom(1000)
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/v2/{NAME}/blobs/{layer_digest}", {}),
        ("HEAD", f"/v2/{NAME}/blobs/{layer_digest}", {}),
        ("DELETE", f"/v2/{NAME}/blobs/{layer_digest}", {}),
        ("GET", f"/v2/{NAME}/manifests/v1", {}),
        ("HEAD", f"/v2/{NAME}/manifests/v1", {}),
        ("GET", f"/v2/{NAME}/manifests/{manifest_digest}", {}),
        ("PUT", f"/v2/{NAME}/manifests/v2", {"data": manifest, "headers": media_type}),
        ("DELETE", f"/v2/{NAME}/manifests/{manifest_digest}", {}),
        ("GET", f"/v2/{NAME}/tags/list", {}),
        ("GET", "/v2/_catalog", {}),
        ("POST", f"/v2/{NAME}/blobs/uploads/", {}),
        ("POST", f"/v2/{NAME}/blobs/uploads/?digest={sha256(body)}", {"data": body}),
        ("PATCH", location, {"data": body, "headers": {"Content-Range": "0-999"}}),
        ("PUT", closing_put(location, sha256(body)), {"data": body}),
        ("GET", location, {}),
        ("DELETE", location, {}),
    ]
    answers = {}
    for method, path, options in attempts:
        reply = await registry.request(method, path, allow_redirects=False, **options)
        content = await reply.read()
        answers[f"{method} {path}"] = reply.status
        if method != "HEAD" and reply.status == 503:
            assert reply.content_type == "application/json"
            assert error_codes(content) == ["UNAVAILABLE"], content
    assert set(answers.values()) == {503}, answers
    no_tracebacks(caplog)

    # Once the store is back, the same registry (the same pooled client) answers again.
    object_store.start()
    assert (await registry.get(f"/v2/{NAME}/manifests/v1")).status == 200
    assert await pulled(registry, layer_digest) == layer


# -- (b) a commit cut short leaves no blob, and the push can be done again -------------


def is_layer_link(key: str) -> bool:
    return "/_layers/" in key and key.endswith("/link")


#: Where the store dies while the registry commits the upload: completing the multipart
#: upload of the received bytes; copying the verified content to its place under
#: ``blobs/``; writing the repository's link, the last step.
KILL_POINTS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "complete-multipart-upload": ("CompleteMultipartUpload", lambda key: key.endswith("/data")),
    "copy-into-blobs": ("CopyObject", lambda key: "/docker/registry/v2/blobs/" in key),
    "write-link": ("PutObject", is_layer_link),
}


@pytest.mark.parametrize("kill_point", KILL_POINTS)
async def test_a_store_killed_during_the_closing_put_leaves_no_blob_behind(
    registry: Client,
    object_store: ObjectStore,
    caplog: pytest.LogCaptureFixture,
    kill_point: str,
) -> None:
    caplog.set_level(logging.WARNING)
    data = os.urandom(6 * MiB + 1234)  # a 6 MiB part, then a tail sent with the closing PUT
    digest = sha256(data)
    closing = await push_chunked(registry, data, 6 * MiB)

    operation, matches = KILL_POINTS[kill_point]
    killed: list[str] = []

    def kill(sent: str, key: str) -> None:
        if not killed and sent == operation and matches(key):
            killed.append(key)
            object_store.kill()

    driver = driver_of(registry)
    stop_watching = await watch_operations(driver, kill)
    reply = await registry.put(closing, data=io.BytesIO(data[6 * MiB :]))
    stop_watching()
    assert killed, f"the closing PUT never sent {operation}"
    assert reply.status == 503, await reply.text()
    assert error_codes(await reply.read()) == ["UNAVAILABLE"]
    no_tracebacks(caplog)

    object_store.start()
    head = await registry.head(f"/v2/{NAME}/blobs/{digest}")
    assert head.status == 404
    reply = await registry.get(f"/v2/{NAME}/blobs/{digest}", allow_redirects=False)
    assert reply.status == 404
    assert error_codes(await reply.read()) == ["BLOB_UNKNOWN"]
    # Content may have reached its place before the link (the last step), but only whole.
    client, key = (
        object_store.server.client(),
        driver._key(path_for(BlobData(Digest.parse(digest)))),
    )
    try:
        stored = client.get_object(Bucket=object_store.server.bucket, Key=key)["Body"].read()
    except client.exceptions.NoSuchKey:
        stored = None
    finally:
        client.close()
    if kill_point == "write-link":
        assert stored is not None
    if stored is not None:
        assert "sha256:" + hashlib.sha256(stored).hexdigest() == digest

    # The same content pushed again, the same way, is whole.
    closing = await push_chunked(registry, data, 6 * MiB)
    reply = await registry.put(closing, data=io.BytesIO(data[6 * MiB :]))
    assert reply.status == 201, await reply.text()
    head = await registry.head(f"/v2/{NAME}/blobs/{digest}")
    assert (head.status, head.headers["Content-Length"]) == (200, str(len(data)))
    assert await pulled(registry, digest) == data


# -- (c) streaming a blob when the content fails or is gone ------------------------------


async def test_a_store_killed_while_a_blob_streams_cuts_the_connection(
    aiohttp_client: AiohttpClient, object_store: ObjectStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    parameters = object_store.server.parameters(rootdirectory=f"/t-{secrets.token_hex(6)}")
    client = await app_client(aiohttp_client, registry_config(parameters, redirect=False))
    # More than the socket buffers between the store, the registry and this client hold.
    data = os.urandom(24 * MiB)
    digest = await push(client, data)

    # A raw connection, to see every byte the registry sends after the status line.
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET /v2/{NAME}/blobs/{digest} HTTP/1.1\r\nHost: registry\r\n\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    received = await reader.readexactly(MiB)
    object_store.kill()
    # The registry closes the connection at once, short of its Content-Length (without
    # the fix, it wrote a 503 reply inside the body and left the client waiting).
    async with asyncio.timeout(10):
        received += await reader.read()
    writer.close()
    await writer.wait_closed()
    assert len(received) < len(data)
    assert received == data[: len(received)], "only the blob's own bytes, no error reply"
    no_tracebacks(caplog)
    assert [r.name for r in caplog.records if "failed while sending it" in r.getMessage()] == [
        "cargohold.api"
    ]


async def test_content_gone_from_under_a_cached_descriptor_is_a_404_not_a_broken_200(
    aiohttp_client: AiohttpClient,
    seaweedfs: SeaweedS3,
    s3_parameters: dict[str, Any],
    redis_db: RedisServer,
) -> None:
    document = registry_config(
        s3_parameters, redis_addr=f"127.0.0.1:{redis_db.port}", redirect=False
    )
    client = await app_client(aiohttp_client, document)
    digest = await push(client, os.urandom(1000))
    assert (await client.head(f"/v2/{NAME}/blobs/{digest}")).status == 200  # now in Redis
    # The content goes, the link stays: what a garbage collection elsewhere leaves.
    key = driver_of(client)._key(path_for(BlobData(Digest.parse(digest))))
    store = seaweedfs.client()
    store.delete_object(Bucket=seaweedfs.bucket, Key=key)
    store.close()

    reply = await client.get(f"/v2/{NAME}/blobs/{digest}")
    assert reply.status == 404
    assert error_codes(await reply.read()) == ["BLOB_UNKNOWN"]
