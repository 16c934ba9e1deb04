"""Interrupted transfers against the real registries, through a proxy that cuts connections.

The proxy forwards bytes between the client and a registry and, once, cuts
the connection of a blob upload (after part of the ``PATCH`` body went up) or
of a blob download (after part of the body came down). cargohold keeps the
bytes of a cut ``PATCH`` and reports them, so the upload resumes from there;
Distribution 2.8.2 refuses the upload afterwards (its signed ``_state`` no
longer matches), so the client starts a new one from byte 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from cargohold.client import RemoteRegistry
from cargohold.client.blobs import RemoteBlobStore
from cargohold.digest import digest_of
from tests.client.conftest import unique_name

MiB = 1 << 20


@dataclass
class CuttingProxy:
    """A TCP proxy that cuts the first upload or download it sees after ``cut_after`` bytes."""

    upstream: tuple[str, int]
    cut_after: int
    upload_cuts: int = 0
    download_cuts: int = 0
    port: int = 0

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        cut = asyncio.Event()
        # Set when this connection's download is to be cut, with the byte budget left.
        download_budget: list[int] = []

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, upward: bool
        ) -> None:
            budget: int | None = None
            while not cut.is_set():
                data = await source.read(64 * 1024)
                if not data:
                    break
                if upward and budget is None and self.upload_cuts and data.startswith(b"PATCH "):
                    self.upload_cuts -= 1
                    budget = self.cut_after
                if (
                    upward
                    and self.download_cuts
                    and data.startswith(b"GET ")
                    and b"/blobs/sha" in data
                ):
                    self.download_cuts -= 1
                    download_budget.append(self.cut_after)
                if not upward and download_budget:
                    budget = download_budget[0]
                if budget is not None:
                    data = data[:budget]
                    budget -= len(data)
                    if not upward:
                        download_budget[0] = budget
                sink.write(data)
                with contextlib.suppress(ConnectionError):
                    await sink.drain()
                if budget == 0:
                    cut.set()
            cut.set()

        tasks = [
            asyncio.ensure_future(pipe(reader, up_writer, True)),
            asyncio.ensure_future(pipe(up_reader, writer, False)),
        ]
        await cut.wait()
        for task in tasks:
            task.cancel()
        for stream in (writer, up_writer):
            stream.transport.abort()


@pytest.fixture(params=["cargohold", "distribution"])
async def proxied(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, CuttingProxy]]:
    implementation = str(request.param)
    url: str = request.getfixturevalue(f"{implementation}_url")
    host, _, port = url.removeprefix("http://").partition(":")
    proxy = CuttingProxy((host, int(port)), cut_after=3 * MiB)
    server = await proxy.start()
    try:
        yield implementation, proxy
    finally:
        server.close()


Source = Callable[[int], Awaitable[AsyncIterator[bytes]]]


def recording_source(content: bytes, opened: list[int]) -> Source:
    async def source(offset: int) -> AsyncIterator[bytes]:
        opened.append(offset)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(offset, len(content), MiB):
                yield content[start : start + MiB]

        return chunks()

    return source


async def test_a_cut_upload_resumes_or_restarts(proxied: tuple[str, CuttingProxy]) -> None:
    implementation, proxy = proxied
    proxy.upload_cuts = 1
    content = secrets.token_bytes(8 * MiB)
    opened: list[int] = []
    async with RemoteRegistry(f"127.0.0.1:{proxy.port}", backoff=0.01, environ={}) as registry:
        blobs = registry.repository(unique_name("resume")).blobs
        assert isinstance(blobs, RemoteBlobStore)
        digest = digest_of(content)
        await blobs.upload(digest, len(content), recording_source(content, opened))
        assert await blobs.get(digest) == content
    assert len(opened) == 2
    if implementation == "cargohold":
        # The bytes that arrived before the cut were kept: the upload goes on from there.
        assert 0 < opened[1] < 3 * MiB
    else:
        # Distribution 2.8.2 refuses the upload after the cut: a new one starts at 0.
        assert opened[1] == 0


async def test_a_cut_download_resumes_with_range(proxied: tuple[str, CuttingProxy]) -> None:
    _, proxy = proxied
    content = secrets.token_bytes(8 * MiB)
    async with RemoteRegistry(f"127.0.0.1:{proxy.port}", backoff=0.01, environ={}) as registry:
        blobs = registry.repository(unique_name("resume")).blobs
        digest = (await blobs.put(content)).digest
        proxy.download_cuts = 1
        before = registry.transport.requests_sent
        assert await blobs.get(digest) == content
        assert registry.transport.requests_sent - before == 2  # the cut GET and one Range GET
