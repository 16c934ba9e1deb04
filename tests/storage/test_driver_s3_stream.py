"""How the S3 driver's reader relays a GetObject body: in the pieces its socket gives.

A scripted S3 server streams the body in pieces of its choosing, with a
``Content-Length`` or chunked; the reader must hand on every byte in order, in
chunks of at most the size asked for and never empty, whatever the pieces.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, cast

import pytest
from aiohttp import web

from cargohold.storage.driver import s3objects
from cargohold.storage.driver.s3 import S3Driver
from tests.storage.driver_suite import MiB, random_bytes

#: Sizes of the pieces the server writes the body in: smaller and larger than a chunk.
PIECES = [1, 700 * 1024, 3 * MiB // 2, 10, MiB, 4095]


class StreamingS3:
    """Answers every GET with ``body``, written in ``PIECES``; remembers each answer's length."""

    def __init__(self, body: bytes, chunked: bool) -> None:
        self.body = body
        self.chunked = chunked

    async def handle(self, request: web.Request) -> web.StreamResponse:
        offset = 0
        ranged = request.headers.get("Range", "")
        if ranged:
            offset = int(ranged.removeprefix("bytes=").removesuffix("-"))
        body = self.body[offset:]
        response = web.StreamResponse(status=206 if ranged else 200)
        response.headers["Last-Modified"] = "Wed, 21 Oct 2015 07:28:00 GMT"
        if self.chunked:
            response.enable_chunked_encoding()
        else:
            response.content_length = len(body)
        await response.prepare(request)
        start = 0
        for size in PIECES * (len(body) // sum(PIECES) + 1):
            if start >= len(body):
                break
            await response.write(body[start : start + size])
            start += size
        await response.write_eof()
        return response


async def streaming(body: bytes, chunked: bool) -> AsyncIterator[S3Driver]:
    server = StreamingS3(body, chunked)
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    driver = S3Driver(
        bucket="bkt",
        region="us-east-1",
        regionendpoint=f"http://127.0.0.1:{port}",
        accesskey="AK",
        secretkey="SK",
        forcepathstyle=True,
        secure=False,
    )
    try:
        yield driver
    finally:
        await driver.close()
        await runner.cleanup()


BODY = random_bytes(2 * sum(PIECES) + 123)


@pytest.fixture(params=[False, True], ids=["content-length", "chunked"])
async def driver(request: pytest.FixtureRequest) -> AsyncIterator[S3Driver]:
    async for made in streaming(BODY, request.param):
        yield made


@pytest.mark.parametrize("chunk_size", [4096, MiB, 4 * MiB])
@pytest.mark.parametrize("offset", [0, 5, len(BODY) - 1])
async def test_every_byte_arrives_in_chunks_of_at_most_the_size_asked(
    driver: S3Driver, chunk_size: int, offset: int
) -> None:
    chunks = [chunk async for chunk in await driver.reader("/blob", offset, chunk_size=chunk_size)]
    assert all(0 < len(chunk) <= chunk_size for chunk in chunks)
    assert b"".join(chunks) == BODY[offset:]


async def test_a_reader_left_part_way_gives_its_connection_up(driver: S3Driver) -> None:
    stream = cast(AsyncGenerator[bytes], await driver.reader("/blob", chunk_size=4096))
    first = await anext(stream)
    assert first == BODY[: len(first)]
    await stream.aclose()
    # The next request is answered whole: no byte of the abandoned body is in its way.
    assert b"".join([chunk async for chunk in await driver.reader("/blob", 3)]) == BODY[3:]


async def test_a_streamed_get_reads_its_socket_a_whole_chunk_at_a_time(driver: S3Driver) -> None:
    # asyncio reads 256 KiB per call; each piece costs a pass through the parser and the loop.
    objects = await driver._objects()
    assert isinstance(objects, s3objects.HTTPObjects)
    download = await objects.get("blob")
    try:
        response: Any = download._response  # type: ignore[attr-defined]
        assert response.connection.transport.max_size == s3objects.RECEIVE
        assert MiB <= s3objects.RECEIVE
        pieces = []
        while piece := await download.read(MiB):
            pieces.append(piece)
        assert b"".join(pieces) == BODY
    finally:
        download.close()
