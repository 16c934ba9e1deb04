"""The fast path answers exactly as the full path does, or leaves the request to it.

Two servers share one filesystem root, one with the fast path and one without;
every request goes to both over raw sockets and the replies must be equal,
byte for byte but for the Date header.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from tests.api.conftest import Blob, digest_of, random_blob, random_config
from tests.support.http_raw import RawReply, read_replies, request_bytes
from tests.support.servers import cargohold

from cargohold.manifest import OCI_INDEX, OCI_MANIFEST


async def exchange(url: str, requests: list[bytes], *, split: int | None = None) -> list[RawReply]:
    """Send ``requests`` pipelined on one connection (optionally cut at ``split``); read replies."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    data = b"".join(requests)
    if split is None:
        writer.write(data)
    else:
        writer.write(data[:split])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(data[split:])
    replies = await read_replies(reader, requests)
    writer.close()
    return replies


request = request_bytes


@dataclass
class Content:
    small: Blob
    large: Blob
    manifest_digest: str
    index_digest: str


async def push(url: str) -> Content:
    small, large = random_blob(4096), random_blob(300 * 1024)
    config = random_config()
    async with aiohttp.ClientSession() as session:
        for blob in (small, large, config):
            async with session.post(
                f"{url}/v2/app/blobs/uploads/", params={"digest": blob.digest}, data=blob.data
            ) as response:
                assert response.status == 201
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": [small.descriptor(), large.descriptor()],
            },
            indent=3,
        ).encode()
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {
                        "mediaType": OCI_MANIFEST,
                        "digest": digest_of(manifest),
                        "size": len(manifest),
                    }
                ],
            }
        ).encode()
        for body, media_type, tag in ((manifest, OCI_MANIFEST, "v1"), (index, OCI_INDEX, "multi")):
            async with session.put(
                f"{url}/v2/app/manifests/{tag}", data=body, headers={"Content-Type": media_type}
            ) as response:
                assert response.status == 201
    return Content(small, large, digest_of(manifest), digest_of(index))


@dataclass
class Servers:
    fast: str
    full: str
    fast_log: Path
    content: Content
    root: Path


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("root")
    env = {"REGISTRY_LOG_ACCESSLOG_DISABLED": "false", "REGISTRY_LOG_LEVEL": "info"}
    fast_log = root.parent / "fast.log"
    with ExitStack() as stack:
        fast = stack.enter_context(cargohold(root, env=env, log=fast_log))
        full = stack.enter_context(
            cargohold(root, env=env, log=root.parent / "full.log", extra_args=("--no-fast-path",))
        )
        yield Servers(fast, full, fast_log, asyncio.run(push(full)), root)


def cases(c: Content) -> list[bytes]:
    missing = digest_of(os.urandom(8))
    return [
        request("GET", "/v2/"),
        request("GET", "/v2"),
        request("HEAD", "/v2/"),
        request("HEAD", f"/v2/app/blobs/{c.small.digest}"),
        request("GET", f"/v2/app/blobs/{c.small.digest}"),
        request("HEAD", f"/v2/app/blobs/{c.large.digest}"),
        request("GET", f"/v2/app/blobs/{c.large.digest}"),
        request("GET", f"/v2/app/blobs/{c.small.digest}", "Range: bytes=10-19"),
        request("GET", f"/v2/app/blobs/{c.small.digest}", f'If-None-Match: "{c.small.digest}"'),
        request(
            "GET", "/v2/app/manifests/v1", "Accept: application/vnd.oci.image.manifest.v1+json"
        ),
        request("HEAD", "/v2/app/manifests/v1"),
        request("GET", f"/v2/app/manifests/{c.manifest_digest}"),
        request("GET", "/v2/app/manifests/multi"),
        request("HEAD", f"/v2/app/manifests/{c.index_digest}"),
        request("GET", "/v2/app/tags/list"),
        request("GET", "/v2/app/tags/list?n=1"),
        request("GET", f"/v2/app/blobs/{missing}"),
        request("HEAD", f"/v2/other/blobs/{c.small.digest}"),
        request("GET", "/v2/app/manifests/nope"),
        request("GET", "/v2/app/manifests/-bad-tag"),
        request("GET", "/v2/App/blobs/sha256:abc"),
        request("GET", "/v2/a%2e%2e/blobs/" + c.small.digest),
        request("GET", "/v2/app/blobs/sha256:nothex"),
        request("GET", "/v2/nobody/tags/list"),
        request("GET", "/v2/_catalog"),
        request(
            "HEAD", f"/v2/app/blobs/{c.small.digest}", "Connection: keep-alive", version="HTTP/1.0"
        ),
    ]


async def test_each_request_gets_the_same_reply_from_both_paths(servers: Servers) -> None:
    for case in cases(servers.content):
        (got,) = await exchange(servers.fast, [case])
        (expected,) = await exchange(servers.full, [case])
        assert got.comparable() == expected.comparable(), case


async def test_pipelined_requests_are_answered_in_order(servers: Servers) -> None:
    requests = cases(servers.content)
    got = await exchange(servers.fast, requests)
    expected = await exchange(servers.full, requests)
    assert [r.comparable() for r in got] == [r.comparable() for r in expected]


@pytest.mark.parametrize("split", [3, 20, 40, 120])
async def test_a_request_cut_anywhere_is_answered_whole(servers: Servers, split: int) -> None:
    content = servers.content
    requests = [
        request("HEAD", f"/v2/app/blobs/{content.small.digest}"),
        request("GET", "/v2/app/manifests/v1"),
    ]
    got = await exchange(servers.fast, requests, split=split)
    expected = await exchange(servers.full, requests)
    assert [r.comparable() for r in got] == [r.comparable() for r in expected]


async def test_a_connection_handed_to_the_full_path_keeps_working(servers: Servers) -> None:
    content = servers.content
    upload = request("POST", "/v2/app/blobs/uploads/", "Content-Length: 0")
    requests = [request("HEAD", f"/v2/app/blobs/{content.small.digest}"), upload]
    requests += [request("HEAD", f"/v2/app/blobs/{content.small.digest}")] * 3
    replies = await exchange(servers.fast, requests)
    assert [r.status_line.split()[1] for r in replies] == [b"200", b"202", b"200", b"200", b"200"]


async def test_fast_replies_are_access_logged_like_the_others(servers: Servers) -> None:
    digest = servers.content.small.digest
    await exchange(servers.fast, [request("HEAD", f"/v2/app/blobs/{digest}")])
    await asyncio.sleep(0.2)
    wanted = f"HEAD /v2/app/blobs/{digest} HTTP/1.1"
    lines = [line for line in servers.fast_log.read_text().splitlines() if wanted in line]
    assert lines, "the fast path wrote no access log line"
    assert '\\" 200 ' in lines[-1]
    assert "test/1.0" in lines[-1]
