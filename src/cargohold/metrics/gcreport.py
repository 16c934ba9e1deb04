"""The last ``cargohold gc`` run, for Prometheus, through node_exporter's textfile collector.

gc is a batch job, gone long before any scrape, so it leaves how its run went
in a file (``--metrics-file``, a ``*.prom`` in the collector's directory) for
node_exporter to serve with its own. The file is replaced whole:
``write_to_textfile`` writes a temporary file beside it and renames it over, so
the collector never reads half a run. Gauges, not counters: each run replaces
the last one's file, and ``time() - cargohold_gc_last_run_timestamp_seconds``
finds a gc that stopped running, which no file at all could not tell.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

from cargohold.errors import CargoholdError

if TYPE_CHECKING:
    from cargohold.storage.gc import Collection

__all__ = ["GcReport", "GcRun", "ReportUnwritable", "check_writable", "write_gc_metrics"]


class ReportUnwritable(CargoholdError):
    """The metrics file cannot be written."""


@dataclass(frozen=True, slots=True)
class GcRun:
    """How one gc run went."""

    #: When it ended, in seconds since the epoch.
    ended: float
    duration: float
    success: bool
    dry_run: bool
    #: What it found and did; None when it failed before it had collected.
    collection: Collection | None


def check_writable(path: str) -> None:
    """``ReportUnwritable`` unless a file can be made at ``path``.

    Checked before the run, so that a mistyped path is told at once rather than
    after a collection whose outcome then has nowhere to go.
    """
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ReportUnwritable(f"{path}: a directory")
    if not os.path.isdir(directory):
        raise ReportUnwritable(f"{directory}: no such directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ReportUnwritable(f"{directory}: not writable")


def write_gc_metrics(path: str, run: GcRun) -> None:
    """Replace the file at ``path`` with ``run`` in Prometheus' text format."""
    # Imported here: gc without --metrics-file never needs it.
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()

    def gauge(name: str, documentation: str, value: float) -> None:
        Gauge(f"cargohold_gc_last_run_{name}", documentation, registry=registry).set(value)

    found = run.collection
    gauge("timestamp_seconds", "When the last gc run ended, in seconds since the epoch.", run.ended)
    gauge("duration_seconds", "How long the last gc run took, in seconds.", run.duration)
    gauge("success", "1 when the last gc run ended without an error, else 0.", run.success)
    gauge("dry_run", "1 when the last gc run was a dry run, which deletes nothing.", run.dry_run)
    # A failed run's counts are what it did before it failed: 0 when it had not collected.
    gauge(
        "blobs_marked",
        "Blobs the last gc run found referenced, which it kept.",
        len(found.marked) if found else 0,
    )
    gauge(
        "blobs_deleted",
        "Blobs the last gc run deleted (a dry run: would have deleted).",
        len(found.deleted_blobs) if found else 0,
    )
    gauge(
        "manifests_deleted",
        "Manifests the last gc run deleted (a dry run: would have deleted).",
        len(found.deleted_manifests) if found else 0,
    )
    gauge(
        "bytes_reclaimed",
        "Bytes of the blobs the last gc run deleted (a dry run: would have deleted).",
        found.reclaimed if found else 0,
    )
    try:
        write_to_textfile(path, registry)
    except OSError as exc:
        raise ReportUnwritable(f"{path}: {exc.strerror or exc}") from exc


class GcReport:
    """Times a gc run, and writes how it went to ``path`` (None: nowhere) when it ends.

    Wrap the run in it, and hand it the collection once there is one. The run
    succeeded when the block ends without an exception: one that collected and
    then failed (the cache stopped answering) still reports what it deleted.
    """

    def __init__(self, path: str | None, *, dry_run: bool) -> None:
        self.path = path
        self.dry_run = dry_run
        self.collection: Collection | None = None
        self._started = 0.0

    def __enter__(self) -> GcReport:
        self._started = time.monotonic()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.path is None:
            return
        duration = time.monotonic() - self._started
        run = GcRun(time.time(), duration, exc_type is None, self.dry_run, self.collection)
        # A failure here is raised over the run's own error, if any: the command has
        # printed that one as it failed, and the exit status stays non-zero either way.
        write_gc_metrics(self.path, run)
