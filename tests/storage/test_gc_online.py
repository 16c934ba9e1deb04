"""Garbage collection while the registry serves: grace periods, reuse, one pass at a time.

``collect_garbage(grace=...)`` deletes nothing changed or found since
``now - grace``: a blob's content, its last find (a HEAD, a mount, a push of
it again, a manifest naming it), an untagged manifest's link. Each test puts
the cut between two moments it controls, so no test waits for a clock.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from cargohold.digest import Digest, digest_of
from cargohold.errors import BlobUnknown, PathNotFound
from cargohold.manifest import OCI_LAYER_GZIP, OCI_MANIFEST
from cargohold.storage import gc
from cargohold.storage.driver.base import StorageDriver
from cargohold.storage.gc import collect_garbage
from cargohold.storage.lease import LeaseHeld, holding
from cargohold.storage.paths import BlobData, BlobHidden, BlobTouched, GcLease, path_for
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from cargohold.storage.reuse import ReuseRecords
from tests.storage.images import descriptor_json, image_manifest, index_manifest, subject_json

ORPHAN = b"a layer no manifest references"


@pytest.fixture
def serving(storage_driver: StorageDriver) -> StorageRegistry:
    """A registry that records finds of blobs, as one with storage.maintenance.gc does."""
    options = RegistryOptions(delete_enabled=True, reuse_interval=0.0)
    return StorageRegistry(storage_driver, options=options)


async def later() -> float:
    """A moment strictly after everything done so far, and before anything done next."""
    moment = time.time()
    await asyncio.sleep(0.005)  # clocks tick in microseconds: this is after, by far
    return moment + 0.0025


async def stored(registry: StorageRegistry, content: bytes) -> bool:
    """Whether the content is in storage, asked of the driver: not a find of the blob."""
    try:
        await registry.driver.stat(path_for(BlobData(digest_of(content))))
    except PathNotFound:
        return False
    return True


async def test_nothing_younger_than_the_grace_period_is_deleted(
    serving: StorageRegistry,
) -> None:
    repo = serving.repository("a")
    await repo.blobs.put(ORPHAN)
    cut = await later()
    result = await collect_garbage(serving, grace=3600, now=cut + 3599)
    assert (result.deleted_blobs, result.young_blobs) == ([], 1)
    assert await stored(serving, ORPHAN)
    result = await collect_garbage(serving, grace=3600, now=cut + 3600)
    assert result.deleted_blobs == [digest_of(ORPHAN)]
    assert not await stored(serving, ORPHAN)
    with pytest.raises(BlobUnknown):
        await repo.blobs.stat(digest_of(ORPHAN))


@pytest.mark.parametrize("find", ["stat", "mount", "push again", "manifest names it"])
async def test_a_find_makes_a_blob_young_again(serving: StorageRegistry, find: str) -> None:
    repo = serving.repository("a")
    descriptor = await repo.blobs.put(ORPHAN)
    cut = await later()  # the content is older than this
    if find == "stat":
        await repo.blobs.stat(descriptor.digest)
    elif find == "mount":
        await serving.repository("b").blobs.mount("a", descriptor.digest)
    elif find == "push again":
        upload = await repo.blobs.create_upload()
        await upload.write(ORPHAN)
        await upload.commit(descriptor.digest)
    else:
        # A manifest naming it as a layer: its push finds it; then the manifest goes.
        body = json.loads(await image_manifest(repo, layers=0))
        body["layers"] = [descriptor_json(OCI_LAYER_GZIP, ORPHAN)]
        manifest = await repo.manifests.put(json.dumps(body).encode(), OCI_MANIFEST)
        await repo.manifests.delete(manifest.digest)
    result = await collect_garbage(serving, grace=0, now=cut)
    assert descriptor.digest not in result.deleted_blobs
    assert await stored(serving, ORPHAN)


async def test_without_a_find_the_same_blob_goes(serving: StorageRegistry) -> None:
    await serving.repository("a").blobs.put(ORPHAN)
    cut = await later()
    result = await collect_garbage(serving, grace=0, now=cut)
    assert result.deleted_blobs == [digest_of(ORPHAN)]
    assert not await stored(serving, ORPHAN)


async def test_a_find_is_written_down_once_per_interval(storage_driver: StorageDriver) -> None:
    registry = StorageRegistry(storage_driver, options=RegistryOptions(reuse_interval=3600))
    repo = registry.repository("a")
    descriptor = await repo.blobs.put(ORPHAN)
    reuse = registry.blobs.reuse
    assert reuse is not None
    await repo.blobs.stat(descriptor.digest)
    record = path_for(BlobTouched(descriptor.digest))
    first = await storage_driver.get_content(record)  # written before the stat answered
    for _ in range(3):
        await repo.blobs.stat(descriptor.digest)
    assert await storage_driver.get_content(record) == first


async def test_young_untagged_manifests_and_their_blobs_stay(serving: StorageRegistry) -> None:
    repo = serving.repository("a")
    old = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST)
    cut = await later()
    young = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST)
    result = await collect_garbage(serving, delete_untagged=True, grace=0, now=cut)
    assert result.deleted_manifests == [("a", old.digest)]
    assert await repo.manifests.exists(young.digest)
    for blob in ((await repo.manifests.get(young.digest)).payload,):
        assert blob
    assert result.young_manifests == 1


async def test_referrers_of_a_live_manifest_stay_and_an_index_keeps_its_children(
    serving: StorageRegistry,
) -> None:
    repo = serving.repository("a")
    child = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST)
    index = await repo.manifests.put(
        index_manifest(child.payload), "application/vnd.oci.image.index.v1+json", ["multi"]
    )
    signature = await image_manifest(
        repo,
        layers=1,
        artifactType="application/x-sig",
        subject=subject_json(child.payload, OCI_MANIFEST),
    )
    referrer = await repo.manifests.put(signature, OCI_MANIFEST)
    orphan_referrer = await repo.manifests.put(
        await image_manifest(
            repo,
            layers=1,
            artifactType="application/x-sbom",
            subject={"mediaType": OCI_MANIFEST, "digest": "sha256:" + "0" * 64, "size": 1},
        ),
        OCI_MANIFEST,
    )
    cut = await later()
    result = await collect_garbage(serving, delete_untagged=True, grace=0, now=cut)
    for digest in (child.digest, index.digest, referrer.digest):
        assert await repo.manifests.exists(digest)
    assert result.deleted_manifests == [("a", orphan_referrer.digest)]
    for blob in blobs_of(signature):
        assert await serving.blobs.exists(blob)


def blobs_of(payload: bytes) -> list[Digest]:
    body = json.loads(payload)
    digests = [body["config"]["digest"], *(layer["digest"] for layer in body["layers"])]
    return [Digest.parse(digest) for digest in digests]


async def test_one_pass_at_a_time(storage_driver: StorageDriver) -> None:
    async with holding(storage_driver):
        with pytest.raises(LeaseHeld, match="under way"):
            async with holding(storage_driver):
                pass
    async with holding(storage_driver):
        pass  # released: the next pass runs


async def test_a_lease_whose_holder_on_this_host_is_gone_is_free(
    storage_driver: StorageDriver,
) -> None:
    dead = await asyncio.create_subprocess_exec("true")
    await dead.wait()
    async with holding(storage_driver):
        document = (await storage_driver.get_content(path_for(GcLease()))).decode()
        await storage_driver.put_content(
            path_for(GcLease()),
            document.replace(f'"pid": {os.getpid()}', f'"pid": {dead.pid}').encode(),
        )
        # Another process: its holder is gone, so the lease is free though unexpired.
        async with holding(storage_driver):
            pass


async def test_a_find_between_mark_and_sweep_keeps_the_blob(
    serving: StorageRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process finds the blob once the pass has chosen it, and references it."""
    other = StorageRegistry(serving.driver, options=serving.options)
    other.blobs.reuse = ReuseRecords(serving.driver, 0.0)  # its own, never flushed memory
    await serving.repository("a").blobs.put(ORPHAN)
    cut = await later()
    swept = gc._cache_answers

    async def find_then_reference(registry: StorageRegistry) -> bool:
        repo = other.repository("a")
        await repo.blobs.stat(digest_of(ORPHAN))  # a HEAD: 200
        body = json.loads(await image_manifest(repo, layers=0))
        body["layers"] = [descriptor_json(OCI_LAYER_GZIP, ORPHAN)]
        await repo.manifests.put(json.dumps(body).encode(), OCI_MANIFEST, ["v1"])
        return await swept(registry)

    monkeypatch.setattr(gc, "_cache_answers", find_then_reference)
    result = await collect_garbage(serving, grace=0, now=cut)
    assert digest_of(ORPHAN) not in result.deleted_blobs
    assert result.reclaimed == 0  # nothing went: nothing is told as reclaimed
    assert await stored(serving, ORPHAN)
    assert await other.repository("a").blobs.get(digest_of(ORPHAN)) == ORPHAN


