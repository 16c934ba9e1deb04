"""Kept tag lists: a repository's sorted tags, kept until its tags folder changes.

Every test that can runs with both ways of noticing change: inotify, and the
folder's modification time (past the kernel's limit of watches, or off a local
filesystem). Tags are written straight to the folder here, as another process
(the Go registry) would write them.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cargohold.errors import NameUnknown
from cargohold.storage import taglists
from cargohold.storage.driver.filesystem import FilesystemDriver
from cargohold.storage.registry import StorageRegistry
from cargohold.storage.taglists import TagLists
from cargohold.storage.watch import Inotify

from .test_catalog_local import TOP

REPO = "team/app"


def tags_folder(root: Path, name: str = REPO) -> Path:
    return root / TOP / name / "_manifests" / "tags"


def add_tags(root: Path, *tags: str, name: str = REPO) -> None:
    for tag in tags:
        (tags_folder(root, name) / tag / "current").mkdir(parents=True, exist_ok=True)


def age(folder: Path, seconds: float = 60) -> None:
    past = time.time() - seconds
    os.utime(folder, (past, past))


@pytest.fixture(params=["inotify", "mtime"])
def watch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "mtime":
        # Out of watches: every add is refused as the kernel refuses one past the limit.
        monkeypatch.setattr(Inotify, "add", lambda self, path, mask: None)
    return str(request.param)


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tags folders listed from disk, in order."""
    listed: list[str] = []
    original = taglists._listed

    def counted(path: str) -> list[str] | None:
        listed.append(path)
        return original(path)

    monkeypatch.setattr(taglists, "_listed", counted)
    return listed


@pytest.fixture
async def driver(tmp_path: Path) -> AsyncIterator[FilesystemDriver]:
    files = FilesystemDriver(str(tmp_path))
    yield files
    await files.close()


@pytest.fixture
def kept(driver: FilesystemDriver) -> TagLists:
    assert driver.local_files is not None
    lists = TagLists(driver, driver.local_files, keep_from=0)
    yield lists  # type: ignore[misc]
    lists.close()


async def test_a_settled_list_is_listed_once(
    tmp_path: Path, kept: TagLists, watch: str, listings: list[str]
) -> None:
    add_tags(tmp_path, "v2", "latest", "v10", "1.0")
    age(tags_folder(tmp_path))
    first = await kept.tags(REPO)
    assert first == ["1.0", "latest", "v10", "v2"]
    assert await kept.tags(REPO) is first  # the kept list itself: no copy, no sort
    assert len(listings) == 1
    assert kept.watches() == (1 if watch == "inotify" else 0)


async def test_tags_written_by_another_process_are_in_the_next_answer(
    tmp_path: Path, kept: TagLists, watch: str
) -> None:
    add_tags(tmp_path, "a", "c")
    age(tags_folder(tmp_path))
    before = await kept.tags(REPO)
    assert before == ["a", "c"]
    add_tags(tmp_path, "b", "d")
    assert await kept.tags(REPO) == ["a", "b", "c", "d"]
    shutil.rmtree(tags_folder(tmp_path) / "a")
    assert await kept.tags(REPO) == ["b", "c", "d"]
    (tags_folder(tmp_path) / "c").rename(tags_folder(tmp_path) / "e")
    assert await kept.tags(REPO) == ["b", "d", "e"]
    assert before == ["a", "c"]  # a list handed out never changes


async def test_the_fast_paths_reads_keep_and_follow_the_list_too(
    tmp_path: Path, kept: TagLists, watch: str, listings: list[str]
) -> None:
    assert kept.tags_now(REPO) is None  # no tags folder: the full path answers
    add_tags(tmp_path, "b", "a")
    age(tags_folder(tmp_path))
    first = kept.tags_now(REPO)
    assert first == ["a", "b"]
    assert kept.tags_now(REPO) is first
    assert await kept.tags(REPO) is first  # one list, whichever path asks
    assert len(listings) == 1
    add_tags(tmp_path, "c")
    assert kept.tags_now(REPO) == ["a", "b", "c"]
    shutil.rmtree(tags_folder(tmp_path) / "a")
    assert kept.tags_now(REPO) == ["b", "c"]
    assert first == ["a", "b"]


async def test_temporary_names_are_never_tags(tmp_path: Path, kept: TagLists, watch: str) -> None:
    add_tags(tmp_path, "v1")
    age(tags_folder(tmp_path))
    assert await kept.tags(REPO) == ["v1"]
    (tags_folder(tmp_path) / ".~v2.0123.tmp").mkdir()
    assert await kept.tags(REPO) == ["v1"]


async def test_changes_are_applied_without_listing_again(
    tmp_path: Path, kept: TagLists, listings: list[str]
) -> None:
    add_tags(tmp_path, *(f"t{i:03d}" for i in range(100)))
    assert len(await kept.tags(REPO) or []) == 100
    add_tags(tmp_path, "t050a")
    shutil.rmtree(tags_folder(tmp_path) / "t000")
    tags = await kept.tags(REPO)
    assert tags is not None
    assert len(tags) == 100
    assert tags[0] == "t001"
    assert tags[50] == "t050a"
    assert len(listings) == 1  # inotify named the tags: no second listing


