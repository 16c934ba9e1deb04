"""``GET``/``HEAD``/``DELETE /v2/<name>/blobs/<digest>``.

Blob bodies never pass through memory whole: small blobs on a local disk are
read inline (cheaper than any hand-off), larger ones are copied to the socket
by a thread in small pieces (``filesend.py``), object stores answer with a
redirect, and anything else streams in bounded chunks.
"""

from __future__ import annotations

import logging

from aiohttp import web

from cargohold.api.context import Api
from cargohold.api.filesend import LocalFileResponse
from cargohold.api.http import ByteRange, not_modified, parse_range
from cargohold.descriptor import OCTET_STREAM
from cargohold.digest import Digest
from cargohold.errors import RangeInvalid, StorageDriverError
from cargohold.registry import Repository

log = logging.getLogger("cargohold.api")

#: Blobs up to this size are read in one call and sent as the body.
INLINE_LIMIT = 256 * 1024


async def get_blob(
    api: Api, request: web.Request, repo: Repository, digest: Digest
) -> web.StreamResponse:
    descriptor = await repo.blobs.stat(digest)
    size = descriptor.size
    headers = api.headers(
        {
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
            "Accept-Ranges": "bytes",
            "Cache-Control": "max-age=31536000",
            # Every blob is served as bytes, whatever a cache remembers: the fast path
            # (fastpath.py) answers the same without looking anything up.
            "Content-Type": OCTET_STREAM,
        }
    )
    if not_modified(request, digest):
        return web.Response(status=304, headers=headers)
    if request.method == "GET" and api.redirect:
        url = await repo.blobs.redirect_url(digest, "GET")
        if url is not None:
            headers["Location"] = url
            return web.Response(status=307, headers=headers)

    byte_range: ByteRange | None = None
    range_header = request.headers.get("Range")
    if range_header:  # an empty Range asks for nothing in particular, as in Go's ServeContent
        try:
            byte_range = parse_range(range_header, size)
        except RangeInvalid as exc:
            return api.error(exc, {"Content-Range": f"bytes */{size}"})
    status, offset, length = 200, 0, size
    if byte_range is not None:
        status, offset, length = 206, byte_range.start, byte_range.length
        headers["Content-Range"] = f"bytes {byte_range.start}-{byte_range.end}/{size}"

    if request.method == "HEAD":
        headers["Content-Length"] = str(length)
        return web.Response(status=status, headers=headers)

    local = repo.blobs.local_file(digest)
    if local is not None:
        if length <= INLINE_LIMIT:
            body = _read_inline(local, offset, length)
            if body is not None:
                return web.Response(status=status, headers=headers, body=body)
        return LocalFileResponse(local, offset, length, status=status, headers=headers)

    # Opened before the status line goes out, so that a missing blob or an
    # unreachable store still gets its own error reply.
    chunks = await repo.blobs.open(digest, offset, length)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = length
    await response.prepare(request)
    try:
        async for chunk in chunks:
            await response.write(chunk)
    except StorageDriverError as exc:
        # Part of the body is out: no error reply can follow (one returned now would be
        # written inside the body, on a connection the client keeps waiting on for the
        # missing bytes). Cutting the connection shows the client a short body.
        log.warning("storage failed while sending blob %s: %s", digest, exc)
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response


async def delete_blob(
    api: Api, request: web.Request, repo: Repository, digest: Digest
) -> web.StreamResponse:
    await repo.blobs.delete(digest)
    return web.Response(status=202, headers=api.headers({"Docker-Content-Digest": digest}))


def _read_inline(path: str, offset: int, length: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            if offset:
                f.seek(offset)
            data = f.read(length)
    except FileNotFoundError:
        return None
    return data if len(data) == length else None
