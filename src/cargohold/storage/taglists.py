"""Kept tag lists: a repository's tags, sorted, kept while its tags folder is unchanged.

tags/list pages through a repository's tags in order. Listing and sorting the
tags folder on every request costs the repository's tags (0.1-0.3 s at 100k);
with the sorted list kept, a page costs its page (a bisection and a slice).
Only for drivers whose paths are local files; object storage lists as before.

A kept list stands while

- the kernel reports no entry of the tags folder added or removed (inotify:
  a watch on the folder, on this process's own instance). The events name
  the tag and are applied to a copy of the list, so a list handed out never
  changes. The queue is read without waiting at each request, and the kernel
  queues an event before the call that wrote returns, so a tag written by any
  process (another worker, the Go registry) is in the very next answer;
- the folder's path still names the folder watched (one ``stat`` a request:
  a repository moved, or deleted and pushed again, is noticed);
- past the kernel's limit of watches, or off a local filesystem, the
  folder's modification time is the one it had when it was listed, which
  was then safely in the past (``watch.SETTLE``).

Memory and watches stay bounded whatever the registry holds: the lists of
the ``repositories`` repositories asked about last are kept, at most ``tags``
names in all (a name costs about 60-100 bytes), one watch each. A repository
of fewer than ``keep_from`` tags is listed each time instead (microseconds),
so that small repositories, however many, do not push out the large ones.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from cargohold.storage.driver.base import LocalFiles, StorageDriver
from cargohold.storage.paths import REPOSITORIES, TagsDir, path_for
from cargohold.storage.watch import (
    ENTRIES,
    GONE,
    IN_CREATE,
    IN_DELETE,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    IN_Q_OVERFLOW,
    LOCAL_FILESYSTEMS,
    Inotify,
    filesystem_type,
    settled,
)

#: In the names of the filesystem driver's temporary files, which its listings hide.
_HIDDEN = "~"


@dataclass(slots=True)
class _Kept:
    """One repository's kept list, and what it was made from."""

    name: str
    names: list[str]
    folder: tuple[int, int]  # device and inode of the tags folder listed
    wd: int | None  # its watch; None: watched by its modification time
    mtime_ns: int
    #: Tags added (True) or removed (False) since ``names`` was made, last event first to win.
    changes: dict[str, bool] = field(default_factory=dict)


def tag_lists_for(driver: StorageDriver) -> TagLists | None:
    """Kept tag lists for ``driver``, if its paths are local files."""
    files = driver.local_files
    return None if files is None else TagLists(driver, files)