async def test_a_find_of_a_hidden_blob_waits_for_the_pass_and_keeps_it(
    serving: StorageRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A find that meets the blob hidden leaves its record and waits: the pass, reading the
    record next, puts the blob back, and the find answers that it exists."""
    other = StorageRegistry(serving.driver, options=serving.options)
    other.blobs.reuse = ReuseRecords(serving.driver, 0.0)
    await serving.repository("a").blobs.put(ORPHAN)
    cut = await later()
    driver = serving.driver
    move, put_content = driver.move, driver.put_content
    finds: list[asyncio.Task[bool]] = []
    waiting = asyncio.Event()

    async def hide_then_find(source: str, dest: str) -> None:
        await move(source, dest)
        if dest.endswith("/collecting"):
            finds.append(
                asyncio.ensure_future(other.repository("a").blobs.exists(digest_of(ORPHAN)))
            )
            await waiting.wait()  # the find has met it hidden and written its record

    async def noting_record(path: str, content: bytes) -> None:
        await put_content(path, content)
        if "/gc/touched/" in path and finds:
            waiting.set()

    monkeypatch.setattr(driver, "move", hide_then_find)
    monkeypatch.setattr(driver, "put_content", noting_record)
    result = await collect_garbage(serving, grace=0, now=cut)
    assert [await find for find in finds] == [True]
    assert result.deleted_blobs == []
    assert await stored(serving, ORPHAN)
    assert await other.repository("a").blobs.get(digest_of(ORPHAN)) == ORPHAN


async def test_content_a_killed_pass_left_hidden_is_judged_again(
    serving: StorageRegistry,
) -> None:
    await serving.repository("a").blobs.put(ORPHAN)
    digest = digest_of(ORPHAN)
    await serving.driver.move(path_for(BlobData(digest)), path_for(BlobHidden(digest)))
    assert await gc.recover_hidden(serving) == 1
    assert await stored(serving, ORPHAN)
    cut = await later()
    result = await collect_garbage(serving, grace=0, now=cut)
    assert result.deleted_blobs == [digest]


async def test_a_tag_written_while_a_pass_removes_the_manifest_keeps_it(
    serving: StorageRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = serving.repository("a")
    manifest = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST)
    cut = await later()
    checked = gc._still_untagged_and_old

    async def then_tagged(registry: StorageRegistry, name: str, digest: Digest, at: float) -> bool:
        untagged = await checked(registry, name, digest, at)
        await repo.tags.tag("stable", digest)  # a client's tag, acknowledged with 201
        return untagged

    monkeypatch.setattr(gc, "_still_untagged_and_old", then_tagged)
    result = await collect_garbage(serving, delete_untagged=True, grace=0, now=cut)
    assert (result.deleted_manifests, result.deleted_blobs, result.reclaimed) == ([], [], 0)
    assert await repo.tags.get("stable") == manifest.digest
    assert (await repo.manifests.get(manifest.digest)).payload == manifest.payload


async def test_of_many_processes_taking_the_lease_at_once_exactly_one_holds_it(
    storage_driver: StorageDriver,
) -> None:
    """A local disk creates the lease only where there is none: no wait decides it."""
    assert storage_driver.exclusive_creates is not None

    async def take() -> bool:
        try:
            async with holding(storage_driver):
                await asyncio.sleep(0.05)  # still held while the others try
                return True
        except LeaseHeld:
            return False

    assert sorted(await asyncio.gather(*(take() for _ in range(8)))) == [False] * 7 + [True]


async def test_an_expired_lease_is_taken_over_by_exactly_one(
    storage_driver: StorageDriver,
) -> None:
    expired = {"owner": "gone", "host": "elsewhere", "pid": 1, "expires": time.time() - 1}
    await storage_driver.put_content(path_for(GcLease()), json.dumps(expired).encode())

    async def take() -> str | None:
        try:
            async with holding(storage_driver) as owner:
                await asyncio.sleep(0.05)
                return owner
        except LeaseHeld:
            return None

    owners = [o for o in await asyncio.gather(*(take() for _ in range(4))) if o is not None]
    assert len(owners) == 1
    # Nothing is left beside it: the lease moved aside to take it over is gone.
    assert await storage_driver.list("/cargohold/gc") == []


async def test_a_create_where_a_file_is_leaves_it_unchanged(storage_driver: StorageDriver) -> None:
    creates = storage_driver.exclusive_creates
    assert creates is not None
    assert await creates.create("/a/lease", b"first") is True
    assert await creates.create("/a/lease", b"second") is False
    assert await storage_driver.get_content("/a/lease") == b"first"
