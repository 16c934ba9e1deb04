"""Collection passes while serving, for Prometheus: ``cargohold_gc_*``.

``GcMetrics`` is the storage maintenance's ``GcWatch``: each pass is counted
by outcome, what it deleted is added up (a dry run's is not), and the last
pass that collected is shown as gauges, the latest of every process's. At the
end, a registry served in process collects a pushed orphan and a scrape of its
debug listener says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from cargohold.api.app import create_app
from cargohold.api.debug import create_debug_app
from cargohold.config import parse_config
from cargohold.errors import StorageDriverError
from cargohold.metrics import layout
from cargohold.metrics.exposition import render
from cargohold.metrics.recorders import GcMetrics, Metrics
from cargohold.metrics.store import Row, Store, StoreFile
from cargohold.storage import gc as gc_module
from cargohold.storage.driver.inmemory import InMemoryDriver
from cargohold.storage.lease import holding
from cargohold.storage.maintenance import GcSchedule
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from tests.api.conftest import STORAGES, Registry, config_text, random_blob
from tests.api.test_gc_while_serving import collecting
from tests.support.inprocess import listening_socket, serve
from tests.support.metrics import Scrape, parse
from tests.support.waiting import eventually

ZERO = [
    "# HELP cargohold_gc_runs_total Garbage collection passes while serving, by outcome: "
    "collected (dry runs included), skipped (another process's pass was under way) or failed.",
    "# TYPE cargohold_gc_runs_total counter",
    'cargohold_gc_runs_total{outcome="collected"} 0.0',
    'cargohold_gc_runs_total{outcome="failed"} 0.0',
    'cargohold_gc_runs_total{outcome="skipped"} 0.0',
    "# HELP cargohold_gc_deleted_blobs_total Blobs deleted by garbage collection while serving "
    "(not by dry runs).",
    "# TYPE cargohold_gc_deleted_blobs_total counter",
    "cargohold_gc_deleted_blobs_total 0.0",
    "# HELP cargohold_gc_deleted_manifests_total Manifests deleted by garbage collection while "
    "serving (not by dry runs).",
    "# TYPE cargohold_gc_deleted_manifests_total counter",
    "cargohold_gc_deleted_manifests_total 0.0",
    "# HELP cargohold_gc_reclaimed_bytes_total Bytes of the blobs deleted by garbage collection "
    "while serving (not by dry runs).",
    "# TYPE cargohold_gc_reclaimed_bytes_total counter",
    "cargohold_gc_reclaimed_bytes_total 0.0",
    "# HELP cargohold_gc_young_blobs_kept_total Unreferenced blobs garbage collection while "
    "serving kept, as younger than the grace period, summed over its passes (not dry runs).",
    "# TYPE cargohold_gc_young_blobs_kept_total counter",
    "cargohold_gc_young_blobs_kept_total 0.0",
    "# HELP cargohold_gc_removed_tags_total Tags retention policies removed in garbage "
    "collection while serving (not by dry runs).",
    "# TYPE cargohold_gc_removed_tags_total counter",
    "cargohold_gc_removed_tags_total 0.0",
    "# HELP cargohold_gc_last_run_timestamp_seconds When the last garbage collection pass while "
    "serving that collected ended, in seconds since the epoch; 0 before one has.",
    "# TYPE cargohold_gc_last_run_timestamp_seconds gauge",
    "cargohold_gc_last_run_timestamp_seconds 0.0",
    "# HELP cargohold_gc_last_run_duration_seconds How long the last garbage collection pass "
    "while serving that collected took, in seconds.",
    "# TYPE cargohold_gc_last_run_duration_seconds gauge",
    "cargohold_gc_last_run_duration_seconds 0.0",
]


def text(*stores: StoreFile) -> str:
    return render(list(stores), None)[0].decode()


def gc_lines(body: str) -> list[str]:
    """The ``cargohold_gc_*`` lines of a scrape, HELP and TYPE included."""
    return [
        line
        for line in body.splitlines()
        if line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith("cargohold_gc_")
    ]


def samples(body: str) -> list[str]:
    return [line for line in gc_lines(body) if not line.startswith("#")]


def report(
    *,
    ended: float = 1_700_000_000.5,
    duration: float = 2.25,
    dry_run: bool = False,
    blobs: int = 0,
    manifests: int = 0,
    reclaimed: int = 0,
    young: int = 0,
    tags: int = 0,
) -> dict[str, object]:
    """A pass's report as ``gc.report_of`` makes it (the fields ``GcMetrics`` reads)."""
    return {
        "started": ended - duration,
        "ended": ended,
        "duration": duration,
        "online": True,
        "dry_run": dry_run,
        "deleted_manifests": manifests,
        "deleted_blobs": blobs,
        "deleted_links": manifests,
        "reclaimed_bytes": reclaimed,
        "young_blobs": young,
        "young_manifests": 0,
        "removed_tags": tags,
        "manifests": [],
        "blobs": [],
    }


