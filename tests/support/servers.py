"""Start real servers on free loopback ports for tests, and always stop them."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, process: subprocess.Popen[bytes] | None, timeout: float = 20) -> None:
    """Poll ``url`` until it answers (any status) or fail naming why."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing answered at {url} within {timeout} s") from None
            time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL for the whole process group (workers included)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@contextmanager
def running(
    argv: Sequence[str],
    url: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    log: Path | None = None,
    timeout: float = 20,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the block ends; ready once ``url`` answers."""
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        list(argv),
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_http(url, process, timeout)
        yield process
    finally:
        stop(process)
        if log:
            out.close()  # type: ignore[union-attr]


def cargohold_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "cargohold", *args]


@contextmanager
def cargohold(
    root: Path,
    *,
    workers: int = 1,
    config: Path | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[str]:
    """A ``cargohold serve`` on a free port with filesystem storage at ``root``; yields its URL."""
    port = free_port()
    environ = {
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root),
        "REGISTRY_LOG_LEVEL": "warn",
        **(env or {}),
    }
    argv = cargohold_argv(
        "serve", *([str(config)] if config else []), "--workers", str(workers), *extra_args
    )
    url = f"http://127.0.0.1:{port}"
    with running(argv, f"{url}/v2/", env=environ, log=log):
        yield url
