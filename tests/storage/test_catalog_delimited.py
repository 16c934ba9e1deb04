"""The delimited catalog (one listing cut at ``/_``) answers every page as the walked one does.

Each test fills one storage and asks both catalogs: ``WalkedCatalog`` (a listing
per folder) and the one ``catalog_for`` picks for a driver with
``delimited_lists``. A driver below lists as S3 does, pages of a few names, so
that pages cut short, continuation and ``StartAfter`` all meet awkward names; the
S3 driver does it on SeaweedFS, which walks folders to answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from cargohold.errors import PathNotFound
from cargohold.storage.catalog import Catalog, DelimitedCatalog, WalkedCatalog, catalog_for
from cargohold.storage.driver.base import DelimitedLists, DelimitedPage, StorageDriver
from cargohold.storage.driver.inmemory import InMemoryDriver
from cargohold.storage.driver.s3 import S3Driver
from cargohold.storage.paths import REPOSITORIES

# "-" and "." sort before "/", digits before "_": "a-b/_", "a.b/_" and "a/0x/_" list before
# "a/_", while the catalog wants "a" first.
NAMES = sorted(
    [
        "a", "a-b", "a--b", "a.b", "a/0x", "a/0x/y", "a/b", "a/b/c", "a/b-c", "a_b", "a__b",
        "a0", "ab", "b", "lib/x/y", "lib/x-y", "lib0/z", "only-layers", "only-uploads", "z/9",
    ]
)  # fmt: skip


async def fill(driver: StorageDriver, names: list[str]) -> None:
    """Each name a repository by one of its marker folders, and strays that are none."""
    for i, name in enumerate(names):
        folder = f"{REPOSITORIES}/{name}"
        if name == "only-uploads":
            await driver.put_content(f"{folder}/_uploads/u1/startedat", b"t")
        elif name == "only-layers" or i % 2:
            await driver.put_content(f"{folder}/_layers/sha256/ab/link", b"sha256:ab")
        else:
            await driver.put_content(f"{folder}/_manifests/tags/v1/current/link", b"sha256:ab")
            await driver.put_content(f"{folder}/_manifests/revisions/sha256/ab/link", b"x")
    await driver.put_content(f"{REPOSITORIES}/stray/file", b"not a repository")
    await driver.put_content(f"{REPOSITORIES}/a/b/stray", b"not one either")


class S3Lister(InMemoryDriver):
    """Lists below a folder as S3's ListObjectsV2 does, ``page`` entries at a time."""

    def __init__(self, page: int) -> None:
        super().__init__()
        self.page = page
        self.requests = 0
        self.afters: list[str] = []

    @property
    def delimited_lists(self) -> DelimitedLists:
        return self._checked_listings(self._list_delimited)

    async def _list_delimited(
        self, path: str, delimiter: str, prefix: str, after: str, token: str | None
    ) -> DelimitedPage:
        self.requests += 1
        self.afters.append(after)
        try:
            files = [
                info.path[len(path) + 1 :] async for info in self.walk(path) if not info.is_dir
            ]
        except PathNotFound:
            files = []
        keys = sorted(key for key in files if key.startswith(prefix) and key > after)
        entries: list[str] = []
        for key in keys:
            if token is not None and (key <= token or key.startswith(token)):
                continue  # S3 goes on after the last entry, and after all a prefix stood for
            cut = key.find(delimiter, len(prefix))
            entry = key if cut < 0 else key[: cut + len(delimiter)]
            if entries and entries[-1] == entry:
                continue
            if len(entries) == self.page:
                return DelimitedPage(entries, entries[-1])
            entries.append(entry)
        return DelimitedPage(entries, None)


async def every_page(catalog: Catalog, n: int) -> list[str]:
    names: list[str] = []
    last: str | None = None
    while page := await catalog.page(n, last):
        assert len(page) <= n
        names += page
        last = page[-1]
    return names


async def assert_same_pages(driver: StorageDriver, delimited: Catalog) -> None:
    walked = WalkedCatalog(driver)
    assert await walked.page(None, None) == NAMES
    assert await delimited.page(None, None) == NAMES
    for n in (1, 2, 3, 7, len(NAMES), 100):
        assert await every_page(delimited, n) == NAMES, f"n={n}"
    # After every name, and after strings that are none (between names, before all, past all).
    for last in [*NAMES, "", "0", "a-", "a/", "a/0", "a/b/", "lib/x", "m", "zz", "a~", "A"]:
        for n in (1, 2, 5, None):
            expected = await walked.page(n, last)
            assert await delimited.page(n, last) == expected, f"n={n} last={last!r}"


