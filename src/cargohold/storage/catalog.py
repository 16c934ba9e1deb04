"""The catalog: every repository name, in order, a page at a time (``/v2/_catalog``).

A repository is a folder below ``repositories/`` holding one of the marker
folders (``_manifests``, ``_layers``, ``_uploads``); names may nest
(``a``, ``a/b``). Two ways to find them, chosen by what the driver can do:

- ``WalkedCatalog`` lists folders through the driver in name order, a few
  ahead at once, and stops once a page is full; on object storage each
  listing is a request.
- ``LocalCatalog``, for drivers whose paths are local files (``local_files``),
  scans the folder tree directly in a thread and keeps the result until the
  kernel (inotify) or the folders' modification times say something changed.
"""

from __future__ import annotations

import asyncio
import bisect
import ctypes
import errno
import heapq
import os
import threading
import time
from typing import Protocol

from cargohold.errors import PathNotFound
from cargohold.storage.driver.base import LocalFiles, StorageDriver
from cargohold.storage.paths import (
    REPOSITORIES,
    REPOSITORY_MARKERS,
    RepositoriesRoot,
    RepositoryDir,
    path_for,
    repository_name,
)


class Catalog(Protocol):
    async def page(self, n: int | None, last: str | None) -> list[str]:
        """Repository names in lexical order, at most ``n``, each after ``last``."""
        ...

    def close(self) -> None: ...


def catalog_for(driver: StorageDriver) -> Catalog:
    """The catalog suited to ``driver``."""
    files = driver.local_files
    return WalkedCatalog(driver) if files is None else LocalCatalog(driver, files)


class WalkedCatalog:
    """Repository names found by listing folders through the driver."""

    #: Listings under way at once: the next folders in name order are listed ahead.
    LOOKAHEAD = 8

    def __init__(self, driver: StorageDriver) -> None:
        self._driver = driver

    async def page(self, n: int | None, last: str | None) -> list[str]:
        """The names after ``last``, in order, up to ``n``, one listing per folder visited.

        On object storage each listing is a request, so the walk lists folders in name
        order and stops once it has ``n`` names: a folder's name sorts before every
        name below it, so listing the smallest pending folder next finds the names in
        order. Folders whose names all sort at or before ``last`` are never listed:
        below ``x`` every name is ``x`` or starts ``x/``, so sorts before ``x0``.

        A listing is a round trip that costs the registry little CPU, so the next
        ``LOOKAHEAD`` folders in order are listed while the first one's answer is
        awaited; a full page lists at most ``LOOKAHEAD`` folders too many.
        """
        found: list[str] = []
        pending: list[str] = []  # folders not yet listed, by repository-name prefix
        started: list[str] = []  # folders being listed, in name order
        listings: dict[str, asyncio.Task[list[str] | None]] = {}

        def consider(path: str) -> None:
            # A repository's own folders start with "_"; names never do.
            if path.rpartition("/")[2].startswith("_"):
                return
            name = repository_name(path)
            if last is not None and name + "0" <= last:
                return
            heapq.heappush(pending, name)

        def start(name: str) -> None:
            bisect.insort(started, name)
            listings[name] = asyncio.ensure_future(self._children(name))

        try:
            top = await self._driver.list(path_for(RepositoriesRoot()))
        except PathNotFound:
            return []
        for path in top:
            consider(path)
        try:
            while (pending or started) and (n is None or len(found) < n):
                while pending and len(started) < self.LOOKAHEAD:
                    start(heapq.heappop(pending))
                if pending and pending[0] < started[0]:
                    start(heapq.heappop(pending))  # found below the next one: it comes first
                name = started.pop(0)  # sorts before every pending name: it is next
                children = await listings.pop(name)
                if children is None:
                    continue  # deleted since its parent was listed
                leaves = {child.rpartition("/")[2] for child in children}
                if leaves & REPOSITORY_MARKERS and (last is None or name > last):
                    found.append(name)
                for child in children:
                    consider(child)
        finally:
            for listing in listings.values():
                listing.cancel()
            await asyncio.gather(*listings.values(), return_exceptions=True)
        return found

    async def _children(self, name: str) -> list[str] | None:
        try:
            return await self._driver.list(path_for(RepositoryDir(name)))
        except PathNotFound:
            return None

    def close(self) -> None:
        pass


