"""Garbage collection: mark what manifests reference, sweep every other blob.

As Distribution's ``registry garbage-collect``:

1. **Mark.** For every repository, every manifest revision is marked, with
   everything it references (config, layers, an index's children). With
   ``delete_untagged``, a manifest that no tag points at is deleted instead,
   unless something kept needs it: a kept index lists it, or it is a referrer
   (it has a ``subject``) of a kept manifest, which Distribution does not
   spare.
2. **Sweep.** Every blob in storage that was not marked is deleted, and so
   are the repositories' ``_layers`` links to it (Distribution leaves those
   dangling), and its descriptor cache entries.

Offline (no ``grace``), run it while no one pushes (read-only mode, or the
registry stopped): a blob uploaded between mark and sweep, before its
manifest arrives, is unreferenced and would be collected. Offline on a
driver whose small reads finish at once (a local disk), a repository is read
without a wait per file (``_scan_now``), blob folders are listed without a
stat each, and what goes goes in batches (``BatchDeletes``): a registry of
100k blobs is collected in a fraction of the time a walk through the async
driver API takes.

Online (``grace`` seconds), it runs while the registry serves. Nothing younger
than the grace period is deleted: a blob whose content was written, or that a
client found (``storage/reuse.py``: a HEAD, a mount, a push of it again, a
manifest naming it) within it, an untagged manifest linked within it. A client
that found a blob references it within the grace period (which is at least
the upload-purge age), so the blob is young when its manifest arrives, however
the mark and the sweep interleave with it. Each blob is hidden before its
record of finds is read (``_collect_while_serving``), and a find writes its
record before it answers: either the find met the blob hidden, or the pass
sees its record and puts the blob back. Links go before content, so a pass
cut short (SIGKILL) leaves nothing that answers an error; content it left
hidden is put back by the next pass, which judges it again.

Retention policies (``retention.py``) run in the mark: a tag no rule keeps is
removed (never one younger than the grace period, nor one moved since it was
judged), and the policy's ``untagged`` age decides which untagged manifests
go in its repositories. A dry run removes nothing and reports what would go.

A shared cache (Redis) outlives this process, and registries trust its entries
for repository membership, so an entry left for a swept blob says "layer already
exists" to every client (Distribution's known bug after a collection). A clear
that cannot reach Redis waits in the cache's in-memory journal, which dies with
this process. So the sweep refuses to start while the shared cache does not
answer (``CacheUnreachable``), and after it the journal is drained with a ping;
if that fails, ``Collection.cache_stale`` says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cargohold.descriptor import OCTET_STREAM, Descriptor
from cargohold.digest import Digest
from cargohold.errors import (
    BlobUnknown,
    CargoholdError,
    ConfigError,
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    ManifestUnverified,
    NameInvalid,
    PathNotFound,
)
from cargohold.manifest import Manifest, media_type_of, parse_manifest
from cargohold.manifest.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from cargohold.storage.driver.base import BatchDeletes, ImmediateFiles, StorageDriver
from cargohold.storage.markset import MarkSet
from cargohold.storage.paths import (
    LINK_LIMIT,
    BlobData,
    BlobHidden,
    BlobsRoot,
    GcLastReport,
    LayerLink,
    LayersDir,
    ManifestRevisionLink,
    ManifestRevisionsDir,
    ReferrerDescriptor,
    RegistryRoot,
    TagCurrentLink,
    TagIndexLink,
    TagsDir,
    digest_from_path,
    digest_text,
    parse_link,
    path_for,
)
from cargohold.storage.pulls import PullRecords
from cargohold.storage.registry import IMMEDIATE_MANIFEST_LIMIT as MANIFEST_LIMIT
from cargohold.storage.registry import StorageRegistry
from cargohold.storage.retention import Retention, TagState
from cargohold.storage.reuse import ReuseRecords

log = logging.getLogger("cargohold.gc")

_T = TypeVar("_T")


class BlobsUnlisted(CargoholdError):
    """A folder of blobs could not be listed: the sweep cannot know what is there."""


class CacheUnreachable(CargoholdError):
    """The shared blob descriptor cache does not answer, so nothing was swept."""


@dataclass(repr=False)
class Collection:
    """What a collection found and did (or, in a dry run, would do)."""

    #: What kept manifests reference (``markset.py``: a compact set).
    marked: MarkSet = field(default_factory=MarkSet)
    deleted_blobs: list[Digest] = field(default_factory=list)
    deleted_manifests: list[tuple[str, Digest]] = field(default_factory=list)
    deleted_links: list[tuple[str, Digest]] = field(default_factory=list)
    #: Bytes of the deleted blobs, as storage listed them: what the collection reclaimed.
    reclaimed: int = 0
    #: The shared cache did not acknowledge every clear: until its entries expire,
    #: registries may still report swept blobs as present.
    cache_stale: bool = False
    #: Whether the registry was serving (a grace period applied).
    online: bool = False
    #: Unreferenced blobs and untagged manifests spared for being younger than the grace.
    young_blobs: int = 0
    young_manifests: int = 0
    #: Tags a retention policy removed (or, in a dry run, would remove), by repository.
    removed_tags: list[tuple[str, TagState]] = field(default_factory=list)
    #: The size of each manifest to delete: its own bytes and everything it references.
    manifest_sizes: dict[tuple[str, Digest], int] = field(default_factory=dict)
    #: The size of each blob to delete, as storage listed it.
    blob_sizes: dict[Digest, int] = field(default_factory=dict)
    #: What was found damaged, and left alone: each a sentence.
    damaged: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        # Counts, not contents: asyncio shows the result of a run's main task, and a full
        # collection's digests take a noticeable part of a second to write out.
        return (
            f"Collection({len(self.marked)} marked, {len(self.deleted_blobs)} blobs, "
            f"{len(self.deleted_manifests)} manifests, {len(self.removed_tags)} tags)"
        )


@dataclass
class Progress:
    """How far a collection has gone, told to its ``progress`` watcher as it goes."""

    #: ``mark`` (repositories walked), ``sweep`` (blobs examined), ``delete``, ``done``.
    phase: str = "mark"
    repositories: int = 0
    manifests: int = 0
    blobs: int = 0
    deleted_blobs: int = 0
    deleted_manifests: int = 0
    reclaimed: int = 0


#: Told of a collection's progress: at each phase, each repository, and every
#: ``PROGRESS_EVERY`` blobs examined or deleted. It must return at once.
ProgressWatch = Callable[[Progress], None]

PROGRESS_EVERY = 1000


def _quiet(progress: Progress) -> None:
    pass


@dataclass
class Revision:
    digest: Digest
    references: list[Digest]
    children: list[Digest]
    subject: Digest | None
    tagged: bool
    #: When the revision's link was written (epoch seconds; 0 when unknown).
    linked_at: float = 0.0
    #: Its own bytes and the sizes its descriptors give for what it references.
    size: int = 0
    #: False when its content does not parse: it stays, and so does everything its
    #: repository links, since what it references cannot be known.
    readable: bool = True


async def require_storage(registry: StorageRegistry) -> None:
    """``ConfigError`` unless the storage holds a registry root, as Distribution's gc requires.

    A collection over nothing would report success: a mistyped root directory
    looks like an empty registry.
    """
    try:
        await registry.driver.stat(path_for(RegistryRoot()))
    except PathNotFound:
        driver = registry.driver
        files = driver.local_files
        where = files.local_path(path_for(RegistryRoot())) if files else path_for(RegistryRoot())
        raise ConfigError(
            f"storage.{driver.name}", f"{where}: no registry here (not found)"
        ) from None


async def collect_garbage(
    registry: StorageRegistry,
    *,
    dry_run: bool = False,
    delete_untagged: bool = False,
    grace: float | None = None,
    now: float | None = None,
    before_sweep: Callable[[], Awaitable[None]] | None = None,
    retention: Retention | None = None,
    progress: ProgressWatch = _quiet,
) -> Collection:
    """Mark and sweep; with ``grace`` (seconds), safely while the registry serves: nothing
    changed or found since ``now - grace`` goes (``now``: the time of the call). With
    ``retention``, its policies remove tags and untagged manifests first. ``progress`` is
    told how far it has gone.

    ``before_sweep`` runs once everything is marked, before anything is deleted; what it
    raises stops the collection there (offline, it checks that no registry started).
    """
    online = grace is not None
    reference = time.time() if now is None else now
    cutoff = reference - grace if grace is not None else math.inf
    result = Collection(online=online)
    if online and not dry_run:
        await recover_hidden(registry)
    #: The layer links of each repository, as digests' text (compared with digests, which
    #: are text: a stray name matches none).
    links: dict[str, AbstractSet[str]] = {}
    #: What each manifest to delete would take with it, should it stay after all.
    needs: dict[tuple[str, Digest], set[Digest]] = {}
    #: Per repository, how recent an untagged manifest's link must be to stay.
    cutoffs: dict[str, float] = {}
    pulls = registry.pulls or PullRecords(registry.driver, 0.0)
    #: Offline, where reads finish at once, a repository is read without a wait per file.
    files = None if online else registry.driver.immediate
    #: Every tag of each repository holding a manifest to delete: its history goes too.
    tag_names: dict[str, list[str]] = {}
    subjects: dict[tuple[str, Digest], Digest] = {}
    told = Progress()
    progress(told)
    for name in await registry.catalog():
        policy = retention.policy_for(name) if retention is not None else None
        # Retention judges tags and revisions by their times, which the quick read skips.
        scan = _scan_now(files, name) if files is not None and policy is None else None
        if scan is None:
            tags = await tag_states(registry, name, pulls if retention is not None else None)
        else:
            tags = scan.tags
        removed: set[str] = set()
        if policy is not None:
            for state in policy.removals(tags, reference, grace or 0.0):
                if dry_run or await _remove_tag(registry, name, state):
                    result.removed_tags.append((name, state))
                    removed.add(state.tag)
        tagged = {t.digest for t in tags if t.tag not in removed}
        if scan is None:
            revisions = await revisions_of(registry, name, tagged, result.damaged)
        else:
            revisions = scan.revisions
            result.damaged.extend(scan.damaged)
            for revision in revisions.values():
                revision.tagged = revision.digest in tagged
        untagged_age = policy.untagged if policy is not None else None
        cutoffs[name] = cutoff if untagged_age is None else min(cutoff, reference - untagged_age)
        deleting = delete_untagged or untagged_age is not None
        young = {d for d, r in revisions.items() if r.linked_at > cutoffs[name]}
        kept = _keep(revisions, deleting, young)
        result.young_manifests += len(young - _keep(revisions, deleting, set()))
        for revision in revisions.values():
            if revision.digest in kept:
                result.marked.add(revision.digest)
                result.marked.update(revision.references)
            else:
                result.deleted_manifests.append((name, revision.digest))
                result.manifest_sizes[(name, revision.digest)] = revision.size
                needs[(name, revision.digest)] = {revision.digest, *revision.references}
                if revision.subject is not None:
                    subjects[(name, revision.digest)] = revision.subject
        if len(kept) < len(revisions):
            tag_names[name] = [t.tag for t in tags if t.tag not in removed]
        found = scan.links if scan is not None else await layer_links(registry, name)
        if not all(r.readable for r in revisions.values()):
            result.marked.update(found)  # what an unreadable manifest references is unknown
        # Only the links to what is not marked yet can be to a blob swept: the rest need
        # not be kept in memory (marks are never taken back).
        links[name] = {d for d in found if d not in result.marked}
        told.repositories += 1
        told.manifests += len(revisions)
        progress(told)

    # Read from storage whatever this process's own settings: the finds that count are
    # those of the registries serving (``gc --online`` may run with a config of its own).
    reuse = registry.blobs.reuse or ReuseRecords(registry.driver, 0.0)
    sizes = result.blob_sizes
    told.phase = "sweep"
    progress(told)
    listed = _blobs_now(files) if files is not None else None
    if files is not None and listed is not None:
        for text in (text for folder in listed for text in folder):
            told.blobs += 1
            if told.blobs % PROGRESS_EVERY == 0:
                progress(told)
            if text in result.marked:
                continue
            try:
                digest = Digest.parse(text)
            except DigestInvalid:
                result.damaged.append(f"a blob folder names no blob ({text}); left alone")
                continue
            size = files.size_now(path_for(BlobData(digest)))
            if size is None:
                continue  # a folder without content: no blob
            result.deleted_blobs.append(digest)
            result.reclaimed += size
            sizes[digest] = size
    else:
        async for digest, info in registry.blobs.enumerate_infos():
            told.blobs += 1
            if told.blobs % PROGRESS_EVERY == 0:
                progress(told)
            if digest in result.marked:
                continue
            if online and (
                info.modtime.timestamp() > cutoff or await _reused_since(reuse, digest, cutoff)
            ):
                result.young_blobs += 1
                continue
            result.deleted_blobs.append(digest)
            result.reclaimed += info.size
            sizes[digest] = info.size
    result.deleted_blobs.sort()
    swept: dict[str, Digest] = {d: d for d in result.deleted_blobs}
    for name, linked in links.items():
        result.deleted_links.extend(sorted((name, swept[d]) for d in linked if d in swept))

    if not dry_run:
        if before_sweep is not None:
            await before_sweep()
        if not await _cache_answers(registry):
            raise CacheUnreachable(
                "the shared blob descriptor cache (Redis) does not answer; nothing was "
                "deleted, since its entries for swept blobs could not be cleared"
            )
        told.phase = "delete"
        progress(told)
        await _delete(
            registry,
            result,
            (cutoff, cutoffs) if online else None,
            needs,
            pulls if retention is not None else None,
            _Deleting(told, progress, result.blob_sizes),
            _Histories(tag_names, subjects),
        )
        # Clears that failed wait in the cache's journal; the ping replays them.
        result.cache_stale = not await _cache_answers(registry)
    told.phase = "done"
    told.deleted_blobs = len(result.deleted_blobs)
    told.deleted_manifests = len(result.deleted_manifests)
    told.reclaimed = result.reclaimed
    progress(told)
    return result


@dataclass
class _Deleting:
    """Tells the deletions to a collection's progress watcher."""

    told: Progress
    progress: ProgressWatch
    #: The size of each blob to delete.
    sizes: dict[Digest, int]

    def manifest(self) -> None:
        self.told.deleted_manifests += 1
        self.progress(self.told)

    def blob(self, size: int) -> None:
        told = self.told
        told.deleted_blobs += 1
        told.reclaimed += size
        if told.deleted_blobs % PROGRESS_EVERY == 0:
            self.progress(told)


