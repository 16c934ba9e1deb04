"""When each manifest was last pulled, for retention policies that keep what is used.

A pull (a GET or HEAD of a manifest, by tag or by digest) is noted in memory
on the request path and written down by the background maintenance loop,
never before the reply: a lost note only makes a manifest look less used, and
retention never depends on it for safety (the grace period does that). Each
record is an empty file (``paths.ManifestPulled``) whose modification time is
the pull, so one listing of a repository's records gives every time, with no
read per manifest. A record is written at most once per ``every`` seconds per
manifest and process.
"""

from __future__ import annotations

import time
from contextlib import suppress

from cargohold.digest import Digest
from cargohold.errors import DigestInvalid, PathNotFound
from cargohold.storage.driver.base import StorageDriver
from cargohold.storage.paths import ManifestPulled, PullsDir, digest_from_path, path_for

__all__ = ["PullRecords"]


class PullRecords:
    """The pulls of manifests of one storage, written down at most once per ``every`` seconds."""

    __slots__ = ("_driver", "_noted", "_written", "every")

    def __init__(self, driver: StorageDriver, every: float) -> None:
        self._driver = driver
        self.every = every
        #: Pulls noted since the last flush.
        self._noted: set[tuple[str, Digest]] = set()
        #: When this process last wrote each record (monotonic).
        self._written: dict[tuple[str, Digest], float] = {}

    def note(self, name: str, digest: Digest) -> None:
        """Manifest ``digest`` of ``name`` was pulled now. Quick: nothing is written here."""
        self._noted.add((name, digest))

    async def flush(self) -> None:
        """Write down the pulls noted whose records are due; raises what storage raises
        (what is not written stays noted)."""
        now = time.monotonic()
        noted, self._noted = self._noted, set()
        for key in noted:
            if now - self._written.get(key, -1e18) < self.every:
                continue
            try:
                await self._driver.put_content(path_for(ManifestPulled(*key)), b"")
            except BaseException:
                self._noted |= noted
                raise
            self._written[key] = now
        horizon = now - self.every
        for key in [k for k, at in self._written.items() if at < horizon]:
            del self._written[key]

    async def last_pulls(self, name: str) -> dict[Digest, float]:
        """When each manifest of ``name`` that was ever recorded pulled was last pulled."""
        found: dict[Digest, float] = {}
        try:
            async for info in self._driver.walk(path_for(PullsDir(name))):
                if info.is_dir:
                    continue
                with suppress(DigestInvalid):
                    found[digest_from_path(info.path)] = info.modtime.timestamp()
        except PathNotFound:
            pass
        return found

    async def forget(self, name: str, digest: Digest) -> None:
        """The manifest is gone: its record goes too."""
        self._written.pop((name, digest), None)
        with suppress(PathNotFound):
            await self._driver.delete(path_for(ManifestPulled(name, digest)))
