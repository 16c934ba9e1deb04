"""The catalog on S3 costs one delimiter listing per repository, whatever the repositories hold.

``StorageRegistry.catalog`` walks ``repositories/`` one level at a time and
does not descend into a repository's own folders (``_layers``, ``_manifests``,
``_uploads``), so its S3 requests grow with the number of repositories, not
with the tags, layers and revisions below them. Distribution's S3 driver walks
by listing every key under the prefix instead (see the report of this test's
figures it prints: the catalog's time and requests, and what a flat listing
of the same keys costs).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from cargohold.storage.driver.s3 import S3Driver
from cargohold.storage.registry import StorageRegistry
from tests.s3.operations import record_operations

REPOSITORIES = "/docker/registry/v2/repositories"
LINK = b"sha256:" + b"0" * 64  # the content does not matter to the catalog
PER_REPOSITORY = 20  # objects in each repository once it is filled


def object_paths(name: str, number: int) -> list[str]:
    """The paths of a repository's ``number``-th object: a mix of what repositories hold."""
    hex_ = f"{number:064x}"
    kind = number % 4
    if kind == 0:
        return [f"{REPOSITORIES}/{name}/_layers/sha256/{hex_}/link"]
    if kind == 1:
        return [f"{REPOSITORIES}/{name}/_manifests/revisions/sha256/{hex_}/link"]
    if kind == 2:
        return [f"{REPOSITORIES}/{name}/_manifests/tags/t{number}/current/link"]
    return [f"{REPOSITORIES}/{name}/_manifests/tags/t{number - 1}/index/sha256/{hex_}/link"]


@pytest.fixture
async def driver(s3_parameters: dict[str, Any]) -> AsyncIterator[S3Driver]:
    driver = S3Driver(**s3_parameters)
    yield driver
    await driver.close()


async def fill(driver: S3Driver, names: Sequence[str], numbers: range) -> None:
    """Objects ``numbers`` in each repository, written 64 at a time (cheaper than pushes)."""
    paths = [path for name in names for number in numbers for path in object_paths(name, number)]
    limit = asyncio.Semaphore(64)

    async def put(path: str) -> None:
        async with limit:
            await driver.put_content(path, LINK)

    await asyncio.gather(*(put(path) for path in paths))


async def operations_of(driver: S3Driver) -> list[str]:
    """The S3 operations ``driver`` sends from now on, by name, as they are sent."""
    return await record_operations(driver)


async def flat_listing(driver: S3Driver) -> tuple[int, int, float]:
    """Keys under ``repositories/``, pages and seconds of a listing without a delimiter.

    That is how Distribution's S3 driver walks: every key below the prefix.
    """
    client, prefix = await driver._s3(), driver._prefix(REPOSITORIES)
    keys = pages = 0
    started = time.monotonic()
    paginator = client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=driver.bucket, Prefix=prefix):
        keys, pages = keys + len(page.get("Contents", [])), pages + 1
    return keys, pages, time.monotonic() - started


async def test_catalog_requests_grow_with_repositories_not_with_their_objects(
    driver: S3Driver,
) -> None:
    registry = StorageRegistry(driver)
    sent = await operations_of(driver)

    async def catalog() -> tuple[list[str], Counter[str], float]:
        sent.clear()
        started = time.monotonic()
        names = await registry.catalog()
        return names, Counter(sent), time.monotonic() - started

    first = [f"repo-{number:04d}" for number in range(50)]
    await fill(driver, first, range(1))
    names, thin, _ = await catalog()
    assert names == first
    assert set(thin) == {"ListObjectsV2"}, "listings only: nothing is read or stat'ed"

    # The same repositories, now with 20 objects each in folders the walk must not enter.
    # (50 repositories are enough to show it, and fill in a few seconds.)
    await fill(driver, first, range(1, PER_REPOSITORY))
    names, full, _ = await catalog()
    assert names == first
    assert full == thin, "20 times the objects, not one request more"

    everything = [f"repo-{number:04d}" for number in range(1000)]
    await fill(driver, everything[len(first) :], range(1))
    names, thousand, seconds = await catalog()
    assert names == everything
    lists = thousand["ListObjectsV2"]
    # One listing of `repositories/` (1000 names: one page, or two at a page boundary),
    # then one of each repository.
    assert len(everything) < lists <= len(everything) + 3, thousand
    assert lists - thin["ListObjectsV2"] == len(everything) - len(first)

    keys, pages, flat_seconds = await flat_listing(driver)
    assert keys == len(first) * PER_REPOSITORY + len(everything) - len(first)
    # The figures, for whoever runs this with -s.
    print(
        f"\ncatalog of {len(names)} repositories: {seconds:.2f} s, {lists} listings"
        f" ({thin['ListObjectsV2']} for {len(first)});"
        f" a flat listing of the same {keys} keys: {pages} pages, {flat_seconds:.2f} s"
    )
