"""The referrers index: for each subject, the manifests that name it as their ``subject``.

Each entry is the referrer's descriptor as the referrers API returns it
(media type, digest, size, artifactType, annotations), stored as JSON at
``_referrers/<subject>/<referrer>/descriptor``. An entry whose manifest has
been deleted behind cargohold's back (by a Go registry sharing the storage,
say) is skipped when listing, because the revision link is checked.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import suppress

from cargohold.descriptor import Descriptor
from cargohold.digest import Digest
from cargohold.errors import ManifestInvalid, PathNotFound
from cargohold.storage.driver.base import StorageDriver
from cargohold.storage.paths import (
    ManifestRevisionLink,
    ReferrerDescriptor,
    ReferrersDir,
    path_for,
)


class ReferrersIndex:
    def __init__(self, name: str, driver: StorageDriver) -> None:
        self.name = name
        self._driver = driver

    async def add(self, subject: Digest, referrer: Descriptor) -> None:
        await self._driver.put_content(*self.add_write(subject, referrer))

    def add_write(self, subject: Digest, referrer: Descriptor) -> tuple[str, bytes]:
        """The file write that lists ``referrer`` under ``subject``, for a batch."""
        path = path_for(ReferrerDescriptor(self.name, subject, referrer.digest))
        return path, json.dumps(referrer.to_json()).encode()

    async def remove(self, subject: Digest, referrer: Digest) -> None:
        path = path_for(ReferrerDescriptor(self.name, subject, referrer))
        with suppress(PathNotFound):
            await self._driver.delete(path.rpartition("/")[0])

    async def list(self, subject: Digest, artifact_type: str | None = None) -> list[Descriptor]:
        """The referrers of ``subject``, sorted by digest, optionally of one artifact type."""
        try:
            paths = [
                info.path
                async for info in self._driver.walk(path_for(ReferrersDir(self.name, subject)))
                if not info.is_dir and info.path.endswith("/descriptor")
            ]
        except PathNotFound:
            return []
        found = await asyncio.gather(*(self._load(path) for path in paths))
        referrers = [d for d in found if d is not None]
        if artifact_type is not None:
            referrers = [d for d in referrers if d.artifact_type == artifact_type]
        return sorted(referrers, key=lambda d: str(d.digest))

    async def _load(self, path: str) -> Descriptor | None:
        try:
            descriptor = Descriptor.from_json(json.loads(await self._driver.get_content(path)))
            await self._driver.stat(path_for(ManifestRevisionLink(self.name, descriptor.digest)))
        except (PathNotFound, ValueError, ManifestInvalid):
            return None  # deleted meanwhile, or damaged: not a referrer any more
        return descriptor
