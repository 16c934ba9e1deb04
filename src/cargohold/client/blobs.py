"""The blobs of a remote repository (implements ``registry.BlobStore`` over HTTP).

Downloads are careful: :meth:`RemoteBlobStore.open` resumes a body that
breaks off with a ``Range`` request from the byte where it stopped, and when
it reads a whole blob it checks the digest before handing out the last chunk,
so a consumer that commits when the stream ends never commits bad content.
:meth:`RemoteBlobStore.download` writes to a temporary file beside the target
and renames it only once the digest matched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from cargohold.client.progress import NO_PROGRESS, BlobProgress
from cargohold.client.transport import Transport
from cargohold.client.uploads import RemoteBlobWriter, Source, upload_stream
from cargohold.descriptor import OCTET_STREAM, Descriptor
from cargohold.digest import DEFAULT_ALGORITHM, Digest, Verifier, digest_of
from cargohold.errors import (
    BlobUnknown,
    BlobUploadUnknown,
    DigestInvalid,
    RangeInvalid,
    RegistryError,
    Unavailable,
)
from cargohold.reference import validate_name
from cargohold.registry import BlobSource

__all__ = ["RemoteBlobStore"]

#: Bytes per chunk handed out by ``open``.
READ_CHUNK = 1 << 20


class RemoteBlobStore:
    """The blobs of repository ``name`` on the registry behind ``transport``."""

    def __init__(self, transport: Transport, name: str, chunk_size: int | None = None) -> None:
        self.transport = transport
        self.name = name
        #: ``PATCH`` size of uploads; None sends a blob in one streamed ``PATCH``.
        self.chunk_size = chunk_size
        self.pull_scopes = (f"repository:{name}:pull",)
        self.push_scopes = (f"repository:{name}:pull,push",)
        self.delete_scopes = (f"repository:{name}:delete",)

    def _path(self, digest: Digest) -> str:
        return f"/v2/{self.name}/blobs/{digest}"

    # -- reading ------------------------------------------------------------------------------

    async def stat(self, digest: Digest) -> Descriptor:
        digest = Digest.parse(digest)
        response = await self.transport.send(
            "HEAD",
            self._path(digest),
            scopes=self.pull_scopes,
            missing=lambda: BlobUnknown(digest),
        )
        async with response:
            size = response.content_length
            media_type = response.headers.get("Content-Type") or OCTET_STREAM
        if size is None:
            raise RegistryError(f"the registry sent no size for blob {digest}")
        return Descriptor(media_type, digest, size)

    async def exists(self, digest: Digest) -> bool:
        try:
            await self.stat(digest)
        except BlobUnknown:
            return False
        return True

    async def get(self, digest: Digest) -> bytes:
        return b"".join([chunk async for chunk in await self.open(digest)])

    async def open(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        digest = Digest.parse(digest)
        if offset < 0 or (length is not None and length < 0):
            raise RangeInvalid(f"offset {offset} and length {length} do not make a range")
        if length == 0:
            return _empty()
        response, end = await self._fetch(digest, offset, length)
        return self._chunks(digest, response, offset, end, verify=offset == 0 and length is None)

    async def stream(
        self, digest: Digest, *, verify: bool = True
    ) -> tuple[int | None, AsyncIterator[bytes]]:
        """The whole blob in one GET: its size as announced (None when not), and its chunks.

        With ``verify`` the last chunk comes only once the content matched
        ``digest``; without, the caller checks (a storage upload hashes what it
        is given anyway). A body longer than announced is cut there, so it
        cannot match.
        """
        digest = Digest.parse(digest)
        response, end = await self._fetch(digest, 0, None)
        return end, self._chunks(digest, response, 0, end, verify=verify)

    async def _fetch(
        self, digest: Digest, start: int, length: int | None
    ) -> tuple[aiohttp.ClientResponse, int | None]:
        """A GET of the blob from ``start``; the reply (positioned at ``start``) and the end."""
        headers: dict[str, str] = {}
        if start or length is not None:
            last = "" if length is None else str(start + length - 1)
            headers["Range"] = f"bytes={start}-{last}"
        response = await self.transport.send(
            "GET",
            self._path(digest),
            scopes=self.pull_scopes,
            headers=headers,
            ok=(200, 206),
            missing=lambda: BlobUnknown(digest),
        )
        try:
            if response.status == 206:
                first, total = _content_range(response.headers.get("Content-Range"))
                if first != start:
                    raise RangeInvalid(f"asked for bytes from {start}, got them from {first}")
                end = total if length is None else start + length
            else:
                total = response.content_length
                end = total if length is None else start + length
                if start:
                    # The registry ignored Range (RFC 9110 allows it): skip to the offset.
                    await _discard(response, start)
        except BaseException:
            response.release()
            raise
        return response, end

    async def _chunks(
        self,
        digest: Digest,
        response: aiohttp.ClientResponse,
        start: int,
        end: int | None,
        *,
        verify: bool,
    ) -> AsyncIterator[bytes]:
        verifier = Verifier(digest) if verify else None
        position = start
        #: When verifying, one chunk is held back until the digest is known to match.
        held: bytes | None = None
        failures = 0
        retry = self.transport.retry
        try:
            while True:
                try:
                    async for chunk in response.content.iter_chunked(READ_CHUNK):
                        if end is not None and position + len(chunk) > end:
                            chunk = chunk[: end - position]
                        position += len(chunk)
                        if verifier is None:
                            yield chunk
                            continue
                        verifier.update(chunk)
                        if held is not None:
                            yield held
                        held = chunk
                        if end is not None and position >= end:
                            break
                    if end is not None and position < end:
                        raise aiohttp.ClientPayloadError(f"body ended at byte {position} of {end}")
                    break
                except (aiohttp.ClientError, TimeoutError) as exc:
                    failures += 1
                    if failures >= retry.attempts:
                        raise Unavailable(
                            f"{self.transport.host}: reading blob {digest} failed at byte "
                            f"{position}: {exc}"
                        ) from exc
                    response.release()
                    await asyncio.sleep(retry.delay(failures))
                    remaining = None if end is None or verifier is not None else end - position
                    response, _ = await self._fetch(digest, position, remaining)
            if verifier is not None and not verifier.verified():
                raise DigestInvalid(
                    f"blob {digest} from {self.transport.host} does not match its digest"
                )
            if held is not None:
                yield held
        finally:
            response.release()

    async def download(
        self, digest: Digest, path: str | os.PathLike[str], progress: BlobProgress = NO_PROGRESS
    ) -> Descriptor:
        """Write the blob to ``path``, which appears only once the content is verified."""
        target = Path(path)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        size = 0
        try:
            with os.fdopen(handle, "wb") as out:
                async for chunk in await self.open(digest):
                    out.write(chunk)
                    size += len(chunk)
                    progress.advance(len(chunk))
            os.replace(temporary, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return Descriptor(OCTET_STREAM, digest, size)

    async def locate(
        self, digest: Digest, *, redirect: str | None = None, client: str | None = None
    ) -> BlobSource:
        # The registry itself is the only place it can be read from.
        return BlobSource(await self.stat(digest))

    # -- writing ------------------------------------------------------------------------------

    async def put(self, content: bytes, media_type: str = OCTET_STREAM) -> Descriptor:
        """A monolithic upload (``POST``, then ``PUT`` with the body), or chunked ``PATCH``es
        when the content is over ``chunk_size``."""
        digest = digest_of(content)
        if self.chunk_size is not None and len(content) > self.chunk_size:
            view = memoryview(content)

            async def source(offset: int) -> AsyncIterator[bytes]:
                return _slices(view, offset, self.chunk_size or len(content))

            await upload_stream(self, digest, len(content), source)
        else:
            writer = await self.create_upload()
            writer.stage(content)
            await writer.commit(digest, len(content))
        return Descriptor(media_type, digest, len(content))

    async def upload(
        self, digest: Digest, size: int, source: Source, progress: BlobProgress = NO_PROGRESS
    ) -> Descriptor:
        """Stream a blob from ``source`` (reopened at the offset to resume from)."""
        return await upload_stream(self, digest, size, source, progress)

    async def delete(self, digest: Digest) -> None:
        digest = Digest.parse(digest)
        response = await self.transport.send(
            "DELETE",
            self._path(digest),
            scopes=self.delete_scopes,
            ok=(202, 204),
            missing=lambda: BlobUnknown(digest),
        )
        response.release()

    async def try_mount(self, source: str, digest: Digest) -> bool:
        """Ask the registry to link ``source``'s blob here; whether it did.

        A registry that cannot (the source lacks the blob, or mounting is off)
        answers 202 with a fresh upload instead, which is cancelled here.
        """
        digest = Digest.parse(digest)
        validate_name(source)
        response = await self.transport.send(
            "POST",
            f"/v2/{self.name}/blobs/uploads/?mount={digest}&from={source}",
            scopes=(*self.push_scopes, f"repository:{source}:pull"),
            ok=(201, 202),
        )
        async with response:
            await response.read()
            if response.status == 201:
                return True
            location = response.headers.get("Location")
        if location:
            await RemoteBlobWriter(self, location).cancel()
        return False

    async def mount(self, source: str, digest: Digest) -> Descriptor:
        if not await self.try_mount(source, digest):
            raise BlobUnknown(digest, f"{source} has no blob {digest} to mount")
        return await self.stat(digest)

    async def create_upload(self, algorithm: str = DEFAULT_ALGORITHM) -> RemoteBlobWriter:
        path = f"/v2/{self.name}/blobs/uploads/"
        if algorithm != DEFAULT_ALGORITHM:
            path += f"?digest-algorithm={algorithm}"
        response = await self.transport.send("POST", path, scopes=self.push_scopes, ok=(202,))
        async with response:
            await response.read()
            location = response.headers.get("Location")
            if not location:
                raise RegistryError("the registry started an upload but sent no Location")
            writer = RemoteBlobWriter(
                self,
                str(response.url.join(self.transport.url(location))),
                upload_uuid=response.headers.get("Docker-Upload-UUID", ""),
                chunk_size=self.chunk_size,
            )
            minimum = response.headers.get("OCI-Chunk-Min-Length", "")
            writer.set_chunk_size(int(minimum) if minimum.isdigit() else None)
        return writer

    async def resume_upload(self, upload_id: str) -> RemoteBlobWriter:
        """The upload ``upload_id``: a ``Location`` (``writer.id``), or a bare upload UUID
        for registries that need no signed state (cargohold; not Distribution)."""
        if "/" in upload_id:
            location = upload_id
        else:
            if not upload_id or not all(c.isalnum() or c in "-_" for c in upload_id):
                raise BlobUploadUnknown(f"no upload {upload_id[:64]!r}")
            location = f"/v2/{self.name}/blobs/uploads/{upload_id}"
        writer = RemoteBlobWriter(self, location, chunk_size=self.chunk_size)
        await writer.refresh()
        return writer


async def _empty() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _slices(view: memoryview, offset: int, size: int) -> AsyncIterator[bytes]:
    for start in range(offset, len(view), size):
        yield bytes(view[start : start + size])


async def _discard(response: aiohttp.ClientResponse, amount: int) -> None:
    while amount > 0:
        data = await response.content.read(min(amount, READ_CHUNK))
        if not data:
            raise aiohttp.ClientPayloadError("body ended before the requested offset")
        amount -= len(data)


def _content_range(header: str | None) -> tuple[int, int | None]:
    """``bytes <first>-<last>/<total>``: the first byte and the total (None for ``*``)."""
    if not header:
        raise RangeInvalid("a partial reply without Content-Range")
    unit, _, rest = header.strip().partition(" ")
    span, _, total = rest.partition("/")
    first, _, _ = span.partition("-")
    if unit.lower() != "bytes" or not first.isdigit():
        raise RangeInvalid(f"malformed Content-Range {header[:64]!r}")
    return int(first), int(total) if total.isdigit() else None
