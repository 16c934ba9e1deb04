"""Large local blobs: copied to the socket by a thread, or sent by the kernel.

Measured on this project's machines (2 cores, loopback), for one transfer a
thread copying 32 KiB pieces from the page cache to the socket outpaced
``sendfile`` by ~1.7x and the Go registry's own copy loop by ~1.3x: the pieces
stay in the CPU's cache on their way through. With several transfers at once
in one process the copying threads fight over the GIL, and ``sendfile``
(which needs no thread) shares the machine better. So the first large
transfer of a process is copied by a thread, and any other that overlaps it
goes through ``sendfile``.

While a thread copies, the event loop takes no part: it pauses reading from
the connection (so the socket cannot be closed under the thread) and waits;
the thread writes to its own duplicate of the socket and waits for room with
``poll`` when the client is slower. The thread starts only once the
connection's write buffer is empty: bytes still queued there (the reply's
headers, earlier pipelined replies) must leave first, and a thread writing to
the socket itself would overtake them. If the buffer is not empty at once,
``sendfile`` is used instead, which waits for it to drain.

The threads are the application's (``Api.threads``); a transfer cancelled by
shutdown ends its thread at once by shutting the socket down.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import socket
from concurrent.futures import Executor
from typing import BinaryIO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

#: What each read from the file and each write to the socket moves.
PIECE = 32 * 1024


class FileSender:
    """How one application sends large local files: its threads, and transfers under way."""

    def __init__(self, threads: Executor | None) -> None:
        self.threads = threads
        #: Large transfers under way (all on the application's one event loop).
        self.active = 0


def _copy(file_fd: int, socket_fd: int, offset: int, length: int) -> None:
    buffer = bytearray(min(PIECE, length))
    view = memoryview(buffer)
    poller = select.poll()
    poller.register(socket_fd, select.POLLOUT)
    remaining = length
    while remaining > 0:
        got = os.preadv(file_fd, [view[: min(PIECE, remaining)]], offset)
        if got <= 0:
            raise ConnectionResetError("the blob's file ended early")
        sent = 0
        while sent < got:
            try:
                sent += os.write(socket_fd, view[sent:got])
            except BlockingIOError:
                # No timer of its own: a client that takes nothing is the connection's
                # sweep's to cut (``http.timeouts.write``), and the socket it shuts down
                # wakes this wait, its next write failing.
                poller.poll()
        offset += got
        remaining -= got


def plain_socket(transport: asyncio.BaseTransport | None) -> socket.socket | None:
    """The connection's socket, when bytes written to it reach the client as they are: not
    over TLS, which aiohttp encrypts."""
    if transport is None or transport.get_extra_info("sslcontext"):
        return None
    sock: socket.socket | None = transport.get_extra_info("socket")
    return sock


class LocalFileResponse(web.StreamResponse):
    """A byte range of a local file as the body of the reply."""

    def __init__(
        self,
        sender: FileSender,
        path: str,
        offset: int,
        length: int,
        *,
        status: int,
        headers: dict[str, str],
    ) -> None:
        super().__init__(status=status, headers=headers)
        self._sender = sender
        self._path = path
        self._offset = offset
        self._length = length
        self.content_length = length

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            file = open(self._path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise web.HTTPNotFound() from None
        with file:
            writer = await super().prepare(request)
            if self._length and writer is not None:
                await self._send(request, writer, file)
            await super().write_eof()
            return writer

    async def _send(
        self, request: web.BaseRequest, writer: AbstractStreamWriter, file: BinaryIO
    ) -> None:
        sender = self._sender
        transport = request.transport
        sock = plain_socket(transport)
        loop = asyncio.get_running_loop()
        if transport is None or sock is None:
            await self._send_through_writer(file)  # TLS, or no socket: aiohttp encrypts
        elif sender.active or transport.get_write_buffer_size():
            # Another transfer has the thread, or bytes wait in the buffer: sendfile
            # flushes the buffer first and needs no thread.
            await loop.sendfile(transport, file, self._offset, self._length)
        else:
            sender.active += 1
            try:
                await self._copy_in_thread(transport, sock, file)
            finally:
                sender.active -= 1

    async def _copy_in_thread(
        self, transport: asyncio.BaseTransport, sock: socket.socket, file: BinaryIO
    ) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()
        socket_fd = os.dup(sock.fileno())
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._sender.threads, _copy, file.fileno(), socket_fd, self._offset, self._length
            )
        except asyncio.CancelledError:
            # The thread holds its own descriptor: shutting the socket down (not just
            # closing ours) is what makes its next write fail, so it ends now.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            transport.abort()
            raise
        except OSError:
            transport.abort()  # half a body sent: the connection cannot go on
            raise
        finally:
            os.close(socket_fd)
            if not transport.is_closing():
                transport.resume_reading()

    async def _send_through_writer(self, file: BinaryIO) -> None:
        fd = file.fileno()
        offset, remaining = self._offset, self._length
        while remaining > 0:
            chunk = os.pread(fd, min(remaining, 1 << 20), offset)
            if not chunk:
                raise ConnectionResetError("the blob's file ended early")
            offset += len(chunk)
            remaining -= len(chunk)
            await super().write(chunk)
