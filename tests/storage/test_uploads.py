"""Resumable uploads: the intent of Distribution's layer upload tests, and what commit guards."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

import pytest

from cargohold.descriptor import Descriptor
from cargohold.digest import EMPTY_SHA256, Digest, digest_of
from cargohold.errors import BlobUnknown, BlobUploadUnknown, DigestInvalid, SizeInvalid
from cargohold.storage.driver.base import FileInfo
from cargohold.storage.paths import (
    BlobData,
    UploadData,
    UploadHashState,
    UploadsDir,
    UploadStartedAt,
    path_for,
)
from cargohold.storage.registry import StorageRegistry
from tests.storage.conftest import fresh, stored_files


async def test_upload_lifecycle(registry: StorageRegistry) -> None:
    blobs = registry.repository("foo/bar").blobs
    upload = await blobs.create_upload()
    await upload.cancel()
    with pytest.raises(BlobUploadUnknown):
        await blobs.resume_upload(upload.id)

    upload = await blobs.create_upload()
    content = secrets.token_bytes(1 << 20) + secrets.token_bytes(12345)
    for start in range(0, len(content), 100_000):
        await upload.write(content[start : start + 100_000])
    assert upload.size == len(content)
    await upload.close()

    # Another process resumes it: nothing about the upload lives in memory.
    resumed = await fresh(registry).repository("foo/bar").blobs.resume_upload(upload.id)
    assert resumed.size == len(content)
    assert resumed.started_at == upload.started_at
    descriptor = await resumed.commit(digest_of(content))
    assert (descriptor.digest, descriptor.size) == (digest_of(content), len(content))

    with pytest.raises(BlobUploadUnknown):
        await blobs.resume_upload(upload.id)
    assert (await blobs.stat(descriptor.digest)).size == len(content)
    stream = await blobs.open(descriptor.digest, 1000)
    assert b"".join([chunk async for chunk in stream]) == content[1000:]


async def test_an_upload_is_a_folder_with_startedat_and_data(registry: StorageRegistry) -> None:
    upload = await registry.repository("a").blobs.create_upload()
    await upload.write(b"abc")
    await upload.close()
    started = await registry.driver.get_content(path_for(UploadStartedAt("a", upload.id)))
    assert len(started) == 20
    assert started.endswith(b"Z")
    resumed = await registry.repository("a").blobs.resume_upload(upload.id)
    assert resumed.size == 3
    await resumed.commit(digest_of(b"abc"))
    with pytest.raises(Exception):  # noqa: B017, PT011 - any "not found" will do
        await registry.driver.list(path_for(UploadsDir("a")) + "/" + upload.id)


async def test_resuming_in_another_process_then_committing_re_reads_the_data(
    registry: StorageRegistry,
) -> None:
    first, second = registry.repository("a").blobs, fresh(registry).repository("a").blobs
    upload = await first.create_upload()
    await upload.write(b"half one, ")
    await upload.close()
    upload = await second.resume_upload(upload.id)
    await upload.write(b"half two")
    await upload.close()
    upload = await first.resume_upload(upload.id)
    descriptor = await upload.commit(digest_of(b"half one, half two"))
    assert await first.get(descriptor.digest) == b"half one, half two"


async def test_a_wrong_digest_leaves_no_blob_no_link_and_no_upload(
    registry: StorageRegistry,
) -> None:
    before = await stored_files(registry.driver)
    blobs = registry.repository("a").blobs
    upload = await blobs.create_upload()
    await upload.write(b"actual content")
    wrong = digest_of(b"something else")
    with pytest.raises(DigestInvalid):
        await upload.commit(wrong)
    with pytest.raises(BlobUploadUnknown):
        await blobs.resume_upload(upload.id)
    for digest in (wrong, digest_of(b"actual content")):
        with pytest.raises(BlobUnknown):
            await blobs.stat(digest)
    assert await stored_files(registry.driver) == before


async def test_a_wrong_size_leaves_no_blob(registry: StorageRegistry) -> None:
    blobs = registry.repository("a").blobs
    upload = await blobs.create_upload()
    await upload.write(b"12345")
    with pytest.raises(SizeInvalid):
        await upload.commit(digest_of(b"12345"), size=6)
    with pytest.raises(BlobUnknown):
        await blobs.stat(digest_of(b"12345"))


async def test_a_zero_length_upload_is_the_empty_blob(registry: StorageRegistry) -> None:
    blobs = registry.repository("a").blobs
    upload = await blobs.create_upload()
    descriptor = await upload.commit(EMPTY_SHA256)
    assert (descriptor.digest, descriptor.size) == (EMPTY_SHA256, 0)
    assert await blobs.get(EMPTY_SHA256) == b""


async def test_sha512_uploads(registry: StorageRegistry) -> None:
    content = secrets.token_bytes(70_000)
    blobs = registry.repository("a").blobs
    upload = await blobs.create_upload("sha512")
    await upload.write(content)
    digest = Digest.parse("sha512:" + hashlib.sha512(content).hexdigest())
    assert (await upload.commit(digest)).digest == digest
    assert await blobs.get(digest) == content
    assert await registry.driver.get_content(path_for(BlobData(digest))) == content


async def test_a_sha256_upload_committed_with_a_sha512_digest_is_verified_as_sha512(
    registry: StorageRegistry,
) -> None:
    blobs = registry.repository("a").blobs
    upload = await blobs.create_upload()
    await upload.write(b"content")
    digest = Digest.parse("sha512:" + hashlib.sha512(b"content").hexdigest())
    assert (await upload.commit(digest)).digest == digest


async def test_committing_content_that_exists_is_idempotent(registry: StorageRegistry) -> None:
    content = b"same bytes twice"
    for name in ("a", "b", "a"):
        upload = await registry.repository(name).blobs.create_upload()
        await upload.write(content)
        await upload.commit(digest_of(content))
    for name in ("a", "b"):
        assert await registry.repository(name).blobs.get(digest_of(content)) == content


async def test_hash_state_files_left_by_distribution_do_not_matter(
    registry: StorageRegistry,
) -> None:
    blobs = registry.repository("a").blobs
    upload = await blobs.create_upload()
    await upload.write(b"data")
    await upload.close()
    state = path_for(UploadHashState("a", upload.id, "sha256", 4))
    await registry.driver.put_content(state, b"\x00go binary sha256 state")
    resumed = await fresh(registry).repository("a").blobs.resume_upload(upload.id)
    assert resumed.size == 4
    await resumed.write(b" more")
    assert (await resumed.commit(digest_of(b"data more"))).size == 9


@pytest.mark.parametrize("upload_id", ["nope", "../../x", "4f6d3b5c-1b6f-4c31-9d7e-2a8f0e6b9c10"])
async def test_unknown_upload_ids_are_unknown(registry: StorageRegistry, upload_id: str) -> None:
    before = await stored_files(registry.driver)
    with pytest.raises(BlobUploadUnknown):
        await registry.repository("a").blobs.resume_upload(upload_id)
    assert await stored_files(registry.driver) == before


async def test_a_commit_verifies_what_is_stored_not_what_this_process_wrote(
    registry: StorageRegistry,
) -> None:
    """Bytes appended behind this process's back are caught by the size check and re-read."""
    blobs = registry.repository("a").blobs
    upload = await blobs.create_upload()
    await upload.write(b"mine")
    await upload.close()
    resumed = await blobs.resume_upload(upload.id)  # takes back its digester of b"mine"
    writer = await registry.driver.writer(path_for(UploadData("a", upload.id)), append=True)
    await writer.write(b" and theirs")
    await writer.close()
    with pytest.raises(DigestInvalid):
        await resumed.commit(digest_of(b"mine"))
    with pytest.raises(BlobUnknown):
        await blobs.stat(digest_of(b"mine"))


