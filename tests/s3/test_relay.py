"""With redirects off, a large blob's bytes go from S3's socket to the client's by ``splice``.

The registry checks the link and sends the status line and headers itself;
the body then moves from the store's answer to the client without passing
through the process (``api/relay.py``). Every byte must still arrive, in
order, for whole blobs and for ranges; a short body or a small range goes
the ordinary way; the client's connection stays usable for its next request,
and a client that leaves part way costs the registry nothing it keeps.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from cargohold.api import relay
from cargohold.socketbody import MINIMUM, SocketBody
from tests.s3.conftest import AiohttpClient, app_client, registry_config, sha256
from tests.s3.test_redirects import NAME, push
from tests.support.waiting import until

MiB = 1 << 20
DATA = os.urandom(8 * MiB + 7)


@dataclass
class Relays:
    """What ``relay.send`` was given, and what ``splice`` moved, in one test."""

    #: (bytes received before the hand-over, bytes left in the store's socket), per relay.
    bodies: list[tuple[int, int]] = field(default_factory=list)
    spliced: int = 0


@pytest.fixture
def relays(monkeypatch: pytest.MonkeyPatch) -> Relays:
    seen = Relays()
    send, splice = relay.send, relay._SPLICE
    assert splice is not None, "os.splice: Linux only"

    async def recorded_send(request: web.BaseRequest, body: SocketBody) -> None:
        seen.bodies.append((len(body.head), body.length))
        await send(request, body)

    def counted_splice(*args: Any, **kwargs: Any) -> int:
        moved = splice(*args, **kwargs)
        seen.spliced += moved
        return moved

    monkeypatch.setattr(relay, "send", recorded_send)
    monkeypatch.setattr(relay, "_SPLICE", counted_splice)
    return seen


async def registry(
    aiohttp_client: AiohttpClient, s3_parameters: dict[str, Any]
) -> tuple[TestClient[web.Request, web.Application], str]:
    client = await app_client(aiohttp_client, registry_config(s3_parameters, redirect=False))
    return client, await push(client, DATA)


async def test_a_large_blob_goes_from_the_stores_socket_to_the_clients(
    aiohttp_client: AiohttpClient, s3_parameters: dict[str, Any], relays: Relays
) -> None:
    client, digest = await registry(aiohttp_client, s3_parameters)
    reply = await client.get(f"/v2/{NAME}/blobs/{digest}")
    assert reply.status == 200
    assert reply.headers["Docker-Content-Digest"] == digest
    assert reply.headers["Content-Length"] == str(len(DATA))
    body = await reply.read()
    assert sha256(body) == digest
    [(head, in_socket)] = relays.bodies
    assert head + in_socket == len(DATA)
    assert in_socket >= MINIMUM
    # Each byte left in the socket is spliced twice: into the pipe, then out to the client.
    assert relays.spliced == 2 * in_socket


@pytest.mark.parametrize(
    ("ranged", "start", "end"),
    [
        ("bytes=1000-6000000", 1000, 6000000),
        ("bytes=3000000-", 3000000, len(DATA) - 1),
        (f"bytes=-{2 * MiB}", len(DATA) - 2 * MiB, len(DATA) - 1),
    ],
)
async def test_a_large_range_is_relayed_and_ends_where_it_was_asked_to(
    aiohttp_client: AiohttpClient,
    s3_parameters: dict[str, Any],
    relays: Relays,
    ranged: str,
    start: int,
    end: int,
) -> None:
    client, digest = await registry(aiohttp_client, s3_parameters)
    reply = await client.get(f"/v2/{NAME}/blobs/{digest}", headers={"Range": ranged})
    assert reply.status == 206
    assert reply.headers["Content-Range"] == f"bytes {start}-{end}/{len(DATA)}"
    assert await reply.read() == DATA[start : end + 1]
    [(head, in_socket)] = relays.bodies
    assert head + in_socket == end + 1 - start
    assert relays.spliced == 2 * in_socket


async def test_small_bodies_go_the_ordinary_way(
    aiohttp_client: AiohttpClient, s3_parameters: dict[str, Any], relays: Relays
) -> None:
    client, digest = await registry(aiohttp_client, s3_parameters)
    small = os.urandom(MINIMUM - 1)
    small_digest = await push(client, small)
    reply = await client.get(f"/v2/{NAME}/blobs/{small_digest}")
    assert (reply.status, await reply.read()) == (200, small)
    reply = await client.get(f"/v2/{NAME}/blobs/{digest}", headers={"Range": "bytes=5-99999"})
    assert (reply.status, await reply.read()) == (206, DATA[5:100000])
    assert relays.bodies == []
    assert relays.spliced == 0


async def read_reply(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """The status line and headers, and the body by its Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
    length = int(fields[b"Content-Length"])
    return head, await reader.readexactly(length)


