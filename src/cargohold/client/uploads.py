"""Blob uploads over HTTP: a ``BlobWriter`` on a remote registry, and resumable streams.

The protocol: ``POST`` starts an upload and answers with its ``Location``;
``PATCH`` requests append bytes (``Content-Range: <start>-<end>``); ``GET``
asks how much has arrived (``Range: 0-<last byte>``); ``PUT ?digest=`` ends
it. Each reply's ``Location`` is the URL for the next request: Distribution
signs the offset into it (``_state``) and refuses a stale one, so the id of a
remote upload is its latest ``Location``.

Two ways to send bytes:

- :class:`RemoteBlobWriter` is the ``BlobWriter`` Protocol: ``write`` buffers
  up to ``chunk_size`` bytes and sends each full buffer as one ``PATCH``. A
  ``PATCH`` that fails is resent from the offset the registry reports, which
  the buffer still covers.
- :func:`upload_stream` sends a blob read from a source that can be reopened
  at any offset (another registry, a file) in ``PATCH`` requests whose bodies
  stream from the source, so no blob is ever held in memory; with no
  ``chunk_size``, the whole blob goes in one ``PATCH``, as skopeo sends it.
  After a failure it asks the registry where the upload stands and reopens
  the source there. A registry that lost the upload (Distribution cancels one
  whose data disagrees with its signed state) gets a new upload from byte 0.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import aiohttp

from cargohold.client.progress import NO_PROGRESS, BlobProgress
from cargohold.descriptor import OCTET_STREAM, Descriptor
from cargohold.digest import Digest
from cargohold.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    RangeInvalid,
    RegistryError,
    SizeInvalid,
    TooManyRequests,
    Unavailable,
)

if TYPE_CHECKING:
    from cargohold.client.blobs import RemoteBlobStore

#: What a ``write`` buffers before sending it when no chunk size was configured.
DEFAULT_WRITE_BUFFER = 8 << 20

#: Failures after which the upload is asked where it stands and continued.
RECOVERABLE: tuple[type[BaseException], ...] = (Unavailable, TooManyRequests, RangeInvalid)

#: Reopens a blob's source at an offset.
Source = Callable[[int], Awaitable[AsyncIterator[bytes]]]


def _with_query(location: str, query: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}{query}"


class RemoteBlobWriter:
    """An upload on a remote registry (implements ``registry.BlobWriter``)."""

    def __init__(
        self,
        store: RemoteBlobStore,
        location: str,
        *,
        offset: int = 0,
        upload_uuid: str = "",
        started_at: datetime | None = None,
        chunk_size: int | None = None,
    ) -> None:
        self._store = store
        self._transport = store.transport
        self._location = location
        self._uuid = upload_uuid
        self._started_at = started_at or datetime.now(UTC).replace(microsecond=0)
        self._chunk_size = chunk_size
        #: Bytes the registry has confirmed.
        self._offset = offset
        #: Bytes accepted by ``write`` and not yet sent.
        self._buffer = bytearray()

    @property
    def id(self) -> str:
        """The upload's latest ``Location``: what ``resume_upload`` takes back."""
        return self._location

    @property
    def uuid(self) -> str:
        return self._uuid

    @property
    def started_at(self) -> datetime:
        return self._started_at

    @property
    def size(self) -> int:
        return self._offset + len(self._buffer)

    @property
    def confirmed(self) -> int:
        """Bytes the registry said it has."""
        return self._offset

    def set_chunk_size(self, minimum: int | None) -> None:
        """Honour the registry's ``OCI-Chunk-Min-Length``: no chunk (but the last) smaller."""
        if minimum and self._chunk_size is not None and self._chunk_size < minimum:
            self._chunk_size = minimum

    # -- the BlobWriter Protocol --------------------------------------------------------------

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        self._buffer += data
        limit = self._chunk_size or DEFAULT_WRITE_BUFFER
        while len(self._buffer) >= limit:
            await self._send_buffered(limit)
        return data.nbytes if isinstance(data, memoryview) else len(data)

    def stage(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data`` without sending anything: ``commit`` sends it as the ``PUT``'s body
        (a monolithic upload, whatever the chunk size)."""
        self._buffer += data

    async def close(self) -> None:
        """Send what is buffered: the upload stays resumable with everything written."""
        if self._buffer:
            await self._send_buffered(len(self._buffer))

    async def cancel(self) -> None:
        self._buffer.clear()
        try:
            response = await self._transport.send(
                "DELETE",
                self._location,
                scopes=self._store.push_scopes,
                ok=(202, 204),
                missing=lambda: BlobUploadUnknown(f"no upload at {self._location}"),
            )
        except (BlobUploadUnknown, BlobUploadInvalid):
            return  # already gone: what cancelling wanted
        response.release()

    async def commit(self, expected: Digest, size: int | None = None) -> Descriptor:
        if size is not None and size != self.size:
            await self.cancel()
            raise SizeInvalid(f"declared size {size} but wrote {self.size} bytes")
        total = self.size
        failures = 0
        while True:
            try:
                return await self._put(expected, total)
            except RECOVERABLE:
                failures += 1
                if failures >= self._transport.retry.attempts:
                    raise
                # The PUT may have landed before the connection broke.
                if await self._store.exists(expected):
                    return Descriptor(OCTET_STREAM, expected, total)
                await asyncio.sleep(self._transport.retry.delay(failures))
                await self._resync_buffer()
            except BlobUploadUnknown:
                # Gone: finished by a PUT whose reply was lost (aiohttp sends an idempotent
                # request again when a kept-alive connection drops), or cancelled.
                if await self._store.exists(expected):
                    return Descriptor(OCTET_STREAM, expected, total)
                raise
            except RegistryError:
                # Refused (a digest mismatch, say): nothing of this upload may remain.
                await self.cancel_quietly()
                raise

    # -- requests -----------------------------------------------------------------------------

    async def _put(self, expected: Digest, total: int) -> Descriptor:
        body = bytes(self._buffer)
        headers = {"Content-Type": OCTET_STREAM, "Content-Length": str(len(body))}
        response = await self._transport.send(
            "PUT",
            _with_query(self._location, f"digest={expected}"),
            scopes=self._store.push_scopes,
            headers=headers,
            body=body,
            ok=(201, 204),
            missing=lambda: BlobUploadUnknown(f"no upload at {self._location}"),
            retry=False,
        )
        async with response:
            await response.read()
        self._buffer.clear()
        self._offset = total
        return Descriptor(OCTET_STREAM, expected, total)

    async def patch(self, body: bytes | AsyncIterator[bytes], length: int) -> None:
        """One ``PATCH`` of ``length`` bytes at the confirmed offset."""
        start = self._offset
        headers = {
            "Content-Type": OCTET_STREAM,
            "Content-Range": f"{start}-{start + length - 1}",
            "Content-Length": str(length),
        }
        response = await self._transport.send(
            "PATCH",
            self._location,
            scopes=self._store.push_scopes,
            headers=headers,
            body=body,
            ok=(202, 204),
            missing=lambda: BlobUploadUnknown(f"no upload at {self._location}"),
            retry=False,
        )
        async with response:
            await response.read()
            self._accept(response, start + length)

    async def refresh(self) -> int:
        """Ask the registry how much it has (``GET`` the upload); the confirmed offset."""
        response = await self._transport.send(
            "GET",
            self._location,
            scopes=self._store.push_scopes,
            ok=(204, 200),
            missing=lambda: BlobUploadUnknown(f"no upload at {self._location}"),
        )
        async with response:
            await response.read()
            self._accept(response, None)
        return self._offset

    def _accept(self, response: aiohttp.ClientResponse, expected: int | None) -> None:
        location = response.headers.get("Location")
        if location:
            self._location = str(response.url.join(self._transport.url(location)))
        self._uuid = response.headers.get("Docker-Upload-UUID", self._uuid)
        self._offset = _received(response.headers.get("Range"), expected, self._offset)

    async def _send_buffered(self, length: int) -> None:
        """Send the first ``length`` buffered bytes, resending from the registry's offset."""
        start = self._offset
        chunk = bytes(self._buffer[:length])
        failures = 0
        while self._offset < start + length:
            try:
                await self.patch(chunk[self._offset - start :], start + length - self._offset)
            except RECOVERABLE:
                failures += 1
                if failures >= self._transport.retry.attempts:
                    raise
                await asyncio.sleep(self._transport.retry.delay(failures))
                await self.refresh()
                if not start <= self._offset <= start + length:
                    raise BlobUploadInvalid(
                        f"the registry has {self._offset} bytes of the upload, but this "
                        f"writer holds bytes {start} to {start + length} only"
                    ) from None
        del self._buffer[:length]

    async def _resync_buffer(self) -> None:
        """After a failed ``PUT``: send again whatever of the buffer did not arrive."""
        total = self.size
        start = self._offset
        await self.refresh()
        if not start <= self._offset <= total:
            raise BlobUploadInvalid(
                f"the registry has {self._offset} bytes of the upload, expected {start} to {total}"
            )
        del self._buffer[: self._offset - start]

    async def cancel_quietly(self) -> None:
        """``cancel``, ignoring whatever goes wrong: for clean-up after another error."""
        with contextlib.suppress(RegistryError):
            await self.cancel()


def _received(header: str | None, expected: int | None, previous: int) -> int:
    """The bytes an upload holds, from ``Range: 0-<last>``.

    ``0-0`` means nothing (Distribution's convention for an empty upload) unless
    the request that got it must have left at least one byte.
    """
    if not header:
        return previous if expected is None else expected
    text = header.strip().removeprefix("bytes=").removeprefix("bytes ")
    first, dash, last = text.partition("-")
    if not dash or not first.isdigit() or not last.isdigit():
        raise BlobUploadInvalid(f"the registry sent a malformed upload Range {header[:64]!r}")
    end = int(last)
    if end == 0:
        hint = previous if expected is None else expected
        return 1 if hint >= 1 else 0
    return end + 1


# -- streaming a whole blob --------------------------------------------------------------------


class _Pushback:
    """An async iterator of byte chunks that can hand back the unused tail of one."""

    def __init__(self, chunks: AsyncIterator[bytes]) -> None:
        self._chunks = chunks
        self._pending: bytes | memoryview = b""

    async def take(self, length: int, progress: BlobProgress) -> AsyncGenerator[bytes, None]:
        """Exactly ``length`` bytes, as a request body; ``SizeInvalid`` if the source ends."""
        remaining = length
        while remaining > 0:
            if self._pending:
                data, self._pending = self._pending, b""
            else:
                try:
                    data = await anext(self._chunks)
                except StopAsyncIteration:
                    raise SizeInvalid(
                        f"the source ended {remaining} bytes short of its declared size"
                    ) from None
            if len(data) > remaining:
                view = memoryview(data)
                data, self._pending = view[:remaining], view[remaining:]
            remaining -= len(data)
            progress.advance(len(data))
            yield bytes(data) if isinstance(data, memoryview) else data

    async def aclose(self) -> None:
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()


async def send_stream(
    writer: RemoteBlobWriter,
    chunks: AsyncIterator[bytes],
    length: int,
    chunk_size: int | None,
    progress: BlobProgress,
) -> None:
    """``length`` bytes of ``chunks`` in ``PATCH`` requests of at most ``chunk_size``."""
    source = _Pushback(chunks)
    try:
        remaining = length
        while remaining > 0:
            part = remaining if chunk_size is None else min(remaining, chunk_size)
            body = source.take(part, progress)
            try:
                await writer.patch(body, part)
            finally:
                await body.aclose()
            remaining -= part
    finally:
        await source.aclose()


async def upload_stream(
    store: RemoteBlobStore,
    digest: Digest,
    size: int,
    source: Source,
    progress: BlobProgress = NO_PROGRESS,
) -> Descriptor:
    """Upload the blob ``digest`` of ``size`` bytes from ``source``, resuming after failures."""
    writer = await store.create_upload(digest.algorithm)
    retry = store.transport.retry
    failures = 0
    while True:
        try:
            if writer.confirmed < size:
                chunks = await source(writer.confirmed)
                await send_stream(
                    writer, chunks, size - writer.confirmed, store.chunk_size, progress
                )
            return await writer.commit(digest, size)
        except RECOVERABLE:
            failures += 1
            if failures >= retry.attempts:
                raise
            await asyncio.sleep(retry.delay(failures))
            try:
                await writer.refresh()
            except (BlobUploadUnknown, BlobUploadInvalid):
                writer = await store.create_upload(digest.algorithm)
            if writer.confirmed > size:
                raise BlobUploadInvalid(
                    f"the registry holds {writer.confirmed} bytes of a {size}-byte blob"
                ) from None
            progress.rewind(writer.confirmed)
        except Exception:
            # Refused, or the source failed for good: leave nothing behind at the registry.
            await writer.cancel_quietly()
            raise
