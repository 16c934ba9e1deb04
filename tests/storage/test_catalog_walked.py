"""The walked catalog lists the next folders ahead, and still answers in name order."""

from __future__ import annotations

import asyncio

from cargohold.storage.catalog import WalkedCatalog
from cargohold.storage.driver.inmemory import InMemoryDriver
from cargohold.storage.registry import StorageRegistry


class SlowLister(InMemoryDriver):
    """Each listing takes a moment, as a request would; counts them and how many overlap."""

    def __init__(self) -> None:
        super().__init__()
        self.listings = 0
        self.running = 0
        self.most = 0

    async def _list(self, path: str) -> list[str]:
        self.listings += 1
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(0.001)
            return await super()._list(path)
        finally:
            self.running -= 1


async def make(registry: StorageRegistry, names: list[str]) -> None:
    for name in names:
        await registry.repository(name).blobs.put(name.encode())


async def test_listings_overlap_up_to_the_lookahead_and_pages_stay_in_order() -> None:
    driver = SlowLister()
    registry = StorageRegistry(driver)
    # Nested names that sort between their parent's siblings ("-" < "/" < "0").
    names = sorted(
        [f"team{t}/app{a:02d}" for t in range(3) for a in range(12)]
        + ["team1", "team1-x", "team1/app05/sub", "team10"]
    )
    await make(registry, names)
    driver.listings = 0
    assert await registry.catalog() == names
    assert driver.most == WalkedCatalog.LOOKAHEAD
    folders = 1 + len(names) + 2  # the root, every repository, and team0 and team2
    assert driver.listings == folders, "every folder once, none twice"

    pages: list[str] = []
    last: str | None = None
    while page := await registry.catalog(n=5, last=last):
        assert len(page) <= 5
        pages += page
        last = page[-1]
    assert pages == names


async def test_a_full_page_lists_at_most_the_lookahead_beyond_what_it_needs() -> None:
    driver = SlowLister()
    registry = StorageRegistry(driver)
    names = [f"repo{n:03d}" for n in range(100)]
    await make(registry, names)
    driver.listings = 0
    assert await registry.catalog(n=5) == names[:5]
    # The root and five repositories, plus what was under way when the page filled.
    assert 6 < driver.listings <= 6 + WalkedCatalog.LOOKAHEAD
    await asyncio.sleep(0.01)
    assert driver.running == 0, "listings beyond the page are cancelled, not left running"
