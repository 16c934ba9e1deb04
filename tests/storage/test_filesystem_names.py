"""A name the filesystem driver makes survives a power cut once the call returns.

An fsynced file is not enough: its name lives in its folder, and a new
folder's name in the folder above. So before ``put_content``, ``create``,
``move`` or a new writer's ``commit`` returns, every folder that gained a
name is fsynced *with that name in it*. These tests record, at each fsync
of a folder, what the folder held then.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cargohold.errors import StorageUnavailable
from cargohold.storage.driver.filesystem import FilesystemDriver
from tests.support.waiting import until

_T = TypeVar("_T")


class _FolderSyncs:
    """Each fsync of a folder, with the names the folder held at that moment."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, frozenset[str]]] = []
        self.failure: int | None = None  # the errno every folder's fsync raises, if set
        self._lock = threading.Lock()

    def fsync(self, real: Callable[[int], None], fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            folder = os.readlink(f"/proc/self/fd/{fd}")
            with self._lock:
                self.seen.append((folder, frozenset(os.listdir(folder))))
            if self.failure is not None:
                raise OSError(self.failure, os.strerror(self.failure))
        real(fd)

    def kept(self, path: Path) -> bool:
        """Whether ``path``'s folder was fsynced while ``path``'s name was in it."""
        return any(folder == str(path.parent) and path.name in names for folder, names in self.seen)

    def count(self, folder: Path) -> int:
        return sum(1 for seen, _ in self.seen if seen == str(folder))


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> _FolderSyncs:
    recorder = _FolderSyncs()
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: recorder.fsync(real, fd))
    return recorder


def _every_name(root: Path, path: Path) -> list[Path]:
    """``path`` and each folder above it, up to (not including) ``root``."""
    names = [path]
    while names[-1].parent != root:
        names.append(names[-1].parent)
    return names


async def test_a_new_file_and_every_folder_made_for_it_are_kept(
    tmp_path: Path, syncs: _FolderSyncs
) -> None:
    driver = FilesystemDriver(str(tmp_path))
    await driver.put_content("/a/b/c/link", b"sha256:" + b"0" * 64)
    target = tmp_path / "a/b/c/link"
    for name in _every_name(tmp_path, target):
        assert syncs.kept(name), f"{name} was not in its folder when the folder was fsynced"
    await driver.close()


async def test_a_file_in_a_folder_already_there_syncs_that_folder_alone(
    tmp_path: Path, syncs: _FolderSyncs
) -> None:
    driver = FilesystemDriver(str(tmp_path))
    await driver.put_content("/a/b/first", b"1")
    syncs.seen.clear()
    await driver.put_content("/a/b/second", b"2")
    assert syncs.kept(tmp_path / "a/b/second")
    assert [folder for folder, _ in syncs.seen] == [str(tmp_path / "a/b")]
    await driver.close()


async def test_every_stage_of_a_batch_is_kept(tmp_path: Path, syncs: _FolderSyncs) -> None:
    driver = FilesystemDriver(str(tmp_path))
    await driver.put_stages([[("/blobs/x/data", b"x")], [("/repo/tags/v1/current/link", b"y")]])
    for path in ("blobs/x/data", "repo/tags/v1/current/link"):
        for name in _every_name(tmp_path, tmp_path / path):
            assert syncs.kept(name), name
    await driver.close()


async def test_a_move_keeps_the_name_it_lands_at(tmp_path: Path, syncs: _FolderSyncs) -> None:
    driver = FilesystemDriver(str(tmp_path))
    await driver.put_content("/uploads/u1/data", b"layer")
    syncs.seen.clear()
    await driver.move("/uploads/u1/data", "/blobs/sha256/ab/abcd/data")
    for name in _every_name(tmp_path, tmp_path / "blobs/sha256/ab/abcd/data"):
        assert syncs.kept(name), name
    await driver.close()


async def test_a_new_writer_keeps_its_file_name_when_it_commits(
    tmp_path: Path, syncs: _FolderSyncs
) -> None:
    driver = FilesystemDriver(str(tmp_path))
    writer = await driver.writer("/uploads/u2/data")
    await writer.write(b"chunk")
    assert not syncs.kept(tmp_path / "uploads/u2/data"), "nothing is synced before the end"
    await writer.commit()
    for name in _every_name(tmp_path, tmp_path / "uploads/u2/data"):
        assert syncs.kept(name), name
    syncs.seen.clear()
    async with await driver.writer("/uploads/u2/data", append=True) as again:
        await again.write(b"more")
    assert syncs.seen == [], "a file already there has its name already"
    await driver.close()