async def _reused_since(reuse: ReuseRecords, digest: Digest, cutoff: float) -> bool:
    last = await reuse.last_reuse(digest)
    return last is not None and last > cutoff


async def _cache_answers(registry: StorageRegistry) -> bool:
    """Whether the shared cache answers now, every clear sent so far included."""
    cache = registry.blobs.cache
    if cache is None or not cache.shared:
        return True  # an in-process cache dies with this process: nothing to leave behind
    return await cache.ping()


async def _delete(
    registry: StorageRegistry,
    result: Collection,
    online: tuple[float, dict[str, float]] | None,
    needs: dict[tuple[str, Digest], set[Digest]],
    pulls: PullRecords | None,
    deleting: _Deleting,
    histories: _Histories,
) -> None:
    """Delete what ``result`` lists; ``online``, what is still as old as it was: blobs as
    old as the first cutoff, untagged manifests as their repository's in the second.

    Whatever is already gone was deleted by someone else: the goal is reached.
    """
    sizes = result.blob_sizes
    blob_cutoff, cutoffs = online if online is not None else (None, None)
    batches = registry.driver.batch_deletes
    if cutoffs is None and batches is not None:
        await _remove_manifests(batches, result.deleted_manifests, histories, deleting)
        if pulls is not None:
            for name, digest in result.deleted_manifests:
                await pulls.forget(name, digest)
    spared: set[Digest] = set()
    batched = cutoffs is None and batches is not None
    for name, digest in [] if batched else list(result.deleted_manifests):
        repository = registry.repository(name)
        if cutoffs is not None and (
            not await _still_untagged_and_old(registry, name, digest, cutoffs[name])
            # Never untags: a tag written meanwhile keeps the manifest.
            or not await repository.manifests.remove_untagged(digest)
        ):
            # Tagged or linked anew meanwhile: it stays, and so does all it references.
            result.deleted_manifests.remove((name, digest))
            result.manifest_sizes.pop((name, digest), None)
            result.young_manifests += 1
            spared |= needs.get((name, digest), {digest})
            continue
        if cutoffs is None:
            log.info("deleting manifest %s@%s", name, digest)
            with suppress(ManifestUnknown):
                await repository.manifests.remove(digest)
        else:
            log.info("deleted manifest %s@%s", name, digest)
        if pulls is not None:
            await pulls.forget(name, digest)
        deleting.manifest()
    if spared:
        kept = [d for d in result.deleted_blobs if d in spared]
        result.deleted_blobs = [d for d in result.deleted_blobs if d not in spared]
        result.deleted_links = [(n, d) for n, d in result.deleted_links if d not in spared]
        result.young_blobs += len(kept)
        result.reclaimed -= sum(sizes.pop(d, 0) for d in kept)
    links: dict[Digest, list[str]] = {}
    for name, digest in result.deleted_links:
        links.setdefault(digest, []).append(name)
    if blob_cutoff is None:
        await _sweep(registry, result.deleted_blobs, links, deleting)
        return
    cutoff = blob_cutoff
    stayed: set[Digest] = set()

    async def judge(digest: Digest) -> None:
        if await _collect_while_serving(registry, digest, links.get(digest, []), cutoff):
            deleting.blob(sizes.get(digest, 0))
        else:
            stayed.add(digest)  # found meanwhile: it stays, and so do its links

    await _each(result.deleted_blobs, judge)
    if stayed:
        result.deleted_blobs = [d for d in result.deleted_blobs if d not in stayed]
        result.deleted_links = [(n, d) for n, d in result.deleted_links if d not in stayed]
        result.young_blobs += len(stayed)
        result.reclaimed -= sum(sizes.pop(d, 0) for d in stayed)


