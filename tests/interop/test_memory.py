"""A 2 GiB blob streams in and out of cargohold in bounded memory.

This is ``docs/ARCHITECTURE.md``, invariant 4.

The server runs one process (``--workers 1`` does not fork, checked below), so
its pid is the one answering; a thread samples its ``VmRSS`` during each
transfer, and the kernel's own peak (``VmHWM``, reset through ``clear_refs``
before each transfer) catches what sampling could miss. The data is made on the
fly from a seed, block by block, so the test holds no more than a block either.
"""

from __future__ import annotations

import hashlib
import http.client
import random
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from types import TracebackType

import pytest

from tests.support.http import location, request, with_query
from tests.support.servers import cargohold_argv, free_port, running

MiB = 1 << 20
GiB = 1 << 30
SIZE = 2 * GiB
BLOCK = MiB
PATCH_SIZE = 256 * MiB
LIMIT = 64 * MiB


def generate(seed: int, size: int, first_block: int = 0) -> Iterator[bytes]:
    """``size`` deterministic bytes from block ``first_block`` on: each block numbers itself."""
    block = bytearray(random.Random(seed).randbytes(BLOCK))
    index, remaining = first_block, size
    while remaining > 0:
        block[:8] = index.to_bytes(8, "big")
        n = min(BLOCK, remaining)
        yield bytes(block[:n])
        index, remaining = index + 1, remaining - n


def digest_of(seed: int, size: int) -> str:
    hasher = hashlib.sha256()
    for chunk in generate(seed, size):
        hasher.update(chunk)
    return f"sha256:{hasher.hexdigest()}"


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


class PeakRSS:
    """The highest resident set size of ``pid`` while the block runs."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self.seconds = 0.0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            with suppress(FileNotFoundError):
                self.peak = max(self.peak, status_kib(self.pid, "VmRSS"))
                self.samples += 1
            self._done.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        # "5" resets the kernel's peak RSS (VmHWM) to the current RSS.
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        self._thread.join()
        self.seconds = time.monotonic() - self._started
        self.peak = max(self.peak, status_kib(self.pid, "VmHWM"))


def push_monolithic(base: str, name: str, seed: int, digest: str) -> None:
    """One POST ``?digest=`` with the whole blob as a chunked body from a generator."""
    url = f"{base}/v2/{name}/blobs/uploads/?digest={digest}"
    reply = request("POST", url, generate(seed, SIZE), timeout=300)
    assert reply.status == 201, reply.body
    assert reply.headers["Docker-Content-Digest"] == digest


def push_in_patches(base: str, name: str, seed: int, digest: str) -> None:
    """POST, then one PATCH with ``Content-Range`` per 256 MiB, then an empty PUT."""
    reply = request("POST", f"{base}/v2/{name}/blobs/uploads/")
    assert reply.status == 202
    for start in range(0, SIZE, PATCH_SIZE):
        headers = {
            "Content-Range": f"{start}-{start + PATCH_SIZE - 1}",
            "Content-Length": str(PATCH_SIZE),
            "Content-Type": "application/octet-stream",
        }
        body = generate(seed, PATCH_SIZE, start // BLOCK)
        reply = request("PATCH", location(reply, base), body, headers, timeout=300)
        assert reply.status == 202, reply.body
        assert reply.headers["Range"] == f"0-{start + PATCH_SIZE - 1}"
    reply = request("PUT", with_query(location(reply, base), f"digest={digest}"), timeout=300)
    assert reply.status == 201, reply.body


def pull(base: str, name: str, digest: str) -> str:
    """GET the blob, hashing it as it arrives; its digest."""
    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=300)
    try:
        connection.request("GET", f"/v2/{name}/blobs/{digest}")
        response = connection.getresponse()
        assert response.status == 200
        assert int(response.headers["Content-Length"]) == SIZE
        hasher, received = hashlib.sha256(), 0
        while chunk := response.read(BLOCK):
            hasher.update(chunk)
            received += len(chunk)
        assert received == SIZE
        return f"sha256:{hasher.hexdigest()}"
    finally:
        connection.close()


@pytest.mark.slow
def test_a_2_gib_blob_goes_in_and_out_in_bounded_memory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    try:
        phases, baseline = transfer_2_gib(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # pytest keeps the last runs' folders
    report = ", ".join(
        f"{name}: +{(m.peak - baseline) / MiB:.1f} MiB in {m.seconds:.1f} s ({m.samples} samples)"
        for name, m in phases.items()
    )
    with capsys.disabled():
        print(f"\n2 GiB blob, server RSS {baseline / MiB:.1f} MiB at rest; {report}")
    for name, measured in phases.items():
        assert measured.peak - baseline < LIMIT, f"{name}: {report}"


def transfer_2_gib(root: Path) -> tuple[dict[str, PeakRSS], int]:
    """Push the blob both ways and pull it; the peak RSS of each phase, and the RSS at rest."""
    port, seed = free_port(), random.randrange(1 << 32)
    base = f"http://127.0.0.1:{port}"
    env = {
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root),
        "REGISTRY_LOG_LEVEL": "warn",
    }
    digest = digest_of(seed, SIZE)
    with running(cargohold_argv("serve", "--workers", "1"), f"{base}/v2/", env=env) as server:
        pid = server.pid
        assert children(pid) == set()  # one process: the pid sampled is the one serving
        # Warm up every code path once, so the baseline includes what they import.
        small = b"".join(generate(seed + 1, 4 * MiB))
        warm = f"sha256:{hashlib.sha256(small).hexdigest()}"
        warmed = request("POST", f"{base}/v2/mem/warm/blobs/uploads/?digest={warm}", small)
        assert warmed.status == 201
        assert request("GET", f"{base}/v2/mem/warm/blobs/{warm}").body == small
        baseline = status_kib(pid, "VmRSS")

        with PeakRSS(pid) as monolithic:
            push_monolithic(base, "mem/monolithic", seed, digest)
        with PeakRSS(pid) as patches:
            push_in_patches(base, "mem/patches", seed, digest)
        with PeakRSS(pid) as pulled:
            assert pull(base, "mem/patches", digest) == digest
        assert children(pid) == set()
    return {"POST ?digest=": monolithic, "PATCH x8 + PUT": patches, "GET": pulled}, baseline
