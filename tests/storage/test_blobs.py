"""The global blob store and each repository's linked view of it."""

from __future__ import annotations

import secrets

import pytest

from cargohold.descriptor import OCTET_STREAM
from cargohold.digest import digest_of
from cargohold.errors import BlobUnknown, NameInvalid, OperationUnsupported, RangeInvalid
from cargohold.storage.driver.base import StorageDriver
from cargohold.storage.paths import BlobData, LayerLink, path_for
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from tests.storage.conftest import stored_files


async def collect(stream: object) -> bytes:
    return b"".join([chunk async for chunk in stream])  # type: ignore[attr-defined]


async def test_a_put_blob_is_content_addressed_and_linked(registry: StorageRegistry) -> None:
    content = secrets.token_bytes(5000)
    repo = registry.repository("library/app")
    descriptor = await repo.blobs.put(content)
    assert descriptor.digest == digest_of(content)
    assert descriptor.size == 5000
    assert await registry.driver.get_content(path_for(BlobData(descriptor.digest))) == content
    link = await registry.driver.get_content(path_for(LayerLink("library/app", descriptor.digest)))
    assert link == str(descriptor.digest).encode()
    assert len(link) == 71


async def test_stat_get_and_open_at_offsets(registry: StorageRegistry) -> None:
    content = secrets.token_bytes(3 * 1024 * 1024 + 11)
    repo = registry.repository("app")
    digest = (await repo.blobs.put(content)).digest
    stat = await repo.blobs.stat(digest)
    assert (stat.digest, stat.size, stat.media_type) == (digest, len(content), OCTET_STREAM)
    assert await repo.blobs.get(digest) == content
    assert await collect(await repo.blobs.open(digest)) == content
    assert await collect(await repo.blobs.open(digest, 1_000_000)) == content[1_000_000:]
    assert await collect(await repo.blobs.open(digest, 10, 100)) == content[10:110]
    assert await collect(await repo.blobs.open(digest, len(content))) == b""
    with pytest.raises(RangeInvalid):
        await repo.blobs.open(digest, len(content) + 1)


async def test_a_blob_linked_in_one_repository_is_unknown_in_another(
    registry: StorageRegistry,
) -> None:
    digest = (await registry.repository("a").blobs.put(b"private to a")).digest
    other = registry.repository("b").blobs
    for attempt in (other.stat(digest), other.get(digest), other.open(digest)):
        with pytest.raises(BlobUnknown) as caught:
            await attempt
        assert caught.value.digest == digest


async def test_delete_unlinks_but_keeps_the_content_for_gc(registry: StorageRegistry) -> None:
    repo = registry.repository("a")
    digest = (await repo.blobs.put(b"to be unlinked")).digest
    await registry.repository("b").blobs.put(b"to be unlinked")
    await repo.blobs.delete(digest)
    with pytest.raises(BlobUnknown):
        await repo.blobs.stat(digest)
    assert await registry.repository("b").blobs.get(digest) == b"to be unlinked"
    assert await registry.driver.get_content(path_for(BlobData(digest))) == b"to be unlinked"
    with pytest.raises(BlobUnknown):
        await repo.blobs.delete(digest)


async def test_delete_is_refused_when_deletes_are_disabled(storage_driver: StorageDriver) -> None:
    registry = StorageRegistry(storage_driver, options=RegistryOptions(delete_enabled=False))
    repo = registry.repository("a")
    digest = (await repo.blobs.put(b"kept")).digest
    with pytest.raises(OperationUnsupported):
        await repo.blobs.delete(digest)
    assert await repo.blobs.get(digest) == b"kept"


async def test_mount_links_a_blob_of_another_repository(registry: StorageRegistry) -> None:
    digest = (await registry.repository("source").blobs.put(b"shared layer")).digest
    target = registry.repository("target")
    mounted = await target.blobs.mount("source", digest)
    assert (mounted.digest, mounted.size) == (digest, len(b"shared layer"))
    assert await target.blobs.get(digest) == b"shared layer"


async def test_mount_from_a_repository_without_the_blob_links_nothing(
    registry: StorageRegistry,
) -> None:
    digest = (await registry.repository("elsewhere").blobs.put(b"not in source")).digest
    before = await stored_files(registry.driver)
    with pytest.raises(BlobUnknown):
        await registry.repository("target").blobs.mount("source", digest)
    assert await stored_files(registry.driver) == before


def test_invalid_names_are_refused_before_any_path_is_built(registry: StorageRegistry) -> None:
    for name in ["UPPER", "a/../b", "a//b", "/a", "a/", "a b", "a%2fb", ""]:
        with pytest.raises(NameInvalid):
            registry.repository(name)


async def test_a_dangling_link_reads_as_an_unknown_blob(registry: StorageRegistry) -> None:
    repo = registry.repository("a")
    digest = (await repo.blobs.put(b"collected")).digest
    await registry.blobs.delete(digest)  # what garbage collection does
    with pytest.raises(BlobUnknown):
        await repo.blobs.stat(digest)
