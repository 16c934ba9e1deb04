"""The filesystem driver's intent log: one sync makes many writes durable, and what
a power cut loses comes back on the next start.

A power cut is played here by a process that wrote in an earlier boot (it is
told another boot id) and was killed with SIGKILL after its writes returned,
and the files it wrote then taken away (or put back as they were before), as
a disk that never received them would leave them. The record in the intent
log is what must bring them back. A process killed in this boot left its
writes in the page cache: nothing of it is replayed.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cargohold.errors import StorageDriverError
from cargohold.storage.driver import intentlog
from cargohold.storage.driver.filesystem import FilesystemDriver
from tests.support.waiting import until

pytestmark = pytest.mark.skipif(not intentlog.available(), reason="no syncfs: Linux only")

LINK = b"sha256:" + b"a" * 64
OTHER = b"sha256:" + b"b" * 64
EARLIER = "an-earlier-boot"  # the boot a power cut ended, for a writer process

_WRITER = """
import asyncio, os, signal, sys
from cargohold.storage.driver.filesystem import FilesystemDriver

async def main():
    driver = FilesystemDriver(sys.argv[1])
    for item in sys.argv[2:]:
        path, _, content = item.partition("=")
        await driver.put_content(path, content.encode())
    print("written", flush=True)
    sys.stdin.readline()  # held open, with its log, until told
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


class _Writer:
    """A process that writes through its own driver, then waits to be killed; by
    default it believes it runs in an earlier boot."""

    def __init__(self, root: Path, items: dict[str, bytes], boot: str = EARLIER) -> None:
        argv = [f"{path}={content.decode()}" for path, content in items.items()]
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(root), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, intentlog.BOOT_ID_VARIABLE: boot},
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline() == "written\n"

    def kill(self) -> None:
        self.process.communicate("\n", timeout=30)  # and closes the pipes
        assert self.process.returncode == -9


def _killed_after_writing(
    root: Path, items: dict[str, bytes], boot: str = "an-earlier-boot"
) -> None:
    _Writer(root, items, boot).kill()


def _segments(root: Path) -> list[Path]:
    folder = root / intentlog.FOLDER.lstrip("/")
    return sorted(folder.glob(f"*{intentlog.SUFFIX}")) if folder.exists() else []


def _records(segment: Path) -> list[tuple[int, list[tuple[str, bytes]]]]:
    """The records a replay would find in ``segment``, whatever boot wrote it."""
    data = segment.read_bytes()
    header = intentlog._parse_header(data)
    assert header is not None
    _, identity, start = header
    return list(intentlog._records(data, start, identity))


def _end(segment: Path) -> int:
    """Where the segment's next record would go."""
    data = segment.read_bytes()
    header = intentlog._parse_header(data)
    assert header is not None
    _, identity, start = header
    return start + sum(
        len(intentlog._encode(identity, stamp, items))
        for stamp, items in intentlog._records(data, start, identity)
    )


def _as_if_from_another_boot(segment: Path, to: Path) -> None:
    """A copy of ``segment`` as a disk from an earlier boot would hold it."""
    this_boot = intentlog.boot_id()
    data = segment.read_bytes()
    to.write_bytes(data.replace(this_boot, b"e" * len(this_boot), 1))


class _Syncs:
    """``os.fdatasync`` and ``os.fsync`` counted; the next fdatasync held or failed on demand."""

    def __init__(self) -> None:
        self.datasyncs = 0
        self.fsyncs = 0
        self.hold: threading.Event | None = None
        self.entered = threading.Event()
        self.fail: int | None = None

    def fdatasync(self, real: Callable[[int], None], fd: int) -> None:
        self.datasyncs += 1
        self.entered.set()
        if self.hold is not None:
            assert self.hold.wait(30)
        if self.fail is not None:
            code, self.fail = self.fail, None
            raise OSError(code, os.strerror(code))
        real(fd)

    def fsync(self, real: Callable[[int], None], fd: int) -> None:
        self.fsyncs += 1
        real(fd)


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Syncs]:
    counted = _Syncs()
    real_datasync, real_fsync = os.fdatasync, os.fsync
    monkeypatch.setattr(os, "fdatasync", lambda fd: counted.fdatasync(real_datasync, fd))
    monkeypatch.setattr(os, "fsync", lambda fd: counted.fsync(real_fsync, fd))
    yield counted
    if counted.hold is not None:
        counted.hold.set()


# -- while serving ------------------------------------------------------------------------


async def test_a_write_returns_once_its_record_is_synced_and_its_file_is_in_place_only_then(
    tmp_path: Path, syncs: _Syncs
) -> None:
    driver = FilesystemDriver(str(tmp_path))
    syncs.hold = threading.Event()
    writing = asyncio.ensure_future(driver.put_content("/r/_manifests/tags/v1/current/link", LINK))
    await until(syncs.entered.is_set, what="the intent log was never synced")
    await asyncio.sleep(0.05)
    assert not writing.done()
    assert not (tmp_path / "r/_manifests/tags/v1/current/link").exists()
    syncs.hold.set()
    await writing
    assert (tmp_path / "r/_manifests/tags/v1/current/link").read_bytes() == LINK
    await driver.close()


