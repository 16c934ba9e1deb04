"""What the S3 modes run beside the registries: SeaweedFS, and a redis-server.

Both are started the way the tests start them (``tests/support``): ``weed mini``
on free loopback ports with an ``s3.json`` identity and one bucket made with
botocore, and ``redis-server --save '' --appendonly no`` on a free port. The test
helpers report a server that cannot start with ``pytest.fail``; here that
becomes a ``BenchError``. Each server runs in its own process group and is
stopped with it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support import redis as redis_support
from tests.support import seaweed

from bench.client import BenchError


@dataclass(frozen=True)
class S3:
    """The running SeaweedFS: where it answers, and where it keeps its data."""

    server: seaweed.SeaweedS3

    @property
    def pid(self) -> int:
        return self.server.process.pid

    @property
    def data(self) -> Path:
        """Its volumes and filer store: what the runner reads to warm the page cache."""
        return self.server.directory / "data"

    def storage(self, rootdirectory: str, redirect: bool, cache: bool) -> dict[str, Any]:
        """A ``storage`` section on this server; Distribution reads the same keys."""
        parameters = self.server.parameters(rootdirectory=rootdirectory, v4auth=True)
        section: dict[str, Any] = {"s3": parameters, "redirect": {"disable": not redirect}}
        if cache:
            section["cache"] = {"blobdescriptor": "redis"}
        return section


def version() -> str:
    """``weed version``, for the results file."""
    try:
        done = subprocess.run(
            [seaweed.weed_binary(), "version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""


@contextmanager
def _failures_as_bench_errors(what: str) -> Iterator[None]:
    try:
        yield
    except pytest.fail.Exception as exc:
        raise BenchError(f"{what}: {exc}") from None


@contextmanager
def seaweedfs(directory: Path) -> Iterator[S3]:
    """SeaweedFS with one empty bucket, until the block ends."""
    with _failures_as_bench_errors("SeaweedFS"), seaweed.running_seaweedfs(directory) as server:
        yield S3(server)


@contextmanager
def redis(directory: Path) -> Iterator[redis_support.RedisServer]:
    """A redis-server without persistence, until the block ends."""
    with (
        _failures_as_bench_errors("redis-server"),
        redis_support.running_redis(directory) as server,
    ):
        yield server
