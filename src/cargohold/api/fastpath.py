"""The fast path: the commonest reads answered straight from the connection's bytes.

A registry spends most of its requests on a few reads: HEAD and GET of
blobs, GET of manifests by tag, tag lists. On local storage each is a couple
of file reads, and aiohttp's request and response objects cost several times
more than the work. So each connection starts in fast mode: a complete,
body-less GET or HEAD that ``FastPath.answer`` can serve in full is answered
from the raw header bytes in one write. Anything else (a body, a query, a
Range, an error of any kind, a schema1 manifest, a request split mid-header
we cannot finish) hands the connection, with every byte not yet answered, to
aiohttp for good; the full request path then answers as it always does.

The fast path only ever answers the successful case, and answers it byte for
byte as the full path would (``tests/api/test_fastpath.py`` compares them),
so it changes how fast a reply comes, never what it says.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import time
from email.utils import formatdate
from typing import Any

from aiohttp import __version__ as aiohttp_version
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from cargohold.api.blobs import INLINE_LIMIT
from cargohold.api.context import Api
from cargohold.api.routes import Endpoint, match
from cargohold.config import Config
from cargohold.descriptor import OCTET_STREAM
from cargohold.digest import Digest
from cargohold.errors import RegistryError
from cargohold.reference import validate_name, validate_tag
from cargohold.storage.driver.filesystem import FilesystemDriver
from cargohold.storage.local import LocalReader
from cargohold.storage.registry import StorageRegistry

_SERVER = f"Python/{sys.version_info[0]}.{sys.version_info[1]} aiohttp/{aiohttp_version}"
#: A request whose headers grow past this without ending is left to aiohttp.
_MAX_HEAD = 16 * 1024
# Headers that make a request something only the full path handles.
_FULL_PATH_HEADERS = (
    b"\r\ncontent-length:",
    b"\r\ntransfer-encoding:",
    b"\r\nrange:",
    b"\r\nif-none-match:",
    b"\r\nexpect:",
    b"\r\nupgrade:",
)


#: Content type, extra header lines, body (empty for a HEAD) and Content-Length.
_Reply = tuple[bytes, bytes, bytes, int]
_OCTET_STREAM = OCTET_STREAM.encode()


def _json(body: bytes) -> _Reply:
    return b"application/json", b"", body, len(body)


class _Clock:
    """The ``Date`` header, formatted once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


class FastPath:
    """Answers complete GET/HEAD requests of the hot endpoints, or says it cannot."""

    def __init__(self, api: Api, reader: LocalReader, access_log: logging.Logger | None) -> None:
        self._reader = reader
        self._access_log = access_log
        self._manifest_limit = api.manifest_max_size
        base = b"".join(
            f"{name}: {value}\r\n".encode("latin-1") for name, value in api.headers().items()
        )
        self._fixed = base + f"Server: {_SERVER}\r\n".encode()
        self._clock = _Clock()

    def answer(self, head: bytes, peer: str) -> bytes | None:
        """The whole reply to the request whose header block is ``head``, or None."""
        line_end = head.find(b"\r\n")
        request_line = head[:line_end] if line_end >= 0 else head
        parts = request_line.split(b" ")
        if len(parts) != 3:
            return None
        method, target, version = parts
        if method not in (b"GET", b"HEAD") or b"?" in target:
            return None
        headers = head[line_end:].lower() if line_end >= 0 else b""
        if any(h in headers for h in _FULL_PATH_HEADERS):
            return None
        if version == b"HTTP/1.1":
            if b"\r\nconnection: close" in headers:
                return None
            status_line, keep_alive = b"HTTP/1.1 200 OK\r\n", b""
        elif version == b"HTTP/1.0" and b"\r\nconnection: keep-alive" in headers:
            status_line, keep_alive = b"HTTP/1.0 200 OK\r\n", b"Connection: keep-alive\r\n"
        else:
            return None
        head_only = method == b"HEAD"
        try:
            reply = self._reply(head_only, target.decode("ascii"))
        except (RegistryError, UnicodeDecodeError):
            return None
        if reply is None:
            return None
        content_type, extra, body, length = reply
        out = b"".join(
            (
                status_line,
                b"Content-Type: ",
                content_type,
                b"\r\nContent-Length: ",
                str(length).encode(),
                b"\r\n",
                extra,
                self._fixed,
                b"Date: ",
                self._clock.date(),
                b"\r\n",
                keep_alive,
                b"\r\n",
                b"" if head_only else body,
            )
        )
        if self._access_log is not None:
            self._log(peer, request_line, head, len(out))
        return out

    def _reply(self, head_only: bool, path: str) -> _Reply | None:
        route = match(path)
        if route is None:
            return None
        if route.endpoint is Endpoint.BASE:
            return _json(b"{}")
        if "%" in route.name:
            return None
        name = validate_name(route.name)
        if route.endpoint is Endpoint.BLOB:
            return self._blob(head_only, name, Digest.parse(route.argument))
        if route.endpoint is Endpoint.MANIFEST:
            return self._manifest(name, route.argument)
        if route.endpoint is Endpoint.TAGS:
            tags = self._reader.tags(name)
            return (
                None if tags is None else _json(json.dumps({"name": name, "tags": tags}).encode())
            )
        return None

    def _blob(self, head_only: bool, name: str, digest: Digest) -> _Reply | None:
        size = self._reader.blob_size(name, digest)
        if size is None:
            return None
        extra = (
            f'Docker-Content-Digest: {digest}\r\nETag: "{digest}"\r\n'
            "Accept-Ranges: bytes\r\nCache-Control: max-age=31536000\r\n"
        ).encode()
        if head_only:
            return _OCTET_STREAM, extra, b"", size
        if size > INLINE_LIMIT:
            return None  # large blobs go out with sendfile on the full path
        body = self._reader.blob(digest, size)
        return None if body is None else (_OCTET_STREAM, extra, body, size)

    def _manifest(self, name: str, reference: str) -> _Reply | None:
        if ":" in reference:
            digest: Digest | None = Digest.parse(reference)
        else:
            digest = self._reader.tag(name, validate_tag(reference))
        if digest is None:
            return None
        found = self._reader.manifest(name, digest, self._manifest_limit)
        if found is None:
            return None
        media_type, payload = found
        extra = f'Docker-Content-Digest: {digest}\r\nETag: "{digest}"\r\n'.encode()
        return media_type.encode(), extra, payload, len(payload)

    def _log(self, peer: str, request_line: bytes, head: bytes, size: int) -> None:
        assert self._access_log is not None
        stamp = time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", time.gmtime())
        referer = _header(head, b"referer")
        agent = _header(head, b"user-agent")
        self._access_log.info(
            '%s %s "%s" 200 %d "%s" "%s"',
            peer,
            stamp,
            request_line.decode("latin-1"),
            size,
            referer,
            agent,
        )


