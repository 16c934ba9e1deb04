"""Copy an image between any two repositories: registries, OCI layouts, storage.

:func:`copy_image` resolves the source reference, picks the image of one
platform from an index (or, with ``all_platforms``, copies the whole index),
transfers the blobs, then pushes the manifests, children before the index
that names them, so the destination never holds a manifest whose references
are missing.

Blobs go ``jobs`` at a time. Each is first looked up at the destination (a
``HEAD`` on a registry) and skipped when it is there; between two
repositories of one registry it is mounted (``POST ?mount=&from=``) rather
than copied; otherwise it streams from the source straight into the upload,
chunk by chunk, and an interrupted transfer resumes where the destination
says it stopped (``cargohold.client.uploads``). Memory stays bounded by the
chunk size times ``jobs`` whatever the image's size.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cargohold.client.blobs import RemoteBlobStore
from cargohold.client.ocilayout import OciLayout
from cargohold.client.progress import NO_PROGRESS, BlobProgress, Progress
from cargohold.client.registry import RemoteRepository
from cargohold.descriptor import Descriptor
from cargohold.digest import Digest
from cargohold.errors import BlobUnknown, DigestInvalid, ManifestUnknown
from cargohold.manifest import Manifest, parse_manifest
from cargohold.manifest.base import IndexBase
from cargohold.registry import Repository, StoredManifest

__all__ = [
    "DEFAULT_PLATFORM",
    "CopyResult",
    "Platform",
    "copy_image",
    "copy_manifest",
    "resolve",
    "select_platform",
]


@dataclass(frozen=True, slots=True)
class Platform:
    """``os/architecture[/variant]``, as ``--platform`` spells it."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise ValueError(f"a platform is os/architecture[/variant], not {text!r}")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    def matches(self, platform: Mapping[str, Any] | None) -> bool:
        if not platform:
            return False
        if platform.get("os") != self.os or platform.get("architecture") != self.architecture:
            return False
        return self.variant is None or platform.get("variant") == self.variant

    def __str__(self) -> str:
        text = f"{self.os}/{self.architecture}"
        return f"{text}/{self.variant}" if self.variant else text


DEFAULT_PLATFORM = Platform("linux", "amd64")


@dataclass(frozen=True, slots=True)
class BlobCopy:
    descriptor: Descriptor
    #: ``copied``, ``exists`` (already at the destination) or ``mounted``.
    outcome: str
    seconds: float


@dataclass
class CopyResult:
    """What a copy pushed: the top manifest (its digest is what the destination tag names)."""

    digest: Digest
    media_type: str
    size: int
    manifests: list[Digest] = field(default_factory=list)
    blobs: list[BlobCopy] = field(default_factory=list)
    #: The referrers copied with it (signatures, SBOMs, and theirs), in the order copied.
    referrers: list[Digest] = field(default_factory=list)

    @property
    def bytes_copied(self) -> int:
        return sum(b.descriptor.size for b in self.blobs if b.outcome == "copied")


async def resolve(repository: Repository, reference: str | None) -> StoredManifest:
    """The manifest a tag or digest names (a layout's only image when ``reference`` is None)."""
    if reference is None:
        if isinstance(repository, OciLayout):
            return await repository.manifests.get(repository.only_entry())
        raise ManifestUnknown("a tag or digest is needed")
    if ":" in reference:
        return await repository.manifests.get(Digest.parse(reference))
    return await repository.manifests.get(await repository.tags.get(reference))


def select_platform(index: IndexBase, platform: Platform) -> Descriptor:
    """The child of ``index`` for ``platform``; ``ManifestUnknown`` naming those there are."""
    for child in index.children:
        if platform.matches(child.platform):
            return child
    available = sorted(
        {
            "/".join(str(p[k]) for k in ("os", "architecture", "variant") if p.get(k))
            for child in index.children
            if (p := child.platform)
        }
    )
    raise ManifestUnknown(
        f"the index has no image for {platform}"
        + (f" (it has {', '.join(available)})" if available else "")
    )


@dataclass
class _Plan:
    """The manifests to push, children first, and the blobs they need."""

    manifests: list[tuple[StoredManifest, Manifest]] = field(default_factory=list)
    blobs: dict[Digest, Descriptor] = field(default_factory=dict)


async def _plan(
    source: Repository, top: StoredManifest, *, all_platforms: bool, platform: Platform
) -> _Plan:
    plan = _Plan()

    async def visit(stored: StoredManifest, depth: int) -> None:
        parsed = parse_manifest(stored.payload, stored.media_type)
        if isinstance(parsed, IndexBase) and depth < 8:
            children = parsed.manifests()
            fetched = await asyncio.gather(*(source.manifests.get(c.digest) for c in children))
            for child in fetched:
                await visit(child, depth + 1)
        for blob in parsed.blobs():
            plan.blobs.setdefault(blob.digest, blob)
        plan.manifests.append((stored, parsed))

    parsed_top = parse_manifest(top.payload, top.media_type)
    if isinstance(parsed_top, IndexBase) and not all_platforms:
        chosen = select_platform(parsed_top, platform)
        top = await source.manifests.get(chosen.digest)
    await visit(top, 0)
    return plan


@dataclass(frozen=True, slots=True)
class _Mount:
    """Both sides are repositories of one registry: blobs are mounted from ``source``."""

    store: RemoteBlobStore
    source: str


def _mount_source(source: Repository, destination: Repository) -> _Mount | None:
    if isinstance(source, RemoteRepository) and isinstance(destination, RemoteRepository):
        same = source.transport.base == destination.transport.base
        if same and source.name != destination.name:
            return _Mount(destination.blobs, source.name)
    return None


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    # One failed blob cancels the others; the caller wants the failure, not the group.
    error = group.exceptions[0]
    return _first_error(error) if isinstance(error, BaseExceptionGroup) else error


