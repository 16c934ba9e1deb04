"""Synchronous reads of the commonest facts straight from a local disk.

The HTTP fast path (``api/fastpath.py``) answers HEAD and GET of blobs and
manifests, and tag lists, without leaving the event loop's callback: on a
local disk with a warm page cache a link read is a few microseconds, less
than any hand-off. Every method answers only the plain, successful case and
returns None for anything else (missing, damaged, unusual), so the caller can
let the full request path answer instead, errors and all. Nothing here is the
truth that the full path is not: it reads the same files the same way.
"""

from __future__ import annotations

import ctypes
import os
import stat
import threading
import time

from cargohold.digest import Digest
from cargohold.errors import DigestInvalid
from cargohold.manifest import media_type_of
from cargohold.manifest.mediatypes import SCHEMA1, SCHEMA1_SIGNED
from cargohold.storage.paths import (
    REPOSITORIES,
    REPOSITORY_MARKERS,
    BlobData,
    LayerLink,
    ManifestRevisionLink,
    TagCurrentLink,
    TagsDir,
    path_for,
)

_SCHEMA1_TYPES = frozenset({SCHEMA1, SCHEMA1_SIGNED})


def _read(path: str, limit: int) -> bytes | None:
    """The file's content if it has at most ``limit`` bytes, else None."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        data = os.read(fd, limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= limit else None


class LocalReader:
    """Reads blobs, manifests and tags below a filesystem driver's root directory."""

    __slots__ = ("_root",)

    def __init__(self, root: str) -> None:
        self._root = root

    def _linked(self, link_path: str, digest: str) -> bool:
        return _read(self._root + link_path, 128) == digest.encode()

    def blob_size(self, name: str, digest: Digest) -> int | None:
        """The size of a blob linked in repository ``name``."""
        if not self._linked(path_for(LayerLink(name, digest)), digest):
            return None
        try:
            info = os.stat(self._root + path_for(BlobData(digest)))
        except OSError:
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def blob(self, digest: Digest, size: int) -> bytes | None:
        """The content of a blob whose link was checked, when it has ``size`` bytes."""
        data = _read(self._root + path_for(BlobData(digest)), size)
        return data if data is not None and len(data) == size else None

    def tag(self, name: str, tag: str) -> Digest | None:
        content = _read(self._root + path_for(TagCurrentLink(name, tag)), 128)
        if content is None:
            return None
        try:
            return Digest.parse(content.decode("ascii"))
        except (DigestInvalid, UnicodeDecodeError):
            return None

    def manifest(self, name: str, digest: Digest, limit: int) -> tuple[str, bytes] | None:
        """The media type and bytes of a manifest revision of ``name``.

        Schema1 is left to the full path: it merges or creates signatures.
        """
        if not self._linked(path_for(ManifestRevisionLink(name, digest)), digest):
            return None
        payload = _read(self._root + path_for(BlobData(digest)), limit)
        if not payload:
            return None
        media_type = media_type_of(payload)
        return None if media_type in _SCHEMA1_TYPES else (media_type, payload)

    def tags(self, name: str) -> list[str] | None:
        """Every tag of ``name``, sorted; None when the repository has no tags folder."""
        try:
            names = os.listdir(self._root + path_for(TagsDir(name)))
        except OSError:
            return None
        return sorted(n for n in names if "~" not in n)


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
    """

    _MASK = 0x100 | 0x200 | 0x40 | 0x80 | 0x400 | 0x800 | 0x01000000  # create, delete, moves, self

    def __init__(self, libc: ctypes.CDLL) -> None:
        self._add = libc.inotify_add_watch
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._fd: int | None = fd

    def reset(self) -> None:
        self.changed()  # drain: what happened before the scan, the scan sees

    def watch(self, path: str) -> None:
        added = -1 if self._fd is None else self._add(self._fd, os.fsencode(path), self._MASK)
        if added < 0:
            raise OSError(ctypes.get_errno(), f"cannot watch {path}")

    def trustworthy(self) -> bool:
        return True

    def changed(self) -> bool:
        if self._fd is None:
            return True
        moved = False
        try:
            while os.read(self._fd, 65536):
                moved = True
        except BlockingIOError:
            pass
        return moved

    def close(self) -> None:
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


class LocalCatalog:
    """The repository names under a local root, rescanned only when a folder it read changed.

    A scan reads every folder of the repositories tree (one ``scandir`` each).
    A repository can only appear or vanish by an entry being added to or
    removed from one of those folders (its marker folders, or a nested
    repository's folder), so the last scan stands until one changes. Change is
    noticed by inotify on a local filesystem (free to check), else by the
    folders' modification times (one ``stat`` each, several times cheaper than
    a scan).
    """

    def __init__(self, root: str) -> None:
        self._top = root + REPOSITORIES
        self._root = root
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
                self._watch = _change_watch(self._root)
            self._watch.reset()
            names: list[str] = []
            try:
                self._scan(self._watch, self._top, "", names)
            except OSError:
                # Out of watches, say: fall back to times for good, and scan again.
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