@pytest.mark.parametrize("page", [1, 2, 3, 1000])
async def test_every_page_is_the_walked_catalogs_with_s3s_pages(page: int) -> None:
    driver = S3Lister(page)
    await fill(driver, NAMES)
    catalog = catalog_for(driver)
    assert isinstance(catalog, DelimitedCatalog)
    await assert_same_pages(driver, catalog)


async def test_a_catalog_of_a_thousand_takes_a_request_and_a_deep_page_a_few() -> None:
    driver = S3Lister(1000)
    names = [f"bench/r{i:04d}" for i in range(1500)]
    for name in names:
        await driver.put_content(f"{REPOSITORIES}/{name}/_layers/sha256/ab/link", b"x")
    catalog = catalog_for(driver)

    driver.requests = 0
    assert await catalog.page(1000, None) == names[:1000]
    assert driver.requests == 1
    driver.requests = 0
    assert await catalog.page(1000, names[999]) == names[1000:]
    # The listing after the name and the listing of the names it begins, at once.
    assert driver.requests == 2
    driver.requests = 0
    assert await catalog.page(None, None) == names
    assert driver.requests == 2


async def test_a_page_cut_before_a_shorter_name_asks_for_it() -> None:
    # In key order "lib-1/_" ... "lib-9/_" come before "lib/_": a page of 3 must not stop there.
    driver = S3Lister(3)
    names = ["lib", *(f"lib-{i}" for i in range(1, 10)), "lib/0", "lib/a"]
    for name in names:
        await driver.put_content(f"{REPOSITORIES}/{name}/_layers/sha256/ab/link", b"x")
    catalog = catalog_for(driver)
    driver.requests = 0
    assert await catalog.page(3, None) == ["lib", "lib-1", "lib-2"]
    assert driver.requests == 2, "the first page, then one small listing for lib"
    assert await every_page(catalog, 4) == sorted(names)


async def test_an_odd_last_is_filtered_not_sent() -> None:
    """A key too long for the object store would come back as an error, and a 5xx."""
    driver = S3Lister(1000)
    await fill(driver, NAMES)
    driver.afters.clear()
    assert await catalog_for(driver).page(3, "A" * 5000) == NAMES[:3]
    assert driver.afters == [""]
    assert await catalog_for(driver).page(3, "a" * 300) == ["ab", "b", "lib/x-y"]
    assert driver.afters == ["", ""]


# -- on SeaweedFS ----------------------------------------------------------------------------


@pytest.fixture
async def s3_driver(
    s3_parameters: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[S3Driver]:
    # SeaweedFS is an S3-compatible server: its delimited listings are asked for here.
    monkeypatch.setattr(S3Driver, "DELIMITED_ON_COMPATIBLE", True)
    driver = S3Driver(**s3_parameters)
    yield driver
    await driver.close()


async def test_only_aws_itself_is_listed_cut_at_a_delimiter(s3_parameters: dict[str, Any]) -> None:
    compatible = S3Driver(**s3_parameters)
    aws = S3Driver(**{**s3_parameters, "regionendpoint": ""})
    try:
        assert compatible.delimited_lists is None
        assert isinstance(catalog_for(compatible), WalkedCatalog)
        assert aws.delimited_lists is not None
        assert isinstance(catalog_for(aws), DelimitedCatalog)
    finally:
        await compatible.close()
        await aws.close()


async def test_every_page_is_the_walked_catalogs_on_seaweedfs(s3_driver: S3Driver) -> None:
    await fill(s3_driver, NAMES)
    catalog = catalog_for(s3_driver)
    assert isinstance(catalog, DelimitedCatalog)
    await assert_same_pages(s3_driver, catalog)


async def test_an_empty_bucket_has_an_empty_catalog(s3_driver: S3Driver) -> None:
    assert await catalog_for(s3_driver).page(None, None) == []
    assert await catalog_for(s3_driver).page(5, "a") == []
