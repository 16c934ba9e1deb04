"""Robust transfers, against an aiohttp registry that fails on purpose.

The fake registry keeps blobs and uploads in memory and follows a script of
faults per kind of request: answer 503 or 429, drop the connection part way
through a body it sends or receives, serve corrupt bytes, ignore ``Range``,
or forget an upload the way Distribution does when its signed state goes stale.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cargohold.client import RemoteRegistry
from cargohold.client.blobs import RemoteBlobStore
from cargohold.digest import Digest, digest_of
from cargohold.errors import BlobUnknown, DigestInvalid, TooManyRequests, Unavailable
from tests.support.servers import free_port

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]
MiB = 1 << 20
NAME = "faulty/repo"


def _error(status: int, code: str, headers: dict[str, str] | None = None) -> web.Response:
    body = f'{{"errors": [{{"code": "{code}", "message": "{code.lower()}"}}]}}'
    return web.Response(
        status=status, text=body, content_type="application/json", headers=headers or {}
    )


async def _drop(request: web.Request) -> web.StreamResponse:
    """Cut the connection: the client sees it break, not a reply."""
    assert request.transport is not None
    request.transport.abort()
    # The handler must still return something; nobody will read it.
    return web.Response(status=500)


@dataclass
class FaultyRegistry:
    """A registry of one repository; ``faults[kind]`` lists what the next requests do."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    uploads: dict[str, bytearray] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=dict)
    #: (kind, method, Range or Content-Range header) of every request.
    seen: list[tuple[str, str, str | None]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * MiB)
        app.router.add_get("/v2/", self.base)
        app.router.add_get(f"/v2/{NAME}/tags/list", self.tags)
        app.router.add_get(f"/v2/{NAME}/blobs/{{digest}}", self.get_blob)
        app.router.add_post(f"/v2/{NAME}/blobs/uploads/", self.start_upload)
        app.router.add_patch(f"/v2/{NAME}/blobs/uploads/{{id}}", self.patch_upload)
        app.router.add_get(f"/v2/{NAME}/blobs/uploads/{{id}}", self.upload_status)
        app.router.add_put(f"/v2/{NAME}/blobs/uploads/{{id}}", self.finish_upload)
        app.router.add_delete(f"/v2/{NAME}/blobs/uploads/{{id}}", self.cancel_upload)
        return app

    def next_fault(self, kind: str, request: web.Request, header: str | None = None) -> str:
        self.seen.append((kind, request.method, header))
        planned = self.faults.get(kind)
        return planned.pop(0) if planned else "ok"

    def requests(self, kind: str, method: str | None = None) -> list[str | None]:
        return [h for k, m, h in self.seen if k == kind and method in (None, m)]

    @staticmethod
    def _status(fault: str) -> web.Response | None:
        if fault == "503":
            return _error(503, "UNAVAILABLE")
        if fault == "500":
            return _error(500, "UNKNOWN")
        if fault.startswith("429:"):
            return _error(429, "TOOMANYREQUESTS", {"Retry-After": fault.partition(":")[2]})
        return None

    async def base(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def tags(self, request: web.Request) -> web.Response:
        fault = self.next_fault("tags", request)
        return self._status(fault) or web.json_response({"name": NAME, "tags": ["ok"]})

    # -- blobs ------------------------------------------------------------------------------

    async def get_blob(self, request: web.Request) -> web.StreamResponse:
        fault = self.next_fault("blob", request, request.headers.get("Range"))
        if (reply := self._status(fault)) is not None:
            return reply
        content = self.blobs.get(request.match_info["digest"])
        if content is None:
            return _error(404, "BLOB_UNKNOWN")
        size = len(content)
        start, status, headers = 0, 200, {"Content-Type": "application/octet-stream"}
        wanted = request.headers.get("Range")
        if wanted and fault != "ignore-range":
            first, _, last = wanted.removeprefix("bytes=").partition("-")
            start = int(first)
            end = int(last) if last else size - 1
            content = content[start : end + 1]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if fault == "corrupt":
            content = bytes([content[0] ^ 0xFF]) + content[1:]
        headers["Content-Length"] = str(len(content))
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        if fault.startswith("drop:"):
            await response.write(content[: int(fault.partition(":")[2])])
            await asyncio.sleep(0.01)  # let the bytes reach the client first
            return await _drop(request)
        await response.write(content)
        await response.write_eof()
        return response

    # -- uploads ----------------------------------------------------------------------------

    def _upload_reply(self, upload_id: str, status: int) -> web.Response:
        size = len(self.uploads[upload_id])
        return web.Response(
            status=status,
            headers={
                "Location": f"/v2/{NAME}/blobs/uploads/{upload_id}",
                "Docker-Upload-UUID": upload_id,
                "Range": f"0-{max(size - 1, 0)}",
            },
        )

    async def start_upload(self, request: web.Request) -> web.Response:
        self.next_fault("post", request)
        upload_id = str(uuid.uuid4())
        self.uploads[upload_id] = bytearray()
        return self._upload_reply(upload_id, 202)

    async def patch_upload(self, request: web.Request) -> web.StreamResponse:
        upload_id = request.match_info["id"]
        fault = self.next_fault("patch", request, request.headers.get("Content-Range"))
        if upload_id not in self.uploads:
            return _error(404, "BLOB_UPLOAD_UNKNOWN")
        if (reply := self._status(fault)) is not None:
            return reply
        data = self.uploads[upload_id]
        start = int((request.headers.get("Content-Range") or f"{len(data)}-").partition("-")[0])
        if start != len(data):
            return _error(416, "RANGE_INVALID")
        if fault.startswith("cut:"):
            data += await request.content.readexactly(int(fault.partition(":")[2]))
            return await _drop(request)
        data += await request.read()
        return self._upload_reply(upload_id, 202)

    async def upload_status(self, request: web.Request) -> web.Response:
        upload_id = request.match_info["id"]
        fault = self.next_fault("status", request)
        if fault == "lost":
            # What Distribution answers once its signed _state disagrees with the data.
            self.uploads.pop(upload_id, None)
            return _error(404, "BLOB_UPLOAD_INVALID")
        if upload_id not in self.uploads:
            return _error(404, "BLOB_UPLOAD_UNKNOWN")
        return self._upload_reply(upload_id, 204)

    async def finish_upload(self, request: web.Request) -> web.StreamResponse:
        upload_id = request.match_info["id"]
        fault = self.next_fault("put", request)
        if upload_id not in self.uploads:
            return _error(404, "BLOB_UPLOAD_UNKNOWN")
        data = self.uploads[upload_id] + await request.read()
        digest = request.query["digest"]
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            return _error(400, "DIGEST_INVALID")
        del self.uploads[upload_id]
        self.blobs[digest] = bytes(data)
        if fault == "drop-after-commit":
            return await _drop(request)
        return web.Response(status=201, headers={"Docker-Content-Digest": digest})

    async def cancel_upload(self, request: web.Request) -> web.Response:
        self.uploads.pop(request.match_info["id"], None)
        return web.Response(status=204)


@dataclass
class Faulty:
    fake: FaultyRegistry
    url: str

    def client(self, **options: object) -> RemoteRegistry:
        return RemoteRegistry(self.url, backoff=0.01, environ={}, **options)  # type: ignore[arg-type]


@pytest.fixture
async def faulty(aiohttp_server: ServerFactory) -> Faulty:
    fake = FaultyRegistry()
    server = await aiohttp_server(fake.app())
    return Faulty(fake, str(server.make_url("")).rstrip("/"))


# -- retries ------------------------------------------------------------------------------------


async def test_a_503_is_tried_again(faulty: Faulty) -> None:
    faulty.fake.faults["tags"] = ["503", "503"]
    async with faulty.client() as registry:
        assert await registry.repository(NAME).tags.all() == ["ok"]
    assert len(faulty.fake.requests("tags")) == 3


async def test_a_429_waits_as_long_as_retry_after_says(faulty: Faulty) -> None:
    faulty.fake.faults["tags"] = ["429:1"]
    async with faulty.client() as registry:
        started = time.monotonic()
        assert await registry.repository(NAME).tags.all() == ["ok"]
        assert time.monotonic() - started >= 0.95


async def test_failures_are_tried_a_bounded_number_of_times(faulty: Faulty) -> None:
    faulty.fake.faults["tags"] = ["500"] * 10
    async with faulty.client(retries=3) as registry:
        with pytest.raises(Unavailable):
            await registry.repository(NAME).tags.all()
    assert len(faulty.fake.requests("tags")) == 3
    faulty.fake.faults["tags"] = ["429:0"] * 10
    async with faulty.client(retries=2) as registry:
        with pytest.raises(TooManyRequests):
            await registry.repository(NAME).tags.all()


async def test_a_registry_that_does_not_answer_is_unavailable() -> None:
    port = free_port()
    async with RemoteRegistry(f"127.0.0.1:{port}", retries=2, backoff=0.01, environ={}) as r:
        with pytest.raises(Unavailable, match="cannot connect"):
            await r.repository("a").tags.all()


# -- downloads ---------------------------------------------------------------------------------


def store_blob(fake: FaultyRegistry, size: int) -> tuple[Digest, bytes]:
    content = secrets.token_bytes(size)
    digest = digest_of(content)
    fake.blobs[str(digest)] = content
    return digest, content


async def test_an_interrupted_download_resumes_where_it_stopped(faulty: Faulty) -> None:
    digest, content = store_blob(faulty.fake, 3 * MiB)
    faulty.fake.faults["blob"] = ["drop:1000000", "drop:700000"]
    async with faulty.client() as registry:
        assert await registry.repository(NAME).blobs.get(digest) == content
    assert faulty.fake.requests("blob", "GET") == [None, "bytes=1000000-", "bytes=1700000-"]


async def test_a_registry_that_ignores_range_is_read_forward(faulty: Faulty) -> None:
    digest, content = store_blob(faulty.fake, 2 * MiB)
    faulty.fake.faults["blob"] = ["drop:300000", "ignore-range"]
    async with faulty.client() as registry:
        assert await registry.repository(NAME).blobs.get(digest) == content


async def test_a_partial_read_resumes_within_its_range(faulty: Faulty) -> None:
    digest, content = store_blob(faulty.fake, 2 * MiB)
    faulty.fake.faults["blob"] = ["drop:1000"]
    async with faulty.client() as registry:
        stream = await registry.repository(NAME).blobs.open(digest, 5000, 100_000)
        assert b"".join([chunk async for chunk in stream]) == content[5000:105_000]
    assert faulty.fake.requests("blob", "GET") == ["bytes=5000-104999", "bytes=6000-104999"]


async def test_corrupt_content_is_never_handed_out_whole(faulty: Faulty, tmp_path: Path) -> None:
    digest, content = store_blob(faulty.fake, 3 * MiB)
    faulty.fake.faults["blob"] = ["corrupt", "corrupt"]
    async with faulty.client() as registry:
        blobs = registry.repository(NAME).blobs
        received: list[bytes] = []

        async def consume() -> None:
            async for chunk in await blobs.open(digest):
                received.append(chunk)

        with pytest.raises(DigestInvalid):
            await consume()
        received_bytes = sum(len(chunk) for chunk in received)
        # The last chunk waits for the digest check: a consumer never sees the whole.
        assert received_bytes < len(content)
        target = tmp_path / "blob"
        with pytest.raises(DigestInvalid):
            await blobs.download(digest, target)
    assert os.listdir(tmp_path) == []  # neither the blob nor a temporary file


async def test_a_download_appears_only_when_complete(faulty: Faulty, tmp_path: Path) -> None:
    digest, content = store_blob(faulty.fake, 2 * MiB + 3)
    faulty.fake.faults["blob"] = ["drop:12345"]
    async with faulty.client() as registry:
        descriptor = await registry.repository(NAME).blobs.download(digest, tmp_path / "b")
    assert descriptor.size == len(content)
    assert (tmp_path / "b").read_bytes() == content
    assert os.listdir(tmp_path) == ["b"]


async def test_an_unknown_blob_is_not_retried(faulty: Faulty) -> None:
    async with faulty.client() as registry:
        with pytest.raises(BlobUnknown):
            await registry.repository(NAME).blobs.get(digest_of(b"absent"))
    assert len(faulty.fake.requests("blob")) == 1


# -- uploads -----------------------------------------------------------------------------------


def source_of(
    content: bytes, opened: list[int]
) -> Callable[[int], Awaitable[AsyncIterator[bytes]]]:
    """A blob source that records the offsets it is opened at."""

    async def source(offset: int) -> AsyncIterator[bytes]:
        opened.append(offset)

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(offset, len(content), 256 * 1024):
                yield content[start : start + 256 * 1024]

        return chunks()

    return source


async def upload(registry: RemoteRegistry, content: bytes, opened: list[int]) -> Digest:
    blobs = registry.repository(NAME).blobs
    assert isinstance(blobs, RemoteBlobStore)
    descriptor = await blobs.upload(digest_of(content), len(content), source_of(content, opened))
    return descriptor.digest


async def test_an_interrupted_upload_resumes_from_the_registry_offset(faulty: Faulty) -> None:
    content = secrets.token_bytes(3 * MiB)
    faulty.fake.faults["patch"] = ["cut:1500000"]
    opened: list[int] = []
    async with faulty.client() as registry:
        digest = await upload(registry, content, opened)
    assert faulty.fake.blobs[str(digest)] == content
    assert opened == [0, 1500000]
    assert faulty.fake.requests("patch") == [f"0-{len(content) - 1}", f"1500000-{len(content) - 1}"]
    assert len(faulty.fake.requests("post")) == 1


async def test_chunked_uploads_resume_within_a_chunk(faulty: Faulty) -> None:
    content = secrets.token_bytes(2 * MiB + 100)
    faulty.fake.faults["patch"] = ["ok", "cut:1000", "503"]
    opened: list[int] = []
    async with faulty.client(chunk_size=MiB) as registry:
        digest = await upload(registry, content, opened)
    assert faulty.fake.blobs[str(digest)] == content
    assert opened == [0, MiB + 1000, MiB + 1000]
    assert faulty.fake.requests("patch")[:2] == [f"0-{MiB - 1}", f"{MiB}-{2 * MiB - 1}"]


async def test_an_upload_the_registry_lost_starts_over(faulty: Faulty) -> None:
    content = secrets.token_bytes(MiB)
    faulty.fake.faults["patch"] = ["cut:5000"]
    faulty.fake.faults["status"] = ["lost"]
    opened: list[int] = []
    async with faulty.client() as registry:
        digest = await upload(registry, content, opened)
    assert faulty.fake.blobs[str(digest)] == content
    assert opened == [0, 0]
    assert len(faulty.fake.requests("post")) == 2


async def test_the_writer_resends_its_buffer_from_the_registry_offset(faulty: Faulty) -> None:
    content = secrets.token_bytes(2 * MiB + 5)
    faulty.fake.faults["patch"] = ["cut:300000", "ok", "503"]
    async with faulty.client(chunk_size=MiB) as registry:
        writer = await registry.repository(NAME).blobs.create_upload()
        for start in range(0, len(content), 100_000):
            await writer.write(content[start : start + 100_000])
        await writer.commit(digest_of(content), len(content))
    assert faulty.fake.blobs[str(digest_of(content))] == content
    assert faulty.fake.requests("patch")[:2] == [f"0-{MiB - 1}", f"300000-{MiB - 1}"]


async def test_a_commit_whose_reply_was_lost_finds_the_blob(faulty: Faulty) -> None:
    content = secrets.token_bytes(1000)
    faulty.fake.faults["put"] = ["drop-after-commit"]
    async with faulty.client() as registry:
        descriptor = await registry.repository(NAME).blobs.put(content)
    assert faulty.fake.blobs[str(descriptor.digest)] == content
    # aiohttp itself sends the PUT again on a new connection (it is idempotent); the
    # registry then no longer knows the upload, and the client finds the blob instead.
    assert len(faulty.fake.requests("put")) == 2


def failing_source(
    content: bytes, opened: list[int], failures: list[Exception]
) -> Callable[[int], Awaitable[AsyncIterator[bytes]]]:
    """A source that raises the next of ``failures`` half way through each read."""

    async def source(offset: int) -> AsyncIterator[bytes]:
        opened.append(offset)

        async def chunks() -> AsyncIterator[bytes]:
            middle = offset + (len(content) - offset) // 2
            yield content[offset:middle]
            if failures:
                raise failures.pop(0)
            yield content[middle:]

        return chunks()

    return source


async def test_a_source_that_fails_for_a_moment_is_reopened(faulty: Faulty) -> None:
    content = secrets.token_bytes(2 * MiB)
    opened: list[int] = []
    async with faulty.client() as registry:
        blobs = registry.repository(NAME).blobs
        source = failing_source(content, opened, [Unavailable("source hiccup")])
        await blobs.upload(digest_of(content), len(content), source)
    assert faulty.fake.blobs[str(digest_of(content))] == content
    assert opened[0] == 0
    assert len(opened) == 2


async def test_a_source_that_fails_for_good_leaves_no_upload(faulty: Faulty) -> None:
    content = secrets.token_bytes(2 * MiB)
    async with faulty.client() as registry:
        blobs = registry.repository(NAME).blobs
        source = failing_source(content, [], [DigestInvalid("the source is damaged")])
        with pytest.raises(DigestInvalid, match="damaged"):
            await blobs.upload(digest_of(content), len(content), source)
    assert faulty.fake.uploads == {}
    assert faulty.fake.blobs == {}
