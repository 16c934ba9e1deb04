"""Garbage collection and upload purging."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cargohold.digest import Digest, digest_of
from cargohold.errors import BlobUnknown, ManifestUnknown
from cargohold.manifest import OCI_INDEX, OCI_MANIFEST
from cargohold.registry import PurgedUpload
from cargohold.storage import gc
from cargohold.storage.cache.memory import MemoryBlobDescriptorCache
from cargohold.storage.gc import collect_garbage
from cargohold.storage.paths import BlobData, UploadDir, UploadStartedAt, path_for
from cargohold.storage.purge import purge_uploads
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from tests.storage.conftest import stored_files
from tests.storage.images import image_manifest, index_manifest, subject_json
from tests.support.servers import cargohold_argv


async def blob_exists(registry: StorageRegistry, content: bytes) -> bool:
    return await registry.blobs.exists(digest_of(content))


async def test_blobs_no_manifest_references_are_swept(registry: StorageRegistry) -> None:
    repo = registry.repository("a")
    image = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["v1"])
    await repo.blobs.put(b"orphan layer, never referenced")
    result = await collect_garbage(registry)
    assert result.deleted_blobs == [digest_of(b"orphan layer, never referenced")]
    assert not await blob_exists(registry, b"orphan layer, never referenced")
    with pytest.raises(BlobUnknown):
        await repo.blobs.stat(digest_of(b"orphan layer, never referenced"))
    assert (await repo.manifests.get(image.digest)).payload == image.payload
    body = json.loads(image.payload)
    for descriptor in [body["config"], *body["layers"]]:
        assert descriptor["digest"] in result.marked
        assert await registry.blobs.exists(Digest.parse(descriptor["digest"]))
    assert image.digest in result.marked
    assert len(result.marked) == 1 + 1 + len(body["layers"])


async def test_a_dry_run_deletes_nothing(registry: StorageRegistry) -> None:
    await registry.repository("a").blobs.put(b"orphan")
    result = await collect_garbage(registry, dry_run=True)
    assert result.deleted_blobs == [digest_of(b"orphan")]
    assert await blob_exists(registry, b"orphan")


async def test_a_collection_counts_the_bytes_of_the_blobs_it_sweeps(
    registry: StorageRegistry,
) -> None:
    repo = registry.repository("a")
    untagged = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST)
    await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["kept"])
    await repo.blobs.put(b"orphan")
    body = json.loads(untagged.payload)
    # The manifest goes, and with it its config and layers, which nothing else references.
    swept = len(untagged.payload) + body["config"]["size"] + len(b"orphan")
    swept += sum(layer["size"] for layer in body["layers"])
    dry = await collect_garbage(registry, dry_run=True, delete_untagged=True)
    assert len(dry.deleted_blobs) == 5
    assert dry.reclaimed == swept, "a dry run tells what a collection would reclaim"
    real = await collect_garbage(registry, delete_untagged=True)
    assert real.deleted_blobs == dry.deleted_blobs
    assert real.reclaimed == swept
    assert (await collect_garbage(registry)).reclaimed == 0, "nothing is left to reclaim"


async def test_untagged_manifests_go_only_when_asked(registry: StorageRegistry) -> None:
    repo = registry.repository("a")
    untagged = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST)
    tagged = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["t"])
    assert (await collect_garbage(registry)).deleted_blobs == []
    result = await collect_garbage(registry, delete_untagged=True)
    assert result.deleted_manifests == [("a", untagged.digest)]
    with pytest.raises(ManifestUnknown):
        await repo.manifests.get(untagged.digest)
    assert await repo.manifests.exists(tagged.digest)
    assert untagged.digest in result.deleted_blobs


async def test_children_of_a_tagged_index_and_referrers_of_kept_manifests_stay(
    registry: StorageRegistry,
) -> None:
    repo = registry.repository("a")
    child = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST)
    index = await repo.manifests.put(index_manifest(child.payload), OCI_INDEX, ["multi"])
    signature = await image_manifest(
        repo,
        layers=1,
        artifactType="application/x-sig",
        subject=subject_json(index.payload, OCI_INDEX),
    )
    referrer = await repo.manifests.put(signature, OCI_MANIFEST)
    result = await collect_garbage(registry, delete_untagged=True)
    assert result.deleted_manifests == []
    for digest in (child.digest, index.digest, referrer.digest):
        assert await repo.manifests.exists(digest)
    assert [d.digest for d in await repo.referrers(index.digest)] == [referrer.digest]


async def test_collection_clears_the_descriptor_cache(storage_driver: object) -> None:
    cache = MemoryBlobDescriptorCache()
    registry = StorageRegistry(
        storage_driver,  # type: ignore[arg-type]
        cache=cache,
        options=RegistryOptions(delete_enabled=True),
    )
    repo = registry.repository("a")
    digest = (await repo.blobs.put(b"cached orphan")).digest
    await repo.blobs.stat(digest)
    assert await cache.get(digest) is not None
    await collect_garbage(registry)
    assert await cache.get(digest) is None
    with pytest.raises(BlobUnknown):
        await repo.blobs.stat(digest)


async def test_purge_removes_only_uploads_older_than_the_age(registry: StorageRegistry) -> None:
    blobs = registry.repository("a/b").blobs
    old, recent = await blobs.create_upload(), await blobs.create_upload()
    await old.write(b"seventeen bytes..")
    await old.close()
    await recent.write(b"recent")
    await recent.close()
    long_ago = b"2020-01-01T00:00:00Z"
    await registry.driver.put_content(path_for(UploadStartedAt("a/b", old.id)), long_ago)
    cutoff = datetime.now(UTC) - timedelta(hours=168)
    old_dir = path_for(UploadDir("a/b", old.id))
    # A dry run tells what it would reclaim, and purges nothing.
    assert await purge_uploads(registry.driver, cutoff, dry_run=True) == [PurgedUpload(old_dir, 17)]
    await blobs.resume_upload(old.id)
    assert await purge_uploads(registry.driver, cutoff) == [PurgedUpload(old_dir, 17)]
    await blobs.resume_upload(recent.id)
    with pytest.raises(Exception):  # noqa: B017, PT011
        await blobs.resume_upload(old.id)


async def test_purging_an_upload_without_data_reclaims_nothing(
    registry: StorageRegistry,
) -> None:
    # What a process that died between the upload's two files leaves behind.
    upload_id = "5c0d3bd6-7a55-4e0f-8d8e-9a6a3e1f4b21"
    await registry.driver.put_content(
        path_for(UploadStartedAt("a", upload_id)), b"2020-01-01T00:00:00Z"
    )
    assert await stored_files(registry.driver) != {}
    cutoff = datetime.now(UTC) - timedelta(hours=168)
    purged = await purge_uploads(registry.driver, cutoff)
    assert purged == [PurgedUpload(path_for(UploadDir("a", upload_id)), 0)]
    assert await stored_files(registry.driver) == {}


def test_gc_command_sweeps_a_filesystem_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    orphan = digest_of(b"orphan")
    data = root / path_for(BlobData(orphan)).lstrip("/")
    data.parent.mkdir(parents=True)
    data.write_bytes(b"orphan")
    env = {"REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root), "PATH": "/usr/bin:/bin"}
    dry = subprocess.run(
        cargohold_argv("gc", "--dry-run"), env=env, capture_output=True, timeout=60
    )
    assert dry.returncode == 0, dry.stderr
    assert f"would delete blob {orphan}" in dry.stdout.decode()
    assert data.exists()
    real = subprocess.run(cargohold_argv("gc"), env=env, capture_output=True, timeout=60)
    assert real.returncode == 0, real.stderr
    assert f"deleted blob {orphan}" in real.stdout.decode()
    assert not data.exists()


async def test_the_quick_read_of_a_manifest_finds_what_the_full_parse_finds(
    registry: StorageRegistry,
) -> None:
    """Collection reads image manifests and indexes from their JSON alone; it must keep
    alive exactly what the full parse of the same bytes says they reference."""
    repo = registry.repository("quick")
    image = await image_manifest(repo, layers=3)
    docker = await image_manifest(repo, layers=1, docker=True)
    body = json.loads(image)
    body["layers"].append(body["layers"][0])  # a layer listed twice
    body["subject"] = subject_json(docker)
    twice = json.dumps(body).encode()
    index = index_manifest(image, docker, subject=subject_json(image))
    docker_list = json.loads(index_manifest(image))
    docker_list["mediaType"] = "application/vnd.docker.distribution.manifest.list.v2+json"
    for payload in (image, docker, twice, index, json.dumps(docker_list).encode()):
        digest = digest_of(payload)
        quick = gc._quick(digest, payload, False)
        assert quick is not None
        full = gc._full(digest, payload, False)
        assert sorted(quick.references) == sorted(full.references)
        assert sorted(quick.children) == sorted(full.children)
        assert (quick.subject, quick.size) == (full.subject, full.size)
    for odd in (b"[]", b'{"mediaType": "application/x-unknown"}', b'{"schemaVersion": 2}'):
        assert gc._quick(digest_of(odd), odd, False) is None
