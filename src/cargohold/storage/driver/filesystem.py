"""A driver on a local directory tree, laid out exactly as the paths say.

Crash safety. ``put_content`` never writes at a target path in place: it
writes a temporary sibling (``.~<name>.<random>.tmp``) and renames it over
the target once the write is durable (below), so a process killed at any
instant leaves the old file or the new one, never a torn one. The temporary
name contains ``~``, which no valid driver path can, so it never collides
with real content and ``list``/``walk`` hide it.

A write is durable before the call that made it returns, which a power cut
needs where a killed process does not. ``put_content`` and ``put_stages`` go
through the intent log (``intentlog.py``): one record of their files, synced
with those of concurrent writes, before the renames; the log's checkpoint,
about a second later, makes the files durable where they are. Without
``syncfs`` (not Linux) they fsync their files, rename them and fsync the
folder each is in, in one trip to a thread. ``create``, ``move`` to another
folder, and a writer's first ``close`` or ``commit`` of a file it made fsync
the folder the name is in. Folders made on the way are not fsynced one by
one: a journaled filesystem (ext4, XFS) commits metadata in order, so the
fsync of the deepest folder carries the ``mkdir`` calls before it, and ext4
without a journal syncs a new folder's parents with it.
Removals are not synced: a name that comes back after a power cut is one a
retried delete or a collection removes.

A ``FileWriter`` (an upload's data) appends to the file at its path itself,
as Distribution's filesystem driver does, so a Go registry sharing the root
sees and continues an upload cargohold started, and the other way round,
without copying it. ``close`` (the end of each chunk) and ``commit`` make
what was written durable before they return, so an acknowledged chunk
survives a crash; a crash in the middle of a write leaves a prefix of it,
and the file's size says where to resume. A writer whose file was moved or
removed since it opened it (another request finished or cancelled the
upload) writes nothing more: its writes raise ``PathNotFound``.

Small files and single chunks are read and written inline on the event loop:
on a local disk with a warm page cache that costs microseconds, less than a
hand-off to a thread. Calls that may block for long (fsync, recursive delete,
copies) run on the registry's threads (at most ``maxthreads`` of its own when
used alone).

It offers every optional capability but redirects: its paths are local files
(``local_files``), small reads finish at once (``immediate``), and many files
go in one hand-off to a thread (``batch_deletes``), each with its folder when
it was the last thing there, as a collection wants of a blob or a link.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shutil
import stat as statmod
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime

from cargohold.errors import (
    InvalidOffset,
    PathNotFound,
    StorageDriverError,
    StorageFull,
    StorageUnavailable,
)
from cargohold.storage.driver import intentlog
from cargohold.storage.driver.base import (
    BatchDeletes,
    Descend,
    ExclusiveCreates,
    FileInfo,
    FileWriter,
    ImmediateFiles,
    LocalFiles,
    StorageDriver,
    join,
    plain_path,
)
from cargohold.storage.driver.fileio import (
    FIRST_READ,
    HIDDEN,
    fsync_folder,
    read_all,
    temp_name,
    unlink_quietly,
    write_all,
)
from cargohold.storage.driver.intentlog import IntentLog

log = logging.getLogger("cargohold.storage")


class FilesystemDriver(StorageDriver):
    name = "filesystem"

    def __init__(self, rootdirectory: str, maxthreads: int = 100, intent_log: bool = True) -> None:
        self.root = os.path.abspath(rootdirectory)
        self.thread_limit = maxthreads
        self._intents: IntentLog | None = None
        if intentlog.available():
            # What a stopped process left in its intent log lands before anything reads.
            try:
                replayed = intentlog.recover(self.root)
            except OSError as exc:
                raise StorageUnavailable(
                    self.root, self.name, f"cannot replay its intent log: {exc}"
                ) from exc
            if replayed:
                log.warning(
                    "replayed %d writes from the intent log of a boot that ended"
                    " before they were checkpointed (a power cut?)",
                    replayed,
                )
            if intent_log:
                self._intents = IntentLog(self.root, self.in_thread)

    def _full(self, path: str) -> str:
        return self.root if path == "/" else self.root + path

    # -- capabilities ---------------------------------------------------------------------

    @property
    def local_files(self) -> LocalFiles:
        return self

    @property
    def immediate(self) -> ImmediateFiles:
        return self

    @property
    def batch_deletes(self) -> BatchDeletes:
        return self._checked_deletes(self._delete_files)

    @property
    def exclusive_creates(self) -> ExclusiveCreates:
        return self

    async def create(self, path: str, content: bytes) -> bool:
        path = self._file_path(path)
        full, temp = self._full(path), self._full(temp_name(path))
        with self._errors(path):
            fd = _create(temp, full)
            try:
                try:
                    write_all(fd, content)
                    await self.in_thread(os.fsync, fd)
                finally:
                    os.close(fd)
                # link(2) makes the whole file appear at the path, or fails if one is there.
                os.link(temp, full)
            except FileExistsError:
                return False
            finally:
                unlink_quietly(temp)
            await self.in_thread(fsync_folder, os.path.dirname(full))
        return True

    async def _delete_files(self, paths: list[str]) -> None:
        with self._errors(paths[0] if paths else "/"):
            await self.in_thread(self._unlink_all, [self._full(p) for p in paths])

    @staticmethod
    def _unlink_all(paths: list[str]) -> None:
        for path in paths:
            try:
                os.unlink(path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                continue  # no file there
            with suppress(OSError):  # not empty, or gone: either way, it is not ours to take
                os.rmdir(os.path.dirname(path))

    def local_path(self, path: str) -> str:
        return self._full(self._any_path(path))

    def read_now(self, path: str, limit: int) -> bytes | None:
        if not plain_path(path):
            return None
        try:
            fd = os.open(self.root + path, os.O_RDONLY)
        except OSError:
            return None
        try:
            # A first read sized for the usual file (a link, a manifest): asking for the
            # whole limit at once would allocate (and free) that much on every call.
            data = os.read(fd, min(limit, FIRST_READ) + 1)
            if len(data) > FIRST_READ:
                size = os.fstat(fd).st_size
                if size > limit:
                    return None
                data += os.read(fd, size - len(data) + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        return data if len(data) <= limit else None

    def size_now(self, path: str) -> int | None:
        if not plain_path(path):
            return None
        try:
            info = os.stat(self.root + path)
        except OSError:
            return None
        return info.st_size if statmod.S_ISREG(info.st_mode) else None

    def list_now(self, path: str) -> list[str] | None:
        if not plain_path(path):
            return None
        try:
            names = os.listdir(self.root + path)
        except OSError:
            return None
        return [name for name in names if HIDDEN not in name]

    @contextmanager
    def _errors(self, path: str) -> Iterator[None]:
        """Turn the operating system's errors into driver errors."""
        try:
            yield
        except OSError as exc:
            raise self._error(path, exc) from exc

    def _error(self, path: str, exc: OSError) -> StorageDriverError:
        """The driver error the operating system's ``exc`` at ``path`` is."""
        if isinstance(exc, FileNotFoundError):
            return PathNotFound(path, self.name)
        if isinstance(exc, NotADirectoryError):
            return PathNotFound(path, self.name, "a parent is a file")
        if isinstance(exc, IsADirectoryError):
            return PathNotFound(path, self.name, "is a directory")
        if exc.errno in _FULL:
            return StorageFull(path, self.name, exc.strerror or str(exc))
        return StorageUnavailable(path, self.name, exc.strerror or str(exc))

    # -- the driver -----------------------------------------------------------------------

    async def _get_content(self, path: str) -> bytes:
        # os.open and os.read: the io module would add an fstat and an ioctl to every read.
        with self._errors(path):
            fd = os.open(self._full(path), os.O_RDONLY)
            try:
                return read_all(fd)
            finally:
                os.close(fd)

    async def _put_content(self, path: str, content: bytes) -> None:
        await self._put_contents([(path, content)])

    async def _put_contents(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Write every file to a temporary sibling, make the write durable, rename them in
        order.

        With the intent log, one record of them all joins the log's next sync
        and the renames follow on the loop. Without it, one trip to a thread fsyncs
        the files, renames them and fsyncs the folders they are in; concurrent calls'
        trips run side by side, which lets the filesystem commit their files together.
        The writes take microseconds, so they stay on the loop: every trip to a thread
        costs more than that (the thread's return fights the loop for the GIL).
        """
        fds: list[int] = []
        temps: list[tuple[str, str]] = []
        path = items[0][0] if items else "/"
        try:
            for path, content in items:
                full = self._full(path)
                temp = temp_name(full)
                fds.append(_create(temp, full))
                temps.append((temp, full))
                write_all(fds[-1], content)
        except OSError as exc:
            _close_all(fds)
            for temp, _ in temps:
                unlink_quietly(temp)
            raise self._error(path, exc) from exc
        # From here the files are the commit's, even if this call is cancelled meanwhile:
        # it renames them or removes them.
        committed: asyncio.Future[tuple[int, OSError | None]]
        if self._intents is not None:
            _close_all(fds)
            committed = asyncio.ensure_future(_logged(self._intents, items, temps))
        else:
            # The descriptors are closed once the thread is done (closed before, one could
            # be another file's by the time it fsyncs it), here rather than there: every
            # call the thread makes hands the GIL back and forth with this loop.
            committed = self.in_thread(_commit, fds, temps)
            committed.add_done_callback(lambda _: _close_all(fds))
        renamed, failure = await asyncio.shield(committed)
        if failure is not None:
            # Failed at a rename, or past the last one at the folders.
            failed = items[min(renamed, len(items) - 1)][0]
            raise self._error(failed, failure) from failure

    async def _put_stages(self, stages: Sequence[Sequence[tuple[str, bytes]]]) -> None:
        # The whole batch in order, which keeps every stage's order: one trip to a thread,
        # where a batch per stage would take one each.
        await self._put_contents([item for stage in stages for item in stage])

    async def _reader(self, path: str, offset: int, chunk_size: int) -> AsyncIterator[bytes]:
        with self._errors(path):
            fd = os.open(self._full(path), os.O_RDONLY)
        try:
            st = os.fstat(fd)
            size = st.st_size
            if statmod.S_ISDIR(st.st_mode):
                raise PathNotFound(path, self.name, "is a directory")
            if offset > size:
                raise InvalidOffset(path, self.name, offset, f"beyond the size {size}")
        except BaseException:
            os.close(fd)
            raise
        return self._chunks(path, fd, offset, chunk_size)

    async def _chunks(
        self, path: str, fd: int, offset: int, chunk_size: int
    ) -> AsyncIterator[bytes]:
        try:
            while True:
                with self._errors(path):
                    chunk = os.pread(fd, chunk_size, offset)
                if not chunk:
                    return
                offset += len(chunk)
                yield chunk
        finally:
            os.close(fd)

    async def _writer(self, path: str, append: bool) -> FileWriter:
        full = self._full(path)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        made = False  # the file: its name is kept by the first close or commit
        with self._errors(path):
            try:
                fd = os.open(full, flags & ~os.O_CREAT)
            except FileNotFoundError:
                made = True
                try:
                    fd = os.open(full, flags, 0o644)
                except FileNotFoundError:
                    _makedirs(os.path.dirname(full))
                    fd = os.open(full, flags, 0o644)
            size = os.fstat(fd).st_size
        return _FilesystemWriter(self, path, fd, size, made)

    async def _stat(self, path: str) -> FileInfo:
        with self._errors(path):
            st = os.stat(self._full(path))
        is_dir = statmod.S_ISDIR(st.st_mode)
        modtime = datetime.fromtimestamp(st.st_mtime, UTC)
        return FileInfo(path, 0 if is_dir else st.st_size, modtime, is_dir)

    async def _list(self, path: str) -> list[str]:
        full = self._full(path)
        if path == "/" and not os.path.isdir(full):
            return []
        with self._errors(path):
            if not os.path.isdir(full):
                os.stat(full)  # raises PathNotFound when missing
                raise PathNotFound(path, self.name, "not a directory")
            names = sorted(n for n in os.listdir(full) if HIDDEN not in n)
        return [join(path, n) for n in names]

    async def _move(self, source: str, dest: str) -> None:
        folder = os.path.dirname(self._full(dest))
        with self._errors(source):
            if not os.path.exists(self._full(source)):
                raise PathNotFound(source, self.name)
            _makedirs(folder)
            os.replace(self._full(source), self._full(dest))
        # A rename within a folder is one change to it: after a power cut the content has
        # one name or the other, which a caller moving within a folder (an upload's claim,
        # a collection hiding a blob) finds either way. Not waiting for a sync there keeps
        # such a step from letting another request in between.
        if folder != os.path.dirname(self._full(source)):
            with self._errors(dest):
                await self.in_thread(fsync_folder, folder)

    async def _delete(self, path: str) -> None:
        full = self._full(path)
        with self._errors(path):
            if os.path.isdir(full) and not os.path.islink(full):
                await self.in_thread(shutil.rmtree, full)
            else:
                os.unlink(full)

    async def _walk(self, path: str, descend: Descend | None) -> AsyncIterator[FileInfo]:
        full = self._full(path)
        with self._errors(path):
            if not os.path.isdir(full):
                os.stat(full)
                raise PathNotFound(path, self.name, "not a directory")
            entries = sorted(
                (e for e in os.scandir(full) if HIDDEN not in e.name), key=lambda e: e.name
            )
        for entry in entries:
            child = join(path, entry.name)
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue  # deleted while we walked
            modtime = datetime.fromtimestamp(st.st_mtime, UTC)
            if not entry.is_dir():
                yield FileInfo(child, st.st_size, modtime, is_dir=False)
                continue
            info = FileInfo(child, 0, modtime, is_dir=True)
            yield info
            if descend is None or descend(info):
                async for below in self._walk(child, descend):
                    yield below

    async def close(self) -> None:
        if self._intents is not None:
            await self._intents.close()
        await super().close()

    async def check(self) -> None:
        """The root must be a directory this process can write to (it is created if missing)."""
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            where = exc.filename or self.root
            raise StorageUnavailable(
                self.root, self.name, f"cannot create {where}: {exc.strerror}"
            ) from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(self.root, self.name, f"{self.root} is not writable")


#: The errors of a disk with no room left (or a user over their quota).
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

#: A writer asks the disk to catch up after this many bytes (see _FilesystemWriter.write).
FLUSH_EVERY = 8 * 1024 * 1024


class _FilesystemWriter(FileWriter):
    """Appends to the file at its path; ``close`` and ``commit`` make it durable first.

    While a large upload arrives, the writer has the data written out to disk
    in the background every ``FLUSH_EVERY`` bytes (one ``fdatasync`` at a
    time, in a thread, on a duplicate descriptor so that closing need not
    wait), so the fsync of ``commit`` finds little left to do instead of the
    whole blob. ``commit`` collects the outcome of the last flush: on Linux a
    write error is reported once per open file, which the duplicate shares.
    """

    def __init__(self, driver: FilesystemDriver, path: str, fd: int, size: int, made: bool) -> None:
        self._driver = driver
        self._path = path
        self._fd: int | None = fd
        self._size = size
        self._made = made  # the file is new, and its name not yet kept
        self._unflushed = 0
        self._flushing: asyncio.Future[None] | None = None

    @property
    def size(self) -> int:
        return self._size

    def _open_fd(self) -> int:
        if self._fd is None:
            raise StorageDriverError(self._path, self._driver.name, "writer is closed")
        return self._fd

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        fd = self._open_fd()
        with self._driver._errors(self._path):
            # Only while the path still names this file: finishing an upload moves its file
            # into place as a blob, and bytes written through a descriptor opened before
            # (a chunk still arriving) would land inside that blob. Nothing awaits between
            # the check and the write, so no move on this event loop comes in between.
            if not _still_at(self._driver._full(self._path), fd):
                raise FileNotFoundError(errno.ENOENT, "moved or removed since it was opened")
            try:
                write_all(fd, data)
            except OSError:
                # What part of it went (a disk that filled up) is taken back: the file
                # stays as long as the writes that succeeded, the size a resume reads.
                with suppress(OSError):
                    os.ftruncate(fd, self._size)
                raise
        self._size += len(data)
        self._unflushed += len(data)
        if self._unflushed >= FLUSH_EVERY and (self._flushing is None or self._flushing.done()):
            await self._flushed()  # collects a failure of the last flush, if any
            self._unflushed = 0
            self._flushing = self._driver.in_thread(_flush_and_close, os.dup(fd))
        return len(data)

    async def _flushed(self) -> None:
        flushing, self._flushing = self._flushing, None
        if flushing is not None:
            with self._driver._errors(self._path):
                await flushing

    async def commit(self) -> None:
        self._open_fd()
        await self._sync_and_close()

    async def cancel(self) -> None:
        self._open_fd()
        self._close_fd()
        unlink_quietly(self._driver._full(self._path))

    async def close(self) -> None:
        if self._fd is not None:
            await self._sync_and_close()

    async def _sync_and_close(self) -> None:
        # The content is already at its path: what is left is to make it durable.
        fd = self._open_fd()
        await self._flushed()
        folder = os.path.dirname(self._driver._full(self._path)) if self._made else None
        try:
            with self._driver._errors(self._path):
                await self._driver.in_thread(_datasync, fd, folder)
            self._made = False
        finally:
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def _create(temp: str, full: str) -> int:
    """Open a new temporary file, making the target's folder only when it is missing."""
    try:
        return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        # Trying first saves makedirs' probing when the folder exists (the usual case).
        _makedirs(os.path.dirname(full))
        return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)


def _still_at(path: str, fd: int) -> bool:
    """Whether ``path`` names the file open as ``fd``."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (named.st_ino, named.st_dev) == (opened.st_ino, opened.st_dev)


def _flush_and_close(fd: int) -> None:
    try:
        os.fdatasync(fd)
    finally:
        os.close(fd)


def _commit(fds: list[int], renames: list[tuple[str, str]]) -> tuple[int, OSError | None]:
    """Fsync the files, rename each (temporary, target), fsync the targets' folders; how
    many were renamed, and what failed. What was not renamed is removed."""
    try:
        for fd in fds:
            os.fsync(fd)
    except OSError as exc:
        for temp, _ in renames:
            unlink_quietly(temp)
        return 0, exc
    renamed, failure = _place(renames)
    if failure is None:
        try:
            for folder in dict.fromkeys(os.path.dirname(target) for _, target in renames):
                fsync_folder(folder)
        except OSError as exc:
            return renamed, exc
    return renamed, failure


async def _logged(
    intents: IntentLog, items: Sequence[tuple[str, bytes]], temps: list[tuple[str, str]]
) -> tuple[int, OSError | None]:
    """``_commit`` through the intent log: the record synced, then the renames."""
    try:
        return await intents.commit(items, lambda: _place(temps))
    except OSError as exc:
        for temp, _ in temps:
            unlink_quietly(temp)
        return 0, exc


def _place(renames: list[tuple[str, str]]) -> tuple[int, OSError | None]:
    """Rename each (temporary, target) in order; how many were, and what failed. What
    was not renamed is removed."""
    renamed = 0
    try:
        for temp, target in renames:
            os.replace(temp, target)
            renamed += 1
    except OSError as exc:
        for temp, _ in renames[renamed:]:
            unlink_quietly(temp)
        return renamed, exc
    return renamed, None


def _datasync(fd: int, folder: str | None) -> None:
    """An upload's data made durable, and with ``folder``, its name too."""
    os.fdatasync(fd)
    if folder is not None:
        fsync_folder(folder)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with suppress(OSError):  # what a close could report, the fsync has said
            os.close(fd)


def _makedirs(directory: str) -> None:
    """``os.makedirs(directory, exist_ok=True)`` in fewer calls: a mkdir first, and the
    parents only when it says they are missing (os.makedirs stats every level first)."""
    try:
        os.mkdir(directory)
    except FileNotFoundError:
        _makedirs(os.path.dirname(directory))
        try:
            os.mkdir(directory)
        except FileExistsError:
            _check_folder(directory)  # made meanwhile, by another request or process
    except FileExistsError:
        _check_folder(directory)


def _check_folder(path: str) -> None:
    if not os.path.isdir(path):
        # A file sits where a directory is needed.
        raise NotADirectoryError(errno.ENOTDIR, "a parent is a file", path)
