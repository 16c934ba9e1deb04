"""The registry on a storage driver: implements the Protocols of ``cargohold.registry``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cargohold.descriptor import OCTET_STREAM, Descriptor
from cargohold.digest import Digest
from cargohold.errors import PathNotFound, RegistryError
from cargohold.manifest.urls import URLPolicy
from cargohold.reference import validate_name, validate_tag
from cargohold.registry import (
    BlobSource,
    ImmediateReads,
    PurgedUpload,
    StoredManifest,
    Upkeep,
)
from cargohold.storage.blobstore import GlobalBlobStore, content_now, size_now
from cargohold.storage.cache import BlobDescriptorCache
from cargohold.storage.catalog import catalog_for
from cargohold.storage.driver.base import ImmediateFiles, StorageDriver
from cargohold.storage.linkedblobstore import LinkedBlobStore, ManifestBlobStore, linked_now
from cargohold.storage.maintenance import GcSchedule, GcWatch, StorageMaintenance
from cargohold.storage.manifeststore import IndexChildren, ManifestStore, manifest_now
from cargohold.storage.middleware import BlobRedirects
from cargohold.storage.paths import LayerLink
from cargohold.storage.pulls import PullRecords
from cargohold.storage.purge import purge_uploads
from cargohold.storage.referrers import ReferrersIndex
from cargohold.storage.reuse import ReuseRecords
from cargohold.storage.taglists import TagLists, tag_lists_for
from cargohold.storage.tagstore import TagStore, tag_now, tags_now
from cargohold.storage.uploads import HasherCache

if TYPE_CHECKING:
    from cargohold.storage.manifeststore import SigningKey

#: The largest manifest read inline on the fast path; larger ones take the async read.
IMMEDIATE_MANIFEST_LIMIT = 4 * 1024 * 1024


@dataclass(frozen=True)
class RegistryOptions:
    """What ``config.yml`` decides about the storage layer's behaviour."""

    delete_enabled: bool = False
    #: ``validation.manifests.urls``: what a foreign layer's URLs must (not) match.
    url_policy: URLPolicy = field(default_factory=URLPolicy)
    #: Signs schema1 manifests stored without signatures (``compatibility.schema1.signingkeyfile``);
    #: a fresh key per process when not configured, as Distribution does.
    schema1_key: SigningKey | None = None
    #: ``storage.tag.concurrencylimit``: tags read at once when finding those of a manifest.
    tag_lookup_limit: int = field(default_factory=lambda: os.cpu_count() or 1)
    #: Which children of an index must be in the repository (``validation.manifests.indexes``).
    index_children: IndexChildren = field(default_factory=lambda: IndexChildren())
    #: Whether schema1 manifests may be pushed (``compatibility.schema1.enabled``).
    schema1_pushes: bool = True
    #: How often a find of a blob is written down for collection while serving
    #: (``storage/reuse.py``); None: never (collection while serving is off).
    reuse_interval: float | None = None
    #: Whether this registry says it writes to the storage (``storage/live.py``).
    heartbeat: bool = False
    #: ``storage.maintenance.gc``, when collection runs while serving.
    gc: GcSchedule | None = None
    #: How often a manifest's pull is written down for retention policies that keep what
    #: is pulled (``storage/pulls.py``); None: never.
    pull_interval: float | None = None


class StorageRegistry:
    """A namespace of repositories kept by a storage driver (implements ``registry.Namespace``).

    ``threads``, when given, is where the driver runs its blocking calls; its
    owner (the application) shuts it down after ``close``. ``gc_watch``, when
    given, is told how each collection pass while serving went. ``redirects``, when
    given, decides where blob downloads go instead of the driver (storage middleware).
    """

    def __init__(
        self,
        driver: StorageDriver,
        *,
        cache: BlobDescriptorCache | None = None,
        options: RegistryOptions | None = None,
        threads: Executor | None = None,
        gc_watch: GcWatch | None = None,
        redirects: BlobRedirects | None = None,
    ) -> None:
        if threads is not None:
            driver.use_threads(threads)
        self.driver = driver
        self.options = options or RegistryOptions()
        reuse = (
            ReuseRecords(driver, self.options.reuse_interval)
            if self.options.reuse_interval is not None
            else None
        )
        self.blobs = GlobalBlobStore(driver, cache, reuse, redirects)
        interval = self.options.pull_interval
        self.pulls = PullRecords(driver, interval) if interval is not None else None
        self.hashers = HasherCache()
        self._schema1_key: SigningKey | None = None
        self._catalog = catalog_for(driver)
        self.tag_lists = tag_lists_for(driver)
        self._maintenance: StorageMaintenance | None = None
        self._gc_watch = gc_watch
        files = driver.watched_immediate()
        self._immediate = (
            _StorageImmediateReads(
                files, redirects is not None or driver.redirects is not None, reuse, self.tag_lists
            )
            if files is not None
            else None
        )

    def schema1_key(self) -> SigningKey:
        """The key that signs stored schema1 manifests served without signatures."""
        if self._schema1_key is None:
            # Imported and made on first need: most registries never serve schema1.
            from cryptography.hazmat.primitives.asymmetric import ec

            self._schema1_key = self.options.schema1_key or ec.generate_private_key(ec.SECP256R1())
        return self._schema1_key

    def repository(self, name: str) -> StorageRepository:
        return StorageRepository(self, validate_name(name))

    async def catalog(self, n: int | None = None, last: str | None = None) -> list[str]:
        return await self._catalog.page(n, last)

    @property
    def immediate(self) -> ImmediateReads | None:
        return self._immediate

    @property
    def upkeep(self) -> Upkeep:
        return self

    @property
    def maintenance(self) -> StorageMaintenance | None:
        options = self.options
        if (
            self.blobs.reuse is None
            and self.pulls is None
            and options.gc is None
            and not options.heartbeat
        ):
            return None
        if self._maintenance is None:
            self._maintenance = StorageMaintenance(self, self.options.gc, self._gc_watch)
        return self._maintenance

    @property
    def routing(self) -> None:
        return None

    # -- upkeep -------------------------------------------------------------------------

    @property
    def storage_name(self) -> str:
        return self.driver.name

    async def purge_uploads(
        self, older_than: datetime, *, dry_run: bool = False
    ) -> list[PurgedUpload]:
        return await purge_uploads(self.driver, older_than, dry_run=dry_run)

    async def preview_collection(self) -> Mapping[str, Any]:
        from cargohold.storage.gc import collect_garbage, inventory_of

        # Without collection while serving, it is what ``cargohold gc --dry-run`` would do.
        gc = self.options.gc
        result = await collect_garbage(
            self,
            dry_run=True,
            delete_untagged=gc.delete_untagged if gc is not None else False,
            grace=gc.grace if gc is not None else None,
            retention=gc.retention if gc is not None else None,
        )
        return inventory_of(result, dry_run=True)

    async def probe_storage(self) -> str | None:
        try:
            await self.driver.stat("/")
        except PathNotFound:
            return None  # the backend answered; an empty root is not a failure
        except Exception as exc:
            return str(exc) or type(exc).__name__
        return None

    async def ping_cache(self) -> bool | None:
        cache = self.blobs.cache
        if cache is None or not cache.shared:
            return None
        return await cache.ping()

    def note_pull(self, repository: str, digest: Digest) -> None:
        if self.pulls is not None:
            self.pulls.note(repository, digest)

    async def close(self) -> None:
        self._catalog.close()
        if self.tag_lists is not None:
            self.tag_lists.close()
        if self.blobs.cache is not None:
            await self.blobs.cache.close()
        await self.blobs.redirects.close()
        await self.driver.close()


