"""A real ``redis-server`` for tests: one per session, an empty database per test.

Debian's ``redis-server`` is part of the test environment (docs/ARCHITECTURE.md), so a
server that cannot start fails the tests rather than skipping them.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.support.servers import free_port, stop

REDIS_SERVER = "redis-server"


@dataclass(frozen=True)
class RedisServer:
    port: int
    directory: Path
    process: subprocess.Popen[bytes]
    host: str = "127.0.0.1"

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        """A plain synchronous client, for looking at what the code under test wrote."""
        return redis.Redis(host=self.host, port=self.port, db=db, decode_responses=True)

    def shutdown_keeping_data(self, timeout: float = 10) -> None:
        """Stop the server after it writes its dump, so the next one started on it has the data."""
        # A raw socket: redis-py would retry the command into the closed port for seconds.
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            sock.sendall(b"SHUTDOWN SAVE\r\n")
            sock.recv(64)  # the server closes the connection once it has saved
        self.process.wait(timeout)


def _answers_ping(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def running_redis(
    directory: Path, port: int | None = None, timeout: float = 20
) -> Iterator[RedisServer]:
    """Run ``redis-server`` on a loopback port, without persistence, until the block ends.

    ``directory`` is its working directory: an explicit ``SHUTDOWN SAVE`` writes
    ``dump.rdb`` there, and a server started again on it loads that.
    """
    executable = shutil.which(REDIS_SERVER)
    if executable is None:
        pytest.fail(f"{REDIS_SERVER} is not installed (Debian package redis-server)")
    port = port or free_port()
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "redis.log"
    argv = [
        executable,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", str(directory),
        "--logfile", str(log),
    ]  # fmt: skip
    process = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.monotonic() + timeout
        while not _answers_ping("127.0.0.1", port):
            if process.poll() is not None or time.monotonic() > deadline:
                detail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                pytest.fail(f"redis-server did not start on port {port}:\n{detail}")
            time.sleep(0.02)
        yield RedisServer(port, directory, process)
    finally:
        stop(process)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_db(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The session's server with every database emptied, before and after the test."""
    client = redis_server.client()
    try:
        client.flushall()
        yield redis_server
        client.flushall()
    finally:
        client.close()
