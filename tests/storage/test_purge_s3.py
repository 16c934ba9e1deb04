"""Upload purging on S3 (SeaweedFS), where a folder has no time of its own.

A commit removes the upload's ``startedat`` before it verifies the data it moved
aside (``storage/uploads.py``), and S3 gives a folder the epoch for a time: a
purge judging such an upload by its folder took it in the middle of the commit,
which then failed with a 500 (found by the crash campaign,
``tests/reliability/test_crash_campaign.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cargohold.digest import digest_of
from cargohold.registry import PurgedUpload
from cargohold.storage.driver.base import FileInfo
from cargohold.storage.driver.s3 import S3Driver
from cargohold.storage.paths import UploadDir, path_for
from cargohold.storage.purge import purge_uploads
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from tests.storage.conftest import stored_files


@pytest.fixture
async def registry(s3_parameters: dict[str, Any]) -> AsyncIterator[StorageRegistry]:
    registry = StorageRegistry(S3Driver(**s3_parameters), options=RegistryOptions())
    yield registry
    await registry.close()


async def test_a_purge_during_a_commit_leaves_the_commit_alone(
    registry: StorageRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver, content = registry.driver, b"seventeen bytes.."
    upload = await registry.repository("a").blobs.create_upload()
    await upload.write(content)
    purged: list[PurgedUpload] = []
    stat = driver.stat

    async def stat_after_a_purge(path: str) -> FileInfo:
        # The commit stats the data it moved aside once the upload's startedat is gone.
        if "/commit-" in path:
            purged.extend(await purge_uploads(driver, datetime.now(UTC) - timedelta(hours=1)))
        return await stat(path)

    monkeypatch.setattr(driver, "stat", stat_after_a_purge)
    descriptor = await upload.commit(digest_of(content))
    assert purged == []
    assert descriptor.size == len(content)
    assert await registry.blobs.exists(digest_of(content))


async def test_what_a_commit_cut_short_left_is_purged_once_old(registry: StorageRegistry) -> None:
    # A process killed between the commit's first step and its end leaves this behind.
    upload_dir = path_for(UploadDir("a", "5c0d3bd6-7a55-4e0f-8d8e-9a6a3e1f4b21"))
    await registry.driver.put_content(f"{upload_dir}/commit-0123456789abcdef", b"data")
    assert await purge_uploads(registry.driver, datetime.now(UTC) - timedelta(hours=1)) == []
    assert await stored_files(registry.driver) != {}
    later = datetime.now(UTC) + timedelta(minutes=1)
    assert await purge_uploads(registry.driver, later) == [PurgedUpload(upload_dir, 0)]
    assert await stored_files(registry.driver) == {}
