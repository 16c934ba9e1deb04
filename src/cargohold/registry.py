"""The domain API: a namespace of repositories, each with blobs, manifests, tags, referrers.

These Protocols are the seam between the HTTP layer and whatever holds the
content. ``cargohold.storage.registry`` implements them on a storage driver;
``cargohold.client`` implements them against a remote registry over HTTP, so a
pull-through cache is one Repository in front of another.

Every method raises the domain's errors (``cargohold.errors``), never HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cargohold.descriptor import Descriptor
from cargohold.digest import Digest


@dataclass(frozen=True, slots=True)
class StoredManifest:
    """A manifest as stored: its digest, media type and the exact bytes that were pushed."""

    digest: Digest
    media_type: str
    payload: bytes
    #: The digest of the manifest's ``subject``, when it has one.
    subject: Digest | None = None


class BlobWriter(Protocol):
    """A resumable blob upload. Close it after each request; resume it by id."""

    @property
    def id(self) -> str: ...

    @property
    def started_at(self) -> datetime: ...

    @property
    def size(self) -> int:
        """Bytes received so far: the offset the next chunk must start at."""
        ...

    async def write(self, data: bytes | bytearray | memoryview) -> int: ...

    async def commit(self, expected: Digest, size: int | None = None) -> Descriptor:
        """Verify the content against ``expected`` and make it a blob of the repository.

        On a mismatch raises ``DigestInvalid`` (or ``SizeInvalid``) and the upload
        is gone: nothing is linked, nothing is moved.
        """
        ...

    async def cancel(self) -> None:
        """Abandon the upload and everything written to it."""
        ...

    async def close(self) -> None:
        """End this request's use of the upload; it stays resumable."""
        ...


class BlobStore(Protocol):
    """The blobs of one repository."""

    async def stat(self, digest: Digest) -> Descriptor: ...

    async def get(self, digest: Digest) -> bytes:
        """The whole blob in memory: for small blobs (configs, manifests) only."""
        ...

    async def open(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """Stream ``length`` bytes (default: to the end) from ``offset`` in bounded chunks."""
        ...

    async def put(self, content: bytes, media_type: str = ...) -> Descriptor:
        """Store a small blob in one call."""
        ...

    async def delete(self, digest: Digest) -> None:
        """Unlink the blob from this repository (its content stays until gc)."""
        ...

    async def mount(self, source: str, digest: Digest) -> Descriptor:
        """Link a blob of repository ``source`` here; ``BlobUnknown`` if ``source`` lacks it."""
        ...

    async def create_upload(self, algorithm: str = ...) -> BlobWriter: ...

    async def resume_upload(self, upload_id: str) -> BlobWriter:
        """The upload ``upload_id``; ``BlobUploadUnknown`` when there is none."""
        ...

    async def redirect_url(self, digest: Digest, method: str = "GET") -> str | None:
        """A URL the client may fetch the blob from directly, or None."""
        ...

    def local_file(self, digest: Digest) -> str | None:
        """The local file holding the blob, for sendfile; None when not on a local disk."""
        ...


class ManifestService(Protocol):
    """The manifests of one repository, addressed by digest."""

    async def exists(self, digest: Digest) -> bool: ...

    async def get(self, digest: Digest) -> StoredManifest:
        """The manifest ``digest``; ``ManifestUnknown`` when there is none."""
        ...

    async def put(
        self,
        payload: bytes,
        content_type: str | None,
        tags: Sequence[str] = (),
        digest: Digest | None = None,
    ) -> StoredManifest:
        """Validate and store a manifest, then point ``tags`` at it.

        ``digest``, when given, must be the digest of ``payload`` (``DigestInvalid``).
        """
        ...

    async def delete(self, digest: Digest) -> None:
        """Delete the manifest and every tag that points at it."""
        ...


class TagService(Protocol):
    """The tags of one repository."""

    async def get(self, tag: str) -> Digest:
        """The digest ``tag`` points at; ``ManifestUnknown`` when there is no such tag."""
        ...

    async def tag(self, tag: str, digest: Digest) -> None: ...

    async def untag(self, tag: str) -> None:
        """Delete the tag; the manifest stays. ``ManifestUnknown`` when there is no such tag."""
        ...

    async def all(self) -> list[str]:
        """Every tag, sorted; ``NameUnknown`` when the repository does not exist."""
        ...

    async def lookup(self, digest: Digest) -> list[str]:
        """The tags that point at ``digest``."""
        ...


class Repository(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def blobs(self) -> BlobStore: ...

    @property
    def manifests(self) -> ManifestService: ...

    @property
    def tags(self) -> TagService: ...

    async def referrers(
        self, subject: Digest, artifact_type: str | None = None
    ) -> list[Descriptor]:
        """Descriptors of the manifests whose ``subject`` is ``subject``."""
        ...


class Namespace(Protocol):
    """A registry: a namespace of repositories."""

    def repository(self, name: str) -> Repository:
        """The repository ``name``; ``NameInvalid`` when the name is not of the grammar."""
        ...

    async def catalog(self, n: int | None = None, last: str | None = None) -> list[str]:
        """Repository names in lexical order, at most ``n``, each after ``last``."""
        ...
