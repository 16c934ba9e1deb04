"""``cargohold gc --metrics-file``: the last run, for node_exporter's textfile collector."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from cargohold.digest import digest_of
from cargohold.manifest import OCI_MANIFEST
from cargohold.storage.driver.filesystem import FilesystemDriver
from cargohold.storage.paths import BlobData, path_for
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from tests.storage.images import image_manifest
from tests.support.servers import cargohold_argv

ORPHAN = b"a layer no manifest references " * 37
GAUGES = {
    "timestamp_seconds",
    "duration_seconds",
    "success",
    "dry_run",
    "blobs_marked",
    "blobs_deleted",
    "manifests_deleted",
    "bytes_reclaimed",
}


async def stored_registry(root: Path) -> None:
    """A tagged image (a manifest, its config and two layers: four blobs) and one orphan."""
    registry = StorageRegistry(FilesystemDriver(str(root)), options=RegistryOptions())
    try:
        repo = registry.repository("team/app")
        await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["v1"])
        await repo.blobs.put(ORPHAN)
    finally:
        await registry.close()


def orphan_data(root: Path) -> Path:
    return root / path_for(BlobData(digest_of(ORPHAN))).lstrip("/")


def gc(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        cargohold_argv("gc", *args), env=env, capture_output=True, text=True, timeout=60
    )


def report(path: Path) -> dict[str, float]:
    """The file's gauges, by name without ``cargohold_gc_last_run_``; every one is a gauge."""
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge", family
        assert family.name.startswith("cargohold_gc_last_run_"), family
        (sample,) = family.samples
        assert sample.labels == {}
        found[family.name.removeprefix("cargohold_gc_last_run_")] = sample.value
    assert set(found) == GAUGES
    return found


async def test_a_run_reports_what_it_deleted_and_the_bytes_it_reclaimed(tmp_path: Path) -> None:
    root, metrics = tmp_path / "root", tmp_path / "textfile" / "cargohold_gc.prom"
    await stored_registry(root)
    metrics.parent.mkdir()
    before = time.time()
    run = gc(root, "--metrics-file", str(metrics))
    after = time.time()
    assert run.returncode == 0, run.stderr
    assert not orphan_data(root).exists()
    assert run.stdout.splitlines()[-1] == (
        f"4 blobs marked, 1 blobs and 0 manifests deleted, {len(ORPHAN)} bytes reclaimed"
    )
    found = report(metrics)
    assert found["success"] == 1
    assert found["dry_run"] == 0
    assert found["blobs_marked"] == 4
    assert found["blobs_deleted"] == 1
    assert found["manifests_deleted"] == 0
    assert found["bytes_reclaimed"] == len(ORPHAN)
    assert before <= found["timestamp_seconds"] <= after
    assert 0 < found["duration_seconds"] <= after - before
    assert os.listdir(metrics.parent) == [metrics.name], "no temporary file is left beside it"


async def test_a_dry_run_reports_the_bytes_it_would_reclaim_and_deletes_nothing(
    tmp_path: Path,
) -> None:
    root, metrics = tmp_path / "root", tmp_path / "gc.prom"
    await stored_registry(root)
    run = gc(root, "--dry-run", "--metrics-file", str(metrics))
    assert run.returncode == 0, run.stderr
    assert orphan_data(root).read_bytes() == ORPHAN
    assert run.stdout.splitlines()[-1] == (
        f"4 blobs marked, 1 blobs and 0 manifests to delete, {len(ORPHAN)} bytes to reclaim"
    )
    found = report(metrics)
    assert found["success"] == 1
    assert found["dry_run"] == 1
    assert found["blobs_deleted"] == 1
    assert found["bytes_reclaimed"] == len(ORPHAN)


def test_a_failed_run_replaces_the_last_report_with_its_failure(tmp_path: Path) -> None:
    metrics = tmp_path / "gc.prom"
    metrics.write_text("cargohold_gc_last_run_success 1\n")  # an earlier run's
    before = time.time()
    run = gc(tmp_path / "no registry here", "--metrics-file", str(metrics))
    after = time.time()
    assert run.returncode == 2
    (line,) = run.stderr.splitlines()
    assert line.startswith("cargohold: config: storage.filesystem: ")
    found = report(metrics)
    assert found["success"] == 0
    assert found["dry_run"] == 0
    assert before <= found["timestamp_seconds"] <= after
    assert 0 < found["duration_seconds"] <= after - before
    for count in ("blobs_marked", "blobs_deleted", "manifests_deleted", "bytes_reclaimed"):
        assert found[count] == 0, count


async def test_a_metrics_file_that_cannot_be_written_is_refused_before_the_run(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    await stored_registry(root)
    for unwritable, why in (
        (tmp_path / "no such dir" / "gc.prom", "no such directory"),
        (tmp_path, "a directory"),
    ):
        run = gc(root, "--metrics-file", str(unwritable))
        assert run.returncode == 2, run
        (line,) = run.stderr.splitlines()
        assert line.startswith("cargohold: --metrics-file: "), line
        assert line.endswith(why), line
        assert run.stdout == ""
        assert orphan_data(root).exists(), "nothing was collected"