async def test_a_chunk_still_arriving_when_the_upload_is_finished_stays_out_of_the_blob(
    registry: StorageRegistry,
) -> None:
    """A request still writing a chunk when another finishes the upload writes no more: on a
    filesystem its descriptor still pointed at the file the commit moved into place as the
    blob (the stateful fuzzer found it: the blob grew past its digest)."""
    blobs = registry.repository("a").blobs
    upload = await blobs.create_upload()
    await upload.write(b"content")
    await upload.close()
    late = await blobs.resume_upload(upload.id)  # a PATCH, waiting for its body
    finishing = await fresh(registry).repository("a").blobs.resume_upload(upload.id)
    await finishing.commit(digest_of(b"content"))
    with pytest.raises(BlobUploadUnknown):
        await late.write(b" and more")
    await late.close()
    assert await blobs.get(digest_of(b"content")) == b"content"
    assert (await blobs.stat(digest_of(b"content"))).size == len(b"content")
    with pytest.raises(BlobUploadUnknown):
        await blobs.resume_upload(upload.id)


async def test_an_upload_being_finished_cannot_be_resumed(
    registry: StorageRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once a commit has taken the upload's data, a second PUT finishing the same upload finds
    no upload (the stateful fuzzer found it opening the data's path afresh, an empty file, and
    answering 400 DIGEST_INVALID, or 201 for an empty blob, for an upload already gone)."""
    blobs = registry.repository("a").blobs
    upload = await blobs.create_upload()
    await upload.write(b"content")
    await upload.close()
    driver = registry.driver
    stat = driver.stat
    taken, go_on = asyncio.Event(), asyncio.Event()

    async def paused_stat(path: str) -> FileInfo:
        if "/commit-" in path:  # the commit has taken the data, and is about to verify it
            taken.set()
            await go_on.wait()
        return await stat(path)

    monkeypatch.setattr(driver, "stat", paused_stat)

    async def finish() -> Descriptor:
        finishing = await blobs.resume_upload(upload.id)
        return await finishing.commit(digest_of(b"content"))

    finishing = asyncio.ensure_future(finish())
    await taken.wait()
    with pytest.raises(BlobUploadUnknown):
        await blobs.resume_upload(upload.id)
    go_on.set()
    assert (await finishing).digest == digest_of(b"content")
    assert await blobs.get(digest_of(b"content")) == b"content"
    with pytest.raises(BlobUploadUnknown):
        await blobs.resume_upload(upload.id)
