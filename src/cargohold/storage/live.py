"""Which registry processes write to this storage now: each says so, every few seconds.

A serving registry that takes writes (not read-only) keeps a small file
(``paths.LiveRegistry``) holding when it last said so, and removes it when it
stops. Offline garbage collection, which is safe only while nothing writes,
refuses to start while any such file is fresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass

from cargohold.errors import CargoholdError, PathNotFound
from cargohold.storage.driver.base import StorageDriver
from cargohold.storage.paths import LiveRegistriesDir, LiveRegistry, RegistryRoot, path_for

__all__ = ["HEARTBEAT", "Heartbeat", "Writer", "writers"]

#: How often a registry says it is alive; a word older than three of these is stale.
HEARTBEAT = 10.0


class Heartbeat:
    """This process's word that it writes to ``driver``'s storage."""

    def __init__(self, driver: StorageDriver, records_reuse: bool) -> None:
        self._driver = driver
        #: Whether it writes down finds of blobs (collection while serving is on).
        self.records_reuse = records_reuse
        self.token = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._path = path_for(LiveRegistry(self.token))

    async def beat(self) -> bool:
        """Say it again; whether it did. Nothing while the storage holds no registry yet
        (a registry that never stored anything leaves the storage as it found it)."""
        try:
            await self._driver.stat(path_for(RegistryRoot()))
        except PathNotFound:
            return False  # asked again at the next second
        document = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "at": time.time(),
            "reuse": self.records_reuse,
        }
        await self._driver.put_content(self._path, json.dumps(document).encode())
        return True

    async def stop(self) -> None:
        with contextlib.suppress(PathNotFound, CargoholdError):
            await self._driver.delete(self._path)


@dataclass(frozen=True)
class Writer:
    """A registry process that said lately that it writes here."""

    who: str
    records_reuse: bool


async def writers(driver: StorageDriver) -> list[Writer]:
    """The registry processes that said within the last three heartbeats that they write here."""
    try:
        paths = await driver.list(path_for(LiveRegistriesDir()))
    except PathNotFound:
        return []
    alive = []
    for path in paths:
        try:
            document = json.loads(await driver.get_content(path))
            at = float(document["at"])
        except (PathNotFound, ValueError, KeyError, TypeError):
            continue
        if time.time() - at < 3 * HEARTBEAT:
            who = f"pid {document.get('pid')} on {document.get('host')}"
            alive.append(Writer(who, document.get("reuse") is True))
    return alive
