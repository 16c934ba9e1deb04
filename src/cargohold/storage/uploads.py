"""Resumable blob uploads.

An upload is a folder ``_uploads/<id>/`` holding ``startedat`` and the
``data`` received so far (kept by the driver's resumable writer). Everything
about an upload is in storage, so any process can continue it; a process may
also keep a digester of the bytes it wrote itself, which saves re-reading the
data at commit when its count matches what storage holds.

Commit is where content becomes a blob, so it is careful:

1. the data is committed and moved to a name private to this commit, which no
   other request can append to or replace, and the upload's ``startedat`` is
   removed, so that no other request resumes it (a writer that resumed it
   before writes no more: its file has moved);
2. that private file is verified against the expected digest (with the kept
   digester when its byte count equals the file's size, else by one read pass);
3. only then is it moved to the blob's place and linked into the repository.

A mismatch removes the upload: nothing is moved into ``blobs/``, nothing linked.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import OrderedDict
from contextlib import suppress
from datetime import datetime
from typing import TYPE_CHECKING

from cargohold.descriptor import OCTET_STREAM, Descriptor
from cargohold.digest import Digest, Digester
from cargohold.errors import (
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    FileChanged,
    PathNotFound,
    SizeInvalid,
)
from cargohold.storage.driver.base import FileVersion, FileWriter
from cargohold.storage.paths import BlobData, UploadData, UploadDir, UploadStartedAt, path_for

if TYPE_CHECKING:
    from cargohold.storage.linkedblobstore import LinkedBlobStore


#: Pieces at least this big are hashed in a thread, alongside the write.
HASH_OFFLOAD = 256 * 1024


class HasherCache:
    """Digesters of uploads this process is writing, by repository and upload id."""

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], Digester] = OrderedDict()

    def take(self, name: str, upload_id: str, offset: int) -> Digester | None:
        """The digester of the upload if it has seen exactly ``offset`` bytes."""
        digester = self._entries.pop((name, upload_id), None)
        return digester if digester is not None and digester.size == offset else None

    def keep(self, name: str, upload_id: str, digester: Digester) -> None:
        self._entries[(name, upload_id)] = digester
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def drop(self, name: str, upload_id: str) -> None:
        self._entries.pop((name, upload_id), None)


class BlobUpload:
    """One request's hold on an upload (implements ``registry.BlobWriter``)."""

    def __init__(
        self,
        store: LinkedBlobStore,
        upload_id: str,
        started_at: datetime,
        writer: FileWriter,
        digester: Digester | None,
        hashers: HasherCache,
    ) -> None:
        self._store = store
        self._id = upload_id
        self._started_at = started_at
        self._writer = writer
        self._digester = digester
        self._hashers = hashers
        self._finished = False
        self._hashing: asyncio.Future[None] | None = None

    @property
    def id(self) -> str:
        return self._id

    @property
    def started_at(self) -> datetime:
        return self._started_at

    @property
    def size(self) -> int:
        return self._writer.size

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        digester = self._digester
        if digester is not None:
            await self._hashed()  # the previous piece goes into the digester first
            if isinstance(data, bytes) and len(data) >= HASH_OFFLOAD:
                # Hash in a thread while this piece is written and the next one
                # arrives: hashing and writing each take a third of a push's time.
                self._hashing = self._store.blobs.driver.in_thread(digester.update, data)
            else:
                digester.update(data)  # small, or a buffer the caller may reuse
        try:
            return await self._writer.write(data)
        except PathNotFound:
            # Another request finished or cancelled the upload while this one's chunk arrived.
            raise BlobUploadUnknown("the upload was finished or cancelled meanwhile") from None

    async def _hashed(self) -> None:
        hashing, self._hashing = self._hashing, None
        if hashing is not None:
            await hashing

    async def close(self) -> None:
        if self._finished:
            return
        self._finished = True
        await self._hashed()
        await self._writer.close()
        if self._digester is not None:
            self._hashers.keep(self._store.name, self._id, self._digester)

    async def cancel(self) -> None:
        self._finished = True
        await self._hashed()
        await self._writer.close()
        await self._remove()

    async def commit(self, expected: Digest, size: int | None = None) -> Descriptor:
        self._finished = True
        await self._hashed()
        store, driver = self._store, self._store.blobs.driver
        await self._writer.commit()
        await self._writer.close()
        try:
            content, version = await self._claimed()
            actual_size = (await driver.stat(content)).size if version is None else version.size
            if size is not None and size != actual_size:
                raise SizeInvalid(f"declared size {size} but received {actual_size} bytes")
            actual = await self._digest(content, actual_size, expected.algorithm)
            if actual != expected:
                raise DigestInvalid(
                    f"provided digest {expected} did not match uploaded content {actual}",
                    {"expected": str(expected), "actual": str(actual)},
                )
            descriptor = Descriptor(OCTET_STREAM, expected, actual_size)
            # Content that exists already is not written again: commit is idempotent.
            if not await store.blobs.exists(expected):
                await self._move_in(content, path_for(BlobData(expected)), version)
            await store.link(descriptor)
            return descriptor
        finally:
            await self._remove()

    async def _claimed(self) -> tuple[str, FileVersion | None]:
        """Make the upload this commit's own, whatever the verification finds: where its
        content is now, and the version it must still be when it moves into the blobs.

        A request that resumed the upload before must not change what is verified. On
        a driver with guarded moves the content stays where it is and its version is
        taken: the move into the blobs happens only while it is still that version (on
        an object store a move is a copy of the whole content, so this saves one).
        Elsewhere the content moves to a path of the commit's own (a rename on a local
        disk), where no writer of the upload reaches it.
        """
        store, driver = self._store, self._store.blobs.driver
        guarded = driver.guarded_moves
        content, version = path_for(UploadData(store.name, self._id)), None
        try:
            if guarded is None:
                private = (
                    f"{path_for(UploadDir(store.name, self._id))}/commit-{secrets.token_hex(8)}"
                )
                await driver.move(content, private)
                content = private
            else:
                version = await guarded.version(content)
        except PathNotFound:
            raise BlobUploadUnknown("the upload was finished or cancelled meanwhile") from None
        # Without its startedat no other request resumes the upload (one would open the
        # data's path afresh, an empty file, and answer for an upload that is gone). Right
        # after the move: on a local disk neither call waits, so no resume on this event
        # loop comes between.
        with suppress(PathNotFound):
            await driver.delete(path_for(UploadStartedAt(store.name, self._id)))
        return content, version

    async def _move_in(self, content: str, blob: str, version: FileVersion | None) -> None:
        """Move the claimed content to ``blob``; with a version, only while it is still it."""
        driver = self._store.blobs.driver
        guarded = driver.guarded_moves
        if version is None or guarded is None:
            await driver.move(content, blob)
            return
        try:
            await guarded.move_unchanged(content, blob, version)
        except FileChanged:
            raise BlobUploadInvalid("the upload's content changed while it was committed") from None

    async def _digest(self, path: str, size: int, algorithm: str) -> Digest:
        digester = self._digester
        if digester is None or digester.algorithm != algorithm or digester.size != size:
            digester = Digester(algorithm)
            async for chunk in await self._store.blobs.driver.reader(path):
                digester.update(chunk)
        return digester.digest()

    async def _remove(self) -> None:
        self._hashers.drop(self._store.name, self._id)
        # Already gone when another request finished or cancelled it.
        with suppress(PathNotFound):
            await self._store.blobs.driver.delete(path_for(UploadDir(self._store.name, self._id)))
