"""Manifests and tags of a remote repository (``registry.ManifestService``, ``TagService``).

Every manifest request says it accepts every manifest type: Distribution 2
answers a request that does not accept OCI types with ``MANIFEST_UNKNOWN``,
and rewrites a schema2 manifest into schema1 for one that does not accept
schema2. A manifest fetched by digest is checked against that digest.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cargohold.client.listing import list_pages
from cargohold.client.referrers import add_to_referrers_tag
from cargohold.client.transport import Transport
from cargohold.digest import Digest, digest_of
from cargohold.errors import (
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    OperationUnsupported,
)
from cargohold.manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    GENERIC_CONTENT_TYPES,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    SCHEMA1,
    SCHEMA1_SIGNED,
    media_type_of,
    parse_manifest,
)
from cargohold.reference import validate_tag
from cargohold.registry import StoredManifest

if TYPE_CHECKING:
    from cargohold.client.registry import RemoteRepository

__all__ = ["ACCEPT", "RemoteManifestService", "RemoteTagService"]

_PREFERRED = (
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
    SCHEMA1_SIGNED,
    SCHEMA1,
)
#: Every manifest type, the preferred ones first.
ACCEPT = ", ".join([*_PREFERRED, *sorted(MANIFEST_MEDIA_TYPES.difference(_PREFERRED))])
_SCHEMA1_TYPES = frozenset({SCHEMA1, SCHEMA1_SIGNED})
#: Manifests are small; a registry sending more than this is not sending a manifest.
MANIFEST_LIMIT = 4 << 20
#: Tags looked up at once by ``lookup``.
LOOKUP_CONCURRENCY = 8


def manifest_digest(payload: bytes, media_type: str, algorithm: str = "sha256") -> Digest:
    """A manifest's digest: of its bytes, except for schema1 (of the payload without signatures)."""
    if media_type in _SCHEMA1_TYPES:
        return parse_manifest(payload, SCHEMA1_SIGNED).digest(algorithm)
    return digest_of(payload, algorithm)


def subject_of(payload: bytes) -> Digest | None:
    """The digest of a manifest's ``subject``, when it has one."""
    if b'"subject"' not in payload:
        return None
    try:
        subject = json.loads(payload).get("subject")
        return Digest.parse(subject["digest"]) if isinstance(subject, dict) else None
    except (ValueError, TypeError, KeyError, AttributeError, DigestInvalid):
        return None


def _media_type(content_type: str | None, payload: bytes) -> str:
    media_type = (content_type or "").partition(";")[0].strip().lower()
    if media_type in GENERIC_CONTENT_TYPES:
        # The registry must be told what it gets: read it from the body as a registry would.
        return media_type_of(payload)
    return media_type


class RemoteManifestService:
    """The manifests of a remote repository."""

    def __init__(self, repository: RemoteRepository) -> None:
        self._repository = repository
        self._transport: Transport = repository.transport
        self.name = repository.name
        self._pull = (f"repository:{self.name}:pull",)
        self._push = (f"repository:{self.name}:pull,push",)
        self._delete = (f"repository:{self.name}:delete",)

    def _path(self, reference: str) -> str:
        return f"/v2/{self.name}/manifests/{reference}"

    async def exists(self, digest: Digest) -> bool:
        digest = Digest.parse(digest)
        try:
            response = await self._transport.send(
                "HEAD",
                self._path(digest),
                scopes=self._pull,
                headers={"Accept": ACCEPT},
                missing=lambda: ManifestUnknown(f"manifest {digest} unknown"),
            )
        except (ManifestUnknown, NameUnknown):
            return False
        response.release()
        return True

    async def get(self, digest: Digest) -> StoredManifest:
        digest = Digest.parse(digest)
        manifest = await self.fetch(digest)
        actual = manifest_digest(manifest.payload, manifest.media_type, digest.algorithm)
        if actual != digest:
            raise DigestInvalid(
                f"manifest {digest} from {self._transport.host} has digest {actual}",
                {"expected": str(digest), "actual": str(actual)},
            )
        return manifest

    async def fetch(self, reference: str) -> StoredManifest:
        """The manifest a tag or digest names, as the registry serves it (not verified)."""
        response = await self._transport.send(
            "GET",
            self._path(reference),
            scopes=self._pull,
            headers={"Accept": ACCEPT},
            missing=lambda: ManifestUnknown(f"manifest {reference} unknown"),
        )
        async with response:
            if (response.content_length or 0) > MANIFEST_LIMIT:
                raise ManifestInvalid(f"manifest {reference} is over {MANIFEST_LIMIT} bytes")
            payload = await response.content.read(MANIFEST_LIMIT + 1)
            if len(payload) > MANIFEST_LIMIT:
                raise ManifestInvalid(f"manifest {reference} is over {MANIFEST_LIMIT} bytes")
            media_type = _media_type(response.headers.get("Content-Type"), payload)
            served = response.headers.get("Docker-Content-Digest")
        if ":" in reference:
            digest = Digest.parse(reference)
        elif served:
            digest = Digest.parse(served)
        else:
            digest = manifest_digest(payload, media_type)
        return StoredManifest(digest, media_type, payload, subject_of(payload))

    async def put(
        self,
        payload: bytes,
        content_type: str | None,
        tags: Sequence[str] = (),
        digest: Digest | None = None,
    ) -> StoredManifest:
        tags = [validate_tag(tag) for tag in tags]
        media_type = _media_type(content_type, payload)
        if digest is not None:
            digest = Digest.parse(digest)
            actual = manifest_digest(payload, media_type, digest.algorithm)
            if actual != digest:
                raise DigestInvalid(
                    f"manifest digest {actual} does not match {digest}",
                    {"expected": str(digest), "actual": str(actual)},
                )
        # By digest when asked, else under each tag (one PUT each: the OCI ``?tag=``
        # parameter is new, and Distribution 2 ignores it), else by its own digest.
        references: list[str] = [str(digest)] if digest is not None else []
        references += tags
        if not references:
            references.append(str(manifest_digest(payload, media_type)))
        served: str | None = None
        indexed = False
        for reference in references:
            response = await self._transport.send(
                "PUT",
                self._path(reference),
                scopes=self._push,
                headers={"Content-Type": media_type},
                body=payload,
                ok=(201, 200, 202),
            )
            async with response:
                await response.read()
                served = response.headers.get("Docker-Content-Digest") or served
                indexed = indexed or "OCI-Subject" in response.headers
        stored_digest = digest or (
            Digest.parse(served) if served else manifest_digest(payload, media_type)
        )
        subject = subject_of(payload)
        if subject is not None and not indexed:
            # The registry has no referrers API: keep the tag schema's index (OCI 1.1).
            await add_to_referrers_tag(self, subject, payload, media_type, stored_digest)
        return StoredManifest(stored_digest, media_type, payload, subject)

    async def delete(self, digest: Digest) -> list[str]:
        digest = Digest.parse(digest)
        response = await self._transport.send(
            "DELETE",
            self._path(digest),
            scopes=self._delete,
            ok=(202, 200, 204),
            missing=lambda: ManifestUnknown(f"manifest {digest} unknown"),
        )
        response.release()
        return []  # the registry untagged what pointed at it, without saying what


