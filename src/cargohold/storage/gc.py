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

Run it while no one pushes (read-only mode, or the registry stopped): a blob
uploaded between mark and sweep, before its manifest arrives, is unreferenced
and would be collected.

A shared cache (Redis) outlives this process, and registries trust its entries
for repository membership, so an entry left for a swept blob says "layer already
exists" to every client (Distribution's known bug after a collection). A clear
that cannot reach Redis waits in the cache's in-memory journal, which dies with
this process. So the sweep refuses to start while the shared cache does not
answer (``CacheUnreachable``), and after it the journal is drained with a ping;
if that fails, ``Collection.cache_stale`` says so.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import dataclass, field

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
from cargohold.manifest.schema1 import SignedManifest
from cargohold.storage.paths import (
    LayersDir,
    ManifestRevisionsDir,
    RegistryRoot,
    digest_from_path,
    path_for,
)
from cargohold.storage.registry import StorageRegistry

log = logging.getLogger("cargohold.gc")


class CacheUnreachable(CargoholdError):
    """The shared blob descriptor cache does not answer, so nothing was swept."""


@dataclass
class Collection:
    """What a collection found and did (or, in a dry run, would do)."""

    marked: set[Digest] = field(default_factory=set)
    deleted_blobs: list[Digest] = field(default_factory=list)
    deleted_manifests: list[tuple[str, Digest]] = field(default_factory=list)
    deleted_links: list[tuple[str, Digest]] = field(default_factory=list)
    #: Bytes of the deleted blobs, as storage listed them: what the collection reclaimed.
    reclaimed: int = 0
    #: The shared cache did not acknowledge every clear: until its entries expire,
    #: registries may still report swept blobs as present.
    cache_stale: bool = False


@dataclass
class Revision:
    digest: Digest
    references: list[Digest]
    children: list[Digest]
    subject: Digest | None
    tagged: bool


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
    registry: StorageRegistry, *, dry_run: bool = False, delete_untagged: bool = False
) -> Collection:
    result = Collection()
    links: dict[str, set[Digest]] = {}
    for name in await registry.catalog():
        revisions = await revisions_of(registry, name)
        kept = _keep(revisions, delete_untagged)
        for revision in revisions.values():
            if revision.digest in kept:
                result.marked.add(revision.digest)
                result.marked.update(revision.references)
            else:
                result.deleted_manifests.append((name, revision.digest))
        links[name] = await layer_links(registry, name)

    stored = await _all_blobs(registry)
    for digest in sorted(stored):
        if digest not in result.marked:
            result.deleted_blobs.append(digest)
            result.reclaimed += stored[digest]
    swept = set(result.deleted_blobs)
    for name, digests in links.items():
        result.deleted_links.extend((name, d) for d in sorted(digests & swept))

    if not dry_run:
        if not await _cache_answers(registry):
            raise CacheUnreachable(
                "the shared blob descriptor cache (Redis) does not answer; nothing was "
                "deleted, since its entries for swept blobs could not be cleared"
            )
        await _delete(registry, result)
        # Clears that failed wait in the cache's journal; the ping replays them.
        result.cache_stale = not await _cache_answers(registry)
    return result


async def _cache_answers(registry: StorageRegistry) -> bool:
    """Whether the shared cache answers now, every clear sent so far included."""
    cache = registry.blobs.cache
    if cache is None or not cache.shared:
        return True  # an in-process cache dies with this process: nothing to leave behind
    return await cache.ping()


async def _delete(registry: StorageRegistry, result: Collection) -> None:
    # Whatever is already gone was deleted by someone else: the goal is reached.
    for name, digest in result.deleted_manifests:
        log.info("deleting manifest %s@%s", name, digest)
        with suppress(ManifestUnknown):
            await registry.repository(name).manifests.remove(digest)
    for name, digest in result.deleted_links:
        with suppress(BlobUnknown):
            await registry.repository(name).blobs.unlink(digest)
    for digest in result.deleted_blobs:
        log.info("deleting blob %s", digest)
        with suppress(BlobUnknown):
            await registry.blobs.delete(digest)


def _keep(revisions: dict[Digest, Revision], delete_untagged: bool) -> set[Digest]:
    """The revisions that stay: all of them, or the tagged ones and what they need."""
    if not delete_untagged:
        return set(revisions)
    kept = {d for d, r in revisions.items() if r.tagged}
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


async def revisions_of(registry: StorageRegistry, name: str) -> dict[Digest, Revision]:
    driver = registry.driver
    repo = registry.repository(name)
    tagged = set()
    for tag in await repo.tags.all():
        with suppress(ManifestUnknown):  # a damaged tag keeps nothing alive
            tagged.add(await repo.tags.get(tag))
    found: dict[Digest, Revision] = {}
    try:
        walk = driver.walk(path_for(ManifestRevisionsDir(name)))
        links = [info.path async for info in walk if info.path.endswith("/link")]
    except PathNotFound:
        return found
    for link in links:
        if "/signatures/" in link:
            continue
        try:
            digest = digest_from_path(link)
            payload = await registry.blobs.get(digest)
        except (DigestInvalid, BlobUnknown):
            continue  # a link to nothing keeps nothing alive
        found[digest] = _describe(digest, payload, digest in tagged)
    return found


def _describe(digest: Digest, payload: bytes, tagged: bool) -> Revision:
    manifest: Manifest
    try:
        media_type = media_type_of(payload)
        if media_type.startswith("application/vnd.docker.distribution.manifest.v1"):
            manifest = SignedManifest.from_canonical(payload)
        else:
            manifest = parse_manifest(payload, media_type)
    except (ManifestInvalid, ManifestUnverified, NameInvalid, DigestInvalid) as exc:
        # Refusing to guess: a manifest we cannot read may reference anything.
        raise ManifestInvalid(f"cannot read manifest {digest} to collect garbage: {exc}") from exc
    subject = manifest.subject.digest if manifest.subject is not None else None
    return Revision(
        digest,
        [d.digest for d in manifest.references()],
        [d.digest for d in manifest.manifests()],
        subject,
        tagged,
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


async def _all_blobs(registry: StorageRegistry) -> dict[Digest, int]:
    """Every blob in storage, and its size."""
    return {digest: size async for digest, size in registry.blobs.enumerate_sizes()}
