"""What a storage registry does in the background while it serves.

- Finds of blobs noted on the request path are written down every second
  (``reuse.py``), for collections while serving.
- A registry that takes writes says so every few seconds (``live.py``), so
  that offline collection refuses to run beside it.
- With ``storage.maintenance.gc.enabled``, a collection runs every
  ``interval`` under the storage's lease (``lease.py``: one pass at a time
  among every process), and its report is kept (``gc --last`` reads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cargohold.errors import CargoholdError
from cargohold.storage.lease import LeaseHeld, holding
from cargohold.storage.live import HEARTBEAT, Heartbeat

if TYPE_CHECKING:
    from cargohold.storage.registry import StorageRegistry

__all__ = ["GcSchedule", "StorageMaintenance"]

log = logging.getLogger("cargohold.gc")

#: How often finds of blobs are written down.
FLUSH_INTERVAL = 1.0


@dataclass(frozen=True)
class GcSchedule:
    """``storage.maintenance.gc``: when and how collection runs while serving."""

    interval: float
    grace: float
    dry_run: bool = False
    delete_untagged: bool = False


class StorageMaintenance:
    """The background work of ``registry``: ``run`` until cancelled."""

    def __init__(self, registry: StorageRegistry, gc: GcSchedule | None) -> None:
        self._registry = registry
        self._gc = gc
        reuse = registry.blobs.reuse is not None
        self._heartbeat = Heartbeat(registry.driver, reuse) if registry.options.heartbeat else None

    async def run(self) -> None:
        reuse = self._registry.blobs.reuse
        next_beat = 0.0
        next_gc = time.monotonic() + (self._gc.interval if self._gc is not None else 0)
        collecting: asyncio.Future[None] | None = None
        try:
            while True:
                now = time.monotonic()
                try:
                    if reuse is not None:
                        await reuse.flush()
                    heartbeat = self._heartbeat
                    if heartbeat is not None and now >= next_beat and await heartbeat.beat():
                        next_beat = now + HEARTBEAT
                except CargoholdError as exc:
                    log.warning("storage maintenance: %s", exc)
                if (
                    self._gc is not None
                    and now >= next_gc
                    and (collecting is None or collecting.done())
                ):
                    next_gc = now + self._gc.interval
                    collecting = asyncio.ensure_future(self.collect(self._gc))
                await asyncio.sleep(FLUSH_INTERVAL)
        finally:
            if collecting is not None:
                collecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, CargoholdError):
                    await collecting
            with contextlib.suppress(CargoholdError):
                if reuse is not None:
                    await reuse.flush()
            if self._heartbeat is not None:
                await self._heartbeat.stop()

    async def collect(self, gc: GcSchedule) -> None:
        """One collection pass while serving, if no other process runs one."""
        from cargohold.storage.gc import collect_garbage, report_of, save_report

        registry = self._registry
        try:
            async with holding(registry.driver):
                started = time.time()
                result = await collect_garbage(
                    registry,
                    dry_run=gc.dry_run,
                    delete_untagged=gc.delete_untagged,
                    grace=gc.grace,
                )
                report = report_of(result, started=started, ended=time.time(), dry_run=gc.dry_run)
                await save_report(registry, report)
        except LeaseHeld as exc:
            log.info("garbage collection skipped: %s", exc)
            return
        except CargoholdError as exc:
            log.warning("garbage collection failed: %s", exc)
            return
        verb = "would delete" if gc.dry_run else "deleted"
        log.info(
            "garbage collection: %s %d manifests and %d blobs (%d bytes) in %.1f s; "
            "%d blobs and %d manifests younger than the grace period kept",
            verb,
            report["deleted_manifests"],
            report["deleted_blobs"],
            report["reclaimed_bytes"],
            report["duration"],
            report["young_blobs"],
            report["young_manifests"],
        )
