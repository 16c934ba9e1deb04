"""A registry application served in process, as ``cargohold serve`` serves it, and a client.

``serve`` runs the application on the same ``Listener`` a worker runs
(``api/listener.py``), on a free loopback port, with the fast path on or
off. aiohttp's own test server would put the application behind aiohttp's
site and never reach the fast path, so tests of the HTTP API use this.

``Client`` offers what those tests use of aiohttp's ``TestClient``: requests
by path (sent as written: ``%2f`` stays ``%2f``), ``host``, ``port`` and
``app``.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from cargohold.api.listener import Listener

#: The two ways a connection can be served; every HTTP API test runs on both.
PATHS = ("fast", "full")


class Client:
    """An aiohttp client session aimed at one in-process listener."""

    def __init__(self, listener: Listener, session: aiohttp.ClientSession) -> None:
        self.listener = listener
        self.session = session
        self.host, self.port = listener.address
        self._root = URL.build(scheme="http", host=self.host, port=self.port)

    @property
    def app(self) -> web.Application:
        return self.listener.app

    def make_url(self, path: str | URL) -> URL:
        url = path if isinstance(path, URL) else URL(path, encoded=True)
        assert not url.absolute, url
        return self._root.join(url)

    async def request(self, method: str, path: str | URL, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.session.request(method, self.make_url(path), **kwargs)

    async def get(self, path: str | URL, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("GET", path, **kwargs)

    async def head(self, path: str | URL, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("HEAD", path, **kwargs)

    async def post(self, path: str | URL, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str | URL, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str | URL, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str | URL, **kwargs: Any) -> aiohttp.ClientResponse:
        return await self.request("DELETE", path, **kwargs)


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.bind((host, 0))
    sock.listen(128)
    sock.setblocking(False)
    return sock


@asynccontextmanager
async def serve(
    app: web.Application, *, path: str = "fast", **listener: Any
) -> AsyncIterator[Client]:
    """Serve ``app`` on a free loopback port until the block ends; yields a client for it.

    ``path`` is ``fast`` (connections start on the fast path, where the
    storage allows it) or ``full`` (aiohttp from the first byte).
    """
    assert path in PATHS, path
    served = Listener(app, fast_path=path == "fast", **listener)
    await served.start(listening_socket())
    session = aiohttp.ClientSession()
    try:
        yield Client(served, session)
    finally:
        await session.close()
        await served.close()


class Servers:
    """Serves any number of applications for one test, and stops them all at its end."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._open: list[Any] = []

    async def serve(self, app: web.Application, **listener: Any) -> Client:
        context = serve(app, path=self.path, **listener)
        client = await context.__aenter__()
        self._open.append(context)
        return client

    async def close(self) -> None:
        while self._open:
            await self._open.pop().__aexit__(None, None, None)


def ids(paths: Sequence[str] = PATHS) -> list[str]:
    return [f"{path}-path" for path in paths]
