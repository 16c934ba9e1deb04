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

import os
import stat
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


class LocalCatalog:
    """The repository names under a local root, re-read only when a folder it read changed.

    A scan reads every folder of the repositories tree (one ``scandir`` each);
    checking that none changed takes one ``stat`` each, several times cheaper.
    A folder's modification time changes whenever an entry is added to or
    removed from it, which is all that can make a repository appear or vanish
    (its marker folders, or a nested repository's folder). The check is sound
    only for times safely in the past: a folder changed twice within one tick
    of the clock keeps one time, so a scan that met a folder changed in the
    last ``_SETTLE`` seconds is not reused.
    """

    _SETTLE = 2.0

    def __init__(self, root: str) -> None:
        self._top = root + REPOSITORIES
        self._names: list[str] | None = None
        self._folders: list[tuple[str, int]] = []

    def names(self) -> list[str]:
        """Every repository name, sorted. Blocking: call it in a thread for big trees."""
        if self._names is not None and self._unchanged():
            return self._names
        started = time.time_ns()
        names: list[str] = []
        folders: list[tuple[str, int]] = []
        self._scan(self._top, "", names, folders)
        names.sort()
        settled = started - int(self._SETTLE * 1e9)
        reusable = all(mtime < settled for _, mtime in folders)
        self._names, self._folders = (names, folders) if reusable else (None, [])
        return names

    def _unchanged(self) -> bool:
        try:
            return all(os.stat(path).st_mtime_ns == mtime for path, mtime in self._folders)
        except OSError:
            return False

    def _scan(self, path: str, name: str, names: list[str], folders: list[tuple[str, int]]) -> None:
        try:
            mtime = os.stat(path).st_mtime_ns
            entries = list(os.scandir(path))
        except OSError:
            return  # gone meanwhile, or never there: no repositories below
        folders.append((path, mtime))
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
            self._scan(f"{path}/{child}", f"{name}/{child}" if name else child, names, folders)
