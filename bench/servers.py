"""The two registries under test, each on a free loopback port with a fresh root.

Both get the same configuration: filesystem storage, deletes enabled, log level
error and no access log. cargohold runs with its default number of workers (one
per CPU); the Go registry is Debian's ``docker-registry`` (CNCF Distribution 2.8).
Each server starts in its own session so that stopping it (SIGTERM, then
SIGKILL for the whole process group) also stops any worker it forked.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CARGOHOLD = "cargohold"
GO = "go"
TRIVIAL = "trivial"

_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
"""


@dataclass(frozen=True)
class Server:
    """One running registry: what the workloads talk to and what the samplers watch."""

    name: str
    url: str
    root: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)


def cargohold_executable() -> str:
    """The ``cargohold`` script beside the interpreter that runs the benchmark."""
    beside = Path(sys.executable).parent / "cargohold"
    if beside.exists():
        return str(beside)
    found = shutil.which("cargohold")
    if found is None:
        raise SystemExit("bench: cargohold is not installed in this environment (make bench)")
    return found


def go_executable() -> str:
    found = shutil.which("docker-registry")
    if found is None:
        raise SystemExit("bench: docker-registry is missing (Debian package docker-registry)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: server exited with {process.returncode} before answering")
        try:
            with urllib.request.urlopen(f"{url}/v2/", timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answered at {url}/v2/ within {timeout} s") from None
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL for the whole process group, whatever state it is in."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextmanager
def start(name: str, workdir: Path) -> Iterator[Server]:
    """Start registry ``name`` (CARGOHOLD or GO) with a fresh root under ``workdir``."""
    root = workdir / f"{name}-root"
    root.mkdir()
    port = free_port()
    config = workdir / f"{name}-config.yml"
    config.write_text(_CONFIG.format(root=json.dumps(str(root)), port=port))
    executable = cargohold_executable() if name == CARGOHOLD else go_executable()
    log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [executable, "serve", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield Server(name, url, root, process)
    finally:
        _stop(process)
        log.close()


@contextmanager
def start_trivial(workdir: Path, big_path: str, big: bytes | bytearray) -> Iterator[Server]:
    """``bench.trivial`` serving ``big`` at ``big_path``: the clients' ceiling."""
    root = workdir / "trivial-root"
    root.mkdir()
    (root / "big").write_bytes(big)
    port = free_port()
    argv = [sys.executable, "-m", "bench.trivial", str(port), str(root / "big"), big_path, "4096"]
    process = subprocess.Popen(
        argv,
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield Server(TRIVIAL, url, root, process)
    finally:
        _stop(process)


@contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    """A scratch directory for the roots, configs and logs; removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="cargohold-bench-"))
    try:
        yield path
    finally:
        if keep:
            print(f"bench: kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)
