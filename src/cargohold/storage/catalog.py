"""The catalog: every repository name, in order, a page at a time (``/v2/_catalog``).

A repository is a folder below ``repositories/`` holding one of the marker
folders (``_manifests``, ``_layers``, ``_uploads``); names may nest
(``a``, ``a/b``). Two ways to find them, chosen by what the driver can do:

- ``WalkedCatalog`` lists folders through the driver in name order, a few
  ahead at once, and stops once a page is full; on object storage each
  listing is a request.
- ``DelimitedCatalog``, for drivers that list a whole tree cut at a delimiter
  (``delimited_lists``: S3), lists ``repositories/`` cut at ``/_``: each folder
  holding a ``_``-folder comes back once, ``<name>/_``, a thousand to a request.
- ``LocalCatalog``, for drivers whose paths are local files (``local_files``),
  scans the folder tree directly in a thread and keeps the result until the
  kernel (inotify, one instance for every process serving the root:
  ``watch.SharedInotify``) or the folders' modification times say something
  changed.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import os
import threading
import time
from typing import Protocol

from cargohold.errors import PathNotFound
from cargohold.storage.driver.base import DelimitedLists, LocalFiles, StorageDriver
from cargohold.storage.packednames import PackedNames
from cargohold.storage.paths import (
    REPOSITORIES,
    REPOSITORY_MARKERS,
    RepositoriesRoot,
    RepositoryDir,
    path_for,
    repository_name,
)
from cargohold.storage.watch import ENTRIES, IN_ONLYDIR, SharedInotify, settled
from cargohold.storage.watch import LOCAL_FILESYSTEMS as _LOCAL_FILESYSTEMS
from cargohold.storage.watch import filesystem_type as _filesystem_type


class Catalog(Protocol):
    async def page(self, n: int | None, last: str | None) -> list[str]:
        """Repository names in lexical order, at most ``n``, each after ``last``."""
        ...

    def close(self) -> None: ...


def catalog_for(driver: StorageDriver) -> Catalog:
    """The catalog suited to ``driver``."""
    files = driver.local_files
    if files is not None:
        return LocalCatalog(driver, files)
    lists = driver.delimited_lists
    return WalkedCatalog(driver) if lists is None else DelimitedCatalog(lists)


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


class DelimitedCatalog:
    """Repository names found by listing every folder below ``repositories/`` cut at ``/_``.

    Names never hold ``/_`` (no component starts with ``_``), so the listing cuts
    every key of a repository at its own ``_``-folders: one ``<name>/_`` per
    repository. A folder holding only cargohold's own ``_``-folders (``_referrers``,
    ``_pulled``, ``_proxy``, left once its manifests and layers are all gone) counts
    too, where ``WalkedCatalog`` asks for a marker folder.
    """

    DELIMITER = "/_"
    #: The characters after which a longer name sorts before a shorter one's ``<name>/_``:
    #: ``a-b/_`` and ``a/0/_`` sort before ``a/_``.
    _BEFORE_MARKER = frozenset("-.")

    def __init__(self, lists: DelimitedLists) -> None:
        self._lists = lists

    async def page(self, n: int | None, last: str | None) -> list[str]:
        """The names after ``last``, in order, up to ``n``: a request per thousand names.

        S3 lists ``<name>/_`` in key order, which is name order but for a name and
        the longer ones it begins (``a`` lists after ``a-b`` and ``a/0``, before
        ``a/b``): a page cut short is settled by asking for each such shorter name
        still to come (``_settle``). A page after ``last`` starts there
        (``StartAfter``). Servers that walk folders start after ``last``'s folder
        instead, leaving out what is below it and below each folder whose name
        ``last`` begins with before a ``-`` or ``.`` (after ``a.b``, ``a/c`` is
        next, in folder ``a``): the names that begin with those are listed
        besides, at once (on S3 they are in the listing already).
        """
        if n is not None and n <= 0:
            return []
        after = last if last is not None and _plain(last) else ""
        skipped = [after[:end] for end, char in enumerate(after) if char in self._BEFORE_MARKER]
        prefixes = [*skipped, after] if after else []
        besides = [asyncio.ensure_future(self._names(prefix)) for prefix in prefixes]
        try:
            found, position = await self._first(n, last, after)
            for names in await asyncio.gather(*besides):
                # Past where a listing cut short stopped, S3 has not said what comes between.
                found.update(
                    name for name in names if position is None or name + self.DELIMITER <= position
                )
        finally:
            for listing in besides:
                listing.cancel()
            await asyncio.gather(*besides, return_exceptions=True)
        names = sorted(name for name in found if last is None or name > last)
        if n is None or len(names) < n:
            return names
        page = names[:n]
        if position is not None:
            page = sorted({*page, *await self._settle(page[-1], last, position)})[:n]
        return page

    async def _first(
        self, n: int | None, last: str | None, after: str
    ) -> tuple[set[str], str | None]:
        """The names of the listing's pages until ``n`` after ``last`` are known, and where
        the listing stopped (None: at its end)."""
        found: set[str] = set()
        token: str | None = None
        while True:
            listing = await self._lists.list_delimited(
                REPOSITORIES, self.DELIMITER, after=after, token=token
            )
            found.update(self._repositories(listing.names))
            token = listing.token
            if token is None:
                return found, None
            if n is None or not listing.names:
                continue
            if sum(1 for name in found if last is None or name > last) >= n:
                return found, listing.names[-1]

    async def _settle(self, nth: str, last: str | None, position: str) -> list[str]:
        """The shorter names that sort before ``nth`` but list after ``position``.

        Only a name that ``nth`` begins with, followed by ``-``, ``.`` or ``/`` and a
        digit, sorts before it and lists after it; one small listing each, at once.
        """
        shorter = []
        for end, char in enumerate(nth):
            follows = nth[end + 1 : end + 2]
            if char in self._BEFORE_MARKER or (char == "/" and follows.isdigit()):
                name = nth[:end]
                if name + self.DELIMITER > position and (last is None or name > last):
                    shorter.append(name)
        there = await asyncio.gather(*map(self._exists, shorter))
        return [name for name, exists in zip(shorter, there, strict=True) if exists]

    async def _exists(self, name: str) -> bool:
        """Whether the folder ``name`` holds a ``_``-folder: the first page tells."""
        listing = await self._lists.list_delimited(
            REPOSITORIES, self.DELIMITER, prefix=name + self.DELIMITER
        )
        return bool(listing.names) or listing.token is not None

    async def _names(self, prefix: str) -> list[str]:
        """Every repository name the listing of ``prefix`` holds."""
        names: list[str] = []
        token: str | None = None
        while True:
            listing = await self._lists.list_delimited(
                REPOSITORIES, self.DELIMITER, prefix=prefix, token=token
            )
            names += self._repositories(listing.names)
            if (token := listing.token) is None:
                return names

    def _repositories(self, listed: list[str]) -> list[str]:
        # A file beside the repositories has no "/_": not a repository.
        cut = len(self.DELIMITER)
        return [
            name[:-cut]
            for name in listed
            if name.endswith(self.DELIMITER) and not name.startswith("_") and len(name) > cut
        ]

    def close(self) -> None:
        pass


def _plain(last: str) -> bool:
    """Whether ``last`` can start a listing: what a repository name may hold, no longer.

    Anything else (a client's odd ``last``) is left to the filter, so a key too long
    for the object store never becomes a 5xx.
    """
    return len(last) <= 255 and all(char in _NAME_CHARACTERS for char in last)


_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-/")


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
    the last ``watch.SETTLE`` seconds is not trusted.
    """

    def __init__(self) -> None:
        self._folders: list[tuple[str, int]] = []
        self._started = 0

    def reset(self) -> None:
        self._folders = []
        self._started = time.time_ns()

    def watch(self, path: str) -> None:
        self._folders.append((path, os.stat(path).st_mtime_ns))

    def trustworthy(self) -> bool:
        return all(settled(mtime, self._started) for _, mtime in self._folders)

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
    an event; one non-blocking look at the queue tells whether anything moved.
    Only for filesystems whose changes all pass through this kernel (not NFS).

    The instance is the one every process of the user serving the root holds
    (``SharedInotify``): a folder costs one watch of the kernel's per-user limit
    (``fs.inotify.max_user_watches``) however many workers watch it, and a
    change read by any of them moves the generation the others compare with
    the one their scan began at. Folders past the limit are watched by their
    modification times instead (``_MtimeWatch``): checking costs one ``stat``
    per such folder, not per folder of the tree.
    """

    _MASK = ENTRIES | IN_ONLYDIR

    def __init__(self, inotify: SharedInotify) -> None:
        self._inotify: SharedInotify | None = inotify
        self._seen = 0
        self._overflow = _MtimeWatch()

    def reset(self) -> None:
        if self._inotify is not None:
            self._seen = self._inotify.generation()  # what happened before the scan, it sees
        self._overflow.reset()

    def watch(self, path: str) -> None:
        if self._inotify is None:
            raise OSError(f"cannot watch {path}: closed")
        if self._inotify.add(path, self._MASK) is None:
            self._overflow.watch(path)  # out of watches

    def trustworthy(self) -> bool:
        return self._overflow.trustworthy()

    def changed(self) -> bool:
        if self._inotify is None:
            return True
        moved = self._inotify.generation() != self._seen
        return self._overflow.changed() or moved

    def close(self) -> None:
        self._overflow.close()
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None


def _change_watch(root: str) -> _MtimeWatch | _InotifyWatch:
    if _filesystem_type(root) in _LOCAL_FILESYSTEMS:
        try:
            return _InotifyWatch(SharedInotify(root))
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
        self._names: PackedNames | None = None
        self._watch: _MtimeWatch | _InotifyWatch | None = None
        # A scan may run in a thread while the loop checks the cache.
        self._lock = threading.Lock()

    def cached(self) -> PackedNames | None:
        """The names of the last scan if nothing changed since, else None (no scan)."""
        if not self._lock.acquire(blocking=False):
            return None  # a scan is under way
        try:
            return self._valid()
        finally:
            self._lock.release()

    def names(self) -> PackedNames:
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
            packed = PackedNames(names)
            # With no repositories folder yet there is nothing to watch: do not keep it.
            keep = self._watch.trustworthy() and os.path.isdir(self._top)
            self._names = packed if keep else None
            return packed

    def close(self) -> None:
        with self._lock:
            if self._watch is not None:
                self._watch.close()
                self._watch = None
            self._names = None

    def _valid(self) -> PackedNames | None:
        if self._names is None or self._watch is None or self._watch.changed():
            self._names = None
            return None
        return self._names

    def _scan(
        self, watch: _MtimeWatch | _InotifyWatch, path: str, name: str, names: list[str]
    ) -> None:
        # Entries are taken one at a time, not listed first: a folder of 100k repositories
        # listed costs 100k DirEntry objects (30 MiB) for as long as the scan below it runs.
        try:
            watch.watch(path)
            entries = os.scandir(path)
        except (FileNotFoundError, NotADirectoryError):
            return  # gone meanwhile, or never there: no repositories below
        is_repository = False
        with entries:
            for entry in entries:
                if not entry.is_dir():
                    continue
                if entry.name.startswith("_"):
                    is_repository = is_repository or entry.name in REPOSITORY_MARKERS
                elif "~" not in entry.name:
                    child = f"{name}/{entry.name}" if name else entry.name
                    self._scan(watch, entry.path, child, names)
        if is_repository and name:
            names.append(name)
