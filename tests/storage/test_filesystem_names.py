"""A name the filesystem driver makes survives a power cut once the call returns.

An fsynced file is not enough: its name lives in its folder. So before
``put_content``, ``create``, ``move`` to another folder or a new writer's
``commit`` returns, the folder the name is in is fsynced *with that name in
it*. These tests record, at each fsync of a folder, what the folder held
then. (Folders made on the way ride on that fsync, on the filesystems the
driver documents: ``tests/reliability/test_power_cut.py`` checks the whole
on ext4.)
"""

from __future__ import annotations

import errno
import os
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from cargohold.errors import StorageUnavailable
from cargohold.storage.driver.filesystem import FilesystemDriver


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


async def test_a_new_file_is_kept_in_the_folder_made_for_it(
    tmp_path: Path, syncs: _FolderSyncs
) -> None:
    driver = FilesystemDriver(str(tmp_path), intent_log=False)
    await driver.put_content("/a/b/c/link", b"sha256:" + b"0" * 64)
    assert syncs.kept(tmp_path / "a/b/c/link"), "its folder was not fsynced with its name in it"
    await driver.close()


async def test_a_file_in_a_folder_already_there_syncs_that_folder_alone(
    tmp_path: Path, syncs: _FolderSyncs
) -> None:
    driver = FilesystemDriver(str(tmp_path), intent_log=False)
    await driver.put_content("/a/b/first", b"1")
    syncs.seen.clear()
    await driver.put_content("/a/b/second", b"2")
    assert syncs.kept(tmp_path / "a/b/second")
    assert [folder for folder, _ in syncs.seen] == [str(tmp_path / "a/b")]
    await driver.close()


async def test_every_stage_of_a_batch_is_kept(tmp_path: Path, syncs: _FolderSyncs) -> None:
    driver = FilesystemDriver(str(tmp_path), intent_log=False)
    await driver.put_stages(
        [[("/blobs/x/data", b"x")], [("/repo/a/link", b"y"), ("/repo/a/other", b"z")]]
    )
    for path in ("blobs/x/data", "repo/a/link", "repo/a/other"):
        assert syncs.kept(tmp_path / path), path
    assert syncs.count(tmp_path / "repo/a") == 1, "a folder once, however many files it got"
    await driver.close()


async def test_a_move_keeps_the_name_it_lands_at(tmp_path: Path, syncs: _FolderSyncs) -> None:
    driver = FilesystemDriver(str(tmp_path))
    await driver.put_content("/uploads/u1/data", b"layer")
    syncs.seen.clear()
    await driver.move("/uploads/u1/data", "/blobs/sha256/ab/abcd/data")
    assert syncs.kept(tmp_path / "blobs/sha256/ab/abcd/data")
    await driver.close()


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


async def test_a_new_writer_keeps_its_file_name_when_it_commits(
    tmp_path: Path, syncs: _FolderSyncs
) -> None:
    driver = FilesystemDriver(str(tmp_path))
    writer = await driver.writer("/uploads/u2/data")
    await writer.write(b"chunk")
    assert not syncs.kept(tmp_path / "uploads/u2/data"), "nothing is synced before the end"
    await writer.commit()
    assert syncs.kept(tmp_path / "uploads/u2/data")
    syncs.seen.clear()
    async with await driver.writer("/uploads/u2/data", append=True) as again:
        await again.write(b"more")
    assert syncs.seen == [], "a file already there has its name already"
    await driver.close()


async def test_an_exclusive_create_keeps_its_name(tmp_path: Path, syncs: _FolderSyncs) -> None:
    driver = FilesystemDriver(str(tmp_path))
    assert await driver.create("/locks/one", b"mine")
    assert syncs.kept(tmp_path / "locks/one")
    await driver.close()


async def test_a_folder_that_cannot_be_synced_fails_the_write(
    tmp_path: Path, syncs: _FolderSyncs
) -> None:
    driver = FilesystemDriver(str(tmp_path), intent_log=False)
    syncs.failure = errno.EIO
    with pytest.raises(StorageUnavailable):
        await driver.put_content("/a/link", b"x")
    await driver.close()


async def test_a_filesystem_that_does_not_sync_folders_still_takes_writes(
    tmp_path: Path, syncs: _FolderSyncs
) -> None:
    driver = FilesystemDriver(str(tmp_path), intent_log=False)
    syncs.failure = errno.EINVAL  # what Linux answers where a folder cannot be fsynced
    await driver.put_content("/a/link", b"x")
    assert (tmp_path / "a/link").read_bytes() == b"x"
    await driver.close()
