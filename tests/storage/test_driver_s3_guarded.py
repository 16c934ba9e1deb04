"""On S3 a move can be held to the version of the file the caller saw (``guarded_moves``).

S3 copies only while the source's ETag is the one given
(``x-amz-copy-source-if-match``, on CopyObject and on every UploadPartCopy of a
large copy). A file that changed after its version was taken is neither
copied nor deleted: ``FileChanged``, and nothing at the destination.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from cargohold.errors import FileChanged, PathNotFound
from cargohold.storage.driver.s3 import S3Driver
from tests.s3.operations import record_operations
from tests.storage.driver_suite import MiB, random_bytes, random_path

#: Small enough for one CopyObject, and large enough for a copy in parts (the threshold is
#: lowered to 5 MiB, S3's smallest part, so the test stays small).
SIZES = {"copy-object": 1000, "upload-part-copy": 11 * MiB + 5}


@pytest.fixture
async def driver(s3_parameters: dict[str, Any]) -> AsyncIterator[S3Driver]:
    driver = S3Driver(
        **s3_parameters, multipartcopythresholdsize=5 * MiB, multipartcopychunksize=5 * MiB
    )
    yield driver
    await driver.close()


@pytest.mark.parametrize("how", SIZES)
async def test_an_unchanged_file_moves(driver: S3Driver, how: str) -> None:
    source, dest = random_path(2), random_path(2)
    content = random_bytes(SIZES[how])
    await driver.put_content(source, content)
    version = await driver.guarded_moves.version(source)
    assert version.size == len(content)
    assert version.tag.startswith('"')
    calls = await record_operations(driver)
    await driver.guarded_moves.move_unchanged(source, dest, version)
    assert await driver.get_content(dest) == content
    with pytest.raises(PathNotFound):
        await driver.stat(source)
    assert ("CopyObject" in calls) == (how == "copy-object")
    assert (calls.count("UploadPartCopy") >= 2) == (how == "upload-part-copy")


@pytest.mark.parametrize("how", SIZES)
async def test_a_file_changed_since_its_version_stays_where_it_is(
    driver: S3Driver, how: str
) -> None:
    source, dest = random_path(2), random_path(2)
    await driver.put_content(source, random_bytes(SIZES[how]))
    version = await driver.guarded_moves.version(source)
    changed = random_bytes(SIZES[how])  # the same size: only the ETag tells them apart
    await driver.put_content(source, changed)
    with pytest.raises(FileChanged):
        await driver.guarded_moves.move_unchanged(source, dest, version)
    assert await driver.get_content(source) == changed
    with pytest.raises(PathNotFound):
        await driver.stat(dest)


async def test_a_missing_file_has_no_version(driver: S3Driver) -> None:
    with pytest.raises(PathNotFound):
        await driver.guarded_moves.version(random_path(2))
