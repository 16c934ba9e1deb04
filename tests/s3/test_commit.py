"""On S3 an upload's commit copies its content once, straight into the blobs.

A move on S3 is a server-side copy of the whole content and a delete. The
commit no longer first moves the content to a key of its own (which kept a
late writer of the same upload from changing it under the verification): the
one copy into the blobs is made only while the content is still the version
verified (``x-amz-copy-source-if-match``), and otherwise the PUT answers
``BLOB_UPLOAD_INVALID`` with nothing stored.
"""

from __future__ import annotations

import io
import os
import secrets
from typing import Any

import pytest

from cargohold.digest import Digest
from cargohold.errors import PathNotFound
from cargohold.storage.driver.base import FileVersion
from cargohold.storage.paths import BlobData, path_for
from tests.s3.conftest import AiohttpClient, app_client, error_codes, registry_config, sha256
from tests.s3.operations import watch_operations
from tests.s3.test_faults import NAME, Client, driver_of, push_chunked

MiB = 1 << 20
COPIES = {"CopyObject", "UploadPartCopy"}


async def registry(aiohttp_client: AiohttpClient, s3_parameters: dict[str, Any]) -> Client:
    parameters = {
        **s3_parameters,
        "rootdirectory": f"/t-{secrets.token_hex(6)}",
        "chunksize": 5 * MiB,
        # Copies of more than 5 MiB go in parts: the large case stays small.
        "multipartcopythresholdsize": 5 * MiB,
        "multipartcopychunksize": 5 * MiB,
    }
    return await app_client(aiohttp_client, registry_config(parameters))


@pytest.mark.parametrize("size", [1000, 12 * MiB + 3], ids=["one-copy-object", "copied-in-parts"])
@pytest.mark.parametrize("how", ["monolithic", "chunked"])
async def test_the_content_is_copied_once_and_only_into_the_blobs(
    aiohttp_client: AiohttpClient, s3_parameters: dict[str, Any], size: int, how: str
) -> None:
    client = await registry(aiohttp_client, s3_parameters)
    driver = driver_of(client)
    data = os.urandom(size)
    digest = sha256(data)
    copied: list[tuple[str, str]] = []
    await watch_operations(
        driver,
        lambda operation, key: copied.append((operation, key)) if operation in COPIES else None,
    )
    if how == "monolithic":
        reply = await client.post(
            f"/v2/{NAME}/blobs/uploads/?digest={digest}", data=io.BytesIO(data)
        )
    else:
        closing = await push_chunked(client, data, size // 2)
        reply = await client.put(closing, data=io.BytesIO(data[size // 2 :]))
    assert reply.status == 201, await reply.text()
    blob_key = driver._key(path_for(BlobData(Digest.parse(digest))))
    assert {key for _, key in copied} == {blob_key}
    if size <= 5 * MiB:
        assert [operation for operation, _ in copied] == ["CopyObject"]
    else:
        assert {operation for operation, _ in copied} == {"UploadPartCopy"}
        assert len(copied) == 2  # 12 MiB in parts of 5 MiB, the last one taking the rest
    pulled = await client.get(f"/v2/{NAME}/blobs/{digest}")
    assert (pulled.status, await pulled.read()) == (200, data)


async def test_content_changed_under_the_commit_is_refused_and_nothing_is_stored(
    aiohttp_client: AiohttpClient, s3_parameters: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await registry(aiohttp_client, s3_parameters)
    driver = driver_of(client)
    move = driver._move_unchanged

    async def late_writer_first(source: str, dest: str, version: FileVersion) -> None:
        # What a request that resumed the upload before the commit could still do.
        await driver.put_content(source, os.urandom(version.size))
        await move(source, dest, version)

    monkeypatch.setattr(driver, "_move_unchanged", late_writer_first)
    data = os.urandom(2 * MiB)
    digest = sha256(data)
    reply = await client.post(f"/v2/{NAME}/blobs/uploads/?digest={digest}", data=io.BytesIO(data))
    assert reply.status == 400
    assert error_codes(await reply.read()) == ["BLOB_UPLOAD_INVALID"]
    assert (await client.head(f"/v2/{NAME}/blobs/{digest}")).status == 404
    with pytest.raises(PathNotFound):  # no blob was ever stored under this root
        await driver.list("/docker/registry/v2/blobs")