class _StorageImmediateReads:
    """``registry.ImmediateReads`` on a driver whose small reads finish at once.

    Each read is the plain case of the store that owns it (``tag_now`` beside
    ``TagStore.get``, and so on), on the same paths and the same link parser.
    Names, tags and digests are checked here as ``repository()`` checks them.
    """

    __slots__ = ("_files", "_reuse", "_tag_lists", "redirects")

    def __init__(
        self,
        files: ImmediateFiles,
        redirects: bool,
        reuse: ReuseRecords | None,
        tag_lists: TagLists | None,
    ) -> None:
        self._files = files
        self.redirects = redirects
        self._reuse = reuse
        self._tag_lists = tag_lists

    def blob(self, name: str, digest: Digest) -> BlobSource | None:
        try:
            link = LayerLink(validate_name(name), digest)
        except RegistryError:
            return None
        if not linked_now(self._files, link, digest):
            return None
        if self._reuse is not None and self._reuse.due(digest):
            return None  # its find is written down first, which takes waiting
        size = size_now(self._files, digest)
        return None if size is None else BlobSource(Descriptor(OCTET_STREAM, digest, size))

    def content(self, source: BlobSource, offset: int, length: int) -> bytes | None:
        return content_now(self._files, source.descriptor.digest, offset, length)

    def tag(self, name: str, tag: str) -> Digest | None:
        try:
            return tag_now(self._files, validate_name(name), validate_tag(tag))
        except RegistryError:
            return None

    def manifest(self, name: str, digest: Digest) -> StoredManifest | None:
        try:
            name = validate_name(name)
        except RegistryError:
            return None
        return manifest_now(self._files, name, digest, IMMEDIATE_MANIFEST_LIMIT)

    def tags(self, name: str) -> list[str] | None:
        try:
            name = validate_name(name)
        except RegistryError:
            return None
        if self._tag_lists is not None:
            return self._tag_lists.tags_now(name)
        return tags_now(self._files, name)


class StorageRepository:
    """One repository: its blobs, manifests, tags and referrers."""

    def __init__(self, registry: StorageRegistry, name: str) -> None:
        options = registry.options
        self._name = name
        self._blobs = LinkedBlobStore(
            name,
            registry.blobs,
            delete_enabled=options.delete_enabled,
            hashers=registry.hashers,
        )
        self._tags = TagStore(name, registry.driver, options.tag_lookup_limit, registry.tag_lists)
        self._referrers = ReferrersIndex(name, registry.driver)
        self._manifests = ManifestStore(
            ManifestBlobStore(name, registry.blobs, delete_enabled=options.delete_enabled),
            self._blobs,
            self._tags,
            self._referrers,
            url_policy=options.url_policy,
            index_children=options.index_children,
            schema1_pushes=options.schema1_pushes,
            delete_enabled=options.delete_enabled,
            schema1_key=registry.schema1_key,
        )

    @property
    def name(self) -> str:
        return self._name

    @property
    def blobs(self) -> LinkedBlobStore:
        return self._blobs

    @property
    def manifests(self) -> ManifestStore:
        return self._manifests

    @property
    def tags(self) -> TagStore:
        return self._tags

    async def referrers(
        self, subject: Digest, artifact_type: str | None = None
    ) -> list[Descriptor]:
        return await self._referrers.list(subject, artifact_type)