async def test_an_exclusive_create_keeps_its_name(tmp_path: Path, syncs: _FolderSyncs) -> None:
    driver = FilesystemDriver(str(tmp_path))
    assert await driver.create("/locks/one", b"mine")
    for name in _every_name(tmp_path, tmp_path / "locks/one"):
        assert syncs.kept(name), name
    await driver.close()


async def test_a_folder_that_cannot_be_synced_fails_the_write(
    tmp_path: Path, syncs: _FolderSyncs
) -> None:
    driver = FilesystemDriver(str(tmp_path))
    syncs.failure = errno.EIO
    with pytest.raises(StorageUnavailable):
        await driver.put_content("/a/link", b"x")
    await driver.close()


async def test_a_filesystem_that_does_not_sync_folders_still_takes_writes(
    tmp_path: Path, syncs: _FolderSyncs
) -> None:
    driver = FilesystemDriver(str(tmp_path))
    syncs.failure = errno.EINVAL  # what Linux answers where a folder cannot be fsynced
    await driver.put_content("/a/link", b"x")
    assert (tmp_path / "a/link").read_bytes() == b"x"
    await driver.close()


class _HeldFolderTrip(Executor):
    """Runs a driver's calls, holding its first trip that syncs folders until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.folder_trips = 0
        self._threads = ThreadPoolExecutor(8)

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        if fn.__name__ == "_fsync_folders":
            self.folder_trips += 1
            if self.folder_trips == 1:
                return self._threads.submit(self._held, fn, *args)
        return self._threads.submit(fn, *args, **kwargs)

    def _held(self, fn: Callable[..., _T], *args: Any) -> _T:
        self.release.wait(30)
        return fn(*args)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.release.set()
        self._threads.shutdown(wait, cancel_futures=cancel_futures)


async def test_concurrent_writes_share_one_trip_for_their_folders(
    tmp_path: Path, syncs: _FolderSyncs
) -> None:
    """A group commit: the writes that finish while a trip runs all go in the next one."""
    trips = _HeldFolderTrip()
    driver = FilesystemDriver(str(tmp_path))
    driver.use_threads(trips)
    first = asyncio.ensure_future(driver.put_content("/repo/tags/first/link", b"0"))
    await until(lambda: trips.folder_trips == 1, what="the first write's folders never synced")
    others = [
        asyncio.ensure_future(driver.put_content(f"/repo/tags/t{i}/link", b"1")) for i in range(20)
    ]
    # Each of the others fsyncs its file, renames it and, in the same step of the event
    # loop, joins the wait for the next trip: once its name is there, it waits.
    await until(
        lambda: sum("~" not in name for name in os.listdir(tmp_path / "repo/tags")) == 21,
        what="the twenty writes never renamed their files",
    )
    assert trips.folder_trips == 1, "the others wait for the running trip to end"
    trips.release.set()
    await asyncio.gather(first, *others)
    assert trips.folder_trips == 2, "the twenty writes that came meanwhile shared one trip"
    assert syncs.count(tmp_path / "repo/tags") == 2, "their shared folder synced once per trip"
    for i in range(20):
        assert syncs.kept(tmp_path / f"repo/tags/t{i}/link")
        assert syncs.kept(tmp_path / f"repo/tags/t{i}")
    await driver.close()
    trips.shutdown()


async def test_a_rename_within_a_folder_does_not_wait_for_a_sync(
    tmp_path: Path, syncs: _FolderSyncs
) -> None:
    """An upload's claim and a collection's hiding rename within a folder, and must not
    let another request in between: after a power cut the content has either name."""
    driver = FilesystemDriver(str(tmp_path))
    await driver.put_content("/uploads/u3/data", b"layer")
    syncs.seen.clear()
    await driver.move("/uploads/u3/data", "/uploads/u3/commit-1")
    assert (tmp_path / "uploads/u3/commit-1").read_bytes() == b"layer"
    assert syncs.seen == []
    await driver.close()