class TagLists:
    """The sorted tags of the repositories asked about last, each kept until it changes."""

    #: Repositories whose lists are kept at once.
    REPOSITORIES = 256
    #: Tag names kept at once, over every repository.
    TAGS = 1_000_000
    #: The fewest tags a repository has for its list to be kept.
    KEEP_FROM = 64
    #: Changes applied to a kept list one by one; past this many it is listed again.
    APPLY = 1024

    def __init__(
        self,
        driver: StorageDriver,
        files: LocalFiles,
        *,
        repositories: int | None = None,
        tags: int | None = None,
        keep_from: int | None = None,
    ) -> None:
        self._driver = driver
        self._files = files
        self._repositories = self.REPOSITORIES if repositories is None else repositories
        self._tags = self.TAGS if tags is None else tags
        self._keep_from = self.KEEP_FROM if keep_from is None else keep_from
        root = files.local_path(REPOSITORIES)
        self._local = filesystem_type(root) in LOCAL_FILESYSTEMS
        self._inotify: Inotify | None = None
        self._kept: OrderedDict[str, _Kept] = OrderedDict()  # least recently asked first
        self._by_wd: dict[int, _Kept] = {}
        #: Changes seen while a list is being read, by its watch; None: the folder went.
        self._reading: dict[int, dict[str, bool] | None] = {}
        self._names = 0  # kept in all
        # Lists are read in a thread while the loop answers from the kept ones.
        self._lock = threading.Lock()

    async def tags(self, name: str) -> list[str] | None:
        """The tags of repository ``name``, sorted; None when it has no tags folder.

        The same list may be handed to every caller until the tags change: it
        must not be changed.
        """
        found = self._found(name)
        if isinstance(found, str):
            return await self._driver.in_thread(self._keep, name, found)
        return found

    def tags_now(self, name: str) -> list[str] | None:
        """``tags`` without waiting, for the fast path: a list not kept yet is read (and
        kept) here, on the loop, as the fast path would read the folder anyway."""
        found = self._found(name)
        return self._keep(name, found) if isinstance(found, str) else found

    def _found(self, name: str) -> list[str] | str | None:
        """The tags of ``name`` when known without keeping a list (kept already, too few
        to keep, no folder); else the path of the tags folder whose list is to be kept."""
        path = self._files.local_path(path_for(TagsDir(name)))
        try:
            info = os.stat(path)
        except OSError:
            return None
        kept = self._current(name, info)
        if kept is not None:
            return kept
        # A folder's links are 2 and one per folder in it (btrfs says 1 whatever it holds).
        if 2 <= info.st_nlink < self._keep_from + 2:
            return _listed(path)
        return path

    def watches(self) -> int:
        """How many tags folders are watched by inotify now."""
        return len(self._by_wd)

    def close(self) -> None:
        with self._lock:
            self._kept.clear()
            self._by_wd.clear()
            self._reading.clear()
            self._names = 0
            if self._inotify is not None:
                self._inotify.close()
                self._inotify = None

    def _current(self, name: str, info: os.stat_result) -> list[str] | None:
        """The kept list of ``name`` if it still stands, with every change made so far."""
        with self._lock:
            self._take_events()
            kept = self._kept.get(name)
            if kept is None:
                return None
            moved = (info.st_dev, info.st_ino) != kept.folder
            if moved or (kept.wd is None and info.st_mtime_ns != kept.mtime_ns):
                self._forget(name)
                return None
            if kept.changes:
                before = len(kept.names)
                if not self._apply(kept):
                    self._forget(name)
                    return None
                self._names += len(kept.names) - before
            self._kept.move_to_end(name)
            return kept.names

    def _keep(self, name: str, path: str) -> list[str] | None:
        """List ``name``'s tags folder and keep the list if it may be. Blocking: in a thread."""
        started = time.time_ns()
        with self._lock:
            self._take_events()
            try:
                wd = self._watch(path)
            except OSError:
                wd = -1  # gone, or not a folder: listed as the driver would list it
            # Kept or being read under another name (a link), or read by another request
            # right now: only listed, the watch left to its holder.
            shared = wd is not None and (wd in self._by_wd or wd in self._reading)
            if wd is not None and not shared and wd >= 0:
                self._reading[wd] = {}
        if shared or wd == -1:
            return _listed(path)
        try:
            info: os.stat_result | None = os.stat(path)
        except OSError:
            info = None
        names = _listed(path)
        with self._lock:
            self._take_events()
            changes = self._reading.pop(wd, None) if wd is not None else {}
        if info is None or names is None or changes is None:
            self._unwatch(wd)
            return names  # the folder went while it was read: not kept
        kept = _Kept(name, names, (info.st_dev, info.st_ino), wd, info.st_mtime_ns, changes)
        # Changes the listing saw as well as later ones: applying those again is harmless.
        applied = self._apply(kept)
        by_time_unsure = wd is None and not settled(info.st_mtime_ns, started)
        if by_time_unsure or len(kept.names) > self._tags or not applied:
            self._unwatch(wd)
            return kept.names
        with self._lock:
            self._forget(name)
            self._kept[name] = kept
            if wd is not None:
                self._by_wd[wd] = kept
            self._names += len(kept.names)
            while len(self._kept) > self._repositories or self._names > self._tags:
                self._forget(next(iter(self._kept)))
        return kept.names

    def _watch(self, path: str) -> int | None:
        """A watch on ``path``; None where it is to be watched by its modification time."""
        if not self._local:
            return None
        if self._inotify is None:
            try:
                self._inotify = Inotify()
            except OSError:
                self._local = False  # no more instances: times will do
                return None
        return self._inotify.add(path, ENTRIES | IN_ONLYDIR)

    def _unwatch(self, wd: int | None) -> None:
        if wd is not None and self._inotify is not None:
            with self._lock:
                self._inotify.remove(wd)

    def _forget(self, name: str) -> None:
        kept = self._kept.pop(name, None)
        if kept is None:
            return
        self._names -= len(kept.names)
        watched = kept.wd is not None and self._by_wd.pop(kept.wd, None) is not None
        if watched and kept.wd is not None and self._inotify is not None:
            self._inotify.remove(kept.wd)

    def _take_events(self) -> None:
        """Read every queued event into the changes of the lists it concerns."""
        if self._inotify is None:
            return
        for event in self._inotify.events():
            if event.mask & IN_Q_OVERFLOW:
                # Events were lost: nothing kept or being read can be trusted.
                for name in list(self._kept):
                    self._forget(name)
                self._reading = dict.fromkeys(self._reading)
                continue
            reading = event.wd in self._reading
            changes = self._reading[event.wd] if reading else None
            kept = None if reading else self._by_wd.get(event.wd)
            if kept is not None:
                changes = kept.changes
            if changes is None:
                continue  # not ours (any more), or already lost
            if event.mask & GONE:
                if reading:
                    self._reading[event.wd] = None
                elif kept is not None:
                    self._forget(kept.name)
            elif event.name and _HIDDEN not in event.name:
                if event.mask & (IN_CREATE | IN_MOVED_TO):
                    changes[event.name] = True
                elif event.mask & (IN_DELETE | IN_MOVED_FROM):
                    changes[event.name] = False

    def _apply(self, kept: _Kept) -> bool:
        """Make ``kept.names`` a new list with its changes; False when there are too many."""
        if not kept.changes:
            return True
        if len(kept.changes) > self.APPLY:
            return False
        names = list(kept.names)
        for name, present in kept.changes.items():
            at = bisect.bisect_left(names, name)
            there = at < len(names) and names[at] == name
            if present and not there:
                names.insert(at, name)
            elif there and not present:
                del names[at]
        kept.names = names
        kept.changes = {}
        return True


def _listed(path: str) -> list[str] | None:
    """The tags in folder ``path``, sorted, as the driver lists them (None: no such folder)."""
    try:
        return sorted(name for name in os.listdir(path) if _HIDDEN not in name)
    except (FileNotFoundError, NotADirectoryError):
        return None
