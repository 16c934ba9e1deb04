"""Manifests: validated on put, stored as blobs, linked under ``_manifests/revisions``.

A manifest is accepted only when everything it references is already in the
repository (its config and layers as blobs, an index's children as manifests),
so a pull by tag never meets a dangling reference. The exact pushed bytes are
the revision blob and the digest is theirs; ``get`` returns them unchanged.

Schema1 is the exception the format forces: its digest covers the canonical
payload without signatures, which is what is stored; the signatures are kept
beside the revision (``_manifests/revisions/<digest>/signatures/``, as
Distribution 2.0-2.4 did) and merged back on ``get``. A revision with none
(written by Distribution 2.5+) is signed afresh with the registry's key, as
those versions do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from cargohold.descriptor import Descriptor
from cargohold.digest import DEFAULT_ALGORITHM, Digest
from cargohold.errors import (
    BlobUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    ManifestUnverified,
    NameInvalid,
    OperationUnsupported,
    PathNotFound,
)
from cargohold.manifest import Manifest, media_type_of, parse_manifest
from cargohold.manifest.mediatypes import SCHEMA1, SCHEMA1_SIGNED
from cargohold.manifest.urls import URLPolicy
from cargohold.reference import validate_tag
from cargohold.registry import StoredManifest
from cargohold.storage.blobstore import size_now
from cargohold.storage.driver.base import ImmediateFiles
from cargohold.storage.linkedblobstore import LinkedBlobStore, ManifestBlobStore, linked_now
from cargohold.storage.paths import (
    BlobData,
    ManifestRevisionLink,
    ManifestSignatureLink,
    ManifestSignaturesDir,
    digest_from_path,
    link_content,
    path_for,
)
from cargohold.storage.referrers import ReferrersIndex
from cargohold.storage.tagstore import TagStore

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from cargohold.manifest.schema1 import SignedManifest

    #: What signs stored schema1 manifests that have lost their signatures.
    SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

_SCHEMA1_TYPES = frozenset({SCHEMA1, SCHEMA1_SIGNED})


@dataclass(frozen=True)
class IndexChildren:
    """Which children an index may only name once they are in the repository.

    Distribution's ``validation.manifests.indexes``: ``all`` (the default) of
    them; ``none``; or those whose platform is in ``platforms``
    (``platformlist``: architecture and os), every one when the list is empty.
    """

    required: Literal["all", "none", "list"] = "all"
    platforms: frozenset[tuple[str, str]] = frozenset()

    def must_exist(self, child: Descriptor) -> bool:
        if self.required == "none":
            return False
        if self.required == "all" or not self.platforms:
            return True
        platform = child.platform or {}
        return (platform.get("architecture"), platform.get("os")) in self.platforms


class ManifestStore:
    """The manifests of one repository (implements ``registry.ManifestService``)."""

    def __init__(
        self,
        revisions: ManifestBlobStore,
        blobs: LinkedBlobStore,
        tags: TagStore,
        referrers: ReferrersIndex,
        *,
        url_policy: URLPolicy,
        index_children: IndexChildren | None = None,
        schema1_pushes: bool = True,
        delete_enabled: bool,
        schema1_key: Callable[[], SigningKey],
    ) -> None:
        self.name = revisions.name
        self._revisions = revisions
        self._blobs = blobs
        self._tags = tags
        self._referrers = referrers
        self._url_policy = url_policy
        self._index_children = index_children or IndexChildren()
        self._schema1_pushes = schema1_pushes
        self._delete_enabled = delete_enabled
        self._schema1_key = schema1_key

    async def exists(self, digest: Digest) -> bool:
        return await self._revisions.exists(digest)

    async def get(self, digest: Digest) -> StoredManifest:
        try:
            payload = await self._revisions.get(digest)
        except BlobUnknown:
            raise ManifestUnknown(f"manifest {digest} unknown", {"digest": digest}) from None
        media_type = media_type_of(payload)
        if media_type in _SCHEMA1_TYPES:
            return StoredManifest(digest, SCHEMA1_SIGNED, await self._signed(digest, payload))
        return StoredManifest(digest, media_type, payload)

    async def put(
        self,
        payload: bytes,
        content_type: str | None,
        tags: Sequence[str] = (),
        digest: Digest | None = None,
        *,
        cached: bool = False,
    ) -> StoredManifest:
        """Validate and store a manifest, then point ``tags`` at it.

        ``cached``: a mirror's copy of an upstream manifest, whose blobs and child
        manifests arrive only when a client asks for them (Distribution's proxy
        skips the same check).
        """
        tags = [validate_tag(tag) for tag in tags]
        manifest = parse_manifest(payload, content_type)
        schema1 = _as_schema1(manifest)
        if schema1 is not None and not self._schema1_pushes:
            raise ManifestInvalid(
                "schema1 manifests are not accepted here (compatibility.schema1.enabled is false)"
            )
        if schema1 is not None and schema1.name != self.name and not cached:
            raise NameInvalid(
                f"schema1 manifest names {schema1.name!r}, not {self.name!r}", {"name": self.name}
            )
        algorithm = digest.algorithm if digest is not None else DEFAULT_ALGORITHM
        actual = manifest.digest(algorithm)
        if digest is not None and digest != actual:
            raise DigestInvalid(
                f"manifest digest {actual} does not match {digest}",
                {"expected": str(digest), "actual": str(actual)},
            )
        manifest.check_urls(self._url_policy)
        stored = await self._look_up(manifest, actual, references=not cached)

        if schema1 is not None:
            await self._put_signatures(actual, schema1.signatures)
        blobs = self._revisions.blobs
        await blobs.driver.put_stages(self._writes(manifest, algorithm, actual, tags, stored))
        descriptor = Descriptor(manifest.media_type, actual, len(manifest.payload))
        await blobs.stored(descriptor)
        await self._revisions.linked(descriptor)
        stored_payload = schema1.signed() if schema1 is not None else payload
        subject = manifest.subject
        return StoredManifest(
            actual,
            manifest.media_type,
            stored_payload,
            subject.digest if subject is not None else None,
        )

    async def delete(self, digest: Digest) -> list[str]:
        if not self._delete_enabled:
            raise OperationUnsupported("deletes are disabled (storage.delete.enabled)")
        return await self.remove(digest)

    async def remove(self, digest: Digest) -> list[str]:
        """Delete the revision, its tags and its referrers entry, whatever the delete setting;
        the tags that pointed at it.

        The registry's own maintenance (garbage collection) calls this directly.
        """
        try:
            payload = await self._revisions.get(digest)
        except BlobUnknown:
            raise ManifestUnknown(f"manifest {digest} unknown", {"digest": digest}) from None
        try:
            await self._revisions.unlink(digest)
        except BlobUnknown:
            raise ManifestUnknown(f"manifest {digest} unknown", {"digest": digest}) from None
        tags = await self._tags.lookup(digest)
        for tag in tags:
            await self._tags.untag(tag)
        subject = _subject_of(payload)
        if subject is not None:
            await self._referrers.remove(subject, digest)
        return list(tags)

    async def remove_untagged(self, digest: Digest) -> bool:
        """Delete the revision unless a tag points at it; whether it went.

        Collection while serving calls this: a client may tag the manifest at any
        moment, so the tags are read after the revision's link is gone, and the
        link is put back when one points at it. Tags are never removed here.
        """
        try:
            payload = await self._revisions.get(digest)
            await self._revisions.unlink(digest)
        except BlobUnknown:
            return True  # gone already
        if await self._tags.lookup(digest):
            path, content = self._revisions.link_write(digest)
            await self._revisions.blobs.driver.put_content(path, content)
            return False
        subject = _subject_of(payload)
        if subject is not None:
            await self._referrers.remove(subject, digest)
        return True

    # -- validation -----------------------------------------------------------------------

    async def _look_up(self, manifest: Manifest, digest: Digest, *, references: bool) -> bool:
        """Whether the manifest's content is stored already; with ``references``, every blob
        and required child manifest it names must be in this repository already.

        What immediate reads cannot tell is asked of storage all at once: on an object
        store each question is a round trip or two.
        """
        lookups: list[tuple[LinkedBlobStore, Descriptor]] = []
        if references:
            lookups += [(self._blobs, d) for d in manifest.blobs()]
            lookups += [
                (self._revisions, d)
                for d in manifest.manifests()
                if self._index_children.must_exist(d)
            ]
        found = [store.exists_now(d.digest) for store, d in lookups]
        stored = self._content_now(digest)
        asked = [
            store.exists(d.digest)
            for (store, d), known in zip(lookups, found, strict=True)
            if known is None
        ]
        if stored is None:
            asked.append(self._revisions.blobs.exists(digest))
        if asked:
            answers = iter(await asyncio.gather(*asked))
            found = [next(answers) if known is None else known for known in found]
            if stored is None:
                stored = next(answers)
        missing = [d.digest for (_, d), present in zip(lookups, found, strict=True) if not present]
        if missing:
            raise ManifestBlobUnknown(missing)
        return bool(stored)

    def _content_now(self, digest: Digest) -> bool | None:
        """Whether the blob ``digest`` is to be taken as stored, when that needs no waiting.

        False also where asking storage costs more than writing the same bytes again
        (an object store: a HEAD, and a listing when absent), unless a collection may
        be deleting them meanwhile, which a find written down first prevents
        (``reuse.py``).
        """
        blobs = self._revisions.blobs
        reuse = blobs.reuse
        files = blobs.driver.watched_immediate()
        if files is None:
            return False if reuse is None else None
        if size_now(files, digest) is None:
            return False if reuse is None else None  # hidden by a collection, maybe
        return True if reuse is None or not reuse.due(digest) else None

    def _writes(
        self,
        manifest: Manifest,
        algorithm: str,
        digest: Digest,
        tags: Sequence[str],
        stored: bool,
    ) -> list[list[tuple[str, bytes]]]:
        """Every write of the manifest, in the stages crash safety asks for.

        1. Its content, unless stored already: every link below names whole content.
        2. The revision link that makes it visible, each tag's history entry (``index``)
           and its referrers entry, in any order: none makes another one valid, so a
           crash may leave any of them. A history entry without the revision names a
           manifest the repository lacks, as Distribution's deletes leave them, and
           nothing reads one as the manifest being there; a referrers entry is listed
           only once its revision link is there (``referrers.py``).
        3. Each tag's current link: a tag moves only onto a manifest that is visible,
           with its history written first, as ``TagStore`` orders them.
        """
        content = [] if stored else [(path_for(BlobData(digest)), manifest.payload)]
        named = [self._revisions.link_write(digest)]
        moves = []
        for tag in tags:
            # ``tag_writes`` lists the history entry first and the current link last.
            *history, move = self._tags.tag_writes(tag, digest)
            named += history
            moves.append(move)
        subject = manifest.subject
        if subject is not None:
            named.append(self._referrers.add_write(subject.digest, manifest.descriptor(algorithm)))
        return [content, named, moves]

    # -- schema1 signatures ---------------------------------------------------------------

    async def _put_signatures(self, revision: Digest, signatures: list[bytes]) -> None:
        for signature in signatures:
            blob = await self._revisions.blobs.put(signature)
            path = path_for(ManifestSignatureLink(self.name, revision, blob.digest))
            await self._revisions.blobs.driver.put_content(path, link_content(blob.digest))

    async def _signed(self, revision: Digest, canonical: bytes) -> bytes:
        from cargohold.manifest.schema1 import create_signature, merge_signatures

        signatures = await self._stored_signatures(revision)
        if signatures:
            try:
                return merge_signatures(canonical, signatures)
            except (ManifestInvalid, ManifestUnverified):
                pass  # damaged signatures: sign afresh below, as Distribution 2.5+ would
        return merge_signatures(canonical, [create_signature(canonical, self._schema1_key())])

    async def _stored_signatures(self, revision: Digest) -> list[bytes]:
        driver = self._revisions.blobs.driver
        try:
            links = [
                info.path
                async for info in driver.walk(path_for(ManifestSignaturesDir(self.name, revision)))
                if info.path.endswith("/link")
            ]
        except PathNotFound:
            return []
        found = []
        for link in links:
            try:
                found.append(await self._revisions.blobs.get(digest_from_path(link)))
            except (BlobUnknown, DigestInvalid):
                continue  # collected by gc: Distribution 2.5+ never kept them alive
        return found


def manifest_now(
    files: ImmediateFiles, name: str, digest: Digest, limit: int
) -> StoredManifest | None:
    """``ManifestStore.get`` of a manifest of at most ``limit`` bytes, if it is at hand.

    Schema1 is left to the async read: it merges or makes signatures.
    """
    if not linked_now(files, ManifestRevisionLink(name, digest), digest):
        return None
    payload = files.read_now(path_for(BlobData(digest)), limit)
    if not payload:
        return None
    media_type = media_type_of(payload)
    return None if media_type in _SCHEMA1_TYPES else StoredManifest(digest, media_type, payload)


def _as_schema1(manifest: Manifest) -> SignedManifest | None:
    if manifest.media_type not in _SCHEMA1_TYPES:
        return None
    from cargohold.manifest.schema1 import SignedManifest

    return manifest if isinstance(manifest, SignedManifest) else None


def _subject_of(payload: bytes) -> Digest | None:
    """The subject a stored manifest names, if any; damaged content names none."""
    try:
        subject: Descriptor | None = parse_manifest(payload, media_type_of(payload)).subject
    except (ManifestInvalid, ManifestUnverified, NameInvalid, DigestInvalid):
        return None
    return subject.digest if subject is not None else None