@dataclass
class _Histories:
    """What else names the manifests to delete: every tag's history (``index``) in their
    repositories, and the referrers index of their subjects."""

    tag_names: dict[str, list[str]]
    subjects: dict[tuple[str, Digest], Digest]


async def _remove_manifests(
    batches: BatchDeletes,
    manifests: list[tuple[str, Digest]],
    histories: _Histories,
    deleting: _Deleting,
) -> None:
    """Delete untagged manifests no registry writes beside (offline), in batches: each one's
    revision link, its entry in every tag's history and in its subject's referrers, as
    Distribution's collection removes the first two."""

    async def remove(batch: list[tuple[str, Digest]]) -> None:
        paths = []
        for name, digest in batch:
            log.info("deleting manifest %s@%s", name, digest)
            paths.append(path_for(ManifestRevisionLink(name, digest)))
            paths.extend(
                path_for(TagIndexLink(name, tag, digest))
                for tag in histories.tag_names.get(name, [])
            )
            subject = histories.subjects.get((name, digest))
            if subject is not None:
                paths.append(path_for(ReferrerDescriptor(name, subject, digest)))
        await batches.delete_files(paths)
        for _ in batch:
            deleting.manifest()

    await _each(_batches(manifests), remove, BATCHES_AT_ONCE)


