"""Garbage collection and upload purging."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cargohold.digest import digest_of
from cargohold.errors import BlobUnknown, ManifestUnknown
from cargohold.manifest import OCI_INDEX, OCI_MANIFEST
from cargohold.storage.cache.memory import MemoryBlobDescriptorCache
from cargohold.storage.gc import collect_garbage
from cargohold.storage.paths import BlobData, UploadStartedAt, path_for
from cargohold.storage.purge import purge_uploads
from cargohold.storage.registry import RegistryOptions, StorageRegistry
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
    for layer in result.marked:
        assert await registry.blobs.exists(layer)


async def test_a_dry_run_deletes_nothing(registry: StorageRegistry) -> None:
    await registry.repository("a").blobs.put(b"orphan")
    result = await collect_garbage(registry, dry_run=True)
    assert result.deleted_blobs == [digest_of(b"orphan")]
    assert await blob_exists(registry, b"orphan")


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
    await old.close()
    await recent.close()
    long_ago = b"2020-01-01T00:00:00Z"
    await registry.driver.put_content(path_for(UploadStartedAt("a/b", old.id)), long_ago)
    cutoff = datetime.now(UTC) - timedelta(hours=168)
    assert await purge_uploads(registry.driver, cutoff, dry_run=True) != []
    await blobs.resume_upload(old.id)  # a dry run purges nothing
    purged = await purge_uploads(registry.driver, cutoff)
    assert [p.rpartition("/")[2] for p in purged] == [old.id]
    await blobs.resume_upload(recent.id)
    with pytest.raises(Exception):  # noqa: B017, PT011
        await blobs.resume_upload(old.id)


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
