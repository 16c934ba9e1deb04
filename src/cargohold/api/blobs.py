"""``GET``/``HEAD``/``DELETE /v2/<name>/blobs/<digest>``.

``blob_reply`` decides status and headers for both request paths. The body
never passes through memory whole: small blobs on a local disk are read
inline (cheaper than any hand-off), larger ones are copied to the socket by a
thread or sent by the kernel (``filesend.py``), object stores answer with a
redirect or have the kernel pass their answer on (``relay.py``), and anything
else streams in bounded chunks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from cargohold.api import relay
from cargohold.api.context import Api
from cargohold.api.events import DELETE, PULL, Event
from cargohold.api.filesend import LocalFileResponse
from cargohold.api.http import ByteRange, not_modified, parse_range
from cargohold.api.pipeline import record, respond
from cargohold.api.remoteip import remote_ip
from cargohold.api.reply import Reply, RequestView
from cargohold.descriptor import OCTET_STREAM
from cargohold.digest import Digest
from cargohold.errors import RangeInvalid, RegistryError, StorageDriverError
from cargohold.registry import BlobSource, Repository

log = logging.getLogger("cargohold.api")

#: Blobs up to this size are read in one call and sent as the body.
INLINE_LIMIT = 256 * 1024


@dataclass(slots=True)
class BlobReply:
    """The reply to a blob GET or HEAD, and which bytes of the blob its body carries."""

    reply: Reply
    offset: int = 0
    #: Bytes of content the body carries; 0 when it carries none (HEAD, 304, 307, 416).
    length: int = 0


def blob_reply(api: Api, request: RequestView, repository: str, source: BlobSource) -> BlobReply:
    """Status and headers of a GET or HEAD of the located blob ``source``."""
    descriptor = source.descriptor
    digest, size = descriptor.digest, descriptor.size
    headers = api.headers(
        {
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
            "Accept-Ranges": "bytes",
            "Cache-Control": "max-age=31536000",
            # Every blob is served as bytes, whatever media type a cache remembers.
            "Content-Type": OCTET_STREAM,
        }
    )
    if not_modified(request.headers, digest):
        return BlobReply(Reply(304, headers))
    pulled = Event(PULL, repository, digest, descriptor.media_type, size)
    if source.url is not None:
        headers["Location"] = source.url
        return BlobReply(Reply(307, headers, event=pulled))
    status, offset, length = 200, 0, size
    range_header = request.headers.get("Range")
    if range_header:  # an empty Range asks for nothing in particular, as in Go's ServeContent
        try:
            byte_range: ByteRange | None = parse_range(range_header, size)
        except RangeInvalid as exc:
            return BlobReply(api.error_reply(exc, {"Content-Range": f"bytes */{size}"}))
        if byte_range is not None:
            status, offset, length = 206, byte_range.start, byte_range.length
            headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"
    headers["Content-Length"] = str(length)
    reply = Reply(status, headers, event=pulled)
    if request.method == "HEAD":
        return BlobReply(reply)
    return BlobReply(reply, offset, length)


async def get_blob(
    api: Api, request: web.Request, repo: Repository, digest: Digest
) -> web.StreamResponse:
    redirect = "GET" if request.method == "GET" and api.redirect else None
    client = remote_ip(request.headers, request.remote) if redirect is not None else None
    source = await repo.blobs.locate(digest, redirect=redirect, client=client)
    answer = blob_reply(api, request, repo.name, source)
    reply, offset, length = answer.reply, answer.offset, answer.length
    if not length:
        return respond(request, reply)
    if source.file is not None:
        if length <= INLINE_LIMIT:
            body = _read_inline(source.file, offset, length)
            if body is not None:
                reply.body = body
                return respond(request, reply)
        record(request, reply.event)
        return LocalFileResponse(
            api.files, source.file, offset, length, status=reply.status, headers=reply.headers
        )

    # Opened before the status line goes out, so that a missing blob or an
    # unreachable store still gets its own error reply.
    chunks = await repo.blobs.open(digest, offset, length)
    record(request, reply.event)
    response = web.StreamResponse(status=reply.status, headers=reply.headers)
    response.content_length = length
    await response.prepare(request)
    try:
        taken = relay.take(request, chunks, length)
        if taken is not None:
            await relay.send(request, taken)
        else:
            async for chunk in chunks:
                await response.write(chunk)
    except (StorageDriverError, RegistryError, relay.RelayFailed) as exc:
        # Part of the body is out: no error reply can follow (one returned now would be
        # written inside the body, on a connection the client keeps waiting on for the
        # missing bytes). Cutting the connection shows the client a short body.
        log.warning("reading blob %s failed while sending it: %s", digest, exc)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


async def delete_blob(
    api: Api, request: web.Request, repo: Repository, digest: Digest
) -> web.StreamResponse:
    await repo.blobs.delete(digest)
    deleted = Event(DELETE, repo.name, digest)
    headers = api.headers({"Docker-Content-Digest": digest})
    return respond(request, Reply(202, headers, event=deleted))


def _read_inline(path: str, offset: int, length: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            if offset:
                f.seek(offset)
            data = f.read(length)
    except FileNotFoundError:
        return None
    return data if len(data) == length else None
