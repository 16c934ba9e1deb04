"""Upload purging: uploads abandoned for longer than the purge age are removed.

As Distribution's ``maintenance.uploadpurging`` (168 h old, checked every 24 h):
an upload's age is its ``startedat``; an upload folder without a readable one
is judged by the folder's modification time. Every process may run it: deletes
are idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta

from cargohold.errors import PathNotFound, StorageDriverError
from cargohold.registry import Upkeep
from cargohold.storage.driver.base import FileInfo, StorageDriver
from cargohold.storage.paths import REPOSITORIES, parse_startedat

log = logging.getLogger("cargohold.purge")


async def purge_uploads(
    driver: StorageDriver, older_than: datetime, *, dry_run: bool = False
) -> list[str]:
    """Delete every upload folder started before ``older_than``; returns their paths."""
    upload_dirs: list[FileInfo] = []

    def descend(info: FileInfo) -> bool:
        leaf = info.path.rpartition("/")[2]
        if info.path.rpartition("/")[0].endswith("/_uploads"):
            upload_dirs.append(info)
            return False
        return leaf == "_uploads" or not leaf.startswith("_")

    try:
        async for _ in driver.walk(REPOSITORIES, descend):
            pass
    except PathNotFound:
        return []
    purged = []
    for info in upload_dirs:
        if await _started_at(driver, info) < older_than:
            purged.append(info.path)
            if not dry_run:
                with suppress(PathNotFound):  # finished or purged meanwhile
                    await driver.delete(info.path)
    return purged


async def _started_at(driver: StorageDriver, info: FileInfo) -> datetime:
    try:
        return parse_startedat(await driver.get_content(f"{info.path}/startedat"))
    except (PathNotFound, ValueError):
        return info.modtime


async def run_purger(
    upkeep: Upkeep,
    age: float,
    interval: float,
    *,
    dry_run: bool = False,
    on_purged: Callable[[int], None] | None = None,
) -> None:
    """Purge every ``interval`` seconds, starting after a random delay.

    The delay spreads the work of many processes started together, as
    Distribution's jitter does. ``on_purged`` hears how many uploads each run
    removed (metrics).
    """
    await asyncio.sleep(random.uniform(0, min(interval, 3600.0)))
    while True:
        cutoff = datetime.now(UTC) - timedelta(seconds=age)
        try:
            purged = await upkeep.purge_uploads(cutoff, dry_run=dry_run)
            if on_purged is not None:
                on_purged(0 if dry_run else len(purged))
            if purged:
                log.info("purged %d uploads older than %s", len(purged), cutoff.isoformat())
        except StorageDriverError as exc:
            log.warning("upload purging failed: %s", exc)
        await asyncio.sleep(interval)
