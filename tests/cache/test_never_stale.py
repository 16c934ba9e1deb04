"""Two registries on one storage root and one Redis: a delete through one is seen by the other.

Registry A takes the pushes and the deletes; registry B only reads. Every blob
test first makes sure the Redis entry is there (B answered from it, or at least
could have), so a miss afterwards can only come from the entry being cleared;
then it asks B right after the delete, with no sleep: "eventually" is not good
enough for a cache that lets a repository read skip its link file. Manifests
never enter the repository's blob set (Distribution answers blob requests from
it), which those tests check instead.

B runs without the fast path, so every read it answers goes through the
descriptor cache; A runs with it, as a registry does by default.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.cache.registries import (
    OCI_INDEX,
    OCI_MANIFEST,
    digest_of,
    error_code,
    index_of,
    manifest_of,
    push_blob,
    push_image,
    put_manifest,
    random_bytes,
    write_config,
)
from tests.support.http import request
from tests.support.redis import RedisServer
from tests.support.servers import cargohold, cargohold_argv

#: A database of the session's Redis that no other test module uses.
DB = 7


@dataclass(frozen=True)
class Pair:
    a: str
    b: str
    root: Path
    config: Path
    redis: redis.Redis


@pytest.fixture(scope="module")
def pair(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    """Registries A and B, one root, one Redis database (emptied first)."""
    base = tmp_path_factory.mktemp("shared")
    root = base / "root"
    config = write_config(base / "config.yml", redis_server.port, DB, collected=True)
    client = redis_server.client(DB)
    client.flushdb()
    try:
        with (
            cargohold(root, config=config) as a,
            cargohold(root, config=config, extra_args=("--no-fast-path",)) as b,
        ):
            yield Pair(a, b, root, config, client)
    finally:
        client.flushdb()
        client.close()


def repository_entry(pair: Pair, name: str, digest: str) -> bool:
    """Whether Redis holds the repository's entry for ``digest`` (Distribution's keys)."""
    return bool(pair.redis.sismember(f"repository::{name}::blobs", digest)) and bool(
        pair.redis.exists(f"blobs::{digest}")
    )


def head_blob(url: str, name: str, digest: str) -> int:
    return request("HEAD", f"{url}/v2/{name}/blobs/{digest}").status


def assert_blob_unknown(url: str, name: str, digest: str) -> None:
    assert head_blob(url, name, digest) == 404
    reply = request("GET", f"{url}/v2/{name}/blobs/{digest}")
    assert reply.status == 404
    assert error_code(reply) == "BLOB_UNKNOWN"


def assert_not_a_blob(pair: Pair, name: str, digest: str) -> None:
    """A manifest is not in the repository's blob set, which answers the blob endpoints
    on cargohold and on Distribution alike, so its digest is no blob of the repository."""
    assert not pair.redis.sismember(f"repository::{name}::blobs", digest)
    for url in (pair.a, pair.b):
        assert_blob_unknown(url, name, digest)


def test_a_blob_deleted_through_one_registry_is_unknown_to_the_other(pair: Pair) -> None:
    name = "stale/blob"
    # Both healthy, Redis included; A's fast path hands /debug/health on.
    for url in (pair.a, pair.b):
        reply = request("GET", f"{url}/debug/health")
        assert (reply.status, reply.body) == (200, b"{}")
    digest = push_blob(pair.a, name, random_bytes())
    assert head_blob(pair.a, name, digest) == 200
    assert head_blob(pair.b, name, digest) == 200
    assert repository_entry(pair, name, digest)

    reply = request("DELETE", f"{pair.a}/v2/{name}/blobs/{digest}")
    assert reply.status == 202

    assert_blob_unknown(pair.b, name, digest)
    assert not pair.redis.sismember(f"repository::{name}::blobs", digest)


def test_a_manifest_cannot_reference_a_layer_deleted_through_the_other_registry(
    pair: Pair,
) -> None:
    # The manifest PUT checks its references with the cache in front: a stale
    # entry would let B accept a manifest whose layer the repository no longer has.
    name = "stale/reference"
    config, layer = random_bytes(64), random_bytes()
    push_blob(pair.a, name, config)
    digest = push_blob(pair.a, name, layer)
    assert head_blob(pair.b, name, digest) == 200
    assert request("DELETE", f"{pair.a}/v2/{name}/blobs/{digest}").status == 202

    reply = put_manifest(pair.b, name, "latest", manifest_of(config, [layer]), OCI_MANIFEST)
    assert reply.status == 400
    assert error_code(reply) == "MANIFEST_BLOB_UNKNOWN"


def test_a_manifest_deleted_through_one_registry_is_unknown_to_the_other(pair: Pair) -> None:
    name = "stale/manifest"
    _, _, manifest = push_image(pair.a, name, "v1")
    digest = digest_of(manifest)
    url = f"{pair.b}/v2/{name}/manifests/{digest}"
    assert request("HEAD", url).status == 200
    assert_not_a_blob(pair, name, digest)

    assert request("DELETE", f"{pair.a}/v2/{name}/manifests/{digest}").status == 202

    assert request("HEAD", url).status == 404
    reply = request("GET", url)
    assert reply.status == 404
    assert error_code(reply) == "MANIFEST_UNKNOWN"
    assert request("GET", f"{pair.b}/v2/{name}/manifests/v1").status == 404
    assert not pair.redis.sismember(f"repository::{name}::blobs", digest)


def test_an_index_cannot_list_a_manifest_deleted_through_the_other_registry(pair: Pair) -> None:
    # An index's children are checked with ManifestStore.exists, which asks the cache.
    name = "stale/index"
    _, _, manifest = push_image(pair.a, name, "child")
    digest = digest_of(manifest)
    assert request("HEAD", f"{pair.b}/v2/{name}/manifests/{digest}").status == 200
    assert_not_a_blob(pair, name, digest)
    assert request("DELETE", f"{pair.a}/v2/{name}/manifests/{digest}").status == 202

    reply = put_manifest(pair.b, name, "index", index_of([manifest]), OCI_INDEX)
    assert reply.status == 400
    assert error_code(reply) == "MANIFEST_BLOB_UNKNOWN"


def test_a_deleted_blob_cannot_be_mounted_from_its_old_repository(pair: Pair) -> None:
    source, target = "stale/mount-source", "stale/mount-target"
    digest = push_blob(pair.a, source, random_bytes())
    assert head_blob(pair.b, source, digest) == 200
    assert repository_entry(pair, source, digest)
    assert request("DELETE", f"{pair.a}/v2/{source}/blobs/{digest}").status == 202

    reply = request("POST", f"{pair.b}/v2/{target}/blobs/uploads/?mount={digest}&from={source}")
    # 202: the mount was refused and a plain upload started instead.
    assert reply.status == 202
    assert head_blob(pair.b, target, digest) == 404
    assert not (pair.root / f"docker/registry/v2/repositories/{target}/_layers").exists()


def test_garbage_collection_clears_the_entries_of_what_it_sweeps(pair: Pair) -> None:
    name = "stale/gc"
    _, kept_layers, _ = push_image(pair.a, name, "kept")
    orphan = push_blob(pair.a, name, random_bytes())  # no manifest references it
    kept = digest_of(kept_layers[0])
    for digest in (orphan, kept):
        assert head_blob(pair.b, name, digest) == 200
        assert repository_entry(pair, name, digest)

    def collect() -> subprocess.CompletedProcess[bytes]:
        # Online: both registries keep serving (and recording the blobs they find).
        return subprocess.run(
            [*cargohold_argv("gc", "--online", str(pair.config))],
            env={**os.environ, "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(pair.root)},
            capture_output=True,
            timeout=60,
        )

    # The HEADs above found the orphan: it goes once unfound for the grace period (1 s).
    deadline = time.monotonic() + 20
    result = collect()
    while f"deleted blob {orphan}".encode() not in result.stdout:
        assert result.returncode == 0, result.stderr.decode()
        assert b"younger than the grace period kept" in result.stdout
        assert time.monotonic() < deadline, "the orphan never aged past the grace period"
        result = collect()
    assert result.returncode == 0, result.stderr.decode()

    assert_blob_unknown(pair.b, name, orphan)
    assert not pair.redis.exists(f"blobs::{orphan}")
    assert not pair.redis.sismember(f"repository::{name}::blobs", orphan)
    # Distribution's known bug after a collection: "layer already exists" for a blob
    # that is gone. A client checks with HEAD before pushing; it must be told to push.
    assert head_blob(pair.a, name, orphan) == 404
    # What a manifest references stays, and so do its entries.
    assert head_blob(pair.b, name, kept) == 200
    assert repository_entry(pair, name, kept)
