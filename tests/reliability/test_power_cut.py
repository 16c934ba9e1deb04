"""A power cut loses no write the registry acknowledged (``make power-cut``).

A killed process leaves the kernel's page cache behind, so the crash campaign
cannot tell a name the filesystem has written out from one it only holds in
memory; a power cut can. Here the registry's root is an ext4 filesystem in a
file, mounted through a loop device with the journal's timed commit put off
for ten minutes (``commit=600``): the file then holds only what the
filesystem wrote because a call asked it to (an fsync, a folder's too). A
copy of the file taken at an instant is the disk as a power cut at that
instant leaves it. Mounted again (ext4 replays its journal), another
registry, told it runs in the boot after the cut (``CARGOHOLD_BOOT_ID``, so
that it replays the intent log the first one left), must serve every
manifest and blob the first one acknowledged.

Each cut: ``cargohold serve --workers 2`` on a fresh filesystem; sixteen
clients push a small layer (a monolithic upload, which a commit moves into
the blobs) and then a manifest by a tag of its own, over and over; after a
random moment the server's process group gets SIGKILL and the file is copied.
Half the cuts come while the clients write; the other half once they have
stopped and one last push went alone, which nothing written later can carry
out to the disk. It needs root (``mount``), ``mkfs.ext4`` and a loop
device. ``POWER_CUTS`` sets the number of cuts of each kind (5 by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from cargohold.storage.driver.intentlog import BOOT_ID_VARIABLE
from tests.support.servers import cargohold_argv, free_port, running

CUTS = int(os.environ.get("POWER_CUTS", "5"))
CLIENTS = 16
#: How long the clients write before the cut: uniform within these bounds (seconds).
RUN = (1.0, 4.0)
MANIFEST = "application/vnd.oci.image.manifest.v1+json"

pytestmark = pytest.mark.campaign


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def _mounted(image: Path, at: Path, options: str) -> Iterator[None]:
    at.mkdir(exist_ok=True)
    subprocess.run(["mount", "-o", f"loop,{options}", str(image), str(at)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(at)], check=True)


@contextlib.contextmanager
def _serving(
    root: Path, log: Path, boot: str | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root),
        "REGISTRY_LOG_LEVEL": "warn",
    }
    if boot is not None:
        env[BOOT_ID_VARIABLE] = boot
    argv = cargohold_argv("serve", "--workers", "2")
    with running(argv, f"{url}/v2/", env=env, log=log, timeout=30) as process:
        yield url, process


@dataclass
class _Ledger:
    """What the registry acknowledged: blobs by digest, manifests by tag."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, bytes] = field(default_factory=dict)


async def _push_blob(session: aiohttp.ClientSession, url: str, data: bytes) -> bool:
    digest = _digest(data)
    async with session.post(
        f"{url}/v2/cut/blobs/uploads/",
        params={"digest": digest},
        data=data,
        headers={"Content-Type": "application/octet-stream"},
    ) as response:
        return response.status == 201


def _manifest(config: bytes, layer: bytes, tag: str) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _digest(layer),
                    "size": len(layer),
                }
            ],
            "annotations": {"tag": tag},
        }
    ).encode()


async def _client(
    number: int,
    url: str,
    config: bytes,
    ledger: _Ledger,
    stopping: asyncio.Event,
    rounds: int = 1_000_000,
) -> None:
    async with aiohttp.ClientSession() as session:
        for round_ in range(rounds):
            if stopping.is_set():
                return
            tag = f"c{number}-{round_}"
            layer = os.urandom(random.randrange(100, 5000))
            try:
                if not await _push_blob(session, url, layer):
                    continue
                ledger.blobs[_digest(layer)] = layer
                manifest = _manifest(config, layer, tag)
                async with session.put(
                    f"{url}/v2/cut/manifests/{tag}",
                    data=manifest,
                    headers={"Content-Type": MANIFEST},
                ) as response:
                    if response.status == 201:
                        ledger.manifests[tag] = manifest
            except aiohttp.ClientError:
                return  # the cut


