"""Expiry of a mirror's cached content, kept in storage so every process and restart shares it.

Each cached manifest and blob of a mirrored repository has a record of when
it was last used (``paths.CacheUse``: a time, refreshed at most once per
``refresh`` interval when the content is served). A sweep then, for each
mirrored repository:

1. removes the manifests (and their tags) unused for longer than the ttl;
2. unlinks the blobs unused for longer than the ttl that no manifest still
   cached there references, so a layer lives as long as any image using it;
3. deletes the content of every manifest and blob so removed that no
   repository links and no live cached manifest anywhere references: shared
   content is never deleted under another repository (Distribution #2367),
   and expiry frees the space (#4957), whatever ``storage.delete`` says (#4249).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cargohold.digest import Digest
from cargohold.errors import (
    BlobUnknown,
    CargoholdError,
    DigestInvalid,
    ManifestUnknown,
    PathNotFound,
)
from cargohold.storage.driver.base import StorageDriver
from cargohold.storage.gc import layer_links, revisions_of
from cargohold.storage.paths import (
    CacheUse,
    CacheUseDir,
    ManifestRevisionsDir,
    RepositoryDir,
    SchedulerState,
    digest_from_path,
    parse_startedat,
    path_for,
    startedat_content,
)
from cargohold.storage.registry import StorageRegistry

__all__ = ["BLOBS", "MANIFESTS", "Swept", "UseRecords", "adopt_schedule", "sweep"]

log = logging.getLogger("cargohold.proxy")

MANIFESTS = "manifests"
BLOBS = "blobs"


def refresh_interval(ttl: float) -> float:
    """How often a use of cached content is written down: a fraction of the ttl, at most an hour."""
    return min(ttl / 4, 3600.0)


class UseRecords:
    """When each cached manifest and blob was last used."""

    def __init__(self, driver: StorageDriver) -> None:
        self._driver = driver
        #: When this process last wrote each record (monotonic).
        self._written: dict[tuple[str, str, Digest], float] = {}
        #: Uses seen on the fast path, written by the next ``flush``.
        self._pending: dict[tuple[str, str, Digest], float] = {}

    def used(self, name: str, kind: str, digest: Digest, every: float) -> None:
        """A use seen where nothing may wait: written by the next flush, if due."""
        key = (name, kind, digest)
        now = time.monotonic()
        if now - self._written.get(key, -1e18) >= every:
            self._written[key] = now
            self._pending[key] = time.time()

    async def write(self, name: str, kind: str, digest: Digest) -> None:
        """Record a use now (content just cached)."""
        key = (name, kind, digest)
        self._written[key] = time.monotonic()
        self._pending.pop(key, None)
        await self._put(name, kind, digest, time.time())

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for (name, kind, digest), when in pending.items():
            try:
                await self._put(name, kind, digest, when)
            except CargoholdError as exc:
                log.warning("could not record a use of %s@%s: %s", name, digest, exc)

    def forget(self, name: str, kind: str, digest: Digest) -> None:
        self._written.pop((name, kind, digest), None)

    async def _put(self, name: str, kind: str, digest: Digest, when: float) -> None:
        stamp = startedat_content(datetime.fromtimestamp(when, UTC))
        await self._driver.put_content(path_for(CacheUse(name, kind, digest)), stamp)

    async def read(self, name: str, kind: str) -> dict[Digest, float]:
        """Every record of ``kind`` in repository ``name``: digest → last use (epoch seconds)."""
        found: dict[Digest, float] = {}
        try:
            walk = self._driver.walk(path_for(CacheUseDir(name, kind)))
            paths = [info.path async for info in walk if info.path.endswith("/used")]
        except PathNotFound:
            return found
        for path in paths:
            try:
                digest = digest_from_path(path)
                found[digest] = parse_startedat(await self._driver.get_content(path)).timestamp()
            except (DigestInvalid, ValueError, PathNotFound):
                continue  # damaged or just removed: the next sweep writes it anew
        return found

    async def adopt(self, name: str, kind: str, digest: Digest, when: float) -> bool:
        """Record a use at ``when`` unless one is recorded already; whether it was."""
        path = path_for(CacheUse(name, kind, digest))
        try:
            await self._driver.stat(path)
        except PathNotFound:
            await self._put(name, kind, digest, when)
            return True
        return False

    async def remove(self, name: str, kind: str, digest: Digest) -> None:
        self.forget(name, kind, digest)
        with suppress(PathNotFound):
            await self._driver.delete(path_for(CacheUse(name, kind, digest)).rsplit("/", 1)[0])


#: Distribution's scheduler: entry types.
_GO_BLOB, _GO_MANIFEST = 0, 1
_GO_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _go_time(text: str) -> float:
    """An RFC 3339 time as Go writes it (nanoseconds, ``Z``), in epoch seconds."""
    match = _GO_TIME.match(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    whole, fraction, zone = match.groups()
    stamp = datetime.fromisoformat(whole + ("+00:00" if zone == "Z" else zone))
    return stamp.timestamp() + (float(fraction) if fraction else 0.0)


async def adopt_schedule(
    driver: StorageDriver, uses: UseRecords, ttl_of: Callable[[str], float | None]
) -> int:
    """Take over the schedule a Distribution proxy left in this storage: each entry's
    expiry is kept, as a use one ttl before it. How many entries were taken."""
    try:
        document = json.loads(await driver.get_content(path_for(SchedulerState())))
    except PathNotFound:
        return 0
    except ValueError as exc:
        log.warning("Distribution's proxy schedule is unreadable, left alone: %s", exc)
        return 0
    adopted = 0
    for entry in document.values() if isinstance(document, dict) else ():
        try:
            name, _, digest = entry["Key"].partition("@")
            kind = {_GO_BLOB: BLOBS, _GO_MANIFEST: MANIFESTS}[entry["EntryType"]]
            expiry = _go_time(entry["ExpiryData"])
            digest = Digest.parse(digest)
        except (KeyError, TypeError, AttributeError, ValueError, DigestInvalid):
            continue  # an entry of another shape: its content simply starts its ttl now
        ttl = ttl_of(name)
        if ttl and await uses.adopt(name, kind, digest, expiry - ttl):
            adopted += 1
    return adopted


@dataclass
class Swept:
    """What one sweep removed."""

    manifests: list[tuple[str, Digest]] = field(default_factory=list)
    links: list[tuple[str, Digest]] = field(default_factory=list)
    blobs: list[Digest] = field(default_factory=list)
    repositories: list[str] = field(default_factory=list)


async def sweep(
    registry: StorageRegistry,
    uses: UseRecords,
    ttl_of: Callable[[str], float | None],
    busy: Callable[[str | None, Digest | None], bool],
) -> Swept:
    """Expire what has not been used within its ttl; ``ttl_of`` gives a repository's ttl
    (None: not a mirror; 0: never expires), ``busy`` whether a fill is under way
    (in a repository, or of a digest)."""
    swept = Swept()
    keep: set[Digest] = set()
    candidates: set[Digest] = set()
    now = time.time()
    for name in await registry.catalog():
        ttl = ttl_of(name)
        if ttl is None:
            continue
        try:
            revisions = await revisions_of(registry, name)
        except CargoholdError as exc:
            log.warning("cannot read the manifests of %s to expire them: %s", name, exc)
            continue
        manifest_uses = await uses.read(name, MANIFESTS)
        blob_uses = await uses.read(name, BLOBS)
        repository = registry.repository(name)
        live: set[Digest] = set()
        for digest in revisions:
            used = manifest_uses.pop(digest, None)
            if used is None:
                # Cached before records were kept (or adopted): its ttl starts now.
                await uses.write(name, MANIFESTS, digest)
            elif ttl and used < now - ttl:
                with suppress(ManifestUnknown):
                    await repository.manifests.remove(digest)
                await uses.remove(name, MANIFESTS, digest)
                swept.manifests.append((name, digest))
                candidates.add(digest)
                continue
            live.add(digest)
        for digest in manifest_uses:  # records of manifests gone already
            await uses.remove(name, MANIFESTS, digest)
        referenced = set(live)
        for digest in live:
            referenced.update(revisions[digest].references, revisions[digest].children)
        keep |= referenced
        for digest, used in blob_uses.items():
            if digest in referenced or not ttl or used >= now - ttl or busy(name, digest):
                continue
            with suppress(BlobUnknown):
                await repository.blobs.unlink(digest)
            await uses.remove(name, BLOBS, digest)
            swept.links.append((name, digest))
            candidates.add(digest)
        if not live and not busy(name, None) and not await layer_links(registry, name):
            # Nothing cached is left: the repository goes too, so the catalog forgets it.
            with suppress(PathNotFound):
                await registry.driver.delete(path_for(RepositoryDir(name)))
            swept.repositories.append(name)
    candidates -= keep
    if candidates:
        linked = await _linked_anywhere(registry)
        for digest in sorted(candidates - linked):
            if busy(None, digest):
                continue
            with suppress(BlobUnknown):
                await registry.blobs.delete(digest)
            swept.blobs.append(digest)
    return swept


async def _linked_anywhere(registry: StorageRegistry) -> set[Digest]:
    """Every digest some repository links, as a layer or a manifest."""
    linked: set[Digest] = set()
    for name in await registry.catalog():
        linked |= await layer_links(registry, name)
        try:
            walk = registry.driver.walk(path_for(ManifestRevisionsDir(name)))
            async for info in walk:
                if info.path.endswith("/link") and "/signatures/" not in info.path:
                    with suppress(DigestInvalid):
                        linked.add(digest_from_path(info.path))
        except PathNotFound:
            continue
    return linked
