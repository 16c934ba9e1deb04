"""A GCS emulator for tests: one per session, a fresh root directory per test.

The emulator is PyPI's ``gcp-storage-emulator`` (the test extra installs it; its
command sits beside the venv's Python). It speaks the JSON API, resumable
uploads included: a session answers a status query (``Content-Range: bytes */*``)
with what it holds, without finishing the upload, which an upload resumed by
another process relies on. It keeps everything in memory and does not check
signatures or credentials. The bucket is made without soft delete, as a
registry's would be, so deleted objects are gone at once. A server that cannot
start fails the tests rather than skipping them. ``stoppable_gcs_emulator``
keeps its data on disk instead, for tests that kill it and start it again.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.restartable import Restartable
from tests.support.servers import free_port, stop

HOST = "127.0.0.1"
BUCKET = "cargohold"
#: What Google's clients read the emulator's address from.
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


@dataclass(frozen=True)
class GCSEmulator:
    """Where the session's emulator answers."""

    endpoint: str  # http://127.0.0.1:PORT
    directory: Path
    process: subprocess.Popen[bytes]
    bucket: str = BUCKET

    def parameters(self, **overrides: Any) -> dict[str, Any]:
        """``GCSDriver`` keyword arguments for this emulator, with ``overrides`` applied.

        The endpoint is not among them: like Google's clients the driver takes it
        from ``STORAGE_EMULATOR_HOST`` (the ``gcs_parameters`` fixture sets it).
        """
        return {"bucket": self.bucket, **overrides}

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str = ""
    ) -> tuple[int, bytes]:
        """One plain request to the emulator: its status and body."""
        headers = {"Content-Type": content_type} if content_type else {}
        request = urllib.request.Request(
            self.endpoint + path, data=body, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def object_names(self, prefix: str) -> list[str]:
        """The names of the objects whose names start with ``prefix``, in order."""
        query = urllib.parse.urlencode({"prefix": prefix})
        status, body = self.request("GET", f"/storage/v1/b/{self.bucket}/o?{query}")
        assert status == 200, (status, body)
        return sorted(item["name"] for item in json.loads(body).get("items") or [])

    def content(self, name: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        path = f"/download/storage/v1/b/{self.bucket}/o/{urllib.parse.quote(name, safe='')}"
        status, body = self.request("GET", f"{path}?alt=media")
        assert status in (200, 404), (status, body)
        return body if status == 200 else None

    # What a test of a registry on any object store asks (tests/objectstores/conftest.py).

    @property
    def driver(self) -> str:
        return "gcs"

    @property
    def env(self) -> dict[str, str]:
        """What a registry process needs in its environment to reach this emulator."""
        return {EMULATOR_ENV: self.endpoint}

    def names(self, prefix: str) -> list[str]:
        return self.object_names(prefix)

    def create_bucket(self, name: str) -> None:
        """A bucket without soft delete (deleted objects are gone at once)."""
        document = {"name": name, "softDeletePolicy": {"retentionDurationSeconds": "0"}}
        status, body = self.request(
            "POST", "/storage/v1/b?project=cargohold", json.dumps(document).encode(),
            "application/json",
        )  # fmt: skip
        assert status in (200, 409), (status, body)


def emulator_command() -> str:
    command = Path(sys.executable).with_name("gcp-storage-emulator")
    if not command.exists():
        pytest.fail(
            "gcp-storage-emulator is missing: pip install gcp-storage-emulator (test extra)"
        )
    return str(command)


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/", timeout=1) as response:
            return bool(response.status == 200 and response.read() == b"OK")
    except OSError:
        return False


def _start(directory: Path, port: int, in_memory: bool, timeout: float) -> GCSEmulator:
    """Start the emulator on ``port`` and wait until it answers and has its bucket.

    On disk it keeps everything under ``directory/.cloudstorage`` (its working directory's).
    """
    argv = [emulator_command(), "start", "--host", HOST, "--port", str(port), "-q"]
    log = directory / "emulator.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [*argv, *(["--in-memory"] if in_memory else [])],
            stdout=out, stderr=subprocess.STDOUT, cwd=directory, start_new_session=True,
        )  # fmt: skip
    server = GCSEmulator(f"http://{HOST}:{port}", directory, process)
    deadline = time.monotonic() + timeout
    while not _answers(server.endpoint):
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process, timeout=2)
            detail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"gcp-storage-emulator did not answer at {server.endpoint}:\n{detail}")
        time.sleep(0.05)
    server.create_bucket(server.bucket)
    return server


@contextmanager
def running_gcs_emulator(directory: Path, timeout: float = 30) -> Iterator[GCSEmulator]:
    """Run the emulator on a free loopback port until the block ends; the bucket exists inside."""
    directory.mkdir(parents=True, exist_ok=True)
    server = _start(directory, free_port(HOST), in_memory=True, timeout=timeout)
    try:
        yield server
    finally:
        stop(server.process, timeout=2)


def stoppable_gcs_emulator(directory: Path) -> Restartable[GCSEmulator]:
    """An emulator keeping its data on disk under ``directory``, killed with SIGKILL.

    It writes each object, and its metadata, before it answers the request that
    made it, so it is killed as a crash would.
    """

    def launch(directory: Path, port: int) -> GCSEmulator:
        return _start(directory, port, in_memory=False, timeout=30)

    return Restartable(directory, launch, graceful=False)


@pytest.fixture(scope="session")
def gcs_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GCSEmulator]:
    with running_gcs_emulator(tmp_path_factory.mktemp("gcs-emulator")) as server:
        yield server


@pytest.fixture
def gcs_parameters(gcs_emulator: GCSEmulator, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Driver parameters on the session's emulator, under a root no other test uses.

    ``STORAGE_EMULATOR_HOST`` points at the emulator for the test's duration.
    """
    monkeypatch.setenv(EMULATOR_ENV, gcs_emulator.endpoint)
    return gcs_emulator.parameters(rootdirectory=f"/t-{secrets.token_hex(6)}")