class LocalCatalog:
    """Repository names scanned from local folders, kept until one of them changes."""

    def __init__(self, driver: StorageDriver, files: LocalFiles) -> None:
        self._driver = driver
        self._scan = LocalScan(files.local_path(REPOSITORIES))

    async def page(self, n: int | None, last: str | None) -> list[str]:
        # Checking a kept scan is quick enough for the loop; a scan is not.
        names = self._scan.cached()
        if names is None:
            names = await self._driver.in_thread(self._scan.names)
        # One slice of the page: slicing off the names before ``last`` first would copy
        # the whole tail, making a deep page cost its position in the catalog.
        start = 0 if last is None else bisect.bisect_right(names, last)
        return names[start:] if n is None else names[start : start + n]

    def close(self) -> None:
        self._scan.close()


class _MtimeWatch:
    """Notices change by a folder's modification time: one ``stat`` per folder.

    A folder's time changes whenever an entry is added to or removed from it.
    It is sound only for times safely in the past: a folder changed twice within
    one tick of the clock keeps one time, so a scan that met a folder changed in
    the last ``SETTLE`` seconds is not trusted.
    """

    SETTLE = 2.0

    def __init__(self) -> None:
        self._folders: list[tuple[str, int]] = []
        self._started = 0

    def reset(self) -> None:
        self._folders = []
        self._started = time.time_ns()

    def watch(self, path: str) -> None:
        self._folders.append((path, os.stat(path).st_mtime_ns))

    def trustworthy(self) -> bool:
        settled = self._started - int(self.SETTLE * 1e9)
        return all(mtime < settled for _, mtime in self._folders)

    def changed(self) -> bool:
        try:
            return any(os.stat(path).st_mtime_ns != mtime for path, mtime in self._folders)
        except OSError:
            return True

    def close(self) -> None:
        self._folders = []


class _InotifyWatch:
    """Notices change as the kernel reports it (inotify): no per-folder cost to check.

    Each folder is watched before it is read, so any later change to it queues
    an event; one non-blocking read tells whether anything moved. Only for
    filesystems whose changes all pass through this kernel (not NFS).

    A watch costs one per folder of the kernel's per-user limit
    (``fs.inotify.max_user_watches``, shared by every process of the user, each
    worker holding its own). Folders past the limit are watched by their
    modification times instead (``_MtimeWatch``): checking costs one ``stat``
    per such folder, not per folder of the tree.
    """

    _MASK = 0x100 | 0x200 | 0x40 | 0x80 | 0x400 | 0x800 | 0x01000000  # create, delete, moves, self

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._add = libc.inotify_add_watch
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._fd: int | None = fd
        self._overflow = _MtimeWatch()

    def reset(self) -> None:
        self._drain()  # what happened before the scan, the scan sees
        self._overflow.reset()

    def watch(self, path: str) -> None:
        added = -1 if self._fd is None else self._add(self._fd, os.fsencode(path), self._MASK)
        if added >= 0:
            return
        error = ctypes.get_errno()
        if error == errno.ENOSPC and self._fd is not None:
            self._overflow.watch(path)  # out of watches
            return
        raise OSError(error, f"cannot watch {path}")

    def trustworthy(self) -> bool:
        return self._overflow.trustworthy()

    def changed(self) -> bool:
        if self._fd is None:
            return True
        moved = self._drain()
        return self._overflow.changed() or moved

    def _drain(self) -> bool:
        """Read every queued event; whether there was any."""
        moved = False
        if self._fd is None:
            return moved
        try:
            while os.read(self._fd, 65536):
                moved = True
        except BlockingIOError:
            pass
        return moved

    def close(self) -> None:
        self._overflow.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_LOCAL_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "zfs", "overlay", "jfs", "reiserfs"}
)


