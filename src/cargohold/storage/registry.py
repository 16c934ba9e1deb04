"""The registry on a storage driver: implements the Protocols of ``cargohold.registry``."""

from __future__ import annotations

import asyncio
import bisect
import heapq
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cargohold.descriptor import Descriptor
from cargohold.digest import Digest
from cargohold.errors import PathNotFound
from cargohold.manifest.urls import URLPolicy
from cargohold.reference import validate_name
from cargohold.storage.blobstore import GlobalBlobStore
from cargohold.storage.cache import BlobDescriptorCache
from cargohold.storage.driver.base import StorageDriver
from cargohold.storage.driver.filesystem import FilesystemDriver
from cargohold.storage.linkedblobstore import LinkedBlobStore, ManifestBlobStore
from cargohold.storage.local import LocalCatalog
from cargohold.storage.manifeststore import ManifestStore
from cargohold.storage.paths import (
    REPOSITORY_MARKERS,
    RepositoriesRoot,
    RepositoryDir,
    path_for,
    repository_name,
)
from cargohold.storage.referrers import ReferrersIndex
from cargohold.storage.tagstore import TagStore
from cargohold.storage.uploads import HasherCache

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec


@dataclass(frozen=True)
class RegistryOptions:
    """What ``config.yml`` decides about the storage layer's behaviour."""

    delete_enabled: bool = False
    #: ``validation.manifests.urls``: what a foreign layer's URLs must (not) match.
    url_policy: URLPolicy = field(default_factory=URLPolicy)
    #: Signs schema1 manifests stored without signatures (``compatibility.schema1.signingkeyfile``);
    #: a fresh key per process when not configured, as Distribution does.
    schema1_key: ec.EllipticCurvePrivateKey | None = None


class StorageRegistry:
    """A namespace of repositories kept by a storage driver."""

    def __init__(
        self,
        driver: StorageDriver,
        *,
        cache: BlobDescriptorCache | None = None,
        options: RegistryOptions | None = None,
    ) -> None:
        self.driver = driver
        self.options = options or RegistryOptions()
        self.blobs = GlobalBlobStore(driver, cache)
        self.hashers = HasherCache()
        self._schema1_key: ec.EllipticCurvePrivateKey | None = None
        # On a local disk the catalog is scanned directly, and rescanned only on change.
        self._local_catalog = (
            LocalCatalog(driver.root) if isinstance(driver, FilesystemDriver) else None
        )

    def schema1_key(self) -> ec.EllipticCurvePrivateKey:
        """The key that signs stored schema1 manifests served without signatures."""
        if self._schema1_key is None:
            # Imported and made on first need: most registries never serve schema1.
            from cryptography.hazmat.primitives.asymmetric import ec

            self._schema1_key = self.options.schema1_key or ec.generate_private_key(ec.SECP256R1())
        return self._schema1_key

    def repository(self, name: str) -> StorageRepository:
        return StorageRepository(self, validate_name(name))

    async def catalog(self, n: int | None = None, last: str | None = None) -> list[str]:
        if self._local_catalog is None:
            return await self._walk_catalog(n, last)
        # Checking a cached scan is quick enough for the loop; a scan is not.
        cached = self._local_catalog.cached()
        names = cached if cached is not None else await asyncio.to_thread(self._local_catalog.names)
        if last is not None:
            names = names[bisect.bisect_right(names, last) :]
        return names if n is None else names[:n]

    async def _walk_catalog(self, n: int | None, last: str | None) -> list[str]:
        """The names after ``last``, in order, up to ``n``, one listing per folder visited.

        On object storage each listing is a request, so the walk lists folders in name
        order and stops once it has ``n`` names: a folder's name sorts before every
        name below it, so listing the smallest pending folder next finds the names in
        order. Folders whose names all sort at or before ``last`` are never listed:
        below ``x`` every name is ``x`` or starts ``x/``, so sorts before ``x0``.
        """
        found: list[str] = []
        pending: list[str] = []  # folders to list, by repository-name prefix

        def consider(path: str) -> None:
            # A repository's own folders start with "_"; names never do.
            if path.rpartition("/")[2].startswith("_"):
                return
            name = repository_name(path)
            if last is not None and name + "0" <= last:
                return
            heapq.heappush(pending, name)

        try:
            top = await self.driver.list(path_for(RepositoriesRoot()))
        except PathNotFound:
            return []
        for path in top:
            consider(path)
        while pending and (n is None or len(found) < n):
            name = heapq.heappop(pending)
            try:
                children = await self.driver.list(path_for(RepositoryDir(name)))
            except PathNotFound:
                continue  # deleted since its parent was listed
            leaves = {child.rpartition("/")[2] for child in children}
            if leaves & REPOSITORY_MARKERS and (last is None or name > last):
                found.append(name)
            for child in children:
                consider(child)
        return found

    async def close(self) -> None:
        close_cache = getattr(self.blobs.cache, "close", None)
        if close_cache is not None:
            await close_cache()
        await self.driver.close()


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
        self._tags = TagStore(name, registry.driver)
        self._referrers = ReferrersIndex(name, registry.driver)
        self._manifests = ManifestStore(
            ManifestBlobStore(name, registry.blobs, delete_enabled=options.delete_enabled),
            self._blobs,
            self._tags,
            self._referrers,
            url_policy=options.url_policy,
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
