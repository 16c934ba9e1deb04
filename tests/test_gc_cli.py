"""``cargohold gc`` beside real ``cargohold serve`` processes on one filesystem root.

- Offline, it refuses while a registry that takes writes serves the root (each
  says so in ``/cargohold/live``), and runs once it stopped, or beside a
  read-only one.
- ``--online`` refuses beside a registry that does not record the blobs clients
  find; beside one that does, it spares what is younger than the grace period
  (content, or a find through the registry), and ``--last`` tells what it did.
- One pass at a time: a pass refuses while another holds the lease.
- A pass killed with SIGKILL mid-sweep leaves no link to missing content: the
  registry serves every linked blob, and the next pass finishes the work.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cargohold.digest import Digest, digest_of
from cargohold.manifest import OCI_MANIFEST
from cargohold.storage import gc as gc_module
from cargohold.storage.driver.filesystem import FilesystemDriver
from cargohold.storage.lease import holding
from cargohold.storage.paths import BlobData, BlobTouched, GcLease, LayerLink, path_for
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from tests.storage.images import image_manifest
from tests.support.servers import cargohold_argv, free_port, running
from tests.support.waiting import wait_until

REPO = "team/app"
#: How old "old" content is made: far past every grace period here.
LONG_AGO = 3600.0
#: The grace period of collection while serving (and the upload-purge age it must cover).
GRACE = "1m"


# -- the storage root ------------------------------------------------------------------------


def on_disk(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def data_file(root: Path, digest: Digest) -> Path:
    return on_disk(root, path_for(BlobData(digest)))


def link_file(root: Path, digest: Digest, name: str = REPO) -> Path:
    return on_disk(root, path_for(LayerLink(name, digest)))


def make_old(root: Path, digest: Digest) -> None:
    then = time.time() - LONG_AGO
    os.utime(data_file(root, digest), (then, then))


async def stored(root: Path, *orphans: bytes) -> dict[str, Any]:
    """A tagged image ``team/app:v1`` and ``orphans`` (linked in the repository, referenced by
    no manifest); the image's manifest (JSON) with its digest under ``"digest"``."""
    registry = StorageRegistry(FilesystemDriver(str(root)), options=RegistryOptions())
    try:
        repo = registry.repository(REPO)
        image = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["v1"])
        for orphan in orphans:
            await repo.blobs.put(orphan)
    finally:
        await registry.close()
    return {**json.loads(image.payload), "digest": str(image.digest)}


def image_blobs(image: dict[str, Any]) -> list[Digest]:
    found = [image["config"]["digest"], *(layer["digest"] for layer in image["layers"])]
    return [Digest.parse(d) for d in [image["digest"], *found]]


def plant_orphans(root: Path, count: int) -> list[Digest]:
    """``count`` old blobs linked in ``team/app`` that no manifest references, written as the
    storage lays them out (far faster than through the blob store)."""
    then = time.time() - LONG_AGO
    digests = []
    for i in range(count):
        content = b"orphan %d " % i * 3
        digest = digest_of(content)
        data = data_file(root, digest)
        data.parent.mkdir(parents=True)
        data.write_bytes(content)
        os.utime(data, (then, then))
        link = link_file(root, digest)
        link.parent.mkdir(parents=True)
        link.write_text(str(digest))
        digests.append(digest)
    return digests


def still_there(root: Path, digests: list[Digest]) -> int:
    return sum(data_file(root, d).exists() for d in digests)


def linked(root: Path) -> list[Digest]:
    """Every blob a link file in ``team/app``'s ``_layers`` names."""
    layers = on_disk(root, f"/docker/registry/v2/repositories/{REPO}/_layers")
    return [Digest.parse(link.read_text()) for link in layers.rglob("link")]


def heartbeats(root: Path) -> list[dict[str, Any]]:
    """What the registries writing to ``root`` said (not a heartbeat being written now)."""
    live = root / "cargohold" / "live"
    if not live.is_dir():
        return []
    return [json.loads(f.read_text()) for f in live.iterdir() if not f.name.startswith(".")]