class RemoteTagService:
    """The tags of a remote repository."""

    def __init__(self, repository: RemoteRepository, manifests: RemoteManifestService) -> None:
        self._transport: Transport = repository.transport
        self._manifests = manifests
        self.name = repository.name
        self._pull = (f"repository:{self.name}:pull",)
        self._delete = (f"repository:{self.name}:delete",)

    async def get(self, tag: str) -> Digest:
        validate_tag(tag)
        response = await self._transport.send(
            "HEAD",
            f"/v2/{self.name}/manifests/{tag}",
            scopes=self._pull,
            headers={"Accept": ACCEPT},
            missing=lambda: ManifestUnknown(f"unknown tag {tag!r}", {"tag": tag}),
        )
        async with response:
            served = response.headers.get("Docker-Content-Digest")
        if served:
            return Digest.parse(served)
        # Not every registry says on HEAD: the body tells.
        return (await self._manifests.fetch(tag)).digest

    async def tag(self, tag: str, digest: Digest) -> None:
        manifest = await self._manifests.get(digest)
        await self._manifests.put(manifest.payload, manifest.media_type, [tag])

    async def untag(self, tag: str) -> None:
        validate_tag(tag)
        try:
            response = await self._transport.send(
                "DELETE",
                f"/v2/{self.name}/manifests/{tag}",
                scopes=self._delete,
                ok=(202, 200, 204),
                missing=lambda: ManifestUnknown(f"unknown tag {tag!r}", {"tag": tag}),
            )
        except DigestInvalid:
            # Distribution 2 deletes manifests by digest only, and says so this way.
            raise OperationUnsupported(
                f"{self._transport.host} cannot delete a tag; delete the manifest by digest"
            ) from None
        response.release()

    async def all(self) -> list[str]:
        # Sorted here: Distribution 2.8 lists tags in storage order.
        return sorted(set(await self.page()))

    async def page(
        self, n: int | None = None, last: str | None = None, *, page_size: int | None = None
    ) -> list[str]:
        """Tags after ``last``, at most ``n``, following the registry's pages."""
        return await list_pages(
            self._transport,
            f"/v2/{self.name}/tags/list",
            "tags",
            scopes=self._pull,
            missing=lambda: NameUnknown(f"repository {self.name!r} not known", {"name": self.name}),
            n=n,
            last=last,
            page_size=page_size,
        )

    async def lookup(self, digest: Digest) -> list[str]:
        try:
            tags = await self.all()
        except NameUnknown:
            return []
        limit = asyncio.Semaphore(LOOKUP_CONCURRENCY)

        async def points_at_digest(tag: str) -> bool:
            async with limit:
                try:
                    return await self.get(tag) == digest
                except ManifestUnknown:
                    return False  # deleted meanwhile

        found = await asyncio.gather(*(points_at_digest(tag) for tag in tags))
        return [tag for tag, hit in zip(tags, found, strict=True) if hit]
