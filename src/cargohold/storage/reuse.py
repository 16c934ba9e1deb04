"""When each blob was last found reused, so that garbage collection while serving spares it.

A client that finds a blob (a ``HEAD``, a mount, a push of content already
stored, a manifest naming it) will not upload it again: it may reference it
in a manifest at any moment. Each such find is written down here, at most
once per ``every`` seconds per blob, in ``paths.BlobTouched`` (a time, as
text), and a collection deletes no blob found within its grace period.

Finds on the request fast path cannot wait for a write: they are kept in
memory and written by ``flush``, which the registry's maintenance calls every
second. A collection in this process sees those too (``last_reuse``).
"""

from __future__ import annotations

import logging
import time
from contextlib import suppress

from cargohold.digest import Digest
from cargohold.errors import CargoholdError, PathNotFound
from cargohold.storage.driver.base import StorageDriver
from cargohold.storage.paths import BlobTouched, path_for

__all__ = ["ReuseRecords"]

log = logging.getLogger("cargohold.gc")


class ReuseRecords:
    """The finds of blobs of one storage, written down at most once per ``every`` seconds."""

    __slots__ = ("_driver", "_pending", "_written", "every")

    def __init__(self, driver: StorageDriver, every: float) -> None:
        self._driver = driver
        self.every = every
        #: When this process last noted each blob (monotonic).
        self._written: dict[Digest, float] = {}
        #: Finds not written yet: blob → when (epoch seconds).
        self._pending: dict[Digest, float] = {}

    def reused(self, digest: Digest) -> None:
        """A find of ``digest``; written by the next ``flush`` when one is due."""
        now = time.monotonic()
        if now - self._written.get(digest, -1e18) >= self.every:
            self._written[digest] = now
            self._pending[digest] = time.time()

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for digest, when in pending.items():
            try:
                await self._driver.put_content(path_for(BlobTouched(digest)), b"%.3f" % when)
            except CargoholdError as exc:
                log.warning("could not record a reuse of blob %s: %s", digest, exc)
                self._written.pop(digest, None)  # tried again at the next find
        # Entries past their interval would be written anew anyway: forget them.
        horizon = time.monotonic() - self.every
        for digest in [d for d, at in self._written.items() if at < horizon]:
            del self._written[digest]

    async def last_reuse(self, digest: Digest) -> float | None:
        """When ``digest`` was last found reused (epoch seconds), if ever."""
        pending = self._pending.get(digest)
        try:
            text = await self._driver.get_content(path_for(BlobTouched(digest)))
            recorded: float | None = float(text)
        except PathNotFound:
            recorded = None
        except ValueError:
            recorded = time.time()  # a damaged record: the blob is taken as just reused
        found = [t for t in (pending, recorded) if t is not None]
        return max(found) if found else None

    async def forget(self, digest: Digest) -> None:
        """The blob is gone: its record goes too."""
        self._written.pop(digest, None)
        self._pending.pop(digest, None)
        with suppress(PathNotFound):
            await self._driver.delete(path_for(BlobTouched(digest)))