def config_file(
    tmp_path: Path, root: Path, *, gc: bool = False, readonly: bool = False, name: str = ""
) -> Path:
    """A config for ``root``: deletes on, uploads purged after ``GRACE``; with ``gc``, collection
    while serving (every hour, so that only the command collects here)."""
    path = tmp_path / f"config{name}{'-gc' if gc else ''}{'-ro' if readonly else ''}.yml"
    path.write_text(
        f"""\
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: true
      age: {GRACE}
      interval: 1h
    readonly:
      enabled: {str(readonly).lower()}
    gc:
      enabled: {str(gc).lower()}
      interval: 1h
      graceperiod: {GRACE}
"""
    )
    return path


# -- processes -------------------------------------------------------------------------------


def gc(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cargohold_argv("gc", str(config), *args),
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def gc_process(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cargohold_argv("gc", str(config), *args),
        env={"PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def refusal(run: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused run printed (exit status 1, nothing on stdout)."""
    assert run.returncode == 1, run
    assert run.stdout == "", run
    (line,) = run.stderr.splitlines()
    assert "Traceback" not in line
    return line


@contextmanager
def serving(config: Path, log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``cargohold serve CONFIG`` (one process) on a free port; its URL and process. Stopped
    with SIGTERM (a clean stop) when the block ends."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = cargohold_argv("serve", str(config), "--workers", "1")
    env = {"REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}"}
    with running(argv, f"{url}/v2/", env=env, log=log) as process:
        yield url, process


def says_it_writes(root: Path, process: subprocess.Popen[bytes]) -> bool:
    return any(beat["pid"] == process.pid for beat in heartbeats(root))


class Client:
    """Requests on one kept-alive connection (thousands of them, quickly)."""

    def __init__(self, url: str) -> None:
        self._connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)

    def __call__(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        self._connection.request(method, path, headers=headers or {})
        response = self._connection.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        self._connection.close()


def assert_pullable(client: Client, image: dict[str, Any]) -> None:
    status, body = client("GET", f"/v2/{REPO}/manifests/v1", {"Accept": OCI_MANIFEST})
    assert status == 200, body
    assert "sha256:" + hashlib.sha256(body).hexdigest() == image["digest"]
    for descriptor in [image["config"], *image["layers"]]:
        status, body = client("GET", f"/v2/{REPO}/blobs/{descriptor['digest']}")
        assert status == 200, descriptor
        assert "sha256:" + hashlib.sha256(body).hexdigest() == descriptor["digest"]


# -- offline: refused beside a registry that writes ------------------------------------------


async def test_offline_gc_refuses_while_a_registry_serves_and_runs_once_it_stopped(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    orphan = b"an orphan layer " * 40
    image = await stored(root, orphan)
    config = config_file(tmp_path, root)

    with serving(config, tmp_path / "serve.log") as (_, server):
        wait_until(lambda: says_it_writes(root, server), 10, "the registry never said it writes")
        assert refusal(gc(config, "-m")) == (
            f"cargohold: registries are writing to this storage (pid {server.pid} on "
            f"{socket.gethostname()}): stop them, make them read-only, or run gc --online"
        )
        assert data_file(root, digest_of(orphan)).exists(), "nothing was collected"
        assert not on_disk(root, path_for(GcLease())).exists(), "the refusal left no lease"
    assert server.returncode == 0, "SIGTERM stops it cleanly"
    assert heartbeats(root) == [], "a clean stop takes its word back"

    run = gc(config, "-m")
    assert run.returncode == 0, run.stderr
    assert f"deleted blob {digest_of(orphan)}" in run.stdout.splitlines()
    assert not data_file(root, digest_of(orphan)).exists()
    assert not link_file(root, digest_of(orphan)).exists()
    for digest in image_blobs(image):
        assert data_file(root, digest).exists(), digest


async def test_offline_gc_runs_beside_a_read_only_registry(tmp_path: Path) -> None:
    root = tmp_path / "root"
    orphan = b"an orphan layer " * 40
    image = await stored(root, orphan)
    config = config_file(tmp_path, root)

    with serving(config_file(tmp_path, root, readonly=True), tmp_path / "serve.log") as (url, _):
        run = gc(config, "-m")
        assert run.returncode == 0, run.stderr
        assert heartbeats(root) == [], "a read-only registry says nothing"
        assert not data_file(root, digest_of(orphan)).exists()
        client = Client(url)
        try:
            assert_pullable(client, image)
        finally:
            client.close()


async def test_a_heartbeat_older_than_three_beats_blocks_nothing(tmp_path: Path) -> None:
    # What a registry killed with SIGKILL leaves: its word, which ages.
    root = tmp_path / "root"
    await stored(root)
    config = config_file(tmp_path, root)
    live = root / "cargohold" / "live"
    live.mkdir(parents=True)
    beat = {"host": "elsewhere", "pid": 4242, "reuse": False}
    (live / "elsewhere-4242-0").write_text(json.dumps({**beat, "at": time.time() - 20}))
    assert "pid 4242 on elsewhere" in refusal(gc(config))
    (live / "elsewhere-4242-0").write_text(json.dumps({**beat, "at": time.time() - 31}))
    assert gc(config).returncode == 0


# -- online ----------------------------------------------------------------------------------


async def test_online_gc_refuses_beside_a_registry_that_does_not_record_finds(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    orphan = b"an orphan layer " * 40
    await stored(root, orphan)
    make_old(root, digest_of(orphan))
    blind = config_file(tmp_path, root)

    with serving(blind, tmp_path / "serve.log") as (_, server):
        wait_until(lambda: says_it_writes(root, server), 10, "the registry never said it writes")
        line = refusal(gc(config_file(tmp_path, root, gc=True), "--online", "-m"))
    assert line == (
        "cargohold: registries write to this storage without recording the blobs clients "
        f"find (pid {server.pid} on {socket.gethostname()}): enable storage.maintenance.gc "
        "on them first"
    )
    assert data_file(root, digest_of(orphan)).exists(), "nothing was collected"


async def test_online_gc_spares_what_is_younger_than_the_grace_and_reports_its_pass(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    old, found, young = (b"old orphan " * 50, b"found orphan " * 50, b"young orphan " * 50)
    image = await stored(root, old, found, young)
    make_old(root, digest_of(old))
    make_old(root, digest_of(found))
    config = config_file(tmp_path, root, gc=True)

    assert refusal(gc(config, "--last")) == "cargohold: no collection has run on this storage yet"
    with serving(config, tmp_path / "serve.log") as (url, server):
        wait_until(lambda: says_it_writes(root, server), 10, "the registry never said it writes")
        assert all(beat["reuse"] for beat in heartbeats(root))
        # A client finds an old blob: it may name it in a manifest next, so it is young again.
        client = Client(url)
        try:
            status, _ = client("HEAD", f"/v2/{REPO}/blobs/{digest_of(found)}")
            assert status == 200
            touched = on_disk(root, path_for(BlobTouched(digest_of(found))))
            wait_until(touched.exists, 10, "the registry never wrote the find down")

            quiet = gc(config, "--online", "-m", "--dry-run", "--quiet")
            assert quiet.returncode == 0, quiet.stderr
            assert quiet.stdout.splitlines() == [
                f"4 blobs marked, 1 blobs and 0 manifests to delete, {len(old)} bytes to reclaim",
                "2 blobs and 0 manifests younger than the grace period kept",
            ]
            assert data_file(root, digest_of(old)).exists(), "a dry run deletes nothing"

            run = gc(config, "--online", "-m")
            assert run.returncode == 0, run.stderr
            assert run.stdout.splitlines() == [
                f"deleted blob {digest_of(old)}",
                f"4 blobs marked, 1 blobs and 0 manifests deleted, {len(old)} bytes reclaimed",
                "2 blobs and 0 manifests younger than the grace period kept",
            ]
            assert not data_file(root, digest_of(old)).exists()
            assert not link_file(root, digest_of(old)).exists()
            for kept in (found, young):
                assert data_file(root, digest_of(kept)).exists()
                assert link_file(root, digest_of(kept)).exists()
            assert_pullable(client, image)
            status, _ = client("HEAD", f"/v2/{REPO}/blobs/{digest_of(old)}")
            assert status == 404
        finally:
            client.close()

        last = gc(config, "--last")
        assert last.returncode == 0, last.stderr
        report = json.loads(last.stdout)
        assert report["online"] is True
        assert report["dry_run"] is False
        assert report["deleted_blobs"] == 1
        assert report["blobs"] == [str(digest_of(old))]
        assert report["deleted_links"] == 1
        assert report["deleted_manifests"] == 0
        assert report["reclaimed_bytes"] == len(old)
        assert report["young_blobs"] == 2

        # The young one ages past the grace; a quiet pass takes it and prints no digest.
        make_old(root, digest_of(young))
        quiet = gc(config, "--online", "-m", "-q")
        assert quiet.returncode == 0, quiet.stderr
        assert quiet.stdout.splitlines() == [
            f"4 blobs marked, 1 blobs and 0 manifests deleted, {len(young)} bytes reclaimed",
            "1 blobs and 0 manifests younger than the grace period kept",
        ]
        assert not data_file(root, digest_of(young)).exists()
        assert json.loads(gc(config, "--last").stdout)["blobs"] == [str(digest_of(young))]


def test_a_grace_shorter_than_the_upload_purge_age_is_refused(tmp_path: Path) -> None:
    config = config_file(tmp_path, tmp_path / "root", gc=True)
    config.write_text(config.read_text().replace(f"graceperiod: {GRACE}", "graceperiod: 30s"))
    for argv in (("gc", str(config), "--online"), ("serve", str(config))):
        shown = subprocess.run(
            cargohold_argv(*argv),
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert shown.returncode == 2, shown
        assert shown.stderr.splitlines() == [
            "cargohold: config: storage.maintenance: gc.graceperiod must be at least "
            "uploadpurging.age (30 s < 60 s)"
        ]
    assert not (tmp_path / "root").exists(), "nothing was started"


async def test_online_gc_spares_a_find_whatever_its_own_config_says(tmp_path: Path) -> None:
    root = tmp_path / "root"
    found = b"found orphan " * 50
    await stored(root, found)
    make_old(root, digest_of(found))
    with serving(config_file(tmp_path, root, gc=True), tmp_path / "serve.log") as (url, _):
        client = Client(url)
        try:
            assert client("HEAD", f"/v2/{REPO}/blobs/{digest_of(found)}")[0] == 200
        finally:
            client.close()
        touched = on_disk(root, path_for(BlobTouched(digest_of(found))))
        wait_until(touched.exists, 10, "the registry never wrote the find down")
        # The operator's config: the same grace (the upload-purge age), no collection of its own.
        run = gc(config_file(tmp_path, root, name="-cron"), "--online", "-m")
        assert run.returncode == 0, run.stderr
        assert data_file(root, digest_of(found)).exists(), run.stdout


# -- one pass at a time ----------------------------------------------------------------------


async def test_a_pass_refuses_while_another_holds_the_lease(tmp_path: Path) -> None:
    root = tmp_path / "root"
    orphan = b"an orphan layer " * 40
    await stored(root, orphan)
    make_old(root, digest_of(orphan))
    config = config_file(tmp_path, root, gc=True)

    driver = FilesystemDriver(str(root))
    try:
        async with holding(driver) as owner:
            for args in (("--online", "-m"), ("-m",)):
                line = refusal(await asyncio.to_thread(gc, config, *args))
                assert line == f"cargohold: a garbage collection is under way ({owner})", args
            assert data_file(root, digest_of(orphan)).exists(), "nothing was collected"
    finally:
        await driver.close()
    assert not on_disk(root, path_for(GcLease())).exists(), "the holder gave it back"
    run = gc(config, "--online", "-m")
    assert run.returncode == 0, run.stderr
    assert not data_file(root, digest_of(orphan)).exists()


async def test_of_two_passes_started_at_once_one_runs_and_the_other_refuses(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    image = await stored(root)
    orphans = plant_orphans(root, 1000)
    config = config_file(tmp_path, root, gc=True)
    passes = [gc_process(config, "--online", "-m") for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in passes]
    statuses = sorted((p.returncode, err) for p, (_, err) in zip(passes, outputs, strict=True))
    assert [status for status, _ in statuses] == [0, 1], outputs
    (line,) = statuses[1][1].splitlines()
    assert line.startswith("cargohold: a garbage collection is under way ("), line
    assert still_there(root, orphans) == 0
    for digest in image_blobs(image):
        assert data_file(root, digest).exists(), digest


async def test_a_lease_of_another_host_holds_until_it_expires(tmp_path: Path) -> None:
    # Whether a holder on another host lives cannot be told: only the expiry frees its lease.
    root = tmp_path / "root"
    await stored(root)
    config = config_file(tmp_path, root)
    lease = on_disk(root, path_for(GcLease()))
    lease.parent.mkdir(parents=True)
    held = {"owner": "elsewhere-1-0a0b0c0d", "host": "elsewhere", "pid": 1}
    lease.write_text(json.dumps({**held, "expires": time.time() + 60}))
    line = refusal(gc(config))
    assert line == "cargohold: a garbage collection is under way (elsewhere-1-0a0b0c0d)"
    lease.write_text(json.dumps({**held, "expires": time.time() - 1}))
    run = gc(config)
    assert run.returncode == 0, run.stderr
    assert not lease.exists(), "the pass gave its lease back"


# -- a pass killed mid-sweep -----------------------------------------------------------------

#: Orphans for the killed passes: enough for five of them to be killed mid-sweep, a batch of
#: deletions at a time.
ORPHANS = (5 * gc_module.BATCHES_AT_ONCE + 2) * gc_module.BATCH


def kill_mid_sweep(config: Path, root: Path, orphans: list[Digest]) -> int:
    """Start ``gc CONFIG -m``, SIGKILL it once it swept a hundred of the ``orphans``; its pid."""
    before = still_there(root, orphans)
    killed = gc_process(config, "-m")
    try:
        deadline = time.monotonic() + 60
        while still_there(root, orphans) > before - 100:
            assert killed.poll() is None, (
                "the pass ended before it was killed",
                *killed.communicate(),
            )
            assert time.monotonic() < deadline, "the pass did not get that far"
            time.sleep(0.005)
        killed.send_signal(signal.SIGKILL)
    finally:
        killed.kill()
        killed.communicate()
    assert killed.returncode == -signal.SIGKILL
    left = still_there(root, orphans)
    assert 0 < left < before, f"killed with {left} of {before} orphans left: plant more"
    return killed.pid


def assert_no_link_to_nothing(root: Path, orphans: list[Digest]) -> list[Digest]:
    """Every blob the repository still names is there; the blobs it names."""
    names = linked(root)
    for digest in names:
        assert data_file(root, digest).exists(), f"{digest} is linked, its content is gone"
    # Links go first: at most the batches being swept when the pass died lost their links alone.
    in_flight = gc_module.BATCH * gc_module.BATCHES_AT_ONCE
    assert 0 <= still_there(root, orphans) - len(set(names) & set(orphans)) <= in_flight
    return names


@pytest.mark.slow
async def test_a_pass_killed_mid_sweep_leaves_no_link_to_nothing_and_the_next_finishes(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    image = await stored(root)
    orphans = plant_orphans(root, ORPHANS)
    config = config_file(tmp_path, root)

    # Killed five times, at a random point of a blob's sweep each time: content deleted before
    # its links would show as a link to nothing about every other time.
    for _ in range(5):
        pid = kill_mid_sweep(config, root, orphans)
        names = assert_no_link_to_nothing(root, orphans)
        # The killed pass's lease names a process of this host that is gone: the next pass
        # takes it at once, not when it expires.
        lease = json.loads(on_disk(root, path_for(GcLease())).read_text())
        assert lease["expires"] > time.time() + 30, lease
        assert (lease["host"], lease["pid"]) == (socket.gethostname(), pid)

    with serving(config, tmp_path / "serve.log") as (url, _):
        client = Client(url)
        try:
            for digest in names:
                status, _ = client("HEAD", f"/v2/{REPO}/blobs/{digest}")
                assert status == 200, digest
                status, body = client("GET", f"/v2/{REPO}/blobs/{digest}")
                assert status == 200, digest
                assert digest_of(body) == digest
            assert_pullable(client, image)
        finally:
            client.close()

    run = gc(config, "-m")
    assert run.returncode == 0, run.stderr
    assert still_there(root, orphans) == 0
    assert sorted(linked(root)) == sorted(image_blobs(image)[1:]), "only the image's links stay"
    for digest in image_blobs(image):
        assert data_file(root, digest).exists(), digest
    with serving(config, tmp_path / "serve-after.log") as (url, _):
        client = Client(url)
        try:
            assert_pullable(client, image)
        finally:
            client.close()
