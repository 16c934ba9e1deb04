"""An object store's answer gives up its socket only when the bytes there are the body's own.

``httpsocket.socket_body`` hands over what aiohttp's reader holds, then the
socket with the count of body bytes still in it. Those bytes must be exactly
the rest of the body, and only a plain body qualifies: over TLS the socket
carries records, chunked framing and content codings put other bytes between
the body's. When it declines, the answer is left as it was.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from cargohold.socketbody import MINIMUM, Relayable, SocketBody
from cargohold.storage.driver.httpsocket import socket_body

MiB = 1 << 20
BODY = os.urandom(3 * MiB + 11)
SMALL = BODY[: MINIMUM - 1]


async def answer(request: web.Request) -> web.StreamResponse:
    kind = request.match_info["kind"]
    response = web.StreamResponse()
    if kind == "chunked":
        response.enable_chunked_encoding()
    elif kind == "gzip":
        body = gzip.compress(BODY, compresslevel=1)
        response.headers["Content-Encoding"] = "gzip"
        response.content_length = len(body)
    else:
        body = SMALL if kind == "small" else BODY
        response.content_length = len(body)
    await response.prepare(request)
    data = body if kind != "chunked" else BODY
    for start in range(0, len(data), 64 * 1024):
        await response.write(data[start : start + 64 * 1024])
    await response.write_eof()
    return response


@pytest.fixture
async def store() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/{kind}", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as made:
        yield made


async def drained(body: SocketBody) -> bytes:
    """``head`` and then exactly ``length`` bytes from the socket; closes ``body``."""
    sock = socket.socket(fileno=os.dup(body.fd))
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    received = bytearray(body.head)
    try:
        left = body.length
        while left:
            piece = await loop.sock_recv(sock, min(left, MiB))
            assert piece, "the socket ended before the body"
            received += piece
            left -= len(piece)
    finally:
        sock.close()
        body.close()
    return bytes(received)


async def test_a_plain_body_is_its_held_bytes_then_its_sockets(
    store: str, session: aiohttp.ClientSession
) -> None:
    response = await session.get(f"{store}/plain")
    body = socket_body(response, len(BODY))
    assert body is not None
    assert body.length >= MINIMUM
    assert await drained(body) == BODY
    # Its bytes were taken outside aiohttp's parser: the connection is given up, not reused.
    assert response.closed
    assert response.connection is None


async def test_at_most_the_bytes_asked_for(store: str, session: aiohttp.ClientSession) -> None:
    response = await session.get(f"{store}/plain")
    most = 2 * MiB + 3
    body = socket_body(response, most)
    assert body is not None
    assert len(body.head) + body.length == most
    assert await drained(body) == BODY[:most]


@pytest.mark.parametrize("kind", ["chunked", "gzip", "small"])
async def test_other_bodies_are_left_to_be_read_as_they_were(
    store: str, session: aiohttp.ClientSession, kind: str
) -> None:
    response = await session.get(f"{store}/{kind}")
    assert socket_body(response, len(BODY)) is None
    assert await response.read() == (SMALL if kind == "small" else BODY)


async def test_a_stream_read_from_keeps_its_socket(
    store: str, session: aiohttp.ClientSession
) -> None:
    response = await session.get(f"{store}/plain")

    async def chunks() -> AsyncIterator[bytes]:
        while piece := await response.content.readany():
            yield piece

    stream = Relayable(chunks(), lambda most: socket_body(response, most))  # type: ignore[arg-type]
    first = await anext(stream)
    assert stream.socket_body(len(BODY)) is None
    rest = b"".join([piece async for piece in stream])
    assert first + rest == BODY