def _header(head: bytes, name: bytes) -> str:
    lowered = head.lower()
    at = lowered.find(b"\r\n" + name + b":")
    if at < 0:
        return "-"
    start = at + len(name) + 3
    end = head.find(b"\r\n", start)
    return head[start : end if end >= 0 else len(head)].strip().decode("latin-1")


def _may_be_fast(start: bytes) -> bool:
    """Whether ``start`` can begin a request the fast path answers (a GET or a HEAD).

    Anything else is handed to aiohttp at once: a POST's body, or a TLS hello sent
    to the plain port (which must be refused now, not after a client's timeout).
    """
    return (
        start.startswith((b"GET ", b"HEAD "))
        or b"GET ".startswith(start)
        or b"HEAD ".startswith(start)
    )


class FastProtocol(asyncio.Protocol):
    """Wraps aiohttp's protocol: serves what the fast path can, then hands over for good."""

    __slots__ = ("_buffer", "_fast", "_inner", "_peer", "_transport", "_writing_paused")

    def __init__(self, inner: RequestHandler, fast: FastPath) -> None:
        self._inner = inner
        self._fast: FastPath | None = fast
        self._buffer = b""
        self._transport: asyncio.Transport | None = None
        self._writing_paused = False
        self._peer = "-"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if peer:
            self._peer = str(peer[0])
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        fast = self._fast
        if fast is None or self._writing_paused:
            self._hand_over(data)
            return
        buffer = self._buffer + data if self._buffer else data
        replies = []
        start = 0
        while True:
            end = buffer.find(b"\r\n\r\n", start)
            if end < 0:
                break
            reply = fast.answer(buffer[start:end], self._peer)
            if reply is None:
                break
            replies.append(reply)
            start = end + 4
        if replies:
            assert self._transport is not None
            self._transport.write(b"".join(replies) if len(replies) > 1 else replies[0])
        rest = buffer[start:] if start else buffer
        self._buffer = b""
        if not rest:
            return
        if end < 0 and len(rest) < _MAX_HEAD and _may_be_fast(rest):
            self._buffer = rest  # the rest of the header block is on its way
            return
        self._hand_over(rest)

    def _hand_over(self, data: bytes) -> None:
        self._fast = None
        if self._buffer:
            data, self._buffer = self._buffer + data, b""
        if data:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._buffer:
            self._hand_over(b"")  # a header block cut short: aiohttp answers it
        self._inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._inner.resume_writing()


def fast_path(api: Api, config: Config, access_log: logging.Logger | None) -> FastPath | None:
    """The fast path for this configuration, or None where it would not answer the same.

    It needs storage on a local disk, and nothing that must see every request:
    authentication, notifications, a path prefix.
    """
    registry = api.registry
    if not isinstance(registry, StorageRegistry):
        return None
    driver = registry.driver
    if not isinstance(driver, FilesystemDriver):
        return None
    if config.auth.provider_name is not None or api.prefix:
        return None
    if any(not endpoint.disabled for endpoint in config.notifications.endpoints):
        return None
    return FastPath(api, LocalReader(driver.root), access_log)


class FastSockSite(web.SockSite):
    """A listening socket whose connections start on the fast path."""

    def __init__(
        self, runner: web.AppRunner, sock: socket.socket, fast: FastPath, **kwargs: Any
    ) -> None:
        super().__init__(runner, sock, **kwargs)
        self._fast = fast

    async def start(self) -> None:
        # As SockSite.start, with each aiohttp protocol wrapped in a FastProtocol.
        await web.BaseSite.start(self)
        server = self._runner.server
        assert server is not None
        fast = self._fast
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: FastProtocol(server(), fast),
            sock=self._sock,
            ssl=self._ssl_context,
            backlog=self._backlog,
        )
