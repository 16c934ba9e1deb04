"""The spool: where events wait for delivery, shared by every process of one host.

One append-only file (``events.log``) of JSON lines, in a directory every
process serving the storage opens: each worker of ``serve --workers N``, and
each ``serve`` beside it on the same storage. Every process appends with
``O_APPEND``, so the file is one order for all of them: an event about a write
acknowledged before another is found before it.

- A write's event is appended and fsynced before its reply goes out
  (``append_durably``). The fsyncs of concurrent requests are shared: one
  ``fdatasync`` covers every line written before it started (group commit).
- A pull's event is only appended (``append``): it survives the process
  being killed, since the kernel holds it, but not the machine losing power.
- One process at a time delivers (``DeliveryLock``, an ``flock`` the kernel
  releases when its holder dies, so another takes over). Each endpoint's
  progress is the byte offset of its next line (``Cursor``), kept in the
  directory too: a process that starts after a crash resumes where it was,
  and an event whose delivery was under way when it died is sent again
  (at least once: receivers deduplicate by the event's ``id``).
- What every endpoint has been sent is given back to the filesystem
  (``reclaim``): a hole is punched over it, so the file keeps its offsets
  (and its apparent size) while its blocks are freed.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import Executor
from contextlib import suppress
from pathlib import Path
from typing import Any

from cargohold.notifications.backlog import Backlog, Position, woken

__all__ = [
    "Cursor",
    "DeliveryLock",
    "FileBacklog",
    "Spool",
    "lines_from",
    "process_alive",
    "process_start",
    "read_lines",
    "reclaim",
]

EVENTS = "events.log"
#: The offset before which every endpoint was done when the spool was last reclaimed.
RECLAIMED = "reclaimed"
LOCK = "deliver.lock"
CURSORS = "cursors"
DEAD = "dead"
#: The most a delivery reads of the spool at once.
READ_SIZE = 256 * 1024
#: How long a delivery with nothing to send waits before looking at the spool again,
#: when no append in its own process wakes it (another process's appends do not).
POLL = 0.2
#: What every endpoint is past is given back once there is this much of it.
RECLAIM_STEP = 1 << 20

log = logging.getLogger("cargohold.notifications")


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """The events file of ``directory``, open for appending."""

    def __init__(self, directory: Path, threads: Executor | None = None) -> None:
        self.directory = directory
        self.path = directory / EVENTS
        self._threads = threads
        self._fd = -1
        self._lock = DeliveryLock(directory)
        self._reclaimed = 0
        self._waiting: list[asyncio.Future[None]] = []
        self._syncer: asyncio.Future[None] | None = None
        #: Set on every append, for a delivery in this process to look at once.
        self.appended = asyncio.Event()
        #: Never set: the lock is this process's until it dies.
        self.lost = asyncio.Event()

    async def open(self) -> None:
        """Open (and make, the first time) the directory and its events file."""
        (self.directory / CURSORS).mkdir(parents=True, exist_ok=True)
        (self.directory / DEAD).mkdir(exist_ok=True)
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        if created:
            _fsync_directory(self.directory)

    async def close(self) -> None:
        self._lock.release()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def writer(self) -> dict[str, Any]:
        pid = os.getpid()
        return {"pid": pid, "started": process_start(pid)}

    async def lead(self) -> bool:
        return self._lock.try_acquire()

    async def step_down(self) -> None:
        self._lock.release()

    def backlog(self, endpoint: str) -> FileBacklog:
        return FileBacklog(self, endpoint)

    async def reclaim(self, backlogs: list[Backlog]) -> None:
        upto = min((int(backlog.position) for backlog in backlogs), default=0)
        if upto - self._reclaimed < RECLAIM_STEP:
            return
        punched = reclaim(self.directory, upto)
        if not punched and self._reclaimed == 0:
            log.warning("notifications: this filesystem cannot punch holes: the spool grows")
        self._reclaimed = upto

    async def dead(self, endpoint: str) -> list[bytes]:
        try:
            return dead_letters(self.directory, endpoint).read_bytes().splitlines()
        except FileNotFoundError:
            return []

    async def replay(self, endpoint: str) -> int:
        path = dead_letters(self.directory, endpoint)
        # Set aside first: a letter buried meanwhile starts a new file rather than being lost.
        taken = path.with_name(path.name + ".replaying")
        if not taken.exists():
            try:
                os.replace(path, taken)
            except FileNotFoundError:
                return 0
        lines = [for_only(line, endpoint) for line in taken.read_bytes().splitlines()]
        kept = [line for line in lines if line is not None]
        await self.append_durably(b"".join(kept))
        taken.unlink()
        return len(kept)

    def append(self, line: bytes) -> None:
        """Append lines (each ending in a newline); the kernel has them once this returns."""
        # One write: O_APPEND puts it whole after every line already there, whoever wrote them.
        written = os.write(self._fd, line)
        if written != len(line):  # a full disk: never leave half a line behind another
            raise OSError(f"the spool took {written} of {len(line)} bytes")
        self.appended.set()

    async def append_durably(self, line: bytes) -> None:
        """Append lines and return once they are on disk."""
        await self.append_syncing(line)

    def append_syncing(self, line: bytes) -> asyncio.Future[None]:
        """Append lines now; the future is done once they are on disk.

        The fsync runs on a thread meanwhile, so a caller can do other work
        (the write the lines are about) while it runs.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if not line:
            done.set_result(None)
            return done
        self.append(line)
        self._waiting.append(done)
        if self._syncer is None or self._syncer.done():
            self._syncer = asyncio.ensure_future(self._sync())
        return done

    async def _sync(self) -> None:
        # One fsync covers every line appended before it started (group commit).
        loop = asyncio.get_running_loop()
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await loop.run_in_executor(self._threads, os.fdatasync, self._fd)
            except OSError as exc:
                for done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for done in batch:
                if not done.done():
                    done.set_result(None)