async def test_concurrent_writes_share_one_sync_and_no_file_is_fsynced(
    tmp_path: Path, syncs: _Syncs
) -> None:
    driver = FilesystemDriver(str(tmp_path))
    syncs.hold = threading.Event()
    first = asyncio.ensure_future(driver.put_content("/first", b"1"))
    await until(syncs.entered.is_set)
    syncs.fsyncs = 0  # the segment's own, when it was made
    batches = [[(f"/m/{n}/data", b"m"), (f"/m/{n}/link", LINK)] for n in range(16)]
    others = [asyncio.ensure_future(driver.put_contents(batch)) for batch in batches]
    (segment,) = _segments(tmp_path)
    await until(
        lambda: len(_records(segment)) == 17,
        what="the 16 records were not all appended while the first sync ran",
    )
    syncs.hold.set()
    await asyncio.gather(first, *others)
    # One sync for the first write, one shared by the 16 appended while it ran.
    assert syncs.datasyncs == 2
    assert syncs.fsyncs == 0
    assert all((tmp_path / f"m/{n}/link").read_bytes() == LINK for n in range(16))
    await driver.close()


async def test_a_checkpoint_follows_on_its_own_and_removes_the_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = intentlog._syncfs
    assert real is not None
    monkeypatch.setattr(intentlog, "_syncfs", lambda fd: calls.append(fd) or real(fd))
    driver = FilesystemDriver(str(tmp_path))
    await asyncio.gather(*(driver.put_content(f"/t/{n}/link", LINK) for n in range(8)))
    (segment,) = _segments(tmp_path)
    assert len(_records(segment)) == 8
    await until(lambda: not _records(segment), within=10, what="no checkpoint came")
    assert len(calls) == 1
    assert _segments(tmp_path) == [segment]  # kept, emptied, for the next records
    await driver.close()
    assert len(calls) == 1  # nothing was left for the close
    assert not _segments(tmp_path)


async def test_a_failed_log_sync_fails_the_write_and_leaves_nothing(
    tmp_path: Path, syncs: _Syncs
) -> None:
    driver = FilesystemDriver(str(tmp_path))
    await driver.put_content("/a/before", b"0")
    syncs.fail = errno.EIO
    with pytest.raises(StorageDriverError):
        await driver.put_contents([("/a/data", b"1"), ("/a/link", LINK)])
    assert sorted(os.listdir(tmp_path / "a")) == ["before"]  # nor a temporary file
    await driver.put_content("/a/after", b"2")  # a new segment takes the next writes
    assert (tmp_path / "a/after").read_bytes() == b"2"
    assert len(_segments(tmp_path)) == 2
    await driver.close()
    assert not _segments(tmp_path)


# -- after a crash ------------------------------------------------------------------------


async def test_files_a_power_cut_lost_come_back_on_the_next_start(tmp_path: Path) -> None:
    written = {"/blobs/d/data": b"manifest", "/r/revisions/d/link": LINK, "/r/tags/v/link": LINK}
    _killed_after_writing(tmp_path, written)
    assert len(_segments(tmp_path)) == 1
    (tmp_path / "blobs/d/data").unlink()  # its rename never reached the disk
    revision = tmp_path / "r/revisions/d/link"
    written = revision.stat().st_mtime_ns
    revision.write_bytes(b"")  # its name did, its data not
    os.utime(revision, ns=(written, written))
    driver = FilesystemDriver(str(tmp_path))
    assert await driver.get_content("/blobs/d/data") == b"manifest"
    assert await driver.get_content("/r/revisions/d/link") == LINK
    assert await driver.get_content("/r/tags/v/link") == LINK
    assert not _segments(tmp_path)
    await driver.close()


async def test_a_process_killed_in_this_boot_is_not_replayed(tmp_path: Path) -> None:
    _killed_after_writing(
        tmp_path, {"/r/revisions/d/link": LINK}, boot=intentlog.boot_id().decode()
    )
    (tmp_path / "r/revisions/d/link").unlink()  # a request deleted the manifest since
    FilesystemDriver(str(tmp_path))
    assert not (tmp_path / "r/revisions/d/link").exists()
    assert not _segments(tmp_path)


async def test_a_rename_the_cut_undid_is_done_again(tmp_path: Path) -> None:
    tag = tmp_path / "r/tags/v/link"
    tag.parent.mkdir(parents=True)
    tag.write_bytes(OTHER)
    os.utime(tag, ns=(1, 1))  # as it was long before
    _killed_after_writing(tmp_path, {"/r/tags/v/link": LINK})
    tag.write_bytes(OTHER)  # the disk kept the old file at the name
    os.utime(tag, ns=(1, 1))
    FilesystemDriver(str(tmp_path))
    assert tag.read_bytes() == LINK


