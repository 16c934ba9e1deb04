"""When each blob was last found reused, so that garbage collection while serving spares it.

A client that finds a blob (a ``HEAD``, a mount, a push of content already
stored, a manifest naming it) will not upload it again: it may reference it
in a manifest at any moment. Each such find is written down here before it
is answered (``paths.BlobTouched``: a time, as text), at most once per
``every`` seconds per blob and process, and a collection deletes no blob
found within its grace period.

Written before the answer, and the blob's presence read again after the
write: a collection hides a blob (``gc.py``) before it reads its record, so
either the find saw the blob hidden and answered "unknown", or its record is
there for the collection to see, and the blob is put back. A find that is
not due (written within ``every``) is covered by the record written then,
which is younger than any grace period.
"""

from __future__ import annotations

import time
from contextlib import suppress

from cargohold.digest import Digest
from cargohold.errors import PathNotFound
from cargohold.storage.driver.base import StorageDriver
from cargohold.storage.paths import BlobTouched, path_for

__all__ = ["ReuseRecords"]


class ReuseRecords:
    """The finds of blobs of one storage, written down at most once per ``every`` seconds."""

    __slots__ = ("_driver", "_written", "every")

    def __init__(self, driver: StorageDriver, every: float) -> None:
        self._driver = driver
        self.every = every
        #: When this process last wrote each blob's record (monotonic).
        self._written: dict[Digest, float] = {}

    def due(self, digest: Digest) -> bool:
        """Whether a find of ``digest`` must be written down before it is answered."""
        return time.monotonic() - self._written.get(digest, -1e18) >= self.every

    async def found(self, digest: Digest, *, now: bool = False) -> None:
        """Write down a find of ``digest``, if one is due (``now``: whether or not);
        raises what storage raises."""
        if not now and not self.due(digest):
            return
        await self._driver.put_content(path_for(BlobTouched(digest)), b"%.3f" % time.time())
        self._written[digest] = time.monotonic()

    async def flush(self) -> None:
        """Forget what is past its interval: it would be written anew anyway."""
        horizon = time.monotonic() - self.every
        for digest in [d for d, at in self._written.items() if at < horizon]:
            del self._written[digest]

    async def last_reuse(self, digest: Digest) -> float | None:
        """When ``digest`` was last found reused (epoch seconds), if ever."""
        try:
            text = await self._driver.get_content(path_for(BlobTouched(digest)))
        except PathNotFound:
            return None
        try:
            return float(text)
        except ValueError:
            return time.time()  # a damaged record: the blob is taken as just reused

    async def forget(self, digest: Digest) -> None:
        """The blob is gone: its record goes too."""
        self._written.pop(digest, None)
        with suppress(PathNotFound):
            await self._driver.delete(path_for(BlobTouched(digest)))
