"""A repository's view of the global blob store: a blob is visible only through its link.

A link is a small file holding the blob's digest. Pushing a blob to a
repository, or mounting it from another, writes the link; deleting the blob
from the repository removes the link and leaves the content for garbage
collection. So content cannot leak across repositories: knowing a digest is
not enough to read a blob from a repository that never received it.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

from cargohold.descriptor import OCTET_STREAM, Descriptor
from cargohold.digest import DEFAULT_ALGORITHM, Digest, Digester
from cargohold.errors import (
    BlobUnknown,
    BlobUploadUnknown,
    DigestInvalid,
    InvalidOffset,
    OperationUnsupported,
    PathNotFound,
    RangeInvalid,
)
from cargohold.registry import BlobSource
from cargohold.storage.blobstore import GlobalBlobStore, size_now
from cargohold.storage.cache import BlobDescriptorCache
from cargohold.storage.driver.base import ImmediateFiles, StorageDriver
from cargohold.storage.paths import (
    LINK_LIMIT,
    LayerLink,
    ManifestRevisionLink,
    PathSpec,
    UploadData,
    UploadStartedAt,
    link_content,
    parse_link,
    parse_startedat,
    path_for,
    startedat_content,
)
from cargohold.storage.uploads import BlobUpload, HasherCache

#: Where a repository's link to a blob lives.
LinkSpec = Callable[[str, Digest], PathSpec]

# Upload ids are UUIDs (Distribution's too); anything else never reaches a path.
_UPLOAD_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class LinkedBlobStore:
    """The blobs of one repository.

    ``link_specs`` lists where links are looked for, first match wins; new links
    go to the first.
    """

    def __init__(
        self,
        name: str,
        blobs: GlobalBlobStore,
        *,
        link_specs: Sequence[LinkSpec] = (LayerLink,),
        delete_enabled: bool = False,
        hashers: HasherCache | None = None,
        cache_links: bool = True,
    ) -> None:
        self.name = name
        self._blobs = blobs
        self._driver: StorageDriver = blobs.driver
        self._cache: BlobDescriptorCache | None = blobs.cache
        # Where this store's links are remembered; clearing always goes to the cache,
        # which may hold entries an older release wrote.
        self._link_cache = self._cache if cache_links else None
        self._link_specs = tuple(link_specs)
        self._delete_enabled = delete_enabled
        self._hashers = hashers if hashers is not None else HasherCache()

    # -- reading --------------------------------------------------------------------------

    async def _linked_digest(self, digest: Digest, *, retry: bool = True) -> Digest:
        """The digest the repository's link names; ``BlobUnknown`` when not linked.

        A link a collection removed while it decides is read again once it has.
        """
        for spec in self._link_specs:
            try:
                content = await self._driver.get_content(path_for(spec(self.name, digest)))
            except PathNotFound:
                continue
            try:
                return parse_link(content)
            except DigestInvalid:
                continue  # a damaged link hides nothing else
        if retry and await self._blobs.settled(digest):
            return await self._linked_digest(digest, retry=False)
        raise BlobUnknown(digest)

    async def stat(self, digest: Digest) -> Descriptor:
        return (await self._resolve(digest))[1]

    async def _resolve(self, digest: Digest) -> tuple[Digest, Descriptor]:
        """The digest of the content the link names, and the blob's descriptor here."""
        cache = self._link_cache
        if cache is not None and cache.shared:
            cached = await cache.get_linked(self.name, digest)
            reuse = self._blobs.reuse
            # A find due to be written down reads storage: the record goes before the answer.
            if cached is not None and (reuse is None or not reuse.due(digest)):
                return digest, cached
        target = await self._linked_digest(digest)
        try:
            descriptor = await self._blobs.stat(target)
        except BlobUnknown:
            raise BlobUnknown(digest) from None  # a dangling link: the content was collected
        if target != digest:
            descriptor = Descriptor(descriptor.media_type, digest, descriptor.size)
        if cache is not None:
            await cache.set_linked(self.name, descriptor)
            # A delete (here or in another process) between the link read above and the
            # cache write would clear the entry before it was written, leaving a stale one
            # behind. Reading the link again after the write closes that window.
            try:
                await self._linked_digest(digest)
            except BlobUnknown:
                await cache.clear_linked(self.name, digest)
                raise
        return target, descriptor

    async def exists(self, digest: Digest) -> bool:
        cache = self._link_cache
        if self._blobs.reuse is None and (cache is None or not cache.shared):
            return await self._exists_at_once(digest)
        try:
            await self.stat(digest)
        except BlobUnknown:
            return False
        return True

    async def _exists_at_once(self, digest: Digest) -> bool:
        """``exists`` with the blob looked up while the link is read: a link names ``digest``
        itself but for rare old content, so on an object store the answer takes one round
        trip instead of two. Only where no find is written down (``reuse``) and no shared
        cache answers first."""
        target, found = await asyncio.gather(
            self._linked_digest(digest), self._blobs.exists(digest), return_exceptions=True
        )
        if isinstance(target, BlobUnknown):
            return False
        if isinstance(target, BaseException):
            raise target
        if isinstance(found, BaseException):
            raise found
        return found if target == digest else await self._blobs.exists(target)

    def exists_now(self, digest: Digest) -> bool | None:
        """``exists``, when the driver's immediate reads can tell; None when only ``exists`` can.

        The plain cases only, as the fast path reads a blob (``linked_now``, ``size_now``):
        a link naming ``digest`` to a blob that is there, or no link at all. A find due to be
        written down, a link naming other content or a damaged one, and a missing link or
        blob while a collection may hide blobs are left to ``exists``.
        """
        files = self._driver.watched_immediate()
        if files is None:
            return None
        reuse = self._blobs.reuse
        if reuse is not None and reuse.due(digest):
            return None
        expected = link_content(digest)
        for spec in self._link_specs:
            content = files.read_now(path_for(spec(self.name, digest)), LINK_LIMIT)
            if content is None:
                continue
            if content != expected:
                return None
            if size_now(files, digest) is not None:
                return True
            break  # a dangling link: the content was collected
        return False if reuse is None else None

    async def get(self, digest: Digest) -> bytes:
        target = await self._linked_digest(digest)
        return await self._blobs.get(target)

    async def open(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        target = await self._linked_digest(digest)
        try:
            return await self._blobs.open(target, offset, length)
        except InvalidOffset:
            raise RangeInvalid(f"offset {offset} is beyond the blob") from None

    async def locate(
        self, digest: Digest, *, redirect: str | None = None, client: str | None = None
    ) -> BlobSource:
        target, descriptor = await self._resolve(digest)
        return await self._blobs.source(target, descriptor, redirect, client)

    # -- writing --------------------------------------------------------------------------

    async def link(self, descriptor: Descriptor) -> None:
        """Make the blob visible in this repository."""
        await self._driver.put_content(*self.link_write(descriptor.digest))
        await self.linked(descriptor)

    def link_write(self, digest: Digest) -> tuple[str, bytes]:
        """The file write that links ``digest`` here, for a batch of writes."""
        return path_for(self._link_specs[0](self.name, digest)), link_content(digest)

    async def linked(self, descriptor: Descriptor) -> None:
        """Record in the cache that a batch linked ``descriptor`` here."""
        if self._link_cache is not None:
            await self._link_cache.set_linked(self.name, descriptor)

    async def put(self, content: bytes, media_type: str = OCTET_STREAM) -> Descriptor:
        descriptor = await self._blobs.put(content, media_type)
        await self.link(descriptor)
        return descriptor

    async def delete(self, digest: Digest) -> None:
        """Unlink the blob from this repository; the content stays for garbage collection."""
        if not self._delete_enabled:
            raise OperationUnsupported("deletes are disabled (storage.delete.enabled)")
        await self.unlink(digest)

    async def unlink(self, digest: Digest) -> None:
        """Remove every link to ``digest`` here; ``BlobUnknown`` when there is none.

        Only the ``link`` file goes, not its folder: Distribution does the same,
        and both registries read a folder without a link as no link.
        """
        found = False
        for spec in self._link_specs:
            try:
                await self._driver.delete(path_for(spec(self.name, digest)))
                found = True
            except PathNotFound:
                continue
        await self.forget_link(digest)
        if not found:
            raise BlobUnknown(digest)

    async def forget_link(self, digest: Digest) -> None:
        """Drop what the cache says of ``digest`` here (its link was deleted)."""
        if self._cache is not None:
            await self._cache.clear_linked(self.name, digest)

    async def mount(self, source: str, digest: Digest) -> Descriptor:
        """Link here a blob that repository ``source`` has."""
        origin = LinkedBlobStore(source, self._blobs, link_specs=(LayerLink,))
        descriptor = await origin.stat(digest)
        await self.link(descriptor)
        return descriptor

    # -- uploads --------------------------------------------------------------------------

    async def create_upload(self, algorithm: str = DEFAULT_ALGORITHM) -> BlobUpload:
        digester = Digester(algorithm)  # an unsupported algorithm fails before anything is written
        upload_id = str(uuid.uuid4())
        started_at = datetime.now(UTC).replace(microsecond=0)
        await self._driver.put_content(
            path_for(UploadStartedAt(self.name, upload_id)), startedat_content(started_at)
        )
        writer = await self._driver.writer(path_for(UploadData(self.name, upload_id)))
        return BlobUpload(self, upload_id, started_at, writer, digester, self._hashers)

    async def resume_upload(self, upload_id: str) -> BlobUpload:
        if _UPLOAD_ID.fullmatch(upload_id) is None:
            raise BlobUploadUnknown(f"no upload {upload_id[:64]!r}")
        try:
            started = await self._driver.get_content(
                path_for(UploadStartedAt(self.name, upload_id))
            )
        except PathNotFound:
            raise BlobUploadUnknown(f"no upload {upload_id!r}") from None
        try:
            started_at = parse_startedat(started)
        except ValueError:
            started_at = datetime.now(UTC)  # Go wrote something odd; the upload still resumes
        writer = await self._driver.writer(path_for(UploadData(self.name, upload_id)), append=True)
        digester = self._hashers.take(self.name, upload_id, writer.size)
        return BlobUpload(self, upload_id, started_at, writer, digester, self._hashers)

    @property
    def blobs(self) -> GlobalBlobStore:
        return self._blobs


def linked_now(files: ImmediateFiles, link: PathSpec, digest: Digest) -> bool:
    """Whether the link file at ``link`` names ``digest``, if that can be read at once.

    False for anything unusual too (a link naming other content, a damaged
    one): the async read answers those.
    """
    content = files.read_now(path_for(link), LINK_LIMIT)
    if content is None:
        return False
    if content == link_content(digest):
        return True  # as written by cargohold and Distribution alike: no need to parse it
    try:
        return parse_link(content) == digest
    except DigestInvalid:
        return False


class ManifestBlobStore(LinkedBlobStore):
    """Manifest content, linked under ``_manifests/revisions``.

    Distribution also looks under ``_layers``, for manifests its 2.1.0 release
    linked there by mistake; that lets a manifest endpoint serve (and delete) a
    plain layer, so cargohold looks at revisions only.

    Its links stay out of the descriptor cache: Distribution's repository set
    (``repository::<name>::blobs``) answers the blob endpoints, so a manifest
    digest there would make ``HEAD /v2/<name>/blobs/<manifest digest>`` a 200,
    on cargohold and on a Go registry sharing the Redis alike.
    """

    def __init__(self, name: str, blobs: GlobalBlobStore, *, delete_enabled: bool) -> None:
        super().__init__(
            name,
            blobs,
            link_specs=(ManifestRevisionLink,),
            delete_enabled=delete_enabled,
            cache_links=False,
        )
