"""Redis stopped under a running registry, and under garbage collection.

Each test starts a ``redis-server`` of its own, so it can stop it. Redis is an
accelerator: while it is down every request is answered from storage, the
trouble is logged once per warning interval (30 s) however many requests hit
it, and ``/debug/health`` names it. When it comes back with its old data, the
clears this process could not send are replayed before anything is read.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.cache.registries import (
    digest_of,
    push_blob,
    push_image,
    random_bytes,
    write_config,
)
from tests.support.http import request
from tests.support.redis import RedisServer, running_redis
from tests.support.servers import cargohold, cargohold_argv


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as server:
        yield server


def health(url: str) -> tuple[int, dict[str, str]]:
    reply = request("GET", f"{url}/debug/health")
    return reply.status, json.loads(reply.body)


def redis_lines(log: Path) -> list[str]:
    """The log lines about Redis trouble (the cache's rate-limited warning or error)."""
    return [line for line in log.read_text().splitlines() if "Redis at" in line]


def test_requests_are_served_from_storage_while_redis_is_down(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "config.yml", private_redis.port)
    log = tmp_path / "registry.log"
    root = tmp_path / "root"
    raw = private_redis.client()
    # Without the fast path, so every read below goes through the cache.
    with cargohold(root, config=config, log=log, extra_args=("--no-fast-path",)) as url:
        name = "down/app"
        before_config, before_layers, before = push_image(url, name, "before")
        doomed = push_blob(url, name, random_bytes())
        assert health(url) == (200, {})
        assert raw.sismember(f"repository::{name}::blobs", doomed)
        raw.close()
        private_redis.shutdown_keeping_data()

        # Pushes, pulls, HEADs, a delete and a mount: all answered from storage.
        after_config, after_layers, after = push_image(url, name, "after")
        for tag, manifest in (("before", before), ("after", after)):
            reply = request("GET", f"{url}/v2/{name}/manifests/{tag}")
            assert (reply.status, reply.body) == (200, manifest)
        for data in (before_config, *before_layers, after_config, *after_layers):
            reply = request("GET", f"{url}/v2/{name}/blobs/{digest_of(data)}")
            assert (reply.status, reply.body) == (200, data)
            head = request("HEAD", f"{url}/v2/{name}/blobs/{digest_of(data)}")
            assert head.status == 200
        assert request("DELETE", f"{url}/v2/{name}/blobs/{doomed}").status == 202
        assert request("HEAD", f"{url}/v2/{name}/blobs/{doomed}").status == 404
        layer = digest_of(after_layers[0])
        mount = request("POST", f"{url}/v2/other/blobs/uploads/?mount={layer}&from={name}")
        assert mount.status == 201

        status, body = health(url)
        assert status == 503
        assert body == {"redis": f"127.0.0.1:{private_redis.port}: no reply to PING"}
        # Dozens of failed Redis calls, one line: at most one per 30 s interval.
        assert len(redis_lines(log)) == 1, log.read_text()

        # Back with the data it had, the entry of the blob deleted meanwhile included.
        with (
            running_redis(private_redis.directory, private_redis.port) as again,
            closing(again.client()) as raw,
        ):
            assert raw.sismember(f"repository::{name}::blobs", doomed)
            assert health(url) == (200, {})
            # The health check's PING replayed the clear written while Redis was down.
            assert not raw.sismember(f"repository::{name}::blobs", doomed)
            assert request("HEAD", f"{url}/v2/{name}/blobs/{doomed}").status == 404
            assert request("HEAD", f"{url}/v2/other/blobs/{layer}").status == 200
    assert len(redis_lines(log)) == 1, log.read_text()


def run_gc(config: Path, root: Path) -> subprocess.CompletedProcess[bytes]:
    """``gc --online``: the registry keeps serving while it runs."""
    return subprocess.run(
        cargohold_argv("gc", "--online", str(config)),
        env={**os.environ, "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root)},
        capture_output=True,
        timeout=60,
    )


def test_garbage_collection_refuses_to_sweep_while_redis_is_down(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    # Otherwise its clears would die with it, and once Redis is back every registry
    # would answer "layer already exists" for blobs that are gone, until the TTL.
    config = write_config(tmp_path / "config.yml", private_redis.port, collected=True)
    root = tmp_path / "root"
    data = random_bytes()
    with cargohold(root, config=config) as url:
        name = "down/gc"
        orphan = push_blob(url, name, data)
        private_redis.shutdown_keeping_data()

        refused = run_gc(config, root)
        assert refused.returncode == 1, refused
        assert b"does not answer; nothing was deleted" in refused.stderr
        assert request("GET", f"{url}/v2/{name}/blobs/{orphan}").body == data

        with (
            running_redis(private_redis.directory, private_redis.port) as again,
            closing(again.client()) as raw,
        ):
            assert raw.exists(f"blobs::{orphan}")
            # The orphan goes once older than the grace period (a second).
            deadline = time.monotonic() + 20
            swept = run_gc(config, root)
            while f"deleted blob {orphan}".encode() not in swept.stdout:
                assert swept.returncode == 0, swept.stderr
                assert b"1 blobs and 0 manifests younger" in swept.stdout, swept.stdout
                assert time.monotonic() < deadline, "the orphan never aged past the grace"
                swept = run_gc(config, root)
            assert swept.returncode == 0, swept.stderr
            assert request("HEAD", f"{url}/v2/{name}/blobs/{orphan}").status == 404
            assert not raw.exists(f"blobs::{orphan}")
