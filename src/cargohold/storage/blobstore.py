"""The global, content-addressed blob store.

Every blob of every repository lives once, at ``blobs/<alg>/<xx>/<hex>/data``.
Nothing here knows about repositories: access control by repository is the
linked blob store's job (``linkedblobstore.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator

from cargohold.descriptor import OCTET_STREAM, Descriptor
from cargohold.digest import DEFAULT_ALGORITHM, Digest, digest_of
from cargohold.errors import BlobUnknown, DigestInvalid, PathNotFound
from cargohold.registry import BlobSource
from cargohold.socketbody import InSocket, Relayable
from cargohold.storage.cache import BlobDescriptorCache
from cargohold.storage.driver.base import FileInfo, ImmediateFiles, StorageDriver
from cargohold.storage.middleware import BlobRedirects, DriverRedirects
from cargohold.storage.paths import (
    BlobData,
    BlobDir,
    BlobHidden,
    BlobsRoot,
    digest_from_path,
    path_for,
)
from cargohold.storage.reuse import ReuseRecords

#: How long a find waits for a collection's decision on a blob it hid.
SETTLE_WAIT = 10.0


class GlobalBlobStore:
    def __init__(
        self,
        driver: StorageDriver,
        cache: BlobDescriptorCache | None = None,
        reuse: ReuseRecords | None = None,
        redirects: BlobRedirects | None = None,
    ) -> None:
        self.driver = driver
        self.cache = cache
        #: Where finds of blobs are written down for collection while serving, if anywhere.
        self.reuse = reuse
        #: Where a blob download may be sent: the driver's URLs, or storage middleware's.
        self.redirects = redirects if redirects is not None else DriverRedirects(driver)

    async def stat(self, digest: Digest) -> Descriptor:
        """The blob's descriptor; a find is a reuse (the finder may reference the blob next),
        written down (``reuse.py``) before it is answered, when one is due."""
        reuse = self.reuse
        cached = await self.cache.get(digest) if self.cache is not None else None
        if cached is not None and (reuse is None or not reuse.due(digest)):
            return cached
        descriptor = await self._stat(digest)
        if reuse is not None and reuse.due(digest):
            await reuse.found(digest)
            # Read again after the record: a collection hiding the blob meanwhile saw it.
            descriptor = await self._stat(digest)
        return descriptor

    async def _stat(self, digest: Digest) -> Descriptor:
        try:
            info = await self.driver.stat(path_for(BlobData(digest)))
        except PathNotFound:
            if not await self.settled(digest):
                raise BlobUnknown(digest) from None
            try:
                info = await self.driver.stat(path_for(BlobData(digest)))
            except PathNotFound:
                raise BlobUnknown(digest) from None
        if info.is_dir:
            raise BlobUnknown(digest)
        descriptor = Descriptor(OCTET_STREAM, digest, info.size)
        if self.cache is not None:
            await self.cache.set(descriptor)
        return descriptor

    async def exists(self, digest: Digest) -> bool:
        try:
            await self.stat(digest)
        except BlobUnknown:
            return False
        return True

    async def get(self, digest: Digest) -> bytes:
        try:
            return await self.driver.get_content(path_for(BlobData(digest)))
        except PathNotFound:
            await self.forget(digest)
            raise BlobUnknown(digest) from None

    async def open(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        try:
            stream = await self.driver.reader(path_for(BlobData(digest)), offset)
        except PathNotFound:
            await self.forget(digest)
            raise BlobUnknown(digest) from None
        return stream if length is None else _limited(stream, length)

    async def put(
        self, content: bytes, media_type: str = OCTET_STREAM, algorithm: str = DEFAULT_ALGORITHM
    ) -> Descriptor:
        """Store ``content`` unless a blob with its digest exists already."""
        digest = digest_of(content, algorithm)
        descriptor = Descriptor(media_type, digest, len(content))
        if not await self.exists(digest):
            await self.driver.put_content(path_for(BlobData(digest)), content)
        await self.stored(descriptor)
        return descriptor

    async def stored(self, descriptor: Descriptor) -> None:
        """Record in the cache that ``descriptor``'s content is in storage now."""
        if self.cache is not None:
            await self.cache.set(descriptor)

    async def delete(self, digest: Digest) -> None:
        """Remove the blob's content from storage (garbage collection only)."""
        await self.forget(digest)
        try:
            await self.driver.delete(path_for(BlobDir(digest)))
        except PathNotFound:
            raise BlobUnknown(digest) from None

    async def enumerate(self) -> AsyncIterator[Digest]:
        """Every blob in storage."""
        async for digest, _ in self.enumerate_sizes():
            yield digest

    async def enumerate_sizes(self) -> AsyncIterator[tuple[Digest, int]]:
        """Every blob in storage, with its size (from the walk: no request per blob)."""
        async for digest, info in self.enumerate_infos():
            yield digest, info.size

    async def enumerate_infos(self) -> AsyncIterator[tuple[Digest, FileInfo]]:
        """Every blob in storage, with what the walk says of its content (size, time)."""
        try:
            async for info in self.driver.walk(path_for(BlobsRoot())):
                if not info.is_dir and info.path.endswith("/data"):
                    try:
                        yield digest_from_path(info.path), info
                    except DigestInvalid:
                        continue  # not a blob: a stray file someone left
        except PathNotFound:
            return

    async def source(
        self,
        content: Digest,
        descriptor: Descriptor,
        redirect: str | None,
        client: str | None = None,
    ) -> BlobSource:
        """Where the blob whose content is ``content`` can be served from.

        The caller (``LinkedBlobStore.locate``) has checked that the repository
        links it; ``descriptor`` is what the repository knows it as.
        """
        path = path_for(BlobData(content))
        files = self.driver.local_files
        url = None
        if redirect is not None:
            url = await self.redirects.redirect_url(path, redirect, client)
        return BlobSource(
            descriptor, file=files.local_path(path) if files is not None else None, url=url
        )

    async def settled(self, digest: Digest) -> bool:
        """Whether ``digest`` was hidden by a collection that has decided since.

        A find that meets the blob hidden (``gc.py``) writes its record, which the
        collection reads next and so puts the blob back; waiting for that decision
        turns a brief "unknown" (a failed push for a client that had just found
        the blob) into the right answer. False at once when nothing is hidden.
        """
        if self.reuse is None:
            return False  # nothing collects while this registry serves
        hidden = path_for(BlobHidden(digest))
        try:
            await self.driver.stat(hidden)
        except PathNotFound:
            return False
        await self.reuse.found(digest, now=True)
        deadline = time.monotonic() + SETTLE_WAIT
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            try:
                await self.driver.stat(hidden)
            except PathNotFound:
                return True
        return True  # a pass that stopped midway: the next one puts it back

    async def forget(self, digest: Digest) -> None:
        """Drop the blob's cache entry (its content is being deleted or hidden)."""
        if self.cache is not None:
            await self.cache.clear(digest)