async def test_the_clients_connection_serves_its_next_requests(
    aiohttp_client: AiohttpClient, s3_parameters: dict[str, Any], relays: Relays
) -> None:
    client, digest = await registry(aiohttp_client, s3_parameters)
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        for ranged in ("", "Range: bytes=7-\r\n", ""):
            request = f"GET /v2/{NAME}/blobs/{digest} HTTP/1.1\r\nHost: r\r\n{ranged}\r\n"
            writer.write(request.encode())
            head, body = await read_reply(reader)
            assert head.startswith(b"HTTP/1.1 20")
            assert body == (DATA[7:] if ranged else DATA)
        # And a request that is not a blob GET, on the same connection.
        writer.write(f"HEAD /v2/{NAME}/blobs/{digest} HTTP/1.1\r\nHost: r\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()
        await writer.wait_closed()
    assert len(relays.bodies) == 3


async def test_pulls_at_once_each_get_their_own_bytes(
    aiohttp_client: AiohttpClient, s3_parameters: dict[str, Any], relays: Relays
) -> None:
    client, digest = await registry(aiohttp_client, s3_parameters)
    starts = [0, 1, MiB, 3 * MiB + 5]

    async def pull(start: int) -> bytes:
        reply = await client.get(f"/v2/{NAME}/blobs/{digest}", headers={"Range": f"bytes={start}-"})
        assert reply.status == 206
        return await reply.read()

    bodies = await asyncio.gather(*(pull(start) for start in starts))
    assert bodies == [DATA[start:] for start in starts]
    assert len(relays.bodies) == len(starts)


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_client_that_leaves_part_way_leaves_nothing_open(
    aiohttp_client: AiohttpClient,
    s3_parameters: dict[str, Any],
    relays: Relays,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="cargohold")
    client, digest = await registry(aiohttp_client, s3_parameters)
    assert await (await client.get(f"/v2/{NAME}/blobs/{digest}")).read() == DATA
    await client.session.close()  # the test client's own connections are not the registry's
    before = open_descriptors()

    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET /v2/{NAME}/blobs/{digest} HTTP/1.1\r\nHost: r\r\n\r\n".encode())
    await reader.readuntil(b"\r\n\r\n")
    assert await reader.readexactly(MiB) == DATA[:MiB]
    writer.transport.abort()  # a reset, with megabytes still to come
    await until(lambda: open_descriptors() <= before, what="descriptors left open")
    assert len(relays.bodies) == 2
    # No warning of the registry's; aiohttp's own log has the reset (``cargohold serve``
    # tells it at debug level, ``api/listener.py``) and nothing else.
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in loud if r.name.startswith("cargohold")] == []
    assert all(r.exc_info and r.exc_info[0] is ConnectionResetError for r in loud)

    # The registry goes on serving, through its store connections as before.
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(f"GET /v2/{NAME}/blobs/{digest} HTTP/1.1\r\nHost: r\r\n\r\n".encode())
    assert (await read_reply(reader))[1] == DATA
    writer.close()
    await writer.wait_closed()
