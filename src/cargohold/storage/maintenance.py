"""What a storage registry does in the background while it serves.

- Finds of blobs noted on the request path are written down every second
  (``reuse.py``), for collections while serving.
- Pulls of manifests noted on the request path are written down every second
  (``pulls.py``), for retention policies that keep what is pulled.
- A registry that takes writes says so every few seconds (``live.py``), so
  that offline collection refuses to run beside it.
- With ``storage.maintenance.gc.enabled``, a collection runs every
  ``interval`` under the storage's lease (``lease.py``: one pass at a time
  among every process), and its report is kept (``gc --last`` reads it);
  a ``GcWatch`` is told how each pass went (the metrics' ``GcMetrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from cargohold.errors import CargoholdError
from cargohold.storage.lease import LeaseHeld, holding
from cargohold.storage.live import HEARTBEAT, Heartbeat
from cargohold.storage.retention import Retention

if TYPE_CHECKING:
    from cargohold.storage.registry import StorageRegistry

__all__ = ["GcSchedule", "GcWatch", "StorageMaintenance"]

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
    retention: Retention | None = None


class GcWatch(Protocol):
    """Told how each collection pass while serving went: exactly one call per pass.

    A pass cancelled as the server stops tells nothing.
    """

    def collected(self, report: Mapping[str, object]) -> None:
        """A pass ran to its end; ``report`` is its ``gc.report_of`` (a dry run's included)."""

    def skipped(self) -> None:
        """Another process held the lease: its pass was under way, this one did not run."""

    def failed(self, report: Mapping[str, object] | None) -> None:
        """A pass failed; ``report`` is what it did first when it had collected (its report
        then could not be saved), else None."""


class StorageMaintenance:
    """The background work of ``registry``: ``run`` until cancelled.

    ``watch``, when given, is told how each collection pass went.
    """

    def __init__(
        self, registry: StorageRegistry, gc: GcSchedule | None, watch: GcWatch | None = None
    ) -> None:
        self._registry = registry
        self._gc = gc
        self._watch = watch
        reuse = registry.blobs.reuse is not None
        self._heartbeat = Heartbeat(registry.driver, reuse) if registry.options.heartbeat else None

    async def run(self) -> None:
        reuse, pulls = self._registry.blobs.reuse, self._registry.pulls
        next_beat = 0.0
        next_gc = time.monotonic() + (self._gc.interval if self._gc is not None else 0)
        collecting: asyncio.Future[None] | None = None
        try:
            while True:
                now = time.monotonic()
                try:
                    if reuse is not None:
                        await reuse.flush()
                    if pulls is not None:
                        await pulls.flush()
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
                if pulls is not None:
                    await pulls.flush()
            if self._heartbeat is not None:
                await self._heartbeat.stop()

    async def collect(self, gc: GcSchedule) -> None:
        """One collection pass while serving, if no other process runs one."""
        from cargohold.storage.gc import collect_garbage, report_of, save_report

        registry = self._registry
        watch = self._watch
        collected: dict[str, Any] | None = None  # the report, once the pass has collected
        try:
            async with holding(registry.driver):
                started = time.time()
                result = await collect_garbage(
                    registry,
                    dry_run=gc.dry_run,
                    delete_untagged=gc.delete_untagged,
                    grace=gc.grace,
                    retention=gc.retention,
                )
                for damage in result.damaged:
                    log.warning("garbage collection: %s", damage)
                report = report_of(result, started=started, ended=time.time(), dry_run=gc.dry_run)
                collected = report
                await save_report(registry, report)
        except LeaseHeld as exc:
            log.info("garbage collection skipped: %s", exc)
            if watch is not None:
                watch.skipped()
            return
        except CargoholdError as exc:
            # The type too: some errors say nothing more than their name.
            log.warning("garbage collection failed: %s: %s", type(exc).__name__, exc)
            if watch is not None:
                # One that collected and then failed still tells what it deleted.
                watch.failed(collected)
            return
        if watch is not None:
            watch.collected(report)
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