# -- the recorder and its exposition ---------------------------------------------------


def test_every_family_is_exposed_at_zero_before_any_pass() -> None:
    store = Store()
    Metrics(store)
    assert gc_lines(text(store.as_file())) == ZERO
    store.close()


def test_every_family_is_exposed_even_by_a_store_without_gc_rows() -> None:
    # A store left by a version before these families.
    assert gc_lines(text(StoreFile("/nowhere/worker-1.metrics", True, []))) == ZERO


def test_passes_are_counted_by_outcome_and_what_they_deleted_is_added_up() -> None:
    store = Store()
    gc = GcMetrics(store)
    gc.collected(
        report(ended=1_700_000_000.0, blobs=3, manifests=1, reclaimed=4096, young=2, tags=4)
    )
    gc.skipped()
    gc.skipped()
    # A dry run is a pass that collected, and the last one; what it would delete is not added.
    gc.collected(
        report(ended=1_700_000_060.0, duration=0.5, dry_run=True, blobs=7, reclaimed=9, young=5)
    )
    gc.failed(None)  # failed before it had collected
    # Collected, then its report could not be saved: what it deleted still counts.
    gc.failed(report(ended=1_700_000_120.0, duration=9.0, blobs=2, reclaimed=100, young=1))
    assert samples(text(store.as_file())) == [
        'cargohold_gc_runs_total{outcome="collected"} 2.0',
        'cargohold_gc_runs_total{outcome="failed"} 2.0',
        'cargohold_gc_runs_total{outcome="skipped"} 2.0',
        "cargohold_gc_deleted_blobs_total 5.0",
        "cargohold_gc_deleted_manifests_total 1.0",
        "cargohold_gc_reclaimed_bytes_total 4196.0",
        "cargohold_gc_young_blobs_kept_total 3.0",
        "cargohold_gc_removed_tags_total 4.0",
        "cargohold_gc_last_run_timestamp_seconds 1.70000006e+09",
        "cargohold_gc_last_run_duration_seconds 0.5",
    ]
    store.close()


def test_across_processes_counters_add_up_and_the_last_pass_is_the_latest_of_any() -> None:
    old, new, idle = Store(), Store(), Store()
    # A worker that has since died ran the longest pass; a living one ran the latest.
    GcMetrics(old).collected(report(ended=1_000.0, duration=30.0, blobs=4, reclaimed=400))
    GcMetrics(new).collected(report(ended=2_000.0, duration=1.5, blobs=1, reclaimed=10))
    GcMetrics(idle).skipped()
    dead = StoreFile("/nowhere/worker-1.metrics", False, old.rows())
    assert samples(text(dead, new.as_file(), idle.as_file())) == [
        'cargohold_gc_runs_total{outcome="collected"} 2.0',
        'cargohold_gc_runs_total{outcome="failed"} 0.0',
        'cargohold_gc_runs_total{outcome="skipped"} 1.0',
        "cargohold_gc_deleted_blobs_total 5.0",
        "cargohold_gc_deleted_manifests_total 0.0",
        "cargohold_gc_reclaimed_bytes_total 410.0",
        "cargohold_gc_young_blobs_kept_total 0.0",
        "cargohold_gc_removed_tags_total 0.0",
        "cargohold_gc_last_run_timestamp_seconds 2000.0",
        "cargohold_gc_last_run_duration_seconds 1.5",  # that pass's, not the longest
    ]
    for store in (old, new, idle):
        store.close()


def test_a_narrower_last_run_row_reads_as_zeros_in_its_new_places() -> None:
    row = Row(layout.GC_LAST, (), (5_000.0,))
    assert samples(text(StoreFile("/nowhere/worker-1.metrics", True, [row])))[-2:] == [
        "cargohold_gc_last_run_timestamp_seconds 5000.0",
        "cargohold_gc_last_run_duration_seconds 0.0",
    ]


# -- the storage maintenance tells its watch --------------------------------------------


