"""``relay.send`` moves a body from a store's socket to the client's, and ends cleanly either way.

The store here is a scripted TCP peer: it sends the bytes it is told to, then
closes, or goes quiet. The handler sends a reply's status line and headers,
then relays ``head`` and the socket's bytes; whatever happens it closes the
body (its descriptor, and the store's connection through ``release``).
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from tests.auth.pki import Authority

from cargohold.api import relay
from cargohold.socketbody import Relayable, SocketBody

MiB = 1 << 20
HEAD = b"held by the process first;"
REST = os.urandom(4 * MiB + 3)


@dataclass
class Store:
    """A peer that writes ``send`` bytes to whoever connects, then closes or goes quiet."""

    send: bytes = b""
    quiet: bool = False
    port: int = 0
    #: The handler's outcomes: "sent", or the failure's type and message.
    outcomes: list[str] = field(default_factory=list)
    released: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.send)
        await writer.drain()
        if self.quiet:
            await reader.read()  # until the registry gives up and closes
        writer.close()

    def release(self) -> None:
        self.released += 1


async def handler_of(
    store: Store, declared: int
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        sock = socket.create_connection(("127.0.0.1", store.port))
        sock.setblocking(False)
        body = SocketBody(HEAD, os.dup(sock.fileno()), declared, 0.5, store.release)
        sock.close()
        response = web.StreamResponse()
        response.content_length = len(HEAD) + declared
        await response.prepare(request)
        try:
            await relay.send(request, body)
        except relay.RelayFailed as exc:
            store.outcomes.append(f"RelayFailed: {exc}")
            return response
        store.outcomes.append("sent")
        await response.write_eof()
        return response

    return handle


@pytest.fixture
async def started() -> AsyncIterator[Callable[[Store, int], Awaitable[int]]]:
    """Starts a store and a registry relaying ``declared`` bytes from it; the registry's port."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(store: Store, declared: int) -> int:
        server = await asyncio.start_server(store.serve, "127.0.0.1", 0)
        store.port = server.sockets[0].getsockname()[1]
        app = web.Application()
        app.router.add_get("/blob", await handler_of(store, declared))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()

        async def stop() -> None:
            await runner.cleanup()
            server.close()

        cleanups.append(stop)
        return int(runner.addresses[0][1])

    yield start
    for cleanup in cleanups:
        await cleanup()


async def get(port: int) -> tuple[bytes, bytes, float]:
    """The status line and headers, every byte after them until the registry closes, and
    the seconds that took."""
    began = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /blob HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    async with asyncio.timeout(10):
        body = await reader.read()
    writer.close()
    return head, body, time.monotonic() - began


async def test_the_held_bytes_go_first_then_the_sockets(
    started: Callable[[Store, int], Awaitable[int]],
) -> None:
    store = Store(send=REST)
    head, body, _ = await get(await started(store, len(REST)))
    assert head.startswith(b"HTTP/1.1 200 ")
    assert f"Content-Length: {len(HEAD) + len(REST)}".encode() in head
    assert body == HEAD + REST
    assert (store.outcomes, store.released) == (["sent"], 1)


async def test_no_more_is_read_from_the_store_than_the_body_has_left(
    started: Callable[[Store, int], Awaitable[int]],
) -> None:
    # Bytes after the body on the store's connection belong to no one: they stay unsent.
    store = Store(send=REST + b"the next answer")
    _, body, _ = await get(await started(store, len(REST)))
    assert body == HEAD + REST
    assert store.outcomes == ["sent"]


async def test_a_store_that_ends_early_cuts_the_clients_connection(
    started: Callable[[Store, int], Awaitable[int]],
) -> None:
    store = Store(send=REST[: 2 * MiB])
    _, body, _ = await get(await started(store, len(REST)))
    assert body == HEAD + REST[: 2 * MiB]  # short of its Content-Length, and nothing else
    assert store.outcomes == [
        f"RelayFailed: the object store's answer ended {len(REST) - 2 * MiB} bytes early"
    ]
    assert store.released == 1


async def test_a_store_gone_quiet_is_given_up_after_its_read_timeout(
    started: Callable[[Store, int], Awaitable[int]],
) -> None:
    store = Store(send=REST[:MiB], quiet=True)
    _, body, seconds = await get(await started(store, len(REST)))
    assert body == HEAD + REST[:MiB]
    assert store.outcomes == ["RelayFailed: the object store sent nothing in time"]
    assert 0.5 <= seconds < 5
    assert store.released == 1


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
async def test_over_tls_a_bodys_socket_is_never_asked_for(tmp_path: Path, tls: bool) -> None:
    # Bytes spliced into a TLS connection's socket would bypass its encryption.
    asked: list[int] = []

    async def chunks() -> AsyncGenerator[bytes, None]:
        yield REST

    def take(most: int) -> SocketBody | None:
        asked.append(most)
        return None  # and the stream goes on as chunks

    async def handle(request: web.Request) -> web.StreamResponse:
        stream = Relayable(chunks(), take)
        assert relay.take(request, stream, len(REST)) is None
        response = web.StreamResponse()
        response.content_length = len(REST)
        await response.prepare(request)
        async for chunk in stream:
            await response.write(chunk)
        await response.write_eof()
        return response

    authority = Authority("relay test CA")
    certificate, key = authority.issue("127.0.0.1", ip="127.0.0.1").write(tmp_path, "server")
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(certificate, key)
    app = web.Application()
    app.router.add_get("/blob", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context if tls else None).start()
    client_context = ssl.create_default_context(cafile=str(authority.write(tmp_path / "ca.crt")))
    try:
        scheme = "https" if tls else "http"
        async with aiohttp.ClientSession() as session:
            url = f"{scheme}://127.0.0.1:{runner.addresses[0][1]}/blob"
            async with session.get(url, ssl=client_context if tls else None) as reply:
                assert (reply.status, await reply.read()) == (200, REST)
    finally:
        await runner.cleanup()
    assert asked == ([] if tls else [len(REST)])


async def test_a_process_out_of_descriptors_cuts_the_connection_and_says_why(
    started: Callable[[Store, int], Awaitable[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_more(flags: int) -> tuple[int, int]:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(os, "pipe2", no_more)
    store = Store(send=REST)
    head, body, _ = await get(await started(store, len(REST)))
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b""  # nothing of the body, and the connection closed
    assert store.outcomes == ["RelayFailed: no descriptor for the relay: Too many open files"]
    assert store.released == 1