def read_lines(path: Path, offset: int, limit: int = READ_SIZE) -> Iterator[tuple[bytes, int]]:
    """The complete lines of ``path`` from ``offset``: each, and the offset after it.

    A line still being written (no newline yet) is left for a later read.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        return
    start = 0
    while True:
        end = data.find(b"\n", start)
        if end < 0:
            if start == 0 and len(data) == limit:
                # A line longer than a whole read: skip it rather than stall on it forever.
                yield b"", offset + limit
            return
        yield data[start:end], offset + end + 1
        start = end + 1


def lines_from(path: Path, offset: int) -> Iterator[tuple[bytes, int]]:
    """``read_lines`` on to the end of the file, a read at a time."""
    while True:
        start = offset
        for line, offset_after in read_lines(path, start):
            yield line, offset_after
            offset = offset_after
        if offset == start:
            return


def _read_offset(path: Path) -> int:
    with suppress(FileNotFoundError, ValueError, IndexError):
        return int(path.read_text().split()[0])
    return 0


def _write_offset(path: Path, offset: int) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(f"{offset}\n")
    os.replace(temporary, path)


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_BLOCK = 4096


def reclaim(directory: Path, upto: int) -> bool:
    """Free the spool's blocks before ``upto`` (a line's start that every endpoint is past).

    False where the filesystem cannot punch holes: the spool then keeps its size.
    """
    _write_offset(directory / RECLAIMED, upto)  # first: a new endpoint starts there
    length = upto - upto % _BLOCK
    if length <= 0:
        return True
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(directory / EVENTS, os.O_WRONLY | os.O_CLOEXEC)
    try:
        done = libc.fallocate(
            fd,
            _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
            ctypes.c_longlong(0),
            ctypes.c_longlong(length),
        )
    finally:
        os.close(fd)
    return int(done) == 0


def for_only(line: bytes, endpoint: str) -> bytes | None:
    """A kept event's line, marked for ``endpoint`` alone; None for a damaged line."""
    try:
        kept = json.loads(line)
    except ValueError:
        return None  # a line cut short by a crash while it was written
    return json.dumps({**kept, "only": endpoint}, separators=(",", ":")).encode() + b"\n"


class FileBacklog:
    """An endpoint's events in the spool file, from its cursor (a ``Backlog``)."""

    def __init__(self, spool: Spool, endpoint: str) -> None:
        self._spool = spool
        self._endpoint = endpoint
        self._cursor = Cursor(spool.directory, endpoint)

    @property
    def position(self) -> int:
        return self._cursor.offset

    async def batch(self) -> list[tuple[bytes, Position]]:
        return list(read_lines(self._spool.path, self._cursor.offset))

    async def done(self, position: Position) -> None:
        assert isinstance(position, int)
        self._cursor.advance(position)

    async def ahead(self, position: Position) -> AsyncIterator[tuple[bytes, Position]]:
        assert isinstance(position, int)
        for line, after in lines_from(self._spool.path, position):
            yield line, after

    async def count(self) -> int:
        try:
            with open(self._spool.path, "rb") as f:
                f.seek(self._cursor.offset)
                return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        except FileNotFoundError:
            return 0

    async def wait(self) -> None:
        # Another process's appends set nothing here: look again after POLL at the latest.
        await woken(self._spool.appended, POLL)

    async def bury(self, line: bytes) -> None:
        path = dead_letters(self._spool.directory, self._endpoint)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, line)
            os.fdatasync(fd)
        finally:
            os.close(fd)

    async def alive(self, writer: Mapping[str, Any]) -> bool:
        return process_alive(int(writer.get("pid", 0)), int(writer.get("started", 0)))


class Cursor:
    """Where an endpoint's delivery has got to: the offset of its next line.

    A new endpoint starts where the spool was last reclaimed: what lies before
    was sent to every endpoint there was, and is gone.
    """

    def __init__(self, directory: Path, endpoint: str) -> None:
        self._path = directory / CURSORS / _file_name(endpoint)
        self.offset = _read_offset(self._path) or _read_offset(directory / RECLAIMED)

    def advance(self, offset: int) -> None:
        """Note ``offset``. Not fsynced: after a power loss the worst is a second delivery."""
        self.offset = offset
        _write_offset(self._path, offset)


def _file_name(endpoint: str) -> str:
    """An endpoint's name as a file name: any name, and never a path."""
    return "".join(c if c.isalnum() or c in "-_." else f"%{ord(c):02x}" for c in endpoint) or "%"


def dead_letters(directory: Path, endpoint: str) -> Path:
    """The file of an endpoint's dead letters: events it gave up delivering."""
    return directory / DEAD / (_file_name(endpoint) + ".log")


class DeliveryLock:
    """Held by the one process that delivers; the kernel lets it go when that process dies."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / LOCK
        self._fd = -1

    def try_acquire(self) -> bool:
        if self._fd >= 0:
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the last descriptor unlocks
            self._fd = -1


def process_start(pid: int) -> int:
    """When process ``pid`` started (clock ticks since boot); 0 when there is no such process.

    With the pid it names one process for good: a pid is reused, a start time with it is not.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def process_alive(pid: int, started: int) -> bool:
    """Whether the process that was ``pid`` when it started at ``started`` still runs."""
    return started != 0 and process_start(pid) == started
