"""A real Azure Blob Storage API for tests: one Azurite per session, a fresh root per test.

Azurite comes from npm (``make`` installs ``azurite`` under ``.venv/azurite``);
``azurite-blob`` serves the blob API alone, in memory, on a free loopback port,
for Azurite's published development account. Distribution's own Azurite tests
reach it the same way: ``serviceurl`` is ``http://127.0.0.1:<port>/<account>``.
A server that cannot start fails the tests rather than skipping them.
``stoppable_azurite`` keeps its data on disk instead, for tests that stop it and
start it again.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient, ContainerClient

from tests.support.restartable import Restartable
from tests.support.servers import free_port, stop

HOST = "127.0.0.1"
#: Azurite's well-known development account, published in Azure's documentation.
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINER = "cargohold"
#: The version ``make`` installs (Distribution's CI runs the same one).
VERSION = "3.35.0"


@dataclass(frozen=True)
class Azurite:
    """Where the session's Azurite answers, and as whom to talk to it."""

    serviceurl: str
    process: subprocess.Popen[bytes]
    accountname: str = ACCOUNT
    accountkey: str = KEY
    container: str = CONTAINER

    def parameters(self, **overrides: Any) -> dict[str, Any]:
        """``AzureDriver`` keyword arguments for this server, with ``overrides`` applied."""
        return {
            "accountname": self.accountname,
            "accountkey": self.accountkey,
            "container": self.container,
            "serviceurl": self.serviceurl,
            "credentials": {"type": "shared_key"},
            **overrides,
        }

    def service(self) -> BlobServiceClient:
        """A plain synchronous client, for looking at what the code under test stored."""
        return BlobServiceClient(
            self.serviceurl,
            credential={"account_name": self.accountname, "account_key": self.accountkey},
            retry_total=0,
        )

    def client(self, container: str | None = None) -> ContainerClient:
        return self.service().get_container_client(container or self.container)

    # What a test of a registry on any object store asks (tests/objectstores/conftest.py).

    @property
    def driver(self) -> str:
        return "azure"

    @property
    def env(self) -> dict[str, str]:
        """What a registry process needs in its environment to reach this server: nothing."""
        return {}

    def names(self, prefix: str) -> list[str]:
        """The committed blobs whose names start with ``prefix``, in order."""
        with self.client() as client:
            return sorted(blob.name for blob in client.list_blobs(name_starts_with=prefix))

    def content(self, name: str) -> bytes | None:
        """The committed blob's bytes, or None when there is none."""
        with self.client() as client:
            try:
                return client.download_blob(name).readall()
            except ResourceNotFoundError:
                return None


def azurite_binary() -> str:
    beside_venv = Path(sys.prefix) / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    found = str(beside_venv) if beside_venv.exists() else shutil.which("azurite-blob")
    if found is None:
        pytest.fail(
            f"azurite-blob is missing: npm install --prefix {Path(sys.prefix) / 'azurite'} "
            f"azurite@{VERSION} (make does it)"
        )
    return found


def _create_container(server: Azurite, name: str) -> str | None:
    """Create the container; the reason it could not (yet), or None once it exists."""
    service = server.service()
    try:
        service.create_container(name)
    except ResourceExistsError:
        return None
    except AzureError as exc:
        return " ".join(str(exc).split())[:300]
    finally:
        service.close()
    return None


def _argv(port: int, location: Path | None) -> list[str]:
    """``azurite-blob`` on ``port``: in memory, or keeping its data under ``location``."""
    keeping = ["--location", str(location)] if location else ["--inMemoryPersistence"]
    return [
        azurite_binary(),
        "--blobHost", HOST, "--blobPort", str(port),
        *keeping,
        "--skipApiVersionCheck",  # the SDK may speak a newer API version than Azurite knows
        "--loose",  # headers Azurite does not implement are ignored, not refused
        "--disableTelemetry", "--silent",
    ]  # fmt: skip


def _start(argv: list[str], directory: Path, port: int, timeout: float) -> Azurite:
    """Start ``argv`` and wait until its container exists (made if need be)."""
    log = directory / "azurite.log"
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, cwd=directory, start_new_session=True
        )
    server = Azurite(f"http://{HOST}:{port}/{ACCOUNT}", process)
    deadline = time.monotonic() + timeout
    while (reason := _create_container(server, server.container)) is not None:
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process, timeout=2)
            detail = log.read_text(errors="replace")[-3000:]
            pytest.fail(f"azurite-blob did not serve ({reason}):\n{detail}")
        time.sleep(0.05)
    return server


@contextmanager
def running_azurite(directory: Path, timeout: float = 30) -> Iterator[Azurite]:
    """Run ``azurite-blob`` on a free loopback port until the block ends, its container made."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port(HOST)
    server = _start(_argv(port, None), directory, port, timeout)  # scratch: nothing on disk
    try:
        yield server
    finally:
        stop(server.process, timeout=2)


def stoppable_azurite(directory: Path) -> Restartable[Azurite]:
    """An Azurite keeping its data under ``directory`` (``--location``), stopped with SIGTERM.

    Azurite keeps its metadata in memory and saves it every 5 s and when it
    closes: a SIGKILL would lose the last seconds' writes, and whatever a test
    then found missing would prove nothing. Stopping, it closes its listener and
    its idle connections at once.
    """

    def launch(directory: Path, port: int) -> Azurite:
        return _start(_argv(port, directory / "data"), directory, port, timeout=30)

    return Restartable(directory, launch, graceful=True)


def create_container(server: Azurite) -> str:
    """A new, empty container of the session's Azurite; its name."""
    name = f"t-{secrets.token_hex(6)}"
    if (reason := _create_container(server, name)) is not None:
        pytest.fail(f"cannot create container {name}: {reason}")
    return name


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    with running_azurite(tmp_path_factory.mktemp("azurite")) as server:
        yield server


@pytest.fixture
def azure_parameters(azurite: Azurite) -> dict[str, Any]:
    """Driver parameters on the session's Azurite, under a root no other test uses."""
    return azurite.parameters(rootdirectory=f"/t-{secrets.token_hex(6)}")
