"""Blob bodies passed from an object store's socket to the client's by the kernel.

A blob GET on an object store with redirects off relays the store's answer.
Through aiohttp, every piece is copied out of the store's socket, through the
client parser, onto the event loop, into the writer and out to the client's
socket. With ``splice`` (Linux), the pages go from the store's socket into a
pipe and from the pipe into the client's socket without being copied into the
process at all: the HTTP layer takes the body's socket (``socketbody.py``)
once the status line and headers are out, and moves bytes until the body ends.
Measured on this project's machine (2 cores, loopback, SeaweedFS, one 256 MiB
pull), the server spent 0.5-0.8 s of CPU per GiB the first way and the Go
registry 0.5-0.6 with its copy loop; see ``docs/ARCHITECTURE.md`` for the
figures of the second.

The relay runs on the event loop: each ``splice`` is non-blocking, and a wait
for either socket is a reader or writer on a duplicate of its descriptor (the
originals belong to transports, which the loop will not share). The client's
connection stops being read meanwhile, as for ``sendfile``, and the relay only
starts when nothing waits in its write buffer, which bytes spliced into the
socket would overtake.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web

from cargohold.api.filesend import plain_socket
from cargohold.socketbody import MINIMUM, InSocket, SocketBody

#: What a pipe between the sockets holds: what one ``splice`` from the store can move.
PIPE_SIZE = 1 << 20

_SPLICE: Callable[..., int] | None = getattr(os, "splice", None)
_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class RelayFailed(Exception):
    """The body could not be passed on: the store's socket ended, failed or went quiet
    before it was through, or the process had no descriptor left for the relay."""


def take(request: web.BaseRequest, chunks: AsyncIterator[bytes], length: int) -> SocketBody | None:
    """The body's socket, when ``chunks`` can give it up and the reply can go out by
    ``splice`` now: a plain TCP client, an empty write buffer, enough bytes to move."""
    transport = request.transport
    if (
        _SPLICE is None
        or length < MINIMUM
        or not isinstance(chunks, InSocket)
        or transport is None
        or transport.is_closing()
        or plain_socket(transport) is None
        or transport.get_write_buffer_size()
    ):
        return None
    return chunks.socket_body(length)


async def send(request: web.BaseRequest, body: SocketBody) -> None:
    """Move ``body`` to the client's socket; closes it whatever happens.

    Raises ``RelayFailed`` when the store's side (or the process) fails, and
    ``ConnectionResetError`` when the client's does (it went away, or took nothing for
    ``http.timeouts.write`` and the connection's sweep shut its socket down); either
    way part of the body may be out, and the connection is closed.
    """
    transport: Any = request.transport
    client_fd = -1
    pipe: tuple[int, int] | None = None
    try:
        assert transport is not None
        assert _SPLICE is not None
        transport.pause_reading()
        try:
            client_fd = os.dup(transport.get_extra_info("socket").fileno())
            pipe = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise RelayFailed(f"no descriptor for the relay: {exc.strerror}") from exc
        with contextlib.suppress(OSError):  # a smaller pipe only means more calls
            fcntl.fcntl(pipe[1], _F_SETPIPE_SZ, PIPE_SIZE)
        await _write_all(client_fd, body.head)
        await _splice_all(_SPLICE, body, pipe, client_fd)
    except BaseException:
        if transport is not None:
            transport.abort()  # part of a body out: the connection cannot go on
        raise
    finally:
        for fd in (*(pipe or ()), client_fd):
            if fd >= 0:
                os.close(fd)
        body.close()
        if transport is not None and not transport.is_closing():
            transport.resume_reading()


async def _splice_all(
    splice: Callable[..., int], body: SocketBody, pipe: tuple[int, int], client_fd: int
) -> None:
    read_end, write_end = pipe
    remaining = body.length
    while remaining:
        try:
            moved = splice(body.fd, write_end, min(remaining, PIPE_SIZE), flags=_FLAGS)
        except BlockingIOError:
            try:
                async with asyncio.timeout(body.read_timeout):
                    await _ready(body.fd, reading=True)
            except TimeoutError:
                raise RelayFailed("the object store sent nothing in time") from None
            continue
        except OSError as exc:
            raise RelayFailed(f"reading the object store's answer: {exc}") from exc
        if not moved:
            raise RelayFailed(f"the object store's answer ended {remaining} bytes early")
        remaining -= moved
        while moved:
            try:
                moved -= splice(read_end, client_fd, moved, flags=_FLAGS)
            except BlockingIOError:
                await _ready(client_fd, reading=False)
            except OSError as exc:
                raise _client_gone(exc) from exc


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await _ready(fd, reading=False)
        except OSError as exc:
            raise _client_gone(exc) from exc


def _client_gone(exc: OSError) -> ConnectionResetError:
    if isinstance(exc, ConnectionResetError):
        return exc
    return ConnectionResetError(exc.errno, f"sending to the client: {exc.strerror}")


async def _ready(fd: int, *, reading: bool) -> None:
    """Once ``fd`` is readable (or writable).

    A wait for the client has no timer of its own: a client that takes nothing is the
    connection's sweep's to cut (``http.timeouts.write``), and the socket it shuts down
    wakes this wait."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    if reading:
        loop.add_reader(fd, wake)
    else:
        loop.add_writer(fd, wake)
    try:
        await ready
    finally:
        if reading:
            loop.remove_reader(fd)
        else:
            loop.remove_writer(fd)
