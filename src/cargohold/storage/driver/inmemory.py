"""A driver that keeps everything in process memory: for tests and trials.

Content lives in a tree of directories. Committed files hold immutable
``bytes``, so a reader that started on one version keeps reading it whole
while a writer replaces it. Uncommitted writer content is kept aside per path
until it is committed, cancelled, or resumed by ``writer(path, append=True)``.
Every read is a lookup in that tree, so the driver offers ``immediate`` reads,
and ``batch_deletes``, which costs nothing to offer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cargohold.errors import InvalidOffset, InvalidPath, PathNotFound, StorageDriverError
from cargohold.storage.driver.base import (
    BatchDeletes,
    Descend,
    ExclusiveCreates,
    FileInfo,
    FileWriter,
    ImmediateFiles,
    StorageDriver,
    join,
    plain_path,
)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _File:
    data: bytes
    modtime: datetime = field(default_factory=_now)


@dataclass
class _Dir:
    children: dict[str, _Dir | _File] = field(default_factory=dict)
    modtime: datetime = field(default_factory=_now)


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p]


class InMemoryDriver(StorageDriver):
    name = "inmemory"

    def __init__(self) -> None:
        self._root = _Dir()
        self._pending: dict[str, bytearray] = {}

    # -- tree helpers ---------------------------------------------------------------------

    def _lookup(self, path: str) -> _Dir | _File:
        node: _Dir | _File = self._root
        for part in _parts(path):
            if not isinstance(node, _Dir) or part not in node.children:
                raise PathNotFound(path, self.name)
            node = node.children[part]
        return node

    def _file(self, path: str) -> _File:
        node = self._lookup(path)
        if not isinstance(node, _File):
            raise PathNotFound(path, self.name, "is a directory")
        return node

    def _parent(self, path: str, create: bool) -> tuple[_Dir, str]:
        *dirs, leaf = _parts(path)
        node = self._root
        for part in dirs:
            child = node.children.get(part)
            if child is None:
                if not create:
                    raise PathNotFound(path, self.name)
                child = node.children[part] = _Dir()
            if not isinstance(child, _Dir):
                raise InvalidPath(path, self.name, "a parent is a file")
            node = child
        return node, leaf

    def _store(self, path: str, data: bytes) -> None:
        parent, leaf = self._parent(path, create=True)
        if isinstance(parent.children.get(leaf), _Dir):
            raise InvalidPath(path, self.name, "is a directory")
        parent.children[leaf] = _File(data)
        parent.modtime = _now()

    # -- immediate reads ------------------------------------------------------------------

    @property
    def immediate(self) -> ImmediateFiles:
        return self

    def read_now(self, path: str, limit: int) -> bytes | None:
        if not plain_path(path):
            return None
        try:
            data = self._file(path).data
        except StorageDriverError:
            return None
        return data if len(data) <= limit else None

    def size_now(self, path: str) -> int | None:
        if not plain_path(path):
            return None
        try:
            return len(self._file(path).data)
        except StorageDriverError:
            return None

    def list_now(self, path: str) -> list[str] | None:
        if not plain_path(path):
            return None
        try:
            node = self._lookup(path)
        except StorageDriverError:
            return None
        return list(node.children) if isinstance(node, _Dir) else None

    # -- batch deletes --------------------------------------------------------------------

    @property
    def exclusive_creates(self) -> ExclusiveCreates:
        return self

    async def create(self, path: str, content: bytes) -> bool:
        path = self._file_path(path)
        try:
            self._file(path)
        except StorageDriverError:
            self._store(path, bytes(content))
            return True
        return False

    @property
    def batch_deletes(self) -> BatchDeletes:
        # Nothing to save here: offered so that callers' batch paths run in every test.
        return self._checked_deletes(self._delete_files)

    async def _delete_files(self, paths: list[str]) -> None:
        for path in paths:
            try:
                parent, leaf = self._parent(path, create=False)
            except StorageDriverError:
                parent = None  # a parent is missing or a file: no file here
            if parent is not None and isinstance(parent.children.get(leaf), _File):
                del parent.children[leaf]
            self._pending.pop(path, None)

    # -- the driver -----------------------------------------------------------------------

    async def _get_content(self, path: str) -> bytes:
        return self._file(path).data

    async def _put_content(self, path: str, content: bytes) -> None:
        self._store(path, bytes(content))

    async def _reader(self, path: str, offset: int, chunk_size: int) -> AsyncIterator[bytes]:
        data = self._file(path).data
        if offset > len(data):
            raise InvalidOffset(path, self.name, offset, f"beyond the size {len(data)}")
        return _chunks(data, offset, chunk_size)

    async def _writer(self, path: str, append: bool) -> FileWriter:
        if not append:
            buffer = bytearray()
        elif path in self._pending:
            buffer = self._pending[path]
        else:
            try:
                buffer = bytearray(self._file(path).data)
            except PathNotFound:
                buffer = bytearray()
        self._pending[path] = buffer
        return _InMemoryWriter(self, path, buffer)

    async def _stat(self, path: str) -> FileInfo:
        node = self._lookup(path)
        if isinstance(node, _File):
            return FileInfo(path, len(node.data), node.modtime, is_dir=False)
        return FileInfo(path, 0, node.modtime, is_dir=True)

    async def _written_size(self, path: str) -> int:
        # A writer's bytes stay in its buffer until the commit stores them.
        pending = self._pending.get(path)
        return len(pending) if pending is not None else len(self._file(path).data)

    async def _list(self, path: str) -> list[str]:
        node = self._lookup(path)
        if not isinstance(node, _Dir):
            raise PathNotFound(path, self.name, "not a directory")
        return [join(path, name) for name in sorted(node.children)]

    async def _move(self, source: str, dest: str) -> None:
        data = self._file(source).data
        self._store(dest, data)
        parent, leaf = self._parent(source, create=False)
        del parent.children[leaf]

    async def _delete(self, path: str) -> None:
        self._lookup(path)
        parent, leaf = self._parent(path, create=False)
        del parent.children[leaf]
        prefix = path + "/"
        for pending in [p for p in self._pending if p == path or p.startswith(prefix)]:
            del self._pending[pending]

    async def _walk(self, path: str, descend: Descend | None) -> AsyncIterator[FileInfo]:
        node = self._lookup(path)
        if not isinstance(node, _Dir):
            raise PathNotFound(path, self.name, "not a directory")
        for name in sorted(node.children):
            child = node.children[name]
            child_path = join(path, name)
            if isinstance(child, _File):
                yield FileInfo(child_path, len(child.data), child.modtime, is_dir=False)
                continue
            info = FileInfo(child_path, 0, child.modtime, is_dir=True)
            yield info
            if descend is None or descend(info):
                async for below in self._walk(child_path, descend):
                    yield below


async def _chunks(data: bytes, offset: int, chunk_size: int) -> AsyncIterator[bytes]:
    view = memoryview(data)
    for start in range(offset, len(data), chunk_size):
        yield bytes(view[start : start + chunk_size])


class _InMemoryWriter(FileWriter):
    def __init__(self, driver: InMemoryDriver, path: str, buffer: bytearray) -> None:
        self._driver = driver
        self._path = path
        self._buffer = buffer
        self._done = False

    @property
    def size(self) -> int:
        return len(self._buffer)

    def _check_open(self) -> None:
        if self._done:
            raise InvalidPath(self._path, self._driver.name, "writer already committed or closed")

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check_open()
        if self._driver._pending.get(self._path) is not self._buffer:
            # Committed by another writer, cancelled or deleted since: as on a filesystem,
            # whose writer stops once its file has been moved or removed.
            raise PathNotFound(self._path, self._driver.name, "committed or removed meanwhile")
        self._buffer += data
        return len(data)

    async def commit(self) -> None:
        self._check_open()
        self._driver._store(self._path, bytes(self._buffer))
        self._forget()

    async def cancel(self) -> None:
        self._check_open()
        self._buffer.clear()
        self._forget()

    async def close(self) -> None:
        self._done = True

    def _forget(self) -> None:
        self._done = True
        if self._driver._pending.get(self._path) is self._buffer:
            del self._driver._pending[self._path]
