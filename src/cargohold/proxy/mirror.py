"""A registry that mirrors upstreams: the local storage in front of one or more remote registries.

``MirrorRegistry`` is a ``registry.Namespace``. A repository under an
upstream's prefix is a ``MirrorRepository``: reads are answered from the local
storage when it has the content and from the upstream otherwise, which is
then kept; writes are refused (405 UNSUPPORTED, as Distribution's proxy).
Any other repository is the local storage's own.

- A tag is checked with a HEAD upstream (Docker Hub does not count those), at
  most once per ``recheck`` interval; a new digest is fetched and kept. When
  the upstream does not answer, the cached tag is served (stale-if-error).
- A manifest or blob by digest is served from the cache without asking.
- A blob not cached is filled once however many clients ask (``fills.py``),
  streamed to every one of them while it is written.
- Every use is written down (``expiry.py``) and a sweep expires what went
  unused for the upstream's ttl.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from typing import Protocol, TypeVar, cast

from cargohold.descriptor import OCTET_STREAM, Descriptor
from cargohold.digest import DEFAULT_ALGORITHM, Digest
from cargohold.errors import (
    BlobUnknown,
    CargoholdError,
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    ManifestUnverified,
    NameInvalid,
    NameUnknown,
    OperationUnsupported,
    RangeInvalid,
    UpstreamInvalid,
)
from cargohold.proxy.expiry import (
    BLOBS,
    MANIFESTS,
    UseRecords,
    adopt_schedule,
    refresh_interval,
    sweep,
)
from cargohold.proxy.fills import Fills
from cargohold.proxy.upstream import UNREACHABLE, Upstream
from cargohold.reference import validate_name, validate_tag
from cargohold.registry import (
    BlobSource,
    BlobWriter,
    ImmediateReads,
    Repository,
    StoredManifest,
    Upkeep,
)
from cargohold.storage.registry import StorageRegistry, StorageRepository

__all__ = ["MirrorRegistry", "ProxyWatch"]

log = logging.getLogger("cargohold.proxy")

_T = TypeVar("_T")

#: Blobs up to this size are filled whole before the reply starts, so that an
#: upstream's failure is a clean error reply rather than a cut connection.
WHOLE_BEFORE_REPLY = 1 << 20
#: How often uses seen on the fast path are written down.
FLUSH_INTERVAL = 1.0


class ProxyWatch(Protocol):
    """Told of each read a mirror serves and each byte it pulls (``metrics`` counts them)."""

    def served(self, upstream: str, kind: str, size: int, hit: bool) -> None:
        """A manifest or blob was served, from the cache (``hit``) or from the upstream."""
        ...

    def pulled(self, upstream: str, kind: str, size: int) -> None:
        """``size`` bytes of a manifest or blob came from the upstream."""
        ...


class _Unwatched:
    def served(self, upstream: str, kind: str, size: int, hit: bool) -> None:
        pass

    def pulled(self, upstream: str, kind: str, size: int) -> None:
        pass


class _Flights:
    """Work done once for everyone who asks while it runs (single flight)."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Future[object]] = {}

    async def run(self, key: Hashable, work: Callable[[], Awaitable[_T]]) -> _T:
        flight = self._running.get(key)
        if flight is None:
            task: asyncio.Future[object] = asyncio.ensure_future(work())
            self._running[key] = flight = task
            task.add_done_callback(lambda done: self._landed(key, done))
        # Shielded: a client that goes away does not cancel the others' answer.
        return await asyncio.shield(cast("asyncio.Future[_T]", flight))

    def _landed(self, key: Hashable, done: asyncio.Future[object]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved, even when every asker went away


class MirrorRegistry:
    """Repositories under each upstream's prefix mirror it; the others are local."""

    def __init__(
        self,
        local: StorageRegistry,
        upstreams: Sequence[Upstream],
        watch: ProxyWatch | None = None,
        *,
        local_repositories: bool = True,
    ) -> None:
        self.local = local
        #: Whether a repository no upstream owns is the storage's own (else NAME_UNKNOWN).
        self.local_repositories = local_repositories
        self.upstreams = list(upstreams)
        self.watch: ProxyWatch = watch or _Unwatched()
        self.uses = UseRecords(local.driver)
        self.fills = Fills()
        self.flights = _Flights()
        #: When each (repository, tag) was last confirmed upstream (monotonic).
        self.checked: dict[tuple[str, str], float] = {}
        #: Manifests fetched for a tag and not yet served: their first read is a miss.
        self.fetched: set[tuple[str, Digest]] = set()
        inner = local.immediate
        self._immediate = _MirrorReads(self, inner) if inner is not None else None

    def served_from_cache(
        self, upstream: Upstream, name: str, kind: str, digest: Digest, size: int
    ) -> None:
        """A cached manifest or blob was served (by either request path): its use noted, and
        counted as a hit, unless it is a manifest just fetched for a tag (a miss)."""
        if upstream.ttl:
            self.uses.used(name, kind, digest, refresh_interval(upstream.ttl))
        hit = True
        if kind == MANIFESTS and (name, digest) in self.fetched:
            self.fetched.discard((name, digest))
            hit = False
        self.watch.served(upstream.label, kind.removesuffix("s"), size, hit)

    def upstream_for(self, name: str) -> Upstream | None:
        for upstream in self.upstreams:
            if name.startswith(upstream.prefix):
                return upstream
        return None

    def repository(self, name: str) -> Repository:
        name = validate_name(name)
        local = self.local.repository(name)
        upstream = self.upstream_for(name)
        if upstream is None:
            if not self.local_repositories:
                raise NameUnknown(f"no upstream mirrors {name!r}", {"name": name})
            return local
        return MirrorRepository(self, upstream, local)

    def namespaced(self, name: str, ns: str) -> str:
        """The repository a containerd mirror request for ``name`` with ``?ns=`` means."""
        host = ns.lower()
        for upstream in self.upstreams:
            if host in upstream.hosts:
                return upstream.prefix + name
        return name

    async def catalog(self, n: int | None = None, last: str | None = None) -> list[str]:
        return await self.local.catalog(n, last)

    @property
    def immediate(self) -> ImmediateReads | None:
        return self._immediate

    @property
    def upkeep(self) -> Upkeep:
        return self.local.upkeep

    @property
    def maintenance(self) -> MirrorRegistry:
        return self

    @property
    def routing(self) -> MirrorRegistry:
        return self

    def _ttl_of(self, name: str) -> float | None:
        upstream = self.upstream_for(name)
        return None if upstream is None else upstream.ttl

    def _busy(self, name: str | None, digest: Digest | None) -> bool:
        if name is not None:
            return self.fills.busy_in(name, digest)
        return digest is not None and self.fills.busy(digest)

    async def sweep(self) -> None:
        """One expiry sweep over every mirrored repository."""
        await self.uses.flush()
        swept = await sweep(self.local, self.uses, self._ttl_of, self._busy)
        for name, digest in swept.manifests:
            for key in [key for key in self.checked if key[0] == name]:
                del self.checked[key]
            log.info("expired manifest %s@%s", name, digest)
        for digest in swept.blobs:
            log.info("expired blob %s", digest)

    def sweep_interval(self) -> float | None:
        ttls = [upstream.ttl for upstream in self.upstreams if upstream.ttl > 0]
        return None if not ttls else min(max(min(ttls) / 2, 1.0), 3600.0)

    async def run(self) -> None:
        """Write down uses and expire content, while serving (until cancelled); the local
        storage's own maintenance runs beside it."""
        local = self.local.maintenance
        beside = asyncio.ensure_future(local.run()) if local is not None else None
        try:
            await self._expire()
        finally:
            if beside is not None:
                beside.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beside

    async def _expire(self) -> None:
        try:
            adopted = await adopt_schedule(self.local.driver, self.uses, self._ttl_of)
        except CargoholdError as exc:
            log.warning("could not read Distribution's proxy schedule: %s", exc)
        else:
            if adopted:
                log.info("took over %d entries of Distribution's proxy schedule", adopted)
        interval = self.sweep_interval()
        next_sweep = time.monotonic() + (interval or 0)
        while True:
            await asyncio.sleep(
                FLUSH_INTERVAL if interval is None else min(interval, FLUSH_INTERVAL)
            )
            try:
                await self.uses.flush()
                if interval is not None and time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + interval
                    await self.sweep()
            except CargoholdError as exc:
                log.warning("expiring cached content failed: %s", exc)

    async def close(self) -> None:
        await self.fills.close()
        with contextlib.suppress(CargoholdError):
            await self.uses.flush()
        for upstream in self.upstreams:
            await upstream.close()
        await self.local.close()


class MirrorRepository:
    """A repository mirrored from ``upstream``, cached in ``local``."""

    def __init__(
        self, mirror: MirrorRegistry, upstream: Upstream, local: StorageRepository
    ) -> None:
        self._name = local.name
        self._local = local
        self._upstream = upstream
        self._blobs = MirrorBlobStore(mirror, upstream, local)
        self._manifests = MirrorManifests(mirror, upstream, local)
        self._tags = MirrorTags(mirror, upstream, local, self._manifests)

    @property
    def name(self) -> str:
        return self._name

    @property
    def blobs(self) -> MirrorBlobStore:
        return self._blobs

    @property
    def manifests(self) -> MirrorManifests:
        return self._manifests

    @property
    def tags(self) -> MirrorTags:
        return self._tags

    async def referrers(
        self, subject: Digest, artifact_type: str | None = None
    ) -> list[Descriptor]:
        try:
            return await self._upstream.call(
                self._name, lambda remote: remote.referrers(subject, artifact_type)
            )
        except (*UNREACHABLE, UpstreamInvalid):
            return await self._local.referrers(subject, artifact_type)


def _refused(upstream: Upstream) -> OperationUnsupported:
    return OperationUnsupported(f"this repository mirrors {upstream.label}: it takes no writes")


class MirrorBlobStore:
    """The blobs of a mirrored repository."""

    def __init__(
        self, mirror: MirrorRegistry, upstream: Upstream, local: StorageRepository
    ) -> None:
        self._mirror = mirror
        self._upstream = upstream
        self._local = local.blobs
        self._name = local.name

    def _used(self, digest: Digest, size: int) -> None:
        self._mirror.served_from_cache(self._upstream, self._name, BLOBS, digest, size)

    async def stat(self, digest: Digest) -> Descriptor:
        return (await self.locate(digest)).descriptor

    async def exists(self, digest: Digest) -> bool:
        try:
            await self.stat(digest)
        except BlobUnknown:
            return False
        return True

    async def locate(
        self, digest: Digest, *, redirect: str | None = None, client: str | None = None
    ) -> BlobSource:
        digest = Digest.parse(digest)
        try:
            source = await self._local.locate(digest, redirect=redirect, client=client)
        except BlobUnknown:
            pass
        else:
            self._used(digest, source.descriptor.size)
            return source
        fill = self._mirror.fills.get(self._name, digest)
        if fill is not None:
            size = await fill.started()
        else:
            # Only a HEAD upstream: a HEAD of ours must not pull the blob in.
            size = (
                await self._mirror.flights.run(
                    ("blob", self._name, digest),
                    lambda: self._upstream.call(self._name, lambda r: r.blobs.stat(digest)),
                )
            ).size
        return BlobSource(Descriptor(OCTET_STREAM, digest, size))

    async def open(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        digest = Digest.parse(digest)
        if self._mirror.fills.get(self._name, digest) is None:
            try:
                return await self._local.open(digest, offset, length)
            except BlobUnknown:
                pass
        fill = self._mirror.fills.start(
            self._name,
            digest,
            # The upload verifies the content: the stream need not hash it too.
            lambda: self._upstream.call(self._name, lambda r: r.blobs.stream(digest, verify=False)),
            self._local,
            lambda size: self._stored(digest, size),
        )
        size = await fill.started()
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise RangeInvalid(f"bytes {offset}+{length} are outside blob {digest} of {size}")
        self._mirror.watch.served(self._upstream.label, "blob", length, False)
        if size <= WHOLE_BEFORE_REPLY:
            await fill.complete()
        if fill.done:  # stored already: read from storage
            return await self._local.open(digest, offset, length)
        return fill.read(offset, length)

    async def _stored(self, digest: Digest, size: int) -> None:
        self._mirror.watch.pulled(self._upstream.label, "blob", size)
        if self._upstream.ttl:
            await self._mirror.uses.write(self._name, BLOBS, digest)

    async def get(self, digest: Digest) -> bytes:
        return b"".join([chunk async for chunk in await self.open(digest)])

    async def put(self, content: bytes, media_type: str = OCTET_STREAM) -> Descriptor:
        raise _refused(self._upstream)

    async def delete(self, digest: Digest) -> None:
        raise _refused(self._upstream)

    async def mount(self, source: str, digest: Digest) -> Descriptor:
        raise _refused(self._upstream)

    async def create_upload(self, algorithm: str = DEFAULT_ALGORITHM) -> BlobWriter:
        raise _refused(self._upstream)

    async def resume_upload(self, upload_id: str) -> BlobWriter:
        raise _refused(self._upstream)


class MirrorManifests:
    """The manifests of a mirrored repository."""

    def __init__(
        self, mirror: MirrorRegistry, upstream: Upstream, local: StorageRepository
    ) -> None:
        self._mirror = mirror
        self._upstream = upstream
        self._local = local.manifests
        self._name = local.name

    async def exists(self, digest: Digest) -> bool:
        if await self._local.exists(digest):
            return True
        try:
            return await self._upstream.call(self._name, lambda r: r.manifests.exists(digest))
        except (*UNREACHABLE, UpstreamInvalid):
            return False

    async def cached(self, digest: Digest) -> StoredManifest | None:
        try:
            manifest = await self._local.get(digest)
        except ManifestUnknown:
            return None
        size = len(manifest.payload)
        self._mirror.served_from_cache(self._upstream, self._name, MANIFESTS, digest, size)
        return manifest

    async def get(self, digest: Digest) -> StoredManifest:
        digest = Digest.parse(digest)
        manifest = await self.cached(digest)
        if manifest is not None:
            return manifest
        manifest = await self._mirror.flights.run(
            ("manifest", self._name, digest), lambda: self.fetch(digest)
        )
        self._mirror.fetched.discard((self._name, digest))
        self._mirror.watch.served(self._upstream.label, "manifest", len(manifest.payload), False)
        return manifest

    async def fetch(self, digest: Digest, tags: Sequence[str] = ()) -> StoredManifest:
        """The manifest from the upstream, kept here (and ``tags`` pointed at it)."""
        remote = await self._upstream.call(self._name, lambda r: r.manifests.get(digest))
        try:
            stored = await self._local.put(
                remote.payload, remote.media_type, tags, digest, cached=True
            )
        except (ManifestInvalid, ManifestUnverified, DigestInvalid, NameInvalid) as exc:
            log.warning(
                "upstream %s sent an invalid manifest %s: %s", self._upstream.label, digest, exc
            )
            raise UpstreamInvalid(f"the upstream sent an invalid manifest {digest}") from exc
        self._mirror.watch.pulled(self._upstream.label, "manifest", len(remote.payload))
        self._mirror.fetched.add((self._name, digest))
        if self._upstream.ttl:
            await self._mirror.uses.write(self._name, MANIFESTS, digest)
        return stored

    async def put(
        self,
        payload: bytes,
        content_type: str | None,
        tags: Sequence[str] = (),
        digest: Digest | None = None,
    ) -> StoredManifest:
        raise _refused(self._upstream)

    async def delete(self, digest: Digest) -> list[str]:
        raise _refused(self._upstream)


class MirrorTags:
    """The tags of a mirrored repository: the upstream's, checked at most every ``recheck``."""

    def __init__(
        self,
        mirror: MirrorRegistry,
        upstream: Upstream,
        local: StorageRepository,
        manifests: MirrorManifests,
    ) -> None:
        self._mirror = mirror
        self._upstream = upstream
        self._local = local
        self._manifests = manifests
        self._name = local.name

    async def get(self, tag: str) -> Digest:
        tag = validate_tag(tag)
        checked = self._mirror.checked.get((self._name, tag))
        if checked is not None and time.monotonic() - checked < self._upstream.recheck:
            with contextlib.suppress(ManifestUnknown):
                return await self._local.tags.get(tag)
        return await self._mirror.flights.run(("tag", self._name, tag), lambda: self._check(tag))

    async def _check(self, tag: str) -> Digest:
        try:
            digest = await self._upstream.call(self._name, lambda r: r.tags.get(tag))
        except (*UNREACHABLE, UpstreamInvalid) as exc:
            try:
                cached = await self._local.tags.get(tag)
            except ManifestUnknown:
                raise exc from None
            log.warning(
                "upstream %s failed for %s:%s (%s): serving the cached %s",
                self._upstream.label,
                self._name,
                tag,
                exc,
                cached,
            )
            return cached
        try:
            current: Digest | None = await self._local.tags.get(tag)
        except ManifestUnknown:
            current = None
        if current != digest:
            if await self._local.manifests.exists(digest):
                await self._local.tags.tag(tag, digest)
            else:
                await self._mirror.flights.run(
                    ("manifest", self._name, digest),
                    lambda: self._manifests.fetch(digest, [tag]),
                )
                if await self._local.tags.get(tag) != digest:  # fetched for another asker
                    await self._local.tags.tag(tag, digest)
        self._mirror.checked[(self._name, tag)] = time.monotonic()
        return digest

    async def all(self) -> list[str]:
        try:
            return await self._upstream.call(self._name, lambda r: r.tags.all())
        except (*UNREACHABLE, UpstreamInvalid):
            return await self._local.tags.all()

    async def lookup(self, digest: Digest) -> list[str]:
        return await self._local.tags.lookup(digest)

    async def tag(self, tag: str, digest: Digest) -> None:
        raise _refused(self._upstream)

    async def untag(self, tag: str) -> None:
        raise _refused(self._upstream)


class _MirrorReads:
    """The local storage's immediate reads, for mirrored repositories only where the cache is
    the answer: content by digest (its use noted), and a tag confirmed within ``recheck``."""

    __slots__ = ("_inner", "_mirror", "redirects")

    def __init__(self, mirror: MirrorRegistry, inner: ImmediateReads) -> None:
        self._mirror = mirror
        self._inner = inner
        self.redirects = inner.redirects

    def blob(self, name: str, digest: Digest) -> BlobSource | None:
        source = self._inner.blob(name, digest)
        if source is not None:
            upstream = self._mirror.upstream_for(name)
            if upstream is not None:
                size = source.descriptor.size
                self._mirror.served_from_cache(upstream, name, BLOBS, digest, size)
        return source

    def content(self, source: BlobSource, offset: int, length: int) -> bytes | None:
        return self._inner.content(source, offset, length)

    def tag(self, name: str, tag: str) -> Digest | None:
        upstream = self._mirror.upstream_for(name)
        if upstream is not None:
            checked = self._mirror.checked.get((name, tag))
            if checked is None or time.monotonic() - checked >= upstream.recheck:
                return None
        return self._inner.tag(name, tag)

    def manifest(self, name: str, digest: Digest) -> StoredManifest | None:
        manifest = self._inner.manifest(name, digest)
        if manifest is not None:
            upstream = self._mirror.upstream_for(name)
            if upstream is not None:
                size = len(manifest.payload)
                self._mirror.served_from_cache(upstream, name, MANIFESTS, digest, size)
        return manifest

    def tags(self, name: str) -> list[str] | None:
        if self._mirror.upstream_for(name) is not None:
            return None
        return self._inner.tags(name)
