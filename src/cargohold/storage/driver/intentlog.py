"""The filesystem driver's intent log: concurrent small writes made durable by one sync.

Without it, each ``put_contents`` fsyncs every file it writes and the folder each
is in: a manifest PUT costs eight syncs of its own, however many PUTs run beside
it. With it, a write appends one record (its paths and contents) to this
process's log, and one ``fdatasync`` of the log, started once the one before it
has returned, makes every record appended meanwhile durable. Only then are the
files renamed into place, unsynced, and the call returns: a power cut leaves
the record, which the next start replays.

Segments. A log is a series of files, segments, each ``SEGMENT_BYTES`` of
zeros when made, so that records overwrite blocks the filesystem has already
allocated: their ``fdatasync`` then writes the data alone, without waiting for
the filesystem's journal to commit a new size (ext4, XFS). A segment is reused
once checkpointed: its header gets a new identity, synced before any record
goes in, and every record's checksum covers that identity, so what the last
use left after the new records is not taken for a record.

Checkpoints. ``interval`` seconds after a segment's first record it is sealed
(later records go to another; so do they once it is full); once every record
in it has been applied, one ``syncfs`` of the root's filesystem makes the
files durable where they are, and the segment is reused or removed. A
checkpoint writes out whatever else is dirty on that filesystem, which no
write waits for: an upload's data is at most a few MiB of it (its writer
syncs as it goes).

Recovery. Each process holds an ``flock`` on its segments, so one nobody holds
is what a process that stopped left behind. Every driver settles those when it
is made, and each checkpoint does too. A segment from this boot (the kernel's
boot id is in its header) was left by a killed process: the page cache holds
what it wrote, so the ``syncfs`` is all it needs, and a file of its records
that is missing now was deleted since. A segment from an earlier boot was cut
off with the power: its records are replayed. A record's file is written again
unless it holds the record's content already or was written after the record
(its mtime is later): a file another request replaced since is left as it is.
The ``syncfs`` before the segment's removal makes what was written back durable.

What replay cannot tell apart is a file deleted after its record from one whose
rename the power cut undid: it writes both back. A record lives about
``interval`` seconds, so that takes a delete within that time of the write and
a power cut before the checkpoint; removals are not synced in any case. Nor can
it order two writes of one file less than a clock tick apart (mtimes come from
the kernel's coarse clock): it may keep the earlier one's content then.

The segments live in ``.~intents`` under cargohold's own folder of the root: the
``~`` keeps them out of every listing and walk, as it does temporary files.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import logging
import os
import secrets
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from typing import Any, TypeVar

from cargohold.storage.driver.fileio import (
    fsync_folder,
    pwrite_all,
    read_all,
    temp_name,
    unlink_quietly,
    write_all,
)

log = logging.getLogger("cargohold.storage")

_T = TypeVar("_T")

#: Where the segments are, under the driver's root.
FOLDER = "/cargohold/.~intents"
#: A segment's name ends so; a segment being made ends in ``.new`` until it is locked.
SUFFIX = ".log"
#: Seconds from a segment's first record to the checkpoint that removes it.
INTERVAL = 1.0
#: A new segment's size, zeros; records past it make the file longer, and seal it.
SEGMENT_BYTES = 4 * 1024 * 1024
#: Checkpointed segments a process keeps for reuse besides the one in use; the others
#: are removed.
SPARES = 1

_MAGIC = b"cargohold intent log 1\n"
#: Where the boot's identity comes from; a test that copies a disk at an instant, as a
#: power cut leaves it, names another boot here for the registry it starts on the copy.
BOOT_ID_VARIABLE = "CARGOHOLD_BOOT_ID"
_RECORD = struct.Struct("<IIQ")  # body length, CRC-32 (segment identity, stamp, body), stamp
_ITEM = struct.Struct("<HI")  # path length, content length


def boot_id() -> bytes:
    """This boot's identity: the kernel's, unless ``BOOT_ID_VARIABLE`` names another."""
    named = os.environ.get(BOOT_ID_VARIABLE)
    if named:
        return named.encode()
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as file:
            return file.read().strip()
    except OSError:
        return b""


def _load_syncfs() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        syncfs: Callable[[int], int] = libc.syncfs
    except (OSError, AttributeError):
        return None
    return syncfs


_syncfs = _load_syncfs()


def available() -> bool:
    """Whether this system can checkpoint an intent log (Linux's ``syncfs``)."""
    return _syncfs is not None


class IntentLog:
    """One process's intent log on one root. ``commit`` is called on the event loop."""

    def __init__(
        self,
        root: str,
        in_thread: Callable[..., asyncio.Future[Any]],
        interval: float = INTERVAL,
    ) -> None:
        self.root = root
        self.folder = root + FOLDER
        self.interval = interval
        self._in_thread = in_thread
        self._pid = os.getpid()
        self._token = secrets.token_hex(6)
        self._count = 0
        self._current: _Segment | None = None
        self._opening: asyncio.Future[None] | None = None
        self._sealed: list[_Segment] = []
        self._spares: list[_Segment] = []
        self._timer: asyncio.TimerHandle | None = None
        self._checkpointing: asyncio.Task[None] | None = None
        self._one_at_a_time = asyncio.Lock()

    async def commit(self, items: Sequence[tuple[str, bytes]], apply: Callable[[], _T]) -> _T:
        """Make ``items`` durable in the log, then call ``apply`` (which puts the
        files in place) and return what it returns.

        Raises ``OSError`` when the record could not be written or synced; ``apply``
        is not called then.
        """
        if self._pid != os.getpid():
            self._forget_parent()
        segment = self._current or await self._next_segment()
        record = _encode(segment.identity, time.time_ns(), items)
        try:
            pwrite_all(segment.fd, record, segment.end)
        except OSError:
            segment.failed = True
            self._seal(segment)  # a record may be torn: nothing may follow it
            raise
        segment.end += len(record)
        if segment.end >= segment.capacity:
            self._seal(segment)
        segment.appended += 1
        segment.pending += 1
        segment.applied.clear()
        try:
            await segment.synced(segment.appended, self._in_thread)
            return apply()
        except OSError:
            segment.failed = True
            self._seal(segment)  # after a failed sync, the file's state is unknown
            raise
        finally:
            segment.pending -= 1
            if segment.pending == 0:
                segment.applied.set()

    async def checkpoint(self) -> None:
        """Make everything the sealed and current segments hold durable in place, and
        remove them; replay segments that processes which stopped left behind."""
        async with self._one_at_a_time:
            await self._checkpoint()

    async def _checkpoint(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._current is not None:
            self._seal(self._current)
        sealed = list(self._sealed)
        for segment in sealed:
            await segment.applied.wait()
        # Kept: the segment in use and SPARES more. Counted once the records are applied,
        # when the next segment may already be in use: a spare taken meanwhile, or made.
        kept = len(self._spares) + (self._current is not None)
        reuse = [s for s in sealed if not s.failed][: max(0, SPARES + 1 - kept)]
        drop = [s.path for s in sealed if s not in reuse]
        for segment in reuse:
            segment.renew()
        try:
            _, reused = await self._in_thread(
                _settle, self.root, self.folder, drop, [(s.fd, s.path, s.header) for s in reuse]
            )
        except OSError as exc:
            log.warning("intent log checkpoint failed, kept for the next one: %s", exc)
            self._schedule()
            return
        for segment in sealed:
            self._sealed.remove(segment)
            if segment.fd in reused:
                self._spares.append(segment)
            else:
                segment.close()

    async def close(self) -> None:
        """Checkpoint what is left, and take the log's folders away if no process uses them:
        a root a stopped registry leaves holds only what Distribution's layout has."""
        if self._checkpointing is not None:
            await self._checkpointing
        if self._current is not None or self._sealed:
            await self.checkpoint()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for spare in self._spares:
            unlink_quietly(spare.path)  # while locked: no recovery takes it meanwhile
            spare.close()
        self._spares = []
        for folder in (self.folder, os.path.dirname(self.folder)):
            try:
                os.rmdir(folder)
            except OSError:
                break  # not empty: another process's, or cargohold's other files

    # -- segments -------------------------------------------------------------------

    async def _next_segment(self) -> _Segment:
        """The segment records go to, made (or a spare taken) if there is none."""
        while self._current is None:
            if self._opening is None:
                self._opening = asyncio.ensure_future(self._open())
            await asyncio.shield(self._opening)
        return self._current

    async def _open(self) -> None:
        try:
            if self._spares:
                segment = self._spares.pop()
            else:
                self._count += 1
                path = f"{self.folder}/{self._pid}-{self._token}-{self._count}{SUFFIX}"
                fd = await self._in_thread(_create_locked, path)
                segment = _Segment(path, fd)
                # Its first sync writes the header with the records: a header alone says
                # nothing, and with zeros after it a replay finds no record.
                pwrite_all(fd, segment.header, 0)
            self._current = segment
            self._schedule()
        finally:
            self._opening = None

    def _seal(self, segment: _Segment) -> None:
        if segment is self._current:
            self._current = None
            self._sealed.append(segment)

    def _schedule(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.interval, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._checkpointing is None:
            self._checkpointing = asyncio.ensure_future(self._checkpoint_in_background())

    async def _checkpoint_in_background(self) -> None:
        try:
            await self.checkpoint()
        finally:
            self._checkpointing = None

    def _forget_parent(self) -> None:
        """In a forked child: the segments are the parent's, and so are their locks."""
        self._pid = os.getpid()
        self._token = secrets.token_hex(6)
        self._current, self._sealed, self._spares = None, [], []
        self._timer = self._checkpointing = self._opening = None
        self._one_at_a_time = asyncio.Lock()


class _Segment:
    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self.fd = fd
        self.capacity = SEGMENT_BYTES
        self.failed = False  # a write or a sync failed: not to be reused
        self.renew()

    def renew(self) -> None:
        """A new identity, for a first use or a reuse; ``header`` is to be written."""
        self.identity = secrets.token_hex(8).encode()
        self.header = _header(self.identity)
        self.end = len(self.header)  # where the next record goes
        self.appended = 0  # records written to the file
        self.durable = 0  # records a finished fdatasync covered
        self.pending = 0  # records not yet applied
        self.applied = asyncio.Event()  # set while none is pending
        self.applied.set()
        self._syncing: asyncio.Future[None] | None = None
        self._failure: OSError | None = None

    async def synced(self, record: int, in_thread: Callable[..., asyncio.Future[Any]]) -> None:
        """Return once a sync has covered record number ``record``: a sync started
        after it was written, shared with every record written before it started."""
        while self.durable < record:
            if self._failure is not None:
                raise self._failure
            if self._syncing is None:
                self._syncing = asyncio.ensure_future(self._sync(in_thread))
            await asyncio.shield(self._syncing)

    async def _sync(self, in_thread: Callable[..., asyncio.Future[Any]]) -> None:
        covered = self.appended
        try:
            await in_thread(os.fdatasync, self.fd)
            self.durable = covered
        except OSError as exc:
            self._failure = exc
        finally:
            self._syncing = None

    def close(self) -> None:
        with suppress(OSError):
            os.close(self.fd)


# -- on the driver's threads, or at start -----------------------------------------------


def recover(root: str) -> int:
    """Replay and remove the segments no process holds; how many records were replayed."""
    return _settle(root, root + FOLDER, [], [])[0]


def _settle(
    root: str, folder: str, own: list[str], reuse: list[tuple[int, str, bytes]]
) -> tuple[int, set[int]]:
    """Replay the orphaned segments and sync the root's filesystem; then remove the
    orphans and ``own`` (sealed segments of this process, whose records are applied),
    and give each segment of ``reuse`` (descriptor, path, new header) its new header,
    synced, or remove it if that fails.

    How many records were replayed, and which of ``reuse`` can be used again.
    """
    replayed, orphans = 0, []
    reused: set[int] = set()
    try:
        for name in os.listdir(folder):
            path = f"{folder}/{name}"
            if path in own or not (name.endswith(SUFFIX) or _stale(path)):
                continue
            fd = _lock_orphan(path)
            if fd is not None:
                orphans.append((path, fd))
                replayed += _replay(root, fd)
        if own or orphans or reuse:
            _sync_filesystem(root)
            for path in [*own, *(path for path, _ in orphans)]:
                unlink_quietly(path)
    except (FileNotFoundError, NotADirectoryError):
        pass  # no log yet (nor, perhaps, a root: the driver's check says so)
    finally:
        for _, fd in orphans:
            os.close(fd)
    for fd, path, header in reuse:
        # Only once its records are durable where they are may a segment forget them.
        try:
            pwrite_all(fd, header, 0)
            os.fdatasync(fd)
            reused.add(fd)
        except OSError:
            unlink_quietly(path)
    return replayed, reused


def _stale(path: str) -> bool:
    """A segment left while it was being made (younger, it may be about to be locked)."""
    try:
        return path.endswith(".new") and time.time() - os.stat(path).st_mtime > 60
    except FileNotFoundError:
        return False


def _sync_filesystem(root: str) -> None:
    assert _syncfs is not None
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), root)
    finally:
        os.close(fd)


def _create_locked(path: str) -> int:
    """A new segment of zeros (or empty, on a disk without room for them), its size and
    name durable, locked before it has the name recovery looks for."""
    making = path[: -len(SUFFIX)] + ".new"
    for attempt in range(3):  # another process's close may take the folder away meanwhile
        try:
            fd = os.open(making, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileNotFoundError:
            if attempt == 2:
                raise
            os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            zeros = bytes(min(SEGMENT_BYTES, 1024 * 1024))
            for start in range(0, SEGMENT_BYTES, len(zeros)):
                write_all(fd, zeros[: SEGMENT_BYTES - start])
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            # No room to lay it out: its records make it longer as they come, which costs
            # their syncs a journal commit each, and takes no room they do not need.
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
        os.fsync(fd)
        os.rename(making, path)
        fsync_folder(os.path.dirname(path))
    except BaseException:
        os.close(fd)
        unlink_quietly(making)
        raise
    return fd


def _lock_orphan(path: str) -> int | None:
    """The segment at ``path`` opened and locked, if no process holds it and it is
    still there once locked (another recovery may have removed it meanwhile)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.stat(path).st_ino == os.fstat(fd).st_ino:
            return fd
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.ENOENT):
            os.close(fd)
            raise
    os.close(fd)
    return None


def _header(identity: bytes) -> bytes:
    """The boot it was written in, and the segment's identity in this use."""
    return _MAGIC + boot_id() + b"\n" + identity + b"\n"


def _parse_header(data: bytes) -> tuple[bytes, bytes, int] | None:
    """(boot id, identity, where the records start); None for no header (zeros)."""
    if not data.startswith(_MAGIC):
        return None
    boot_end = data.find(b"\n", len(_MAGIC))
    identity_end = data.find(b"\n", boot_end + 1) if boot_end >= 0 else -1
    if identity_end < 0:
        return None
    return data[len(_MAGIC) : boot_end], data[boot_end + 1 : identity_end], identity_end + 1


def _replay(root: str, fd: int) -> int:
    """Write back each record's files that the filesystem lost; how many records."""
    data = read_all(fd)
    header = _parse_header(data)
    if header is None or header[0] == boot_id():
        # Made and never written to; or written in this boot, by a process killed since:
        # what it wrote is in the page cache, which the checkpoint's syncfs makes durable,
        # and a file missing now was deleted since, which a replay would undo.
        return 0
    _, identity, start = header
    count = 0
    for stamp, items in _records(data, start, identity):
        for path, content in items:
            if path.startswith("/") and ".." not in path.split("/"):
                _restore(root + path, content, stamp)
        count += 1
    return count


def _restore(full: str, content: bytes, stamp: int) -> None:
    try:
        fd = os.open(full, os.O_RDONLY)
    except FileNotFoundError:
        pass
    else:
        try:
            if os.fstat(fd).st_mtime_ns > stamp or read_all(fd) == content:
                return  # written since, or never lost
        finally:
            os.close(fd)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    temp = temp_name(full)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        write_all(fd, content)
    finally:
        os.close(fd)
    os.replace(temp, full)


# -- records ------------------------------------------------------------------------------


def _encode(identity: bytes, stamp: int, items: Sequence[tuple[str, bytes]]) -> bytes:
    parts: list[bytes] = []
    for path, content in items:
        name = path.encode()
        parts += (_ITEM.pack(len(name), len(content)), name, content)
    body = b"".join(parts)
    return _RECORD.pack(len(body), _checksum(identity, stamp, body), stamp) + body


def _checksum(identity: bytes, stamp: int, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(struct.pack("<Q", stamp), zlib.crc32(identity)))


def _records(
    data: bytes, at: int, identity: bytes
) -> Iterator[tuple[int, list[tuple[str, bytes]]]]:
    """The whole records from ``at`` on; a torn or damaged one, or zeros, or one of the
    segment's earlier use ends the segment."""
    while at + _RECORD.size <= len(data):
        length, crc, stamp = _RECORD.unpack_from(data, at)
        body = data[at + _RECORD.size : at + _RECORD.size + length]
        if len(body) < length or _checksum(identity, stamp, body) != crc:
            return
        items: list[tuple[str, bytes]] = []
        offset = 0
        while offset < length:
            name_length, content_length = _ITEM.unpack_from(body, offset)
            offset += _ITEM.size
            path = body[offset : offset + name_length].decode()
            offset += name_length
            items.append((path, body[offset : offset + content_length]))
            offset += content_length
        yield stamp, items
        at += _RECORD.size + length
