"""A counting relay in front of an upstream registry, which can be told to misbehave.

It forwards every request to the upstream as it came (streaming both ways)
and counts them by method and path, so a test can say how many requests a
mirror made. ``fault`` makes it answer as a broken upstream would: a status,
an HTML page, a redirect loop, a blob body cut short, corrupted or longer
than announced, or a manifest that is not the one asked for.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

#: Headers not passed on: hop-by-hop ones, and those aiohttp sets itself.
_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}


@dataclass
class Fault:
    """How the relay misbehaves for the requests ``applies`` selects."""

    kind: str  # status | html | loop | truncate | corrupt | longer | other-manifest
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    applies: Callable[[str, str], bool] = lambda method, path: True


class Relay:
    """Forwards to ``upstream`` (``http://host:port``); counts and, when told, misbehaves."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        #: Where the relay itself listens, once served.
        self.url = ""
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()
        self.fault: Fault | None = None
        self._session: aiohttp.ClientSession | None = None
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self.app.on_cleanup.append(self._close)

    async def start(self) -> None:
        """Listen on a free loopback port (``url``)."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self._runner.cleanup()

    def count(self, method: str, path_part: str = "") -> int:
        return sum(n for (m, p), n in self.counts.items() if m == method and path_part in p)

    def blob_gets(self) -> int:
        return self.count("GET", "/blobs/")

    def reset(self) -> None:
        self.counts.clear()

    async def _close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.raw_path.partition("?")[0]
        self.counts[(request.method, path)] += 1
        fault = self.fault
        if fault is not None and fault.applies(request.method, path):
            if fault.kind == "status":
                return web.Response(status=fault.status, headers=fault.headers, text="failing\n")
            if fault.kind == "html":
                return web.Response(
                    status=200, content_type="text/html", text="<html>a captive portal</html>"
                )
            if fault.kind == "loop":
                raise web.HTTPTemporaryRedirect(request.raw_path)
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = request.content if request.can_read_body else None
        async with self._session.request(
            request.method,
            self.upstream + request.raw_path,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as answer:
            reply_headers = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
            response = web.StreamResponse(status=answer.status, headers=reply_headers)
            length = answer.content_length
            kind = fault.kind if fault is not None and fault.applies(request.method, path) else ""
            if kind == "longer":
                length = None  # chunked, with bytes past the blob's end
            if length is not None and request.method != "HEAD":
                response.content_length = length
            elif request.method == "HEAD" and answer.content_length is not None:
                response.headers["Content-Length"] = str(answer.content_length)
            await response.prepare(request)
            if request.method == "HEAD":
                return response
            sent = 0
            async for chunk in answer.content.iter_chunked(1 << 16):
                if kind == "corrupt" and sent == 0:
                    chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
                if kind == "other-manifest":
                    chunk = chunk.replace(b"schemaVersion", b"schemaversion")
                if kind == "truncate" and sent + len(chunk) > (length or 0) // 2:
                    await response.write(chunk[: (length or 0) // 2 - sent])
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await response.write(chunk)
                sent += len(chunk)
            if kind == "longer":
                await response.write(b"and some more")
            await response.write_eof()
            return response