@dataclass
class _Scan:
    """A repository as read at once: its tags, readable revisions and layer links."""

    tags: list[TagState]
    revisions: dict[Digest, Revision]
    #: As unchecked text (``_digests_under``).
    links: set[str]
    damaged: list[str]


def _digests_under(files: ImmediateFiles, folder: str) -> list[str] | None:
    """The digests, as unchecked text, that the folders under ``folder`` are named for
    (revisions, layer links: ``paths.digest_folders``)."""
    found: list[str] = []
    algorithms = files.list_now(folder)
    if algorithms is None:
        return None
    for algorithm in algorithms:
        names = files.list_now(f"{folder}/{algorithm}")
        if names is None:
            return None
        found.extend(digest_text(algorithm, name) for name in names)
    return found


def _scan_now(files: ImmediateFiles, name: str) -> _Scan | None:
    """Repository ``name`` read without waiting (a local disk), as ``tag_states``,
    ``revisions_of`` and ``layer_links`` read it; None as soon as one read is not plain
    (missing where it should not be, too large, an error): the caller reads it again the
    long way, which tells a damage from an error. Tag times are not read (0)."""
    tag_names = files.list_now(path_for(TagsDir(name)))
    revisions_found = _digests_under(files, path_for(ManifestRevisionsDir(name)))
    links = _digests_under(files, path_for(LayersDir(name)))
    if tag_names is None or revisions_found is None or links is None:
        return None
    tags = []
    for tag in tag_names:
        link = files.read_now(path_for(TagCurrentLink(name, tag)), LINK_LIMIT)
        if link is None:
            return None
        try:
            tags.append(TagState(tag, parse_link(link), 0.0, None))
        except DigestInvalid:
            return None
    revisions: dict[Digest, Revision] = {}
    damaged: list[str] = []
    for text in revisions_found:
        try:
            digest = Digest.parse(text)
        except DigestInvalid:
            damaged.append(f"{name}: a revision folder names no manifest ({text}); left alone")
            continue
        if files.read_now(path_for(ManifestRevisionLink(name, digest)), LINK_LIMIT) is None:
            continue  # a folder without its link: no revision (or a damage the long way skips)
        data = path_for(BlobData(digest))
        payload = files.read_now(data, MANIFEST_LIMIT)
        if payload is None:
            if files.size_now(data) is None:
                damaged.append(_missing(name, digest))
                continue  # a link to nothing keeps nothing alive
            return None
        revisions[digest] = _read_revision(name, digest, payload, damaged)
    return _Scan(tags, revisions, set(links), damaged)


