"""Upload purging: uploads abandoned for longer than the purge age are removed.

As Distribution's ``maintenance.uploadpurging`` (168 h old, checked every 24 h):
an upload's age is its ``startedat``; an upload folder without a readable one
(a commit under way removed it, or one cut short) is judged by the newest
modification time in it, the folder's own included. Every process may run it:
deletes are idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta

from cargohold.errors import PathNotFound, StorageDriverError
from cargohold.registry import PurgedUpload, Upkeep
from cargohold.storage.driver.base import FileInfo, StorageDriver
from cargohold.storage.paths import REPOSITORIES, parse_startedat

log = logging.getLogger("cargohold.purge")


async def purge_uploads(
    driver: StorageDriver, older_than: datetime, *, dry_run: bool = False
) -> list[PurgedUpload]:
    """Delete every upload folder started before ``older_than``; returns what went."""
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
            # Sized here, the old ones only: descending into every upload folder in
            # the walk would cost a listing per upload (on S3, a request each).
            purged.append(PurgedUpload(info.path, await _data_size(driver, info)))
            if not dry_run:
                with suppress(PathNotFound):  # finished or purged meanwhile
                    await driver.delete(info.path)
    return purged


async def _data_size(driver: StorageDriver, info: FileInfo) -> int:
    """Bytes the upload received: none when it never got a chunk (or is gone already)."""
    try:
        # Not ``stat``: an upload's data is never committed, and until then a
        # driver may keep it where stat does not look (S3's multipart upload).
        return await driver.written_size(f"{info.path}/data")
    except PathNotFound:
        return 0


async def _started_at(driver: StorageDriver, info: FileInfo) -> datetime:
    try:
        return parse_startedat(await driver.get_content(f"{info.path}/startedat"))
    except (PathNotFound, ValueError):
        return await _last_written(driver, info)


async def _last_written(driver: StorageDriver, info: FileInfo) -> datetime:
    """The newest time in an upload folder without a readable ``startedat``.

    A commit removes it before verifying the data it moved aside, and an object
    store gives a folder the epoch for a time: judged by the folder alone, a commit
    under way would be purged. What a commit cut short left goes once as old.
    """
    newest = info.modtime
    with suppress(PathNotFound):  # finished or purged meanwhile
        async for entry in driver.walk(info.path):
            newest = max(newest, entry.modtime)
    return newest


async def run_purger(
    upkeep: Upkeep,
    age: float,
    interval: float,
    *,
    dry_run: bool = False,
    on_purged: Callable[[int, int], None] | None = None,
) -> None:
    """Purge every ``interval`` seconds, starting after a random delay.

    The delay spreads the work of many processes started together, as
    Distribution's jitter does. ``on_purged`` hears how many uploads each run
    removed, and how many bytes of their data (metrics); a dry run removes none.
    """
    await asyncio.sleep(random.uniform(0, min(interval, 3600.0)))
    while True:
        cutoff = datetime.now(UTC) - timedelta(seconds=age)
        try:
            purged = await upkeep.purge_uploads(cutoff, dry_run=dry_run)
            reclaimed = sum(upload.size for upload in purged)
            if on_purged is not None and dry_run:
                on_purged(0, 0)  # still a run, though it removed nothing
            elif on_purged is not None:
                on_purged(len(purged), reclaimed)
            if purged:
                log.info(
                    "%s %d uploads (%d bytes) older than %s",
                    "would purge" if dry_run else "purged",
                    len(purged),
                    reclaimed,
                    cutoff.isoformat(),
                )
        except StorageDriverError as exc:
            log.warning("upload purging failed: %s", exc)
        await asyncio.sleep(interval)
