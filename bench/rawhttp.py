"""A minimal blocking HTTP/1.1 client for the bulk transfers (push and pull).

Moving 256 MiB through asyncio costs the client more CPU than the server
spends (Python 3.11's socket transport buffers a large write in a bytearray and
trims its front after every send), and on a 2-core machine that CPU comes out of
the server's share. Here a body goes out with one ``sendall`` of a memoryview
and a response body is drained with ``recv`` and MSG_TRUNC, which the kernel
answers by discarding the bytes without copying them to user space: the client
costs little more than the system calls. Concurrent streams run in threads
(socket calls release the GIL).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

_T = TypeVar("_T")

_CHUNK = 1 << 20


class HttpError(RuntimeError):
    """A transfer failed or a response was not the one required."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    #: Body bytes read and discarded (``drain=True``), or len(body).
    length: int


class Connection:
    """One keep-alive connection to ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | memoryview = b"",
        drain: bool = False,
        sink: Callable[[memoryview], object] | None = None,
    ) -> Response:
        """Send one request; read the whole response (discarding its body if ``drain``).

        With ``drain``, ``sink`` (say a hash's ``update``) is given every piece of
        the body as it arrives, then the piece is dropped: the bytes are then copied
        to user space, but never held whole.
        """
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in ("PUT", "POST", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        if len(body) <= 65536:
            self.sock.sendall(head + bytes(body))
        else:
            self.sock.sendall(head)
            self.sock.sendall(body)
        return self._response(method, drain, sink)

    def _response(
        self, method: str, drain: bool, sink: Callable[[memoryview], object] | None = None
    ) -> Response:
        data = self.pending
        while b"\r\n\r\n" not in data:
            more = self.sock.recv(65536)
            if not more:
                raise HttpError("connection closed before the response head")
            data += more
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.pending = rest
        if method != "HEAD" and "chunked" in headers.get("transfer-encoding", ""):
            # Go's registry streams JSON listings over 4 KiB in chunks.
            body = self._chunked()
            if drain and sink is not None:
                sink(memoryview(body))
            return Response(status, headers, body, len(body))
        length = 0 if method == "HEAD" else int(headers.get("content-length", "0"))
        if drain:
            self.pending = rest[length:]
            if sink is not None and rest[:length]:
                sink(memoryview(rest[:length]))
            self._discard(length - min(length, len(rest)), sink)
            return Response(status, headers, b"", length)
        body = self._exactly(length)
        return Response(status, headers, body, length)

    def _exactly(self, length: int) -> bytes:
        """The next ``length`` bytes of the connection."""
        data = self.pending
        while len(data) < length:
            more = self.sock.recv(max(65536, length - len(data)))
            if not more:
                raise HttpError("connection closed inside a response body")
            data += more
        self.pending = data[length:]
        return data[:length]

    def _line(self) -> bytes:
        while b"\r\n" not in self.pending:
            more = self.sock.recv(65536)
            if not more:
                raise HttpError("connection closed inside a chunked body")
            self.pending += more
        line, _, self.pending = self.pending.partition(b"\r\n")
        return line

    def _chunked(self) -> bytes:
        body = b""
        while size := int(self._line().split(b";")[0], 16):
            body += self._exactly(size)
            self._exactly(2)  # the CRLF after each chunk
        while self._line():  # trailers, up to the empty line
            pass
        return body

    def _discard(self, left: int, sink: Callable[[memoryview], object] | None = None) -> None:
        buffer = memoryview(bytearray(_CHUNK))
        # MSG_TRUNC: the kernel drops the bytes without copying them, unless a sink wants them.
        flags = socket.MSG_TRUNC if sink is None else 0
        while left > 0:
            n = self.sock.recv_into(buffer, min(_CHUNK, left), flags)
            if n == 0:
                raise HttpError(f"connection closed with {left} body bytes unread")
            if sink is not None:
                sink(buffer[:n])
            left -= n


def split_url(url: str) -> tuple[str, int, str]:
    """Host, port and path-with-query of an absolute URL."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return parts.hostname or "127.0.0.1", parts.port or 80, path


def expect(response: Response, status: int, what: str) -> Response:
    if response.status != status:
        raise HttpError(
            f"{what}: HTTP {response.status} (wanted {status}): {response.body[:300]!r}"
        )
    return response


def _location(response: Response) -> str:
    location = response.headers["location"]
    return location if location.startswith("/") else split_url(location)[2]


def _with_digest(path: str, digest: str) -> str:
    return path + ("&" if "?" in path else "?") + f"digest={digest}"


def push_monolithic(url: str, name: str, data: memoryview, digest: str) -> None:
    """POST an upload, then one PUT ?digest= with the whole body."""
    host, port, _ = split_url(url)
    with Connection(host, port) as conn:
        started = expect(conn.request("POST", f"/v2/{name}/blobs/uploads/"), 202, "POST upload")
        headers = {"Content-Type": "application/octet-stream"}
        path = _with_digest(_location(started), digest)
        expect(conn.request("PUT", path, headers, data), 201, f"PUT blob {digest}")


def push_chunked(url: str, name: str, data: memoryview, digest: str, chunk: int) -> None:
    """POST, PATCH ``chunk`` bytes at a time (Content-Range start-end), PUT ?digest=."""
    host, port, _ = split_url(url)
    with Connection(host, port) as conn:
        reply = expect(conn.request("POST", f"/v2/{name}/blobs/uploads/"), 202, "POST upload")
        for start in range(0, len(data), chunk):
            piece = data[start : start + chunk]
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{start}-{start + len(piece) - 1}",
            }
            path = _location(reply)
            reply = expect(conn.request("PATCH", path, headers, piece), 202, f"PATCH at {start}")
        path = _with_digest(_location(reply), digest)
        expect(conn.request("PUT", path), 201, f"PUT blob {digest} (chunked)")


def pull(url: str, path: str, times: int, follow: bool = False) -> int:
    """GET ``path`` ``times`` times, one connection each, draining the body; total bytes.

    With ``follow`` a 307 is followed (one new connection to its Location).
    """
    host, port, _ = split_url(url)
    total = 0
    for _ in range(times):
        with Connection(host, port) as conn:
            reply = conn.request("GET", path, drain=True)
        if follow and reply.status == 307:
            target_host, target_port, target = split_url(reply.headers["location"])
            with Connection(target_host, target_port) as conn:
                reply = conn.request("GET", target, drain=True)
        total += expect(reply, 200, f"GET {path}").length
    return total


def together(count: int, work: Callable[[int], _T]) -> tuple[list[_T], float]:
    """``work(i)`` in ``count`` threads started at one instant; their results and the wall time.

    The first failure of any thread is raised once all have ended.
    """
    results: list[_T | None] = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count + 1)

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if errors:
        raise errors[0]
    return [result for result in results if result is not None], wall


def pull_streams(
    url: str, path: str, streams: int, times: int, follow: bool = False
) -> tuple[int, float]:
    """``streams`` threads each pulling ``path`` ``times`` times; (total bytes, wall seconds)."""
    totals, wall = together(streams, lambda _: pull(url, path, times, follow))
    return sum(totals), wall
