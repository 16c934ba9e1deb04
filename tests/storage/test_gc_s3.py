"""Collection on S3 (SeaweedFS): the sweep deletes files in batches, not blob by blob.

Offline, a blob's links and content go in DeleteObjects requests of a thousand
keys (``BatchDeletes``): the links of a batch first, then its content, so a
pass cut short leaves no link to nothing. Online, each blob is still hidden
and judged on its own, several at a time.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest

from cargohold.digest import Digest
from cargohold.errors import BlobUnknown
from cargohold.manifest import OCI_MANIFEST
from cargohold.storage.driver.s3 import S3Driver
from cargohold.storage.gc import collect_garbage
from cargohold.storage.lease import LeaseHeld, holding
from cargohold.storage.paths import BlobData, path_for
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from tests.s3.operations import record_operations
from tests.storage.images import image_manifest

ORPHANS = 300


@pytest.fixture
async def registry(s3_parameters: dict[str, Any]) -> AsyncIterator[StorageRegistry]:
    registry = StorageRegistry(S3Driver(**s3_parameters), options=RegistryOptions())
    yield registry
    await registry.close()


async def test_an_offline_sweep_deletes_in_batches(registry: StorageRegistry) -> None:
    repo = registry.repository("team/app")
    image = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["v1"])
    orphans = [(await repo.blobs.put(b"orphan %d" % i)).digest for i in range(ORPHANS)]
    driver = registry.driver
    assert isinstance(driver, S3Driver)
    calls = await record_operations(driver)
    result = await collect_garbage(registry)
    assert sorted(result.deleted_blobs) == sorted(orphans)
    deletes = Counter(c for c in calls if c.startswith("Delete"))
    # 300 links (and their pending keys): 600 keys, one request; the 300 blobs' data with
    # theirs: one more. Blob by blob it was 1200 requests.
    assert deletes == {"DeleteObjects": 2}
    for digest in orphans[:5]:
        with pytest.raises(BlobUnknown):
            await repo.blobs.stat(digest)
    stored = await repo.manifests.get(image.digest)
    body = json.loads(stored.payload)
    for descriptor in [body["config"], *body["layers"]]:
        assert await repo.blobs.stat(Digest.parse(descriptor["digest"]))


async def test_an_online_sweep_judges_each_blob_and_deletes_what_stayed_unfound(
    registry: StorageRegistry,
) -> None:
    repo = registry.repository("team/app")
    orphans = [(await repo.blobs.put(b"online orphan %d" % i)).digest for i in range(20)]
    found = orphans[0]
    result = await collect_garbage(registry, grace=0, now=0.0)  # everything is younger
    assert result.deleted_blobs == []
    serving = StorageRegistry(
        registry.driver, options=RegistryOptions(reuse_interval=0.0)
    )  # records finds, as a registry collected while serving does
    reuse = serving.blobs.reuse
    assert reuse is not None
    await serving.repository("team/app").blobs.stat(found)
    last = await reuse.last_reuse(found)
    assert last is not None
    cut = last - 0.001  # after every orphan was written, before the find
    result = await collect_garbage(registry, grace=0, now=cut)
    assert sorted(result.deleted_blobs) == sorted(orphans[1:])
    assert await repo.blobs.stat(found)


async def test_on_an_object_store_one_of_two_takers_holds_the_lease(
    registry: StorageRegistry,
) -> None:
    """No write there is exclusive: each writes itself in, waits, and reads the lease back."""
    driver = registry.driver
    assert driver.exclusive_creates is None

    async def take() -> bool:
        try:
            async with holding(driver):
                await asyncio.sleep(0.1)
                return True
        except LeaseHeld:
            return False

    assert sorted(await asyncio.gather(take(), take())) == [False, True]


async def test_a_manifest_that_does_not_parse_keeps_its_repository_and_is_reported(
    registry: StorageRegistry,
) -> None:
    repo = registry.repository("broken/app")
    orphan = (await repo.blobs.put(b"what the unreadable manifest may reference")).digest
    image = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["v1"])
    await registry.driver.put_content(path_for(BlobData(image.digest)), b"{not json")
    elsewhere = registry.repository("fine/app")
    gone = (await elsewhere.blobs.put(b"an orphan where all is readable")).digest
    result = await collect_garbage(registry, delete_untagged=True)
    assert result.deleted_blobs == [gone]
    assert await repo.blobs.stat(orphan)
    assert len(result.damaged) == 1
    assert result.damaged[0].startswith(f"broken/app: cannot read manifest {image.digest}")