async def copy_image(
    source: Repository,
    reference: str | None,
    destination: Repository,
    tag: str | None = None,
    *,
    all_platforms: bool = False,
    platform: Platform = DEFAULT_PLATFORM,
    jobs: int = 4,
    progress: Progress = NO_PROGRESS,
) -> CopyResult:
    """Copy the image ``reference`` (tag or digest) of ``source`` to ``destination``.

    The top manifest is pushed under ``tag``, or by digest when there is none (an
    OCI layout then gets an untagged ``index.json`` entry).
    """
    top = await resolve(source, reference)
    return await copy_manifest(
        source,
        top,
        destination,
        tag,
        all_platforms=all_platforms,
        platform=platform,
        jobs=jobs,
        progress=progress,
    )


async def copy_manifest(
    source: Repository,
    top: StoredManifest,
    destination: Repository,
    tag: str | None = None,
    *,
    all_platforms: bool = False,
    platform: Platform = DEFAULT_PLATFORM,
    jobs: int = 4,
    progress: Progress = NO_PROGRESS,
) -> CopyResult:
    """:func:`copy_image` for a manifest of ``source`` fetched already."""
    if jobs < 1:
        raise ValueError("jobs must be at least 1")
    plan = await _plan(source, top, all_platforms=all_platforms, platform=platform)
    mount = _mount_source(source, destination)
    limit = asyncio.Semaphore(jobs)
    result_blobs: list[BlobCopy] = []

    async def one(descriptor: Descriptor) -> None:
        async with limit:
            result_blobs.append(await _copy_blob(source, destination, descriptor, mount, progress))

    try:
        async with asyncio.TaskGroup() as group:
            for descriptor in plan.blobs.values():
                group.create_task(one(descriptor))
    except BaseExceptionGroup as failed:
        raise _first_error(failed) from None

    pushed: list[Digest] = []
    *children, (last, last_parsed) = plan.manifests
    for stored, _ in children:
        if not await destination.manifests.exists(stored.digest):
            await destination.manifests.put(stored.payload, stored.media_type, digest=stored.digest)
        pushed.append(stored.digest)
    final = await _push_top(destination, last, tag)
    pushed.append(final.digest)
    order = {d: i for i, d in enumerate(plan.blobs)}
    result_blobs.sort(key=lambda b: order[b.descriptor.digest])
    return CopyResult(final.digest, last_parsed.media_type, len(last.payload), pushed, result_blobs)


async def copy_referrers(
    source: Repository,
    destination: Repository,
    subjects: Sequence[Digest],
    *,
    jobs: int = 4,
    progress: Progress = NO_PROGRESS,
) -> list[Digest]:
    """Copy every manifest of ``source`` that refers to one of ``subjects``, and those that
    refer to them in turn (a signature of an SBOM), as oras and crane copy them; their
    digests, in the order copied. Each is copied whole (an index with every child) and
    untagged: the destination lists it through its subject."""
    copied: list[Digest] = []
    seen = set(subjects)
    pending = list(subjects)
    while pending:
        subject = pending.pop(0)
        for descriptor in await source.referrers(subject):
            if descriptor.digest in seen:
                continue
            seen.add(descriptor.digest)
            stored = await source.manifests.get(descriptor.digest)
            result = await copy_manifest(
                source, stored, destination, None, all_platforms=True, jobs=jobs, progress=progress
            )
            copied.append(result.digest)
            pending.append(result.digest)
    return copied


async def _push_top(
    destination: Repository, top: StoredManifest, tag: str | None
) -> StoredManifest:
    tags: Sequence[str] = [tag] if tag else []
    stored = await destination.manifests.put(
        top.payload, top.media_type, tags, digest=None if tags else top.digest
    )
    if stored.digest != top.digest:
        raise DigestInvalid(
            f"the destination stored the manifest as {stored.digest}, not {top.digest}"
        )
    if not tags and isinstance(destination, OciLayout):
        await destination.set_entry(Descriptor(top.media_type, top.digest, len(top.payload)), None)
    return stored


async def _exists(destination: Repository, digest: Digest) -> bool:
    try:
        await destination.blobs.stat(digest)
    except BlobUnknown:
        return False
    return True


async def _copy_blob(
    source: Repository,
    destination: Repository,
    descriptor: Descriptor,
    mount: _Mount | None,
    progress: Progress,
) -> BlobCopy:
    reporter = progress.blob(descriptor)
    started = time.monotonic()
    digest = descriptor.digest
    if await _exists(destination, digest):
        outcome = "exists"
    elif mount is not None and await mount.store.try_mount(mount.source, digest):
        outcome = "mounted"
    else:
        await _transfer(source, destination, descriptor, reporter)
        outcome = "copied"
    reporter.finish(outcome)
    return BlobCopy(descriptor, outcome, time.monotonic() - started)


async def _transfer(
    source: Repository, destination: Repository, descriptor: Descriptor, reporter: BlobProgress
) -> None:
    digest, size = descriptor.digest, descriptor.size

    async def reopen(offset: int) -> AsyncIterator[bytes]:
        return await source.blobs.open(digest, offset)

    if isinstance(destination.blobs, RemoteBlobStore):
        await destination.blobs.upload(digest, size, reopen, reporter)
        return
    # A local destination verifies at commit; the remote source resumes by itself.
    writer = await destination.blobs.create_upload(digest.algorithm)
    try:
        async for chunk in await source.blobs.open(digest):
            await writer.write(chunk)
            reporter.advance(len(chunk))
        await writer.commit(digest, size)
    except BaseException:
        await writer.cancel()
        raise