def _blobs_now(files: ImmediateFiles) -> Iterator[list[str]] | None:
    """Every blob folder in storage (``<alg>/<xx>/<hex>``), listed without a stat each, a
    folder of them at a time (the whole list would be the largest thing in memory): the
    digests as unchecked text, checked by the caller for those it keeps. None when the
    top folders cannot be listed; ``BlobsUnlisted`` when a folder of them cannot."""
    root = path_for(BlobsRoot())
    algorithms = files.list_now(root)
    if algorithms is None:
        return None
    folders: list[tuple[str, str]] = []
    for algorithm in algorithms:
        prefixes = files.list_now(f"{root}/{algorithm}")
        if prefixes is None:
            return None
        folders.extend((algorithm, f"{root}/{algorithm}/{prefix}") for prefix in prefixes)

    def listing() -> Iterator[list[str]]:
        for algorithm, folder in folders:
            names = files.list_now(folder)
            if names is None:
                raise BlobsUnlisted(f"cannot list {folder}: nothing was deleted")
            yield [digest_text(algorithm, name) for name in names]

    return listing()


#: Blobs deleted at once: each deletion waits on storage (a thread, a request), not the CPU.
CONCURRENCY = 16

#: Blobs whose files go in one call of a driver's ``BatchDeletes``.
BATCH = 1000
#: Batches deleted at once: a disk's deletions are kernel work, which both cores can do.
BATCHES_AT_ONCE = 2