async def test_too_many_changes_list_again(
    tmp_path: Path, kept: TagLists, listings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(TagLists, "APPLY", 3)
    add_tags(tmp_path, "a")
    assert await kept.tags(REPO) == ["a"]
    add_tags(tmp_path, "b", "c", "d", "e")
    assert await kept.tags(REPO) == ["a", "b", "c", "d", "e"]
    assert len(listings) == 2


async def test_a_recently_changed_folder_is_trusted_only_with_inotify(
    tmp_path: Path, kept: TagLists, watch: str, listings: list[str]
) -> None:
    add_tags(tmp_path, "v1")  # just now: with times, a second change in this tick would hide
    assert await kept.tags(REPO) == ["v1"]
    assert await kept.tags(REPO) == ["v1"]
    assert len(listings) == (1 if watch == "inotify" else 2)


async def test_a_repository_deleted_and_pushed_again_is_listed_again(
    tmp_path: Path, kept: TagLists, watch: str
) -> None:
    add_tags(tmp_path, "old")
    age(tags_folder(tmp_path))
    assert await kept.tags(REPO) == ["old"]
    shutil.rmtree(tmp_path / TOP / REPO)
    assert await kept.tags(REPO) is None
    add_tags(tmp_path, "new")
    assert await kept.tags(REPO) == ["new"]


async def test_a_moved_repository_is_noticed(tmp_path: Path, kept: TagLists, watch: str) -> None:
    add_tags(tmp_path, "mine")
    add_tags(tmp_path, "theirs", name="team/other")
    for name in (REPO, "team/other"):
        age(tags_folder(tmp_path, name))
    assert await kept.tags(REPO) == ["mine"]
    # The watched folder itself is not moved, a parent is: only the path says so.
    (tmp_path / TOP / "team").rename(tmp_path / TOP / "moved")
    add_tags(tmp_path, "other")
    for name in (REPO, "moved/app"):
        age(tags_folder(tmp_path, name))
    assert await kept.tags(REPO) == ["other"]
    assert await kept.tags("moved/app") == ["mine"]


async def test_the_kept_lists_are_bounded(tmp_path: Path, driver: FilesystemDriver) -> None:
    assert driver.local_files is not None
    lists = TagLists(driver, driver.local_files, repositories=2, tags=5, keep_from=0)
    try:
        for name, count in (("r1", 2), ("r2", 2), ("r3", 2)):
            add_tags(tmp_path, *(f"t{i}" for i in range(count)), name=name)
            assert await lists.tags(name) == ["t0", "t1"]
        assert list(lists._kept) == ["r2", "r3"]  # the least recently asked went first
        assert lists.watches() == 2
        assert await lists.tags("r2") == ["t0", "t1"]
        add_tags(tmp_path, "t0", "t1", "t2", name="r4")
        assert await lists.tags("r4") == ["t0", "t1", "t2"]
        assert list(lists._kept) == ["r2", "r4"]  # 7 names were too many: r3 went
        add_tags(tmp_path, *(f"t{i}" for i in range(6)), name="r5")
        assert len(await lists.tags("r5") or []) == 6  # more than the bound: never kept
        assert list(lists._kept) == ["r2", "r4"]
        assert lists.watches() == 2
    finally:
        lists.close()


async def test_small_repositories_are_listed_each_time(
    tmp_path: Path, driver: FilesystemDriver, listings: list[str]
) -> None:
    assert driver.local_files is not None
    lists = TagLists(driver, driver.local_files, keep_from=3)
    try:
        add_tags(tmp_path, "a", "b")
        assert await lists.tags(REPO) == ["a", "b"]
        assert await lists.tags(REPO) == ["a", "b"]
        assert lists.watches() == 0
        add_tags(tmp_path, "c")
        assert await lists.tags(REPO) == ["a", "b", "c"]
        assert await lists.tags(REPO) == ["a", "b", "c"]
        assert lists.watches() == 1
        assert len(listings) == 3
    finally:
        lists.close()


async def test_the_tag_store_answers_from_the_kept_list(tmp_path: Path) -> None:
    registry = StorageRegistry(FilesystemDriver(str(tmp_path)))
    try:
        assert registry.tag_lists is not None
        registry.tag_lists._keep_from = 0
        repo = registry.repository(REPO)
        with pytest.raises(NameUnknown):
            await repo.tags.all()
        (tmp_path / TOP / REPO / "_layers").mkdir(parents=True)
        assert await repo.tags.all() == []
        add_tags(tmp_path, "v1", "v0")
        first = await repo.tags.all()
        assert first == ["v0", "v1"]
        assert await registry.repository(REPO).tags.all() is first
        assert registry.tag_lists.watches() == 1
    finally:
        await registry.close()