async def _write_until_cut(
    url: str, process: subprocess.Popen[bytes], ledger: _Ledger, quiet: bool
) -> None:
    config = b'{"architecture":"amd64","os":"linux"}'
    async with aiohttp.ClientSession() as session:
        assert await _push_blob(session, url, config)
    ledger.blobs[_digest(config)] = config
    stopping = asyncio.Event()
    clients = [
        asyncio.ensure_future(_client(n, url, config, ledger, stopping)) for n in range(CLIENTS)
    ]
    await asyncio.sleep(random.uniform(*RUN))  # the moment of the cut is the point: random
    if quiet:
        # The clients finish what they started, and one more write goes alone: nothing
        # after it asks the filesystem for anything (an fsync of another write would
        # carry its names out to the disk too).
        stopping.set()
        await asyncio.gather(*clients)
        await _client(CLIENTS, url, config, ledger, asyncio.Event(), rounds=1)
    # The cut: no process writes after this, and what the ledger holds was answered before.
    os.killpg(process.pid, signal.SIGKILL)
    stopping.set()
    await asyncio.gather(*clients)
    # A system call under way (a checkpoint's syncfs) runs to its end before its process
    # dies, writing meanwhile: the disk is copied once every process of the group is dead.
    deadline = time.monotonic() + 60
    while _alive_in_group(process.pid):
        assert time.monotonic() < deadline, "the killed server's processes never died"
        await asyncio.sleep(0.01)


def _alive_in_group(group: int) -> bool:
    """Whether a process of ``group`` is not yet dead (a zombie's system calls are over)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            state, _parent, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
            if int(pgrp) == group and state not in ("Z", "X"):
                return True
    return False


async def _missing(url: str, ledger: _Ledger) -> list[str]:
    """What the registry at ``url`` lost of ``ledger``."""
    lost: list[str] = []
    async with aiohttp.ClientSession() as session:
        for tag, manifest in ledger.manifests.items():
            async with session.get(
                f"{url}/v2/cut/manifests/{tag}", headers={"Accept": MANIFEST}
            ) as response:
                body = await response.read()
                if response.status != 200 or body != manifest:
                    lost.append(f"manifest {tag}: {response.status}")
        for digest, data in ledger.blobs.items():
            async with session.get(f"{url}/v2/cut/blobs/{digest}") as response:
                body = await response.read()
                if response.status != 200 or body != data:
                    lost.append(f"blob {digest}: {response.status}")
    return lost


@pytest.fixture
def disk(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.fail("a power cut needs root, to mount a filesystem on a loop device")
    return tmp_path


@pytest.mark.parametrize("quiet", [False, True], ids=["while-writing", "after-the-last-write"])
@pytest.mark.parametrize("cut", range(CUTS))
def test_a_power_cut_loses_nothing_acknowledged(disk: Path, cut: int, quiet: bool) -> None:
    image, copy = disk / "disk.img", disk / "after-the-cut.img"
    with open(image, "wb") as file:
        file.truncate(256 * 1024 * 1024)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    ledger = _Ledger()
    mnt = disk / "mnt"
    with (
        _mounted(image, mnt, "commit=600"),
        _serving(mnt / "root", disk / "serve.log") as (url, process),
    ):
        asyncio.run(_write_until_cut(url, process, ledger, quiet))
        started = time.monotonic()
        shutil.copyfile(image, copy)  # the disk as the power cut leaves it
        copied = time.monotonic() - started
    assert len(ledger.manifests) >= CLIENTS, "too few writes before the cut to tell anything"
    after = disk / "after"
    with (
        _mounted(copy, after, "commit=5"),
        _serving(after / "root", disk / "serve-after.log", boot=f"after-cut-{cut}") as (url, _),
    ):
        lost = asyncio.run(_missing(url, ledger))
    replayed = re.search(r"replayed (\d+) writes", (disk / "serve-after.log").read_text())
    print(
        f"cut {cut}: {len(ledger.manifests)} manifests and {len(ledger.blobs)} blobs"
        f" acknowledged, copied in {copied:.2f} s, {len(lost)} lost,"
        f" {replayed.group(1) if replayed else 0} writes replayed from the intent log"
    )
    assert lost == [], f"{len(lost)} acknowledged writes lost, the first: {lost[:5]}"