def size_now(files: ImmediateFiles, digest: Digest) -> int | None:
    """The size of the blob ``digest`` if it can be had at once (``GlobalBlobStore.stat``)."""
    return files.size_now(path_for(BlobData(digest)))


def content_now(files: ImmediateFiles, digest: Digest, offset: int, length: int) -> bytes | None:
    """``length`` bytes of the blob from ``offset``, if they can be had at once."""
    data = files.read_now(path_for(BlobData(digest)), offset + length)
    if data is None or len(data) < offset + length:
        return None
    return data[offset:] if offset else data


def _limited(stream: AsyncIterator[bytes], length: int) -> AsyncIterator[bytes]:
    """At most ``length`` bytes of ``stream``, from its socket if it gives that up."""
    chunks = _limit(stream, length)
    if isinstance(stream, InSocket):
        return Relayable(chunks, lambda most: stream.socket_body(min(most, length)))
    return chunks


async def _limit(stream: AsyncIterator[bytes], length: int) -> AsyncGenerator[bytes, None]:
    """At most ``length`` bytes of ``stream``."""
    remaining = length
    try:
        async for chunk in stream:
            if remaining <= 0:
                break
            if len(chunk) > remaining:
                chunk = chunk[:remaining]
            remaining -= len(chunk)
            yield chunk
            if remaining == 0:
                break
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