def _filesystem_type(path: str) -> str:
    """The type of the filesystem ``path`` is on, as /proc/self/mounts names it ("" if unknown)."""
    real = os.path.realpath(path)
    best, kind = "", ""
    try:
        with open("/proc/self/mounts", encoding="utf-8") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = fields[1].replace("\\040", " ")
                inside = real == point or real.startswith(point.rstrip("/") + "/")
                if inside and len(point) >= len(best):
                    best, kind = point, fields[2]
    except OSError:
        return ""
    return kind


def _change_watch(root: str) -> _MtimeWatch | _InotifyWatch:
    if _filesystem_type(root) in _LOCAL_FILESYSTEMS:
        try:
            return _InotifyWatch(ctypes.CDLL(None, use_errno=True))
        except (OSError, AttributeError):
            pass  # no inotify here (or no more instances): times will do
    return _MtimeWatch()


class LocalScan:
    """The repository names under a local folder, rescanned only when a folder it read changed.

    A scan reads every folder of the repositories tree (one ``scandir`` each).
    A repository can only appear or vanish by an entry being added to or
    removed from one of those folders (its marker folders, or a nested
    repository's folder), so the last scan stands until one changes. Change is
    noticed by inotify on a local filesystem (free to check), else by the
    folders' modification times (one ``stat`` each, several times cheaper than
    a scan).
    """

    def __init__(self, top: str) -> None:
        self._top = top
        self._names: list[str] | None = None
        self._watch: _MtimeWatch | _InotifyWatch | None = None
        # A scan may run in a thread while the loop checks the cache.
        self._lock = threading.Lock()

    def cached(self) -> list[str] | None:
        """The names of the last scan if nothing changed since, else None (no scan)."""
        if not self._lock.acquire(blocking=False):
            return None  # a scan is under way
        try:
            return self._valid()
        finally:
            self._lock.release()

    def names(self) -> list[str]:
        """Every repository name, sorted. Blocking: call it in a thread for big trees."""
        with self._lock:
            valid = self._valid()
            if valid is not None:
                return valid
            if self._watch is None:
                self._watch = _change_watch(self._top)
            self._watch.reset()
            names: list[str] = []
            try:
                self._scan(self._watch, self._top, "", names)
            except OSError:
                # Watching failed otherwise (no permission, say): times for good, and
                # scan again. (Past the limit of watches, folders are watched by time.)
                self._watch.close()
                self._watch = _MtimeWatch()
                self._watch.reset()
                names = []
                self._scan(self._watch, self._top, "", names)
            names.sort()
            # With no repositories folder yet there is nothing to watch: do not keep it.
            keep = self._watch.trustworthy() and os.path.isdir(self._top)
            self._names = names if keep else None
            return names

    def close(self) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
            self._names = None

    def _valid(self) -> list[str] | None:
        if self._names is None or self._watch is None or self._watch.changed():
            self._names = None
            return None
        return self._names

    def _scan(
        self, watch: _MtimeWatch | _InotifyWatch, path: str, name: str, names: list[str]
    ) -> None:
        try:
            watch.watch(path)
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            return  # gone meanwhile, or never there: no repositories below
        children = []
        is_repository = False
        for entry in entries:
            if not entry.is_dir():
                continue
            if entry.name.startswith("_"):
                is_repository = is_repository or entry.name in REPOSITORY_MARKERS
            elif "~" not in entry.name:
                children.append(entry.name)
        if is_repository and name:
            names.append(name)
        for child in children:
            self._scan(watch, f"{path}/{child}", f"{name}/{child}" if name else child, names)
