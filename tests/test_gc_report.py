"""``cargohold gc --format table|json``: what a collection removes, with sizes, for a person
or a program; with retention policies in the config, the tags they remove first.

A dry run removes nothing and reports exactly what the real run then removes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from cargohold.digest import Digest
from cargohold.manifest import OCI_MANIFEST
from cargohold.storage.driver.filesystem import FilesystemDriver
from cargohold.storage.paths import BlobData, ManifestRevisionLink, TagCurrentLink, path_for
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from tests.storage.images import image_manifest
from tests.support.servers import cargohold_argv

DAY = 86400.0


def config_file(tmp_path: Path, root: Path) -> Path:
    config = {
        "version": 0.1,
        "storage": {
            "filesystem": {"rootdirectory": str(root)},
            "maintenance": {
                "gc": {
                    "retention": [
                        {
                            "repositories": ["ci/*"],
                            "keeptags": [{"patterns": ["v.*"], "mostrecentlypushed": 1}],
                            "untagged": "24h",
                        }
                    ]
                }
            },
        },
    }
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


async def store(root: Path) -> dict[str, Any]:
    """``ci/app:v1``, pushed ten days ago, and ``ci/app:v2``, now: v1 is the one to go."""
    registry = StorageRegistry(FilesystemDriver(str(root)), options=RegistryOptions())
    try:
        repo = registry.repository("ci/app")
        images = {}
        for tag in ("v1", "v2"):
            images[tag] = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, [tag])
    finally:
        await registry.close()
    # v1 and everything it is made of are ten days old.
    then = time.time() - 10 * DAY
    old = images["v1"]
    body = json.loads(old.payload)
    blobs = [old.digest, *(Digest.parse(d["digest"]) for d in [body["config"], *body["layers"]])]
    for digest in blobs:
        os.utime(root / path_for(BlobData(digest)).lstrip("/"), (then, then))
    for link in (ManifestRevisionLink("ci/app", old.digest), TagCurrentLink("ci/app", "v1")):
        os.utime(root / path_for(link).lstrip("/"), (then, then))
    sizes = {str(d): (root / path_for(BlobData(d)).lstrip("/")).stat().st_size for d in blobs}
    return {"digest": str(old.digest), "blobs": sizes, "kept": str(images["v2"].digest)}


def gc(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cargohold_argv("gc", *args, str(config)), capture_output=True, text=True, timeout=60
    )


def test_json_lists_the_tags_manifests_and_blobs_with_their_sizes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    old = asyncio.run(store(root))
    config = config_file(tmp_path, root)

    dry = gc(config, "--dry-run", "--format", "json")
    assert dry.returncode == 0, dry.stderr
    report = json.loads(dry.stdout)
    assert report["dry_run"] is True
    assert [(t["repository"], t["tag"], t["digest"]) for t in report["tags"]] == [
        ("ci/app", "v1", old["digest"])
    ]
    assert report["tags"][0]["pulled"] is None
    assert [(m["repository"], m["digest"]) for m in report["manifests"]] == [
        ("ci/app", old["digest"])
    ]
    # The manifest's own bytes and what it references.
    assert report["manifests"][0]["size"] == sum(old["blobs"].values())
    assert {b["digest"]: b["size"] for b in report["blobs"]} == old["blobs"]
    assert report["reclaimed_bytes"] == sum(old["blobs"].values())
    assert (root / path_for(TagCurrentLink("ci/app", "v1")).lstrip("/")).exists()

    real = gc(config, "--format", "json")
    assert real.returncode == 0, real.stderr
    done = json.loads(real.stdout)
    assert done["dry_run"] is False
    assert {k: done[k] for k in ("tags", "manifests", "blobs", "reclaimed_bytes")} == {
        k: report[k] for k in ("tags", "manifests", "blobs", "reclaimed_bytes")
    }
    assert not (root / path_for(TagCurrentLink("ci/app", "v1")).lstrip("/")).exists()
    for digest in old["blobs"]:
        assert not (root / path_for(BlobData(Digest.parse(digest))).lstrip("/")).exists()
    kept = root / path_for(BlobData(Digest.parse(old["kept"]))).lstrip("/")
    assert kept.exists()


def test_the_table_reads_as_columns_with_human_sizes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    old = asyncio.run(store(root))
    config = config_file(tmp_path, root)
    dry = gc(config, "--dry-run", "--format", "table")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == "TAGS to remove by retention policies"
    assert lines[1].split() == [
        "REPOSITORY",
        "TAG",
        "MANIFEST",
        "PUSHED",
        "(UTC)",
        "PULLED",
        "(UTC)",
    ]
    assert lines[2].split()[:3] == ["ci/app", "v1", old["digest"]]
    assert lines[2].split()[-1] == "never"
    manifests = lines.index("MANIFESTS to delete")
    row = lines[manifests + 2].split()
    total = sum(old["blobs"].values())
    assert row[:2] == ["ci/app", old["digest"]]
    assert " ".join(row[2:]) == (f"{total} B" if total < 1024 else f"{total / 1024:.1f} KiB")
    blobs = lines.index("BLOBS to delete")
    listed = {line.split()[0] for line in lines[blobs + 2 : blobs + 2 + len(old["blobs"])]}
    assert listed == set(old["blobs"])
    assert lines[-1].startswith(f"1 tags, 1 manifests and {len(old['blobs'])} blobs to delete: ")
    assert lines[-1].endswith(f"({total} bytes) to reclaim")
    # Nothing was removed.
    assert (root / path_for(TagCurrentLink("ci/app", "v1")).lstrip("/")).exists()


def test_lines_name_the_removed_tags_before_manifests_and_blobs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    old = asyncio.run(store(root))
    dry = gc(config_file(tmp_path, root), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    lines = dry.stdout.splitlines()
    assert lines[0] == "would remove tag ci/app:v1"
    assert lines[1] == f"would delete manifest ci/app@{old['digest']}"


# -- progress ---------------------------------------------------------------------------------


def test_progress_is_plain_lines_on_stderr_when_piped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    old = asyncio.run(store(root))
    run = gc(config_file(tmp_path, root), "--format", "json")
    assert run.returncode == 0, run.stderr
    json.loads(run.stdout)  # stdout is the report alone
    lines = run.stderr.splitlines()
    assert [line.split(":")[1].strip() for line in lines] == ["mark", "sweep", "delete", "done"]
    total = sum(old["blobs"].values())
    assert lines[-1] == (
        "gc: done: 1 repositories, 2 manifests, 8 blobs examined, "
        f"1 manifests and {len(old['blobs'])} blobs deleted, {total / 1024:.1f} KiB reclaimed"
    )


def test_progress_is_one_line_redrawn_on_a_terminal_and_none_when_quiet(tmp_path: Path) -> None:
    root = tmp_path / "root"
    asyncio.run(store(root))
    config = config_file(tmp_path, root)
    controller, terminal = pty.openpty()
    try:
        for args in (["--quiet"], []):
            run = subprocess.run(
                cargohold_argv("gc", "--dry-run", *args, str(config)),
                stdout=subprocess.PIPE,
                stderr=terminal,
                timeout=60,
            )
            assert run.returncode == 0
        os.close(terminal)
        terminal = -1
        shown = b""
        with contextlib.suppress(OSError):  # EIO once every byte is read and the writer gone
            while chunk := os.read(controller, 65536):
                shown += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    # Only the second run (not --quiet) drew: each state over the last, then one newline.
    draws = shown.split(b"\r\x1b[K")
    assert draws[0] == b""
    assert [d.split(b":")[1].strip() for d in draws[1:]] == [b"mark", b"sweep", b"done"]
    assert shown.count(b"\n") == 1
    assert shown.endswith(b"to reclaim\r\n")  # the terminal turns the newline into CR LF


# -- a damaged root ---------------------------------------------------------------------------


def test_a_damaged_root_is_reported_and_nothing_is_deleted_on_a_guess(tmp_path: Path) -> None:
    """A manifest that does not parse keeps everything its repository links; a revision
    whose content is missing and a stray folder among the blobs are reported and skipped."""
    root = tmp_path / "root"
    old = asyncio.run(store(root))
    config = config_file(tmp_path, root)
    broken_blobs = asyncio.run(damage(root))
    run = gc(config, "-m", "--format", "json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    warnings = [line for line in run.stderr.splitlines() if "warning:" in line]
    assert len(warnings) == len(report["damaged"]) == 3, run.stderr
    damaged = "\n".join(report["damaged"])
    assert f"broken/app: cannot read manifest {broken_blobs['manifest']}" in damaged
    assert f"broken/app: manifest {broken_blobs['missing']} is linked, its content" in damaged
    assert "a blob folder names no blob (sha256:not-a-digest)" in damaged
    # What the unreadable manifest may reference stays, and so does the stray folder.
    for digest in (broken_blobs["manifest"], *broken_blobs["linked"]):
        assert (root / path_for(BlobData(Digest.parse(digest))).lstrip("/")).exists(), digest
    assert (root / "docker/registry/v2/blobs/sha256/no/not-a-digest/data").exists()
    # The rest of the collection went on: ci/app's v1 (retention) went as before.
    assert {b["digest"] for b in report["blobs"]} == set(old["blobs"])


async def damage(root: Path) -> dict[str, Any]:
    """``broken/app``: a manifest whose content is not JSON, two orphan layers it links, and a
    revision whose content is gone; a stray folder among the blobs."""
    registry = StorageRegistry(FilesystemDriver(str(root)), options=RegistryOptions())
    try:
        repo = registry.repository("broken/app")
        linked = [str((await repo.blobs.put(b"layer %d" % i)).digest) for i in range(2)]
        image = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["v1"])
        gone = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST)
    finally:
        await registry.close()
    (root / path_for(BlobData(image.digest)).lstrip("/")).write_bytes(b"{not json")
    (root / path_for(BlobData(gone.digest)).lstrip("/")).unlink()
    stray = root / "docker/registry/v2/blobs/sha256/no/not-a-digest/data"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not a blob")
    return {"manifest": str(image.digest), "missing": str(gone.digest), "linked": linked}
