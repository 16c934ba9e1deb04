"""A trivial HTTP/1.1 server that does as little as a server can, to measure the clients.

It answers every request at once from memory, with keep-alive: GET and HEAD of
BIGPATH send the file BIGFILE with ``sendfile``, any other GET or HEAD a fixed small
body, and PUT, PATCH and POST read their body and answer 201 or 202. If a load
generator drives this server much faster than it drives either registry, the
generator is not what limits the registries' numbers.

Run as ``python -m bench.trivial PORT BIGFILE BIGPATH SMALLSIZE`` (the calibration does).
"""

from __future__ import annotations

import asyncio
import os
import select
import sys

_STATUS = {"PUT": b"201 Created", "PATCH": b"202 Accepted", "POST": b"202 Accepted"}


def _head(status: bytes, length: int, extra: bytes = b"") -> bytes:
    # ab -k speaks HTTP/1.0 and keeps a connection only when told it may.
    return b"HTTP/1.1 %s\r\n%sConnection: keep-alive\r\nContent-Length: %d\r\n\r\n" % (
        status,
        extra,
        length,
    )


class _Handler(asyncio.Protocol):
    def __init__(self, big: str, big_path: str, small: bytes) -> None:
        self.big = big
        self.big_path = big_path
        self.small = small
        self.buffer = b""
        self.body_left = 0
        self.pending: list[tuple[str, str]] = []
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.sending: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.body_left:
            taken = min(self.body_left, len(data))
            self.body_left -= taken
            data = data[taken:]
            if self.body_left == 0:
                self._answer_next()
            if not data:
                return
        self.buffer += data
        while not self.body_left:
            head, found, rest = self.buffer.partition(b"\r\n\r\n")
            if not found:
                return
            lines = head.split(b"\r\n")
            method, path = lines[0].decode().split(" ")[:2]
            length = 0
            for line in lines[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            taken = min(length, len(rest))
            self.body_left = length - taken
            self.buffer = rest[taken:]
            self.pending.append((method, path))
            if not self.body_left:
                self._answer_next()

    def _answer_next(self) -> None:
        if self.busy or not self.pending or self.transport is None:
            return
        method, path = self.pending.pop(0)
        if path == self.big_path and method in ("GET", "HEAD"):
            self.busy = True
            self.sending = asyncio.ensure_future(self._send_big(method))
            return
        if method in _STATUS:
            location = b"Location: %s\r\n" % path.encode()
            self.transport.write(_head(_STATUS[method], 0, location))
        else:
            head = _head(b"200 OK", len(self.small))
            self.transport.write(head if method == "HEAD" else head + self.small)
        self._answer_next()

    async def _send_big(self, method: str) -> None:
        assert self.transport is not None
        size = os.path.getsize(self.big)
        head = _head(b"200 OK", size)
        if method == "HEAD":
            self.transport.write(head)
        else:
            # In a thread, so that concurrent streams use every core.
            fd = self.transport.get_extra_info("socket").fileno()
            await asyncio.to_thread(_send_file, fd, head, self.big, size)
        self.busy = False
        self._answer_next()


def _send_file(fd: int, head: bytes, path: str, size: int) -> None:
    """Write ``head`` then ``size`` bytes of ``path`` to the non-blocking socket ``fd``."""
    view = memoryview(head)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])
    with open(path, "rb") as file:
        offset = 0
        while offset < size:
            try:
                offset += os.sendfile(fd, file.fileno(), offset, size - offset)
            except BlockingIOError:
                select.select([], [fd], [])


async def _main(port: int, big: str, big_path: str, small_size: int) -> None:
    small = b"x" * small_size
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Handler(big, big_path, small), "127.0.0.1", port, backlog=1024, reuse_address=True
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(_main(int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])))
