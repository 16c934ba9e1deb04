"""The domain API: a namespace of repositories, each with blobs, manifests, tags, referrers.

These Protocols are the seam between the HTTP layer and whatever holds the
content. ``cargohold.storage.registry`` implements them on a storage driver;
``cargohold.client`` implements them against a remote registry over HTTP, so a
pull-through cache is one Repository in front of another.

Every method raises the domain's errors (``cargohold.errors``), never HTTP.

A namespace may also offer optional capabilities, each a Protocol handed out
by a property that is None when it has none: ``immediate`` (the commonest
reads answered at once, for the request fast path), ``upkeep`` (storage
maintenance while serving: upload purging and health probes),
``maintenance`` (work of its own to run in the background while serving: a
mirror's expiry) and ``routing`` (a mirror's reading of containerd's ``?ns=``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

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


@dataclass(slots=True)
class BlobSource:
    """Where a blob linked in a repository can be read from, found in one checked call.

    Only ``BlobStore.locate`` (or ``ImmediateReads.blob``) makes one, after
    checking the repository's link, so holding a source means the repository
    may serve the blob: no caller can skip the check.
    """

    descriptor: Descriptor
    #: A file of this machine holding the content (for sendfile), if storage has one.
    file: str | None = None
    #: A URL the client may fetch the content from itself, when a redirect was asked for.
    url: str | None = None


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

    async def locate(
        self, digest: Digest, *, redirect: str | None = None, client: str | None = None
    ) -> BlobSource:
        """How to serve the blob: its descriptor, and a local file or a URL when storage has one.

        ``BlobUnknown`` unless the blob is linked in this repository. ``redirect``
        names the method (``GET``, ``HEAD``) a URL is wanted for; None asks for none.
        ``client`` is the address of the client the URL is for, when known (storage
        middleware may send clients inside a cloud elsewhere).
        """
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

    async def delete(self, digest: Digest) -> list[str]:
        """Delete the manifest and every tag that points at it; those tags, where known
        (a remote registry does not say which)."""
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


class ImmediateReads(Protocol):
    """The commonest reads, answered at once (no waiting) when storage allows it.

    Each method answers only the plain, successful case, and None for anything
    else (missing, damaged, invalid, unusual); the caller then asks the async
    API, which gives the real answer or the error. Nothing here is truth the
    async API does not also see: both read the same storage the same way.
    """

    #: Whether ``BlobStore.locate`` may hand out a URL (which these reads never do).
    redirects: bool

    def blob(self, name: str, digest: Digest) -> BlobSource | None:
        """``BlobStore.locate`` of repository ``name``, without a redirect."""
        ...

    def content(self, source: BlobSource, offset: int, length: int) -> bytes | None:
        """``length`` bytes of a located blob from ``offset``."""
        ...

    def tag(self, name: str, tag: str) -> Digest | None:
        """``TagService.get`` of repository ``name``."""
        ...

    def manifest(self, name: str, digest: Digest) -> StoredManifest | None:
        """``ManifestService.get`` of repository ``name``."""
        ...

    def tags(self, name: str) -> list[str] | None:
        """``TagService.all`` of repository ``name``."""
        ...


@dataclass(frozen=True, slots=True)
class PurgedUpload:
    """An upload removed by upload purging (or that a dry run would remove)."""

    #: The upload's folder in storage.
    path: str
    #: Bytes of its data when it was removed: what purging reclaimed.
    size: int


class Upkeep(Protocol):
    """Storage maintenance while serving: abandoned uploads and health probes."""

    @property
    def storage_name(self) -> str:
        """The storage driver's name, as health checks name it (``filesystem``, ``s3``)."""
        ...

    async def purge_uploads(
        self, older_than: datetime, *, dry_run: bool = False
    ) -> list[PurgedUpload]:
        """Remove uploads started before ``older_than``; returns what was (or would be) removed."""
        ...

    async def probe_storage(self) -> str | None:
        """None when storage answers, else what is wrong."""
        ...

    async def ping_cache(self) -> bool | None:
        """Whether the shared descriptor cache answers; None without one."""
        ...

    def note_pull(self, repository: str, digest: Digest) -> None:
        """Manifest ``digest`` of ``repository`` was pulled (for retention policies that
        keep what is pulled). Quick, and never raising; nothing to do when not recorded."""
        ...

    async def preview_collection(self) -> Mapping[str, Any]:
        """What garbage collection, as configured, would remove now: a dry run, listed
        as ``cargohold gc --dry-run --format json`` lists it."""
        ...


class Maintenance(Protocol):
    """Work a namespace does in the background while it serves."""

    async def run(self) -> None:
        """Do it until cancelled; failures are logged and retried, never raised."""
        ...


class Routing(Protocol):
    """Which repository a mirror request names (containerd sends ``?ns=<upstream host>``)."""

    def namespaced(self, name: str, ns: str) -> str:
        """The repository meant by ``name`` asked for with ``?ns=ns``."""
        ...


class Namespace(Protocol):
    """A registry: a namespace of repositories."""

    def repository(self, name: str) -> Repository:
        """The repository ``name``; ``NameInvalid`` when the name is not of the grammar."""
        ...

    async def catalog(self, n: int | None = None, last: str | None = None) -> list[str]:
        """Repository names in lexical order, at most ``n``, each after ``last``."""
        ...

    async def close(self) -> None:
        """Release connections, threads and caches."""
        ...

    @property
    def immediate(self) -> ImmediateReads | None:
        """Reads answered at once, when storage allows it."""
        ...

    @property
    def upkeep(self) -> Upkeep | None:
        """Maintenance of the namespace's own storage, when it has storage of its own."""
        ...

    @property
    def maintenance(self) -> Maintenance | None:
        """Background work of its own, when it has some."""
        ...

    @property
    def routing(self) -> Routing | None:
        """How ``?ns=`` picks a repository, when the namespace mirrors upstreams."""
        ...