async def _each(
    items: list[_T], work: Callable[[_T], Awaitable[None]], at_once: int = CONCURRENCY
) -> None:
    """``work`` on each item, ``at_once`` at a time, in order of starting."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:
            await work(item)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(at_once, len(items))):
            group.create_task(worker())


async def _sweep(
    registry: StorageRegistry,
    digests: list[Digest],
    links: dict[Digest, list[str]],
    deleting: _Deleting,
) -> None:
    """Delete blobs no registry writes beside (offline): links first, then content, so a
    pass cut short leaves content no repository names, never a link to nothing."""
    blobs, sizes = registry.blobs, deleting.sizes
    batches = registry.driver.batch_deletes
    if batches is None:

        async def delete(digest: Digest) -> None:
            for name in links.get(digest, []):
                with suppress(BlobUnknown):
                    await registry.repository(name).blobs.unlink(digest)
            log.info("deleting blob %s", digest)
            with suppress(BlobUnknown):
                await blobs.delete(digest)
            deleting.blob(sizes.get(digest, 0))

        await _each(digests, delete)
        return
    # A blob is its files, and each batch of them goes in a few requests (an object store)
    # or one hand-off to a thread (a disk) rather than several per file; two batches at
    # once, each its links first.

    async def sweep(batch: list[Digest]) -> None:
        named = [(name, d) for d in batch for name in links.get(d, [])]
        await batches.delete_files([path_for(LayerLink(name, d)) for name, d in named])
        cache = blobs.cache
        if cache is not None:
            for name, digest in named:
                await cache.clear_linked(name, digest)
        for digest in batch:
            log.info("deleting blob %s", digest)
            await blobs.forget(digest)
        # Only the content: what a pass while serving left hidden is no blob, and the next
        # one puts it back to judge it again (``recover_hidden``).
        await batches.delete_files([path_for(BlobData(d)) for d in batch])
        for digest in batch:
            deleting.blob(sizes.get(digest, 0))

    await _each(_batches(digests), sweep, BATCHES_AT_ONCE)


def _batches(items: list[_T]) -> list[list[_T]]:
    return [items[start : start + BATCH] for start in range(0, len(items), BATCH)]


async def _collect_while_serving(
    registry: StorageRegistry, digest: Digest, names: list[str], cutoff: float
) -> bool:
    """Delete one blob while clients may find it; whether it went.

    It is hidden first (its links removed, its content moved aside), then its
    record of finds is read: a find writes its record before it answers and
    reads the blob again after, so it either met the blob hidden, or left a
    record this read sees, and the blob is put back.
    """
    driver, blobs = registry.driver, registry.blobs
    data, hidden = path_for(BlobData(digest)), path_for(BlobHidden(digest))
    unlinked = []
    for name in names:
        with suppress(BlobUnknown):
            await registry.repository(name).blobs.unlink(digest)
            unlinked.append(name)
    try:
        info = await driver.stat(data)
        await driver.move(data, hidden)
        size, written, moved = info.size, info.modtime.timestamp(), True
    except PathNotFound:
        size, written, moved = 0, 0.0, False
    await blobs.forget(digest)
    reuse = blobs.reuse or ReuseRecords(driver, 0.0)
    if written > cutoff or await _reused_since(reuse, digest, cutoff):
        # Links first: a find waiting for the hidden content (``GlobalBlobStore.settled``)
        # reads again once the content is back, and must find its link there too.
        for name in unlinked:
            await registry.repository(name).blobs.link(Descriptor(OCTET_STREAM, digest, size))
        if moved:
            await _put_back(driver, data, hidden)
        return False
    log.info("deleting blob %s", digest)
    with suppress(PathNotFound):
        await driver.delete(hidden)
    await reuse.forget(digest)
    return True


async def _put_back(driver: StorageDriver, data: str, hidden: str) -> None:
    """The hidden content back in place, unless a push put the same content there since."""
    try:
        await driver.stat(data)
    except PathNotFound:
        await driver.move(hidden, data)
        return
    with suppress(PathNotFound):
        await driver.delete(hidden)


async def recover_hidden(registry: StorageRegistry) -> int:
    """Put back the content a pass cut short (SIGKILL) left hidden; how many there were.

    Its links went with it, so nothing names it: it is put back only to be
    judged again by this pass, as any unreferenced blob.
    """
    count = 0
    try:
        async for info in registry.driver.walk(path_for(BlobsRoot())):
            if info.is_dir or not info.path.endswith("/collecting"):
                continue
            try:
                digest = digest_from_path(info.path.rsplit("/", 1)[0])
            except DigestInvalid:
                continue
            await _put_back(registry.driver, path_for(BlobData(digest)), info.path)
            count += 1
    except PathNotFound:
        return count
    return count


async def _still_untagged_and_old(
    registry: StorageRegistry, name: str, digest: Digest, cutoff: float
) -> bool:
    """Whether the manifest is still one to delete: no tag took it meanwhile, nor a new link."""
    if await registry.repository(name).tags.lookup(digest):
        return False
    try:
        info = await registry.driver.stat(path_for(ManifestRevisionLink(name, digest)))
    except PathNotFound:
        return True  # deleted meanwhile: removing it again is harmless
    return info.modtime.timestamp() <= cutoff


def _keep(
    revisions: dict[Digest, Revision], delete_untagged: bool, young: set[Digest]
) -> set[Digest]:
    """The revisions that stay: all of them, or the tagged and the ``young`` ones and what
    they need (their children, and the referrers of what stays)."""
    if not delete_untagged:
        return set(revisions)
    kept = {d for d, r in revisions.items() if r.tagged or not r.readable} | young
    changed = True
    while changed:
        changed = False
        for digest, revision in revisions.items():
            if digest in kept:
                continue
            needed = revision.subject in kept or any(digest in revisions[k].children for k in kept)
            if needed:
                kept.add(digest)
                changed = True
    return kept


async def tag_states(
    registry: StorageRegistry, name: str, pulls: PullRecords | None = None
) -> list[TagState]:
    """Every sound tag of ``name``: what it points at, when it was last written, and (with
    ``pulls``) when that manifest was last pulled. A damaged tag is left out: it keeps
    nothing alive, and retention does not judge it."""
    driver = registry.driver
    try:
        infos = [i async for i in driver.walk(path_for(TagsDir(name))) if not i.is_dir]
    except PathNotFound:
        return []
    pulled = await pulls.last_pulls(name) if pulls is not None else {}
    prefix = path_for(TagsDir(name)) + "/"
    states = []
    for info in infos:
        tag, _, rest = info.path[len(prefix) :].partition("/")
        if rest != "current/link":
            continue
        try:
            digest = parse_link(await driver.get_content(info.path))
        except (PathNotFound, DigestInvalid):
            continue
        states.append(TagState(tag, digest, info.modtime.timestamp(), pulled.get(digest)))
    return states


async def _remove_tag(registry: StorageRegistry, name: str, state: TagState) -> bool:
    """Remove a tag retention judged, unless it moved since (pushed again, even to the
    same manifest); whether it went."""
    link = path_for(TagCurrentLink(name, state.tag))
    try:
        info = await registry.driver.stat(link)
        digest = parse_link(await registry.driver.get_content(link))
    except (PathNotFound, DigestInvalid):
        return False
    if digest != state.digest or info.modtime.timestamp() != state.pushed:
        return False
    log.info("removing tag %s:%s (%s), kept by no retention rule", name, state.tag, digest)
    try:
        await registry.repository(name).tags.untag(state.tag)
    except ManifestUnknown:
        return False
    return True


async def revisions_of(
    registry: StorageRegistry,
    name: str,
    tagged: set[Digest] | None = None,
    damaged: list[str] | None = None,
) -> dict[Digest, Revision]:
    """Every manifest revision of ``name`` with content; ``tagged``: the manifests tags
    point at (by default, as the tags read now). What is damaged is told to ``damaged``."""
    damaged = [] if damaged is None else damaged
    driver = registry.driver
    if tagged is None:
        tagged = {t.digest for t in await tag_states(registry, name)}
    found: dict[Digest, Revision] = {}
    try:
        walk = driver.walk(path_for(ManifestRevisionsDir(name)))
        links = [info async for info in walk if info.path.endswith("/link")]
    except PathNotFound:
        return found
    for link in links:
        if "/signatures/" in link.path:
            continue
        try:
            digest = digest_from_path(link.path)
        except DigestInvalid:
            damaged.append(f"{name}: {link.path} names no manifest; left alone")
            continue
        try:
            payload = await registry.blobs.get(digest)
        except BlobUnknown:
            damaged.append(_missing(name, digest))
            continue  # a link to nothing keeps nothing alive
        revision = _read_revision(name, digest, payload, damaged)
        revision.tagged = digest in tagged
        revision.linked_at = link.modtime.timestamp()
        found[digest] = revision
    return found


def _missing(name: str, digest: Digest) -> str:
    return f"{name}: manifest {digest} is linked, its content is missing; skipped"


def _read_revision(name: str, digest: Digest, payload: bytes, damaged: list[str]) -> Revision:
    """The revision ``payload`` describes; one that does not parse is told to ``damaged``
    and comes back unreadable: it stays, with everything its repository links."""
    try:
        return _describe(digest, payload, False)
    except ManifestInvalid as exc:
        damaged.append(f"{name}: {exc}; it stays, and so does every blob the repository links")
        return Revision(digest, [], [], None, False, readable=False)


#: The manifests ``_quick`` reads: those with a config and layers, and those with children.
_IMAGES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
_INDEXES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})


def _quick(digest: Digest, payload: bytes, tagged: bool) -> Revision | None:
    """The revision of an image manifest or index read from its JSON alone, as ``_describe``
    finds it; None for anything else or anything unexpected, which ``_describe`` reads.

    Collection reads every manifest of the registry: a manifest's full validation costs
    several times more, and these were validated when they were pushed.
    """
    try:
        body = json.loads(payload)
        media_type = body.get("mediaType")
        if media_type in _IMAGES:
            found = [body["config"], *body["layers"]]
        elif media_type in _INDEXES:
            found = body["manifests"]
        else:
            return None
        sizes = {Digest.parse(d["digest"]): int(d["size"]) for d in found}
        references = list(sizes)
        size = len(payload) + sum(sizes.values())
        subject = body.get("subject")
        about = Digest.parse(subject["digest"]) if subject is not None else None
    except (ValueError, TypeError, KeyError, AttributeError, DigestInvalid):
        return None
    children = references if media_type in _INDEXES else []
    return Revision(digest, references, children, about, tagged, size=size)


def _describe(digest: Digest, payload: bytes, tagged: bool) -> Revision:
    quick = _quick(digest, payload, tagged)
    return quick if quick is not None else _full(digest, payload, tagged)


def _full(digest: Digest, payload: bytes, tagged: bool) -> Revision:
    manifest: Manifest
    try:
        media_type = media_type_of(payload)
        if media_type.startswith("application/vnd.docker.distribution.manifest.v1"):
            # Imported here: its cryptography costs every collection 40 ms to load.
            from cargohold.manifest.schema1 import SignedManifest

            manifest = SignedManifest.from_canonical(payload)
        else:
            manifest = parse_manifest(payload, media_type)
    except (ManifestInvalid, ManifestUnverified, NameInvalid, DigestInvalid) as exc:
        # Refusing to guess: a manifest we cannot read may reference anything.
        raise ManifestInvalid(f"cannot read manifest {digest} to collect garbage: {exc}") from exc
    subject = manifest.subject.digest if manifest.subject is not None else None
    references = manifest.references()
    return Revision(
        digest,
        [d.digest for d in references],
        [d.digest for d in manifest.manifests()],
        subject,
        tagged,
        size=len(payload) + sum(d.size for d in references),
    )


async def layer_links(registry: StorageRegistry, name: str) -> set[Digest]:
    links: set[Digest] = set()
    try:
        async for info in registry.driver.walk(path_for(LayersDir(name))):
            if info.path.endswith("/link"):
                try:
                    links.add(digest_from_path(info.path))
                except DigestInvalid:
                    continue
    except PathNotFound:
        pass
    return links


# -- the last pass's report ----------------------------------------------------------------

#: Digests listed in a saved report, of each kind, at most.
REPORT_LIMIT = 1000


def report_of(result: Collection, *, started: float, ended: float, dry_run: bool) -> dict[str, Any]:
    """``result`` as the JSON document ``cargohold gc --last`` prints."""
    return {
        "started": started,
        "ended": ended,
        "duration": round(ended - started, 3),
        "online": result.online,
        "dry_run": dry_run,
        "deleted_manifests": len(result.deleted_manifests),
        "deleted_blobs": len(result.deleted_blobs),
        "deleted_links": len(result.deleted_links),
        "reclaimed_bytes": result.reclaimed,
        "young_blobs": result.young_blobs,
        "young_manifests": result.young_manifests,
        "removed_tags": len(result.removed_tags),
        "damaged": result.damaged[:REPORT_LIMIT],
        "tags": [f"{n}:{t.tag}" for n, t in result.removed_tags[:REPORT_LIMIT]],
        "manifests": [f"{n}@{d}" for n, d in result.deleted_manifests[:REPORT_LIMIT]],
        "blobs": [str(d) for d in result.deleted_blobs[:REPORT_LIMIT]],
    }


def inventory_of(result: Collection, *, dry_run: bool) -> dict[str, Any]:
    """Everything ``result`` removed (or would remove), with sizes: ``gc --format json``."""
    return {
        "dry_run": dry_run,
        "online": result.online,
        "tags": [
            {
                "repository": name,
                "tag": state.tag,
                "digest": str(state.digest),
                "pushed": state.pushed,
                "pulled": state.pulled,
            }
            for name, state in result.removed_tags
        ],
        "manifests": [
            {"repository": name, "digest": str(d), "size": result.manifest_sizes.get((name, d), 0)}
            for name, d in result.deleted_manifests
        ],
        "blobs": [
            {"digest": str(digest), "size": result.blob_sizes.get(digest, 0)}
            for digest in result.deleted_blobs
        ],
        "damaged": result.damaged,
        "marked_blobs": len(result.marked),
        "reclaimed_bytes": result.reclaimed,
        "young_blobs": result.young_blobs,
        "young_manifests": result.young_manifests,
    }


async def save_report(registry: StorageRegistry, report: dict[str, Any]) -> None:
    await registry.driver.put_content(
        path_for(GcLastReport()), json.dumps(report, indent=1).encode()
    )


async def load_report(registry: StorageRegistry) -> dict[str, Any] | None:
    """The last pass's report, if a pass ever ran on this storage."""
    try:
        document = json.loads(await registry.driver.get_content(path_for(GcLastReport())))
    except (PathNotFound, ValueError):
        return None
    return document if isinstance(document, dict) else None