class Told:
    """A ``GcWatch`` that keeps what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Mapping[str, object] | None]] = []

    def collected(self, report: Mapping[str, object]) -> None:
        self.calls.append(("collected", report))

    def skipped(self) -> None:
        self.calls.append(("skipped", None))

    def failed(self, report: Mapping[str, object] | None) -> None:
        self.calls.append(("failed", report))


SCHEDULE = GcSchedule(interval=3600.0, grace=0.0)
ORPHAN = b"a layer no manifest references"


def watched_registry(told: Told) -> StorageRegistry:
    return StorageRegistry(
        InMemoryDriver(), options=RegistryOptions(gc=SCHEDULE, delete_enabled=True), gc_watch=told
    )


async def test_a_pass_that_collected_tells_its_report() -> None:
    told = Told()
    registry = watched_registry(told)
    maintenance = registry.maintenance
    assert maintenance is not None
    await maintenance.collect(SCHEDULE)
    [(outcome, found)] = told.calls
    assert outcome == "collected"
    assert found is not None
    assert (found["online"], found["dry_run"], found["deleted_blobs"]) == (True, False, 0)


async def test_a_pass_beside_another_processs_is_skipped() -> None:
    told = Told()
    registry = watched_registry(told)
    maintenance = registry.maintenance
    assert maintenance is not None
    async with holding(registry.driver):  # as another process would hold it
        await maintenance.collect(SCHEDULE)
    assert told.calls == [("skipped", None)]


async def test_a_pass_whose_report_cannot_be_saved_fails_and_what_it_deleted_counts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = Store()
    registry = StorageRegistry(
        InMemoryDriver(),
        options=RegistryOptions(gc=SCHEDULE, delete_enabled=True),
        gc_watch=GcMetrics(store),
    )
    await registry.repository("a").blobs.put(ORPHAN)
    await asyncio.sleep(0.01)  # older than the grace period of 0 s, by far
    maintenance = registry.maintenance
    assert maintenance is not None

    async def unsaved(*args: object) -> None:
        raise StorageDriverError("/gc/last.json", "inmemory", "the storage refused the write")

    monkeypatch.setattr(gc_module, "save_report", unsaved)
    await maintenance.collect(SCHEDULE)
    assert samples(text(store.as_file())) == [
        'cargohold_gc_runs_total{outcome="collected"} 0.0',
        'cargohold_gc_runs_total{outcome="failed"} 1.0',
        'cargohold_gc_runs_total{outcome="skipped"} 0.0',
        "cargohold_gc_deleted_blobs_total 1.0",
        "cargohold_gc_deleted_manifests_total 0.0",
        f"cargohold_gc_reclaimed_bytes_total {float(len(ORPHAN))}",
        "cargohold_gc_young_blobs_kept_total 0.0",
        "cargohold_gc_removed_tags_total 0.0",
        "cargohold_gc_last_run_timestamp_seconds 0.0",  # no pass collected to its end
        "cargohold_gc_last_run_duration_seconds 0.0",
    ]
    store.close()


async def test_a_pass_that_fails_before_collecting_tells_nothing_it_did(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    told = Told()
    registry = watched_registry(told)
    maintenance = registry.maintenance
    assert maintenance is not None

    async def broken(*args: object, **kwargs: object) -> None:
        raise StorageDriverError("/", "inmemory", "the storage stopped answering")

    monkeypatch.setattr(gc_module, "collect_garbage", broken)
    await maintenance.collect(SCHEDULE)
    assert told.calls == [("failed", None)]


# -- a registry served in process, scraped ----------------------------------------------


@contextlib.asynccontextmanager
async def collecting_registry(storage: str, root: Path) -> AsyncIterator[tuple[Registry, str]]:
    """A registry collecting every second (grace 1 s), and the URL of its debug listener's
    metrics (served beside it, as ``serve`` serves it on ``http.debug.addr``)."""
    settings = collecting()
    settings["http"] = {"debug": {"addr": "127.0.0.1:0", "prometheus": {"enabled": True}}}
    config = parse_config(config_text(storage, root, settings), environ={})
    app = create_app(config)
    async with serve(app) as client:
        runner = web.AppRunner(create_debug_app(config, app, None))
        await runner.setup()
        sock = listening_socket()
        await web.SockSite(runner, sock).start()
        try:
            registry = Registry(client, storage, root if storage == "filesystem" else None)
            yield registry, f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"
        finally:
            await runner.cleanup()


async def scrape(url: str) -> Scrape:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        assert response.status == 200
        return parse(await response.text())


@pytest.mark.parametrize("storage", STORAGES)
async def test_a_pass_while_serving_shows_in_a_scrape(storage: str, tmp_path: Path) -> None:
    async with collecting_registry(storage, tmp_path / "root") as (registry, debug):
        before = await scrape(debug)
        assert before.value("cargohold_gc_runs_total", outcome="collected") == 0
        orphan = await registry.push_blob("a", random_blob(4096))
        found = before

        async def deleted() -> bool:
            nonlocal found
            found = await scrape(debug)
            return found.value("cargohold_gc_deleted_blobs_total") >= 1

        # A pass runs every second; the orphan is spared until a second has passed.
        await eventually(deleted, what="no pass while serving deleted the orphan")
        assert found.value("cargohold_gc_runs_total", outcome="collected") >= 1
        assert found.value("cargohold_gc_deleted_blobs_total") == 1
        assert found.value("cargohold_gc_reclaimed_bytes_total") == orphan.size
        assert found.value("cargohold_gc_runs_total", outcome="failed") == 0
        assert found.value("cargohold_gc_last_run_timestamp_seconds") > 0
        assert found.value("cargohold_gc_last_run_duration_seconds") >= 0
        status, _ = await registry.request_anew("HEAD", f"/v2/a/blobs/{orphan.digest}")
        assert status == 404