async def test_a_file_written_after_its_record_is_left_as_it_is(tmp_path: Path) -> None:
    _killed_after_writing(tmp_path, {"/r/tags/v/link": LINK})
    (tmp_path / "r/tags/v/link").write_bytes(OTHER)  # another process moved the tag since
    FilesystemDriver(str(tmp_path))
    assert (tmp_path / "r/tags/v/link").read_bytes() == OTHER
    assert not _segments(tmp_path)


async def test_a_torn_last_record_ends_the_replay_and_those_before_it_land(
    tmp_path: Path,
) -> None:
    _killed_after_writing(tmp_path, {"/a/1": b"one", "/a/2": b"two"})
    (segment,) = _segments(tmp_path)
    header = intentlog._parse_header(segment.read_bytes())
    assert header is not None
    torn = intentlog._encode(header[1], 0, [("/a/3", b"three")])
    with segment.open("r+b") as file:
        file.seek(_end(segment))
        file.write(torn[: len(torn) - 2])  # the cut came mid-write
    for name in ("1", "2"):
        (tmp_path / "a" / name).unlink()
    FilesystemDriver(str(tmp_path))
    assert (tmp_path / "a/1").read_bytes() == b"one"
    assert (tmp_path / "a/2").read_bytes() == b"two"
    assert not (tmp_path / "a/3").exists()


async def test_a_damaged_record_is_not_replayed(tmp_path: Path) -> None:
    _killed_after_writing(tmp_path, {"/a/1": b"one"})
    (segment,) = _segments(tmp_path)
    data = bytearray(segment.read_bytes())
    data[_end(segment) - 1] ^= 0xFF  # the content's last byte
    segment.write_bytes(bytes(data))
    (tmp_path / "a/1").unlink()
    FilesystemDriver(str(tmp_path))
    assert not (tmp_path / "a/1").exists()
    assert not _segments(tmp_path)


async def test_a_running_process_segment_is_not_replayed_until_it_stops(tmp_path: Path) -> None:
    writer = _Writer(tmp_path, {"/a/1": b"one"})
    try:
        (tmp_path / "a/1").unlink()  # deleted since by a request; the writer lives on
        FilesystemDriver(str(tmp_path))
        assert not (tmp_path / "a/1").exists()
        assert len(_segments(tmp_path)) == 1
    finally:
        writer.kill()
    FilesystemDriver(str(tmp_path))
    assert (tmp_path / "a/1").read_bytes() == b"one"


async def test_a_checkpoint_replays_what_a_stopped_worker_left(tmp_path: Path) -> None:
    driver = FilesystemDriver(str(tmp_path))
    _killed_after_writing(tmp_path, {"/a/1": b"one"})
    (left,) = _segments(tmp_path)
    (tmp_path / "a/1").unlink()
    await driver.put_content("/mine", b"0")  # which starts this process's checkpoints
    await until(lambda: not left.exists(), within=10, what="no checkpoint came")
    assert (tmp_path / "a/1").read_bytes() == b"one"
    await driver.close()


async def test_a_reused_segment_replays_its_new_records_and_none_of_its_last_use(
    tmp_path: Path,
) -> None:
    driver = FilesystemDriver(str(tmp_path))
    for n in range(3):
        await driver.put_content(f"/old/{n}", b"from the segment's first use" * 4)
    (segment,) = _segments(tmp_path)
    first_end = _end(segment)
    await driver._intents.checkpoint()  # type: ignore[union-attr]
    assert _segments(tmp_path) == [segment]  # kept for reuse
    await driver.put_content("/new", b"second use")
    assert _end(segment) < first_end  # the first use's records lie past the new one
    orphan = segment.parent / f"cut{intentlog.SUFFIX}"
    _as_if_from_another_boot(segment, orphan)
    for path in ("old/0", "old/1", "old/2", "new"):
        (tmp_path / path).unlink()
    FilesystemDriver(str(tmp_path))
    assert (tmp_path / "new").read_bytes() == b"second use"
    assert not (tmp_path / "old").exists() or not any((tmp_path / "old").iterdir())
    assert not orphan.exists()
    await driver.close()


async def test_a_record_larger_than_a_segment_lands_and_the_next_goes_to_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(intentlog, "SEGMENT_BYTES", 64 * 1024)
    driver = FilesystemDriver(str(tmp_path))
    large = bytes(range(256)) * 1024  # 256 KiB
    await driver.put_content("/large", large)
    await driver.put_content("/small", b"s")
    assert (tmp_path / "large").read_bytes() == large
    segments = _segments(tmp_path)
    assert len(segments) == 2
    assert sorted(len(_records(s)) for s in segments) == [1, 1]
    await driver.close()
    assert not (tmp_path / intentlog.FOLDER.lstrip("/")).exists()
