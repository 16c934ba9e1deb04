"""Registries on object storage: configs, served processes, in-process apps, a killable S3.

Everything here runs against real peers: the session's SeaweedFS (``seaweedfs``,
``s3_parameters``), the session's ``redis-server`` (``redis_db``), and for the
fault tests a SeaweedFS of this package's own that a test may kill and start
again on the same ports and data (``object_store``).

``tests/support/servers.py``'s ``cargohold()`` always sets
``REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY``, which next to an ``s3`` section
makes two storage drivers (a config error), so ``serving`` starts the
processes itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from botocore.exceptions import BotoCoreError, ClientError

from cargohold.api.app import create_app
from cargohold.config import parse_config
from tests.support.seaweed import (
    GRPC_OFFSET,
    HOST,
    SeaweedS3,
    free_port_pairs,
    remove_sockets,
    weed_argv,
    write_identities,
)
from tests.support.servers import cargohold_argv, free_port, stop, wait_for_http

MiB = 1 << 20
AiohttpClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def error_codes(body: bytes) -> list[str]:
    """The codes of a specification error body."""
    return [error["code"] for error in json.loads(body)["errors"]]


# -- configuration -----------------------------------------------------------------------


def registry_config(
    parameters: Mapping[str, Any],
    *,
    redis_addr: str | None = None,
    redirect: bool = True,
    driver: str = "s3",
) -> dict[str, Any]:
    """A config document for a registry on S3 (or ``driver``) with deletes enabled.

    Upload purging is off: its background walk would add S3 requests no test asked for.
    """
    document: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "warn"},
        "storage": {
            driver: dict(parameters),
            "delete": {"enabled": True},
            "redirect": {"disable": not redirect},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
    }
    if redis_addr is not None:
        document["storage"]["cache"] = {"blobdescriptor": "redis"}
        document["redis"] = {"addr": redis_addr}
    return document


def write_config(path: Path, document: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(document)))
    return path


async def app_client(
    aiohttp_client: AiohttpClient, document: Mapping[str, Any]
) -> TestClient[web.Request, web.Application]:
    """An in-process registry built from ``document``, and a client of it."""
    config = parse_config(yaml.safe_dump(dict(document)), environ={})
    return await aiohttp_client(create_app(config))


@contextmanager
def serving(
    config: Path,
    count: int,
    logs: Path,
    env: Mapping[str, str] | None = None,
) -> Iterator[list[str]]:
    """``count`` ``cargohold serve`` processes (one worker each) on one config; their URLs.

    All start at once and are waited for together: each takes a second to import.
    """
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    with ExitStack() as stack:
        processes = []
        for number, port in enumerate(ports):
            out = stack.enter_context(open(logs / f"cargohold-{number}.log", "wb"))
            process = subprocess.Popen(
                cargohold_argv("serve", str(config), "--workers", "1"),
                env={**os.environ, **(env or {}), "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            stack.callback(stop, process)
            processes.append(process)
        for url, process in zip(urls, processes, strict=True):
            wait_for_http(f"{url}/v2/", process, timeout=30)
        yield urls


# -- an object store a test may kill -----------------------------------------------------


def _off_the_ephemeral_range(argv: list[str], ports: list[int]) -> tuple[list[str], list[int]]:
    """``argv`` with its ports moved below Linux's ephemeral range (32768 and up).

    A store that comes back must bind the same ports again. While it is down, any
    outgoing connection on the machine may be given one of them as its local port,
    and then weed exits with "address already in use"; a port no connection is ever
    given stays free. The gRPC ports stay 10000 above.
    """
    moved = dict(zip(ports, free_port_pairs(len(ports), 10000, 20000), strict=True))
    for old, new in list(moved.items()):
        moved[old + GRPC_OFFSET] = new + GRPC_OFFSET

    def move(arg: str) -> str:
        flag, equals, value = arg.partition("=")
        if equals and value.isdigit() and int(value) in moved:
            return f"{flag}={moved[int(value)]}"
        return arg

    return [move(arg) for arg in argv], [moved[port] for port in ports]


class ObjectStore:
    """A SeaweedFS that can die and come back on the same ports with the same data.

    The session's server is shared by every test, so the fault tests kill this
    one instead. Its admin service binds a port of its own, chosen free like the
    others, so it runs beside the session's server.
    """

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        identities = directory / "s3.json"
        write_identities(identities)
        argv, ports = weed_argv(directory / "data", identities)
        # A master that resumes its Raft state after a SIGKILL holds writes back for
        # about 5 s after some restarts (2 in 8 here); one that starts afresh learns the volumes
        # from the volume server's first heartbeat. The data is in the volumes and
        # the filer, not in the master's state.
        argv.append("-master.resumeState=false")
        self._argv, self._ports = _off_the_ephemeral_range(argv, ports)
        self._directory = directory
        self._log = directory / "weed.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> SeaweedS3:
        assert self._process is not None
        return SeaweedS3(f"http://{HOST}:{self._ports[3]}", self._directory, self._process)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 60) -> None:
        # A killed weed leaves its Unix sockets behind, named after the same ports.
        remove_sockets(self._ports)
        with open(self._log, "ab") as out:
            self._process = subprocess.Popen(
                self._argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while (reason := self._bucket_problem()) is not None:
            if not self.alive or time.monotonic() > deadline:
                detail = self._log.read_text(errors="replace")[-3000:]
                pytest.fail(f"weed mini did not serve S3 ({reason}):\n{detail}")
            time.sleep(0.05)

    def _bucket_problem(self) -> str | None:
        """None once the bucket exists and takes a write, else why not (yet).

        S3 answers bucket requests before the volume server has registered; the
        write makes sure a test's first one does not wait for that.
        """
        client, bucket = self.server.client(), self.server.bucket
        try:
            try:
                client.create_bucket(Bucket=bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    return str(exc)
            client.put_object(Bucket=bucket, Key="ready", Body=b"")
        except (BotoCoreError, ClientError) as exc:
            return str(exc)
        finally:
            client.close()
        return None

    def kill(self) -> None:
        """SIGKILL, as a crash or a lost host would: nothing is flushed or drained."""
        assert self._process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()

    def stop(self) -> None:
        if self._process is not None:
            stop(self._process, timeout=2)
        remove_sockets(self._ports)


@pytest.fixture(scope="package")
def object_store_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStore]:
    store = ObjectStore(tmp_path_factory.mktemp("private-seaweedfs"))
    store.start()
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture
def object_store(
    object_store_process: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ObjectStore]:
    """The killable SeaweedFS, running; whatever a test killed is started again after it.

    Each S3 request is tried once (``AWS_MAX_ATTEMPTS``), so a dead server fails
    a request at once instead of after seconds of backoff.
    """
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    if not object_store_process.alive:
        object_store_process.start()
    yield object_store_process
    if not object_store_process.alive:
        object_store_process.start()
