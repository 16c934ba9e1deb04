"""A private containerd daemon (Debian's ``containerd``) and its ``ctr``, for pulls by a real node.

The daemon runs as root with a root, a state directory and a socket of its own,
none of the machine's: the CRI plugin and every snapshotter but ``native`` are
off, so that it mounts no overlay and pulls unpack by copying files. It is
ready once its socket accepts a connection; it is stopped (and anything left
mounted under its folder unmounted) when the block ends.

containerd is part of the test environment (scripts/install-debs): when it is
missing the tests fail, they never skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.servers import stop

CONTAINERD = "containerd"
CTR = "ctr"

_CONFIG = """\
version = 2
root = {root}
state = {state}
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.overlayfs",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = {address}

[ttrpc]
  address = {ttrpc}

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}
"""


class CtrError(AssertionError):
    def __init__(self, argv: list[str], stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} failed:\n{stderr}")
        self.stderr = stderr


@dataclass(frozen=True)
class Containerd:
    """A running daemon: its socket, and where it keeps content and snapshots."""

    address: Path
    root: Path

    def ctr(self, *args: str, timeout: float = 60) -> str:
        """``ctr --address SOCKET args``; its standard output, or ``CtrError``."""
        argv = [CTR, "--address", str(self.address), *args]
        result = subprocess.run(argv, capture_output=True, timeout=timeout)
        if result.returncode != 0:
            raise CtrError(argv, (result.stderr or result.stdout).decode(errors="replace"))
        return result.stdout.decode(errors="replace")


def _accepts(address: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(address))
        except OSError:
            return False
    return True


def _mounts_under(folder: Path) -> list[str]:
    """Mount points at or below ``folder``, deepest first."""
    prefix = str(folder.resolve())
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


@contextmanager
def containerd(folder: Path, *, timeout: float = 20) -> Iterator[Containerd]:
    """``containerd`` keeping everything under ``folder`` (its log is ``folder/containerd.log``)."""
    for tool in (CONTAINERD, CTR):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed (Debian package containerd)")
    if os.geteuid() != 0:
        pytest.fail("containerd runs as root only; the tests run as root")
    folder.mkdir(parents=True, exist_ok=True)
    # A unix socket's path is at most 107 bytes: the sockets go in a short folder of their own.
    sockets = Path(tempfile.mkdtemp(prefix="ctrd-"))
    address = sockets / "containerd.sock"
    config = folder / "config.toml"
    root = folder / "root"

    def quoted(path: Path) -> str:
        return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'

    config.write_text(
        _CONFIG.format(
            root=quoted(root),
            state=quoted(folder / "state"),
            address=quoted(address),
            ttrpc=quoted(sockets / "containerd.sock.ttrpc"),
            opt=quoted(folder / "opt"),
        )
    )
    log = folder / "containerd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [CONTAINERD, "--config", str(config), "--log-level", "info"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while not _accepts(address):
            if process.poll() is not None:
                pytest.fail(f"containerd exited with {process.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                pytest.fail(f"containerd's socket never answered:\n{log.read_text()}")
            time.sleep(0.02)
        yield Containerd(address, root)
    finally:
        stop(process)
        for point in _mounts_under(folder):
            subprocess.run(["umount", "--lazy", point], check=False)
        shutil.rmtree(sockets, ignore_errors=True)
