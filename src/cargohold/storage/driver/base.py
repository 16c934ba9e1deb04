"""The one abstract base every storage driver implements.

A driver is a flat, hierarchical key/value store of byte strings. It knows
nothing about images: the storage layer above it decides what the paths mean
(``storage/paths.py``). Paths are absolute, ``/``-separated, and made of
components of ``[A-Za-z0-9._-]``; the base validates every path before a
driver sees it, so a driver's ``_``-prefixed methods may trust their input.

Example, a driver that keeps nothing (see ``inmemory.py`` for a real one)::

    class NullDriver(StorageDriver):
        name = "null"

        async def _get_content(self, path: str) -> bytes:
            raise PathNotFound(path, self.name)
        ...

Semantics shared by every driver, pinned by ``tests/storage/driver_suite.py``:

- ``put_content`` and ``FileWriter.commit`` replace the whole file atomically:
  a reader sees the old content or the new, never a mix.
- ``writer(path, append=True)`` continues content written earlier and not yet
  committed (or committed, if nothing newer is pending), from any process.
  A writer closed without ``commit`` keeps its content for such a resume.
  ``written_size(path)`` is where such a resume would start; ``stat`` may not
  see that content before the commit (on S3 it is not an object yet).
- ``reader(path, offset)`` at ``offset == size`` yields nothing; beyond the
  end, or negative, raises ``InvalidOffset``.
- ``list`` returns the full paths of the direct children; ``walk`` yields every
  file and directory below a path, depth first, in lexical order.
- ``delete`` is recursive. Missing paths raise ``PathNotFound`` everywhere.

Beyond that shared API a driver may offer optional capabilities, each a small
Protocol it hands out through a property that is None by default (as
Distribution's drivers answer ``ErrUnsupportedMethod``); callers ask for the
capability, never for the driver's class:

- ``local_files`` (``LocalFiles``): its paths are files and folders of this
  machine, so blobs can go out with sendfile and the catalog can be scanned
  and watched directly;
- ``redirects`` (``RedirectURLs``): clients may fetch content from a URL of
  its own (a presigned object-store URL);
- ``immediate`` (``ImmediateFiles``): small reads finish at once, without
  waiting on anything, so the request fast path may make them inline;
- ``batch_deletes`` (``BatchDeletes``): many files go in a few requests (S3's
  DeleteObjects), where ``delete`` costs several requests per file;
- ``exclusive_creates`` (``ExclusiveCreates``): a file is written only where
  there is none, atomically (a local disk's link(2)), so that of two writers
  exactly one wins;
- ``delimited_lists`` (``DelimitedLists``): everything below a folder in one
  pass, cut at a delimiter (S3's ListObjectsV2): a whole tree's worth of
  folders in a request, where ``list`` reads one folder per request.
- ``guarded_moves`` (``GuardedMoves``): a file moves only while it is still
  the version the caller saw (S3's copy preconditions), so a move that costs a
  copy of the content needs no private copy first to be safe from a late writer.

Blocking calls (fsync, recursive deletes, copies) run on the threads of the
registry that uses the driver (``use_threads``), or, for a driver used on its
own, on a few threads of its own that ``close`` stops.

A driver may be watched (``watch``, a ``DriverWatch``): each call of the
public API is then made inside the watch's ``action`` (metrics time it,
traces make it a span), and each immediate read as the watch has it made
(``DriverWatch.immediate``: metrics time it), under Distribution's
action names (``GetContent``, ``PutContent``, ``Stat``, ``List``, ``Move``,
``Delete``, and ``Reader``, ``Writer``, ``Walk`` for the opening of a stream),
and ``batch_deletes.delete_files`` under ``DeleteFiles``, an action of
cargohold's own: timed as ``Delete`` it would mix one call for thousands of
files into the times of single deletes.
"""

from __future__ import annotations

import asyncio
import builtins
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self, TypeVar

from cargohold.errors import InvalidOffset, InvalidPath, PathNotFound

# Distribution's driver path grammar: one or more "/component" groups.
_PATH = re.compile(r"(?:/[A-Za-z0-9._-]+)+", re.ASCII)

#: Bytes handed out per chunk by ``reader`` unless asked otherwise.
READ_CHUNK = 1 << 20

_T = TypeVar("_T")


class LocalFiles(Protocol):
    """A driver whose paths are files and folders on this machine."""

    def local_path(self, path: str) -> str:
        """The operating-system path of the driver path ``path`` (which may not exist)."""
        ...


class RedirectURLs(Protocol):
    """A driver that can send clients to fetch content from it directly."""

    async def redirect_url(self, path: str, method: str = "GET") -> str | None:
        """A URL the client may fetch the content at ``path`` from, or None for this one."""
        ...


class ImmediateFiles(Protocol):
    """Small reads that finish at once: safe to make inline on the event loop.

    Each answers None for anything but the plain case (missing, a folder, too
    large, any error), leaving the real answer to the driver's async API.
    """

    def read_now(self, path: str, limit: int) -> bytes | None:
        """The content of the file at ``path`` when it has at most ``limit`` bytes."""
        ...

    def size_now(self, path: str) -> int | None:
        """The size of the file at ``path``."""
        ...

    def list_now(self, path: str) -> builtins.list[str] | None:
        """The names (not paths) of the children of the folder at ``path``."""
        ...


class BatchDeletes(Protocol):
    """A driver that deletes many files in a few requests."""

    async def delete_files(self, paths: Sequence[str]) -> None:
        """Delete the files at ``paths``, in as few requests as the backend allows.

        For each path that is a file, what ``delete`` does to it, content a
        writer left there uncommitted included; that content goes even where
        no file was committed, where ``delete`` finds nothing. A driver may
        leave behind what nothing can reach any more (S3 does not abort the
        multipart uploads at the paths). A path where there is no file
        (missing, or a directory) is not an error, and nothing below a path is
        ever deleted: unlike ``delete``, it is not recursive. A driver with
        folders also removes the folder of a file it deleted when that file was
        the last thing in it (a blob's, a link's), never a folder further up.
        Every path is
        checked first: an invalid one raises ``InvalidPath`` and nothing is
        deleted. A failure part way (``StorageUnavailable``) may leave some of
        the files deleted and others not; the same call again finishes the job.
        """
        ...


class ExclusiveCreates(Protocol):
    """A driver that can write a file only where there is none, atomically."""

    async def create(self, path: str, content: bytes) -> bool:
        """Write ``content`` at ``path`` if no file is there, whole or not at all; whether it
        was written (False: a file was there, and is unchanged)."""
        ...


@dataclass(frozen=True, slots=True)
class FileVersion:
    """One version of a file's content, as a guarded move names it."""

    #: The backend's name for this version of the content (S3's ETag).
    tag: str
    size: int


class GuardedMoves(Protocol):
    """A driver that moves a file only while it is still the version the caller saw."""

    async def version(self, path: str) -> FileVersion:
        """The file's version now; ``PathNotFound`` when there is no file."""
        ...

    async def move_unchanged(self, source: str, dest: str, version: FileVersion) -> None:
        """``move``, if ``source`` is still ``version`` all the while its content is read;
        otherwise ``FileChanged``, with nothing at ``dest`` written and ``source`` kept."""
        ...


@dataclass(frozen=True, slots=True)
class DelimitedPage:
    """One page of a delimited listing (``DelimitedLists.list_delimited``)."""

    #: Below the folder, in UTF-8 byte order: a file's name, or a name cut just after the
    #: first delimiter met past the prefix (standing for every path that starts with it).
    names: builtins.list[str]
    #: Where the next page starts; None on the last.
    token: str | None


class DelimitedLists(Protocol):
    """A driver that lists every path below a folder at once, cut at a delimiter."""

    async def list_delimited(
        self,
        path: str,
        delimiter: str,
        *,
        prefix: str = "",
        after: str = "",
        token: str | None = None,
    ) -> DelimitedPage:
        """A page of the names below the folder ``path`` that start with ``prefix`` and sort
        after ``after`` (UTF-8 byte order); ``token`` from the page before, if any.

        S3's semantics, hiding the driver's own bookkeeping (names holding ``~``). A missing
        folder has no names. Servers that walk folders to answer (SeaweedFS) differ when a
        page is cut short or ``after`` is given: their pages follow the walk (each folder's
        entries in order, depth first), and ``after`` leaves out what lies below ``after``'s
        own folder. A caller meant for them too lists ``prefix=after`` besides.
        """
        ...


class DriverWatch(Protocol):
    """Watches a driver's calls: each is made inside ``action(driver, action, path)``."""

    def action(self, driver: str, action: str, path: str) -> AbstractContextManager[object]: ...

    def immediate(self, files: ImmediateFiles, driver: str) -> ImmediateFiles:
        """``files``, the immediate reads of ``driver``, as this watch has them made.

        Immediate reads take microseconds, on the fast path: metrics time them
        (a wrapper of their own, which adds each read's seconds where they go
        without calling back), tracing leaves them as they are.
        """
        ...


class Watches:
    """Several watches as one: each call is made inside every watch's action."""

    def __init__(self, *watches: DriverWatch) -> None:
        self._watches = watches

    def action(self, driver: str, action: str, path: str) -> AbstractContextManager[object]:
        # Entered now rather than at the caller's ``with``: it is made only to be entered.
        stack = ExitStack()
        for watch in self._watches:
            stack.enter_context(watch.action(driver, action, path))
        return stack

    def immediate(self, files: ImmediateFiles, driver: str) -> ImmediateFiles:
        for watch in self._watches:
            files = watch.immediate(files, driver)
        return files


class _CheckedDeletes:
    """A driver's ``delete_files`` made as its public API makes every call: the paths
    checked, then the call made inside the watch's action."""

    __slots__ = ("_delete", "_driver")

    def __init__(
        self, driver: StorageDriver, delete: Callable[[builtins.list[str]], Awaitable[None]]
    ) -> None:
        self._driver = driver
        self._delete = delete

    async def delete_files(self, paths: Sequence[str]) -> None:
        driver = self._driver
        # Unique, in order: a backend may refuse a request naming a key twice.
        checked = builtins.list(dict.fromkeys(driver._file_path(path) for path in paths))
        if not checked:
            return
        if driver.watch is None:
            return await self._delete(checked)
        with driver.watch.action(driver.name, "DeleteFiles", checked[0]):
            return await self._delete(checked)


class _CheckedMoves:
    """A driver's guarded moves made as its public API makes every call."""

    __slots__ = ("_driver", "_move", "_version")

    def __init__(
        self,
        driver: StorageDriver,
        version: Callable[[str], Awaitable[FileVersion]],
        move: Callable[[str, str, FileVersion], Awaitable[None]],
    ) -> None:
        self._driver = driver
        self._version = version
        self._move = move

    async def version(self, path: str) -> FileVersion:
        driver = self._driver
        path = driver._file_path(path)
        if driver.watch is None:
            return await self._version(path)
        with driver.watch.action(driver.name, "Stat", path):
            return await self._version(path)

    async def move_unchanged(self, source: str, dest: str, version: FileVersion) -> None:
        driver = self._driver
        source, dest = driver._file_path(source), driver._file_path(dest)
        if driver.watch is None:
            return await self._move(source, dest, version)
        with driver.watch.action(driver.name, "Move", source):
            return await self._move(source, dest, version)


class _CheckedListings:
    """A driver's ``list_delimited`` made as its public API makes every call: the folder's
    path checked, then each page's request made inside the watch's ``List`` action."""

    __slots__ = ("_driver", "_list")

    def __init__(
        self,
        driver: StorageDriver,
        list_delimited: Callable[[str, str, str, str, str | None], Awaitable[DelimitedPage]],
    ) -> None:
        self._driver = driver
        self._list = list_delimited

    async def list_delimited(
        self,
        path: str,
        delimiter: str,
        *,
        prefix: str = "",
        after: str = "",
        token: str | None = None,
    ) -> DelimitedPage:
        driver = self._driver
        path = driver._any_path(path)
        if driver.watch is None:
            return await self._list(path, delimiter, prefix, after, token)
        with driver.watch.action(driver.name, "List", path):
            return await self._list(path, delimiter, prefix, after, token)


@dataclass(frozen=True, slots=True)
class FileInfo:
    """What ``stat`` and ``walk`` report about a path."""

    path: str
    size: int
    modtime: datetime
    is_dir: bool


class FileWriter(ABC):
    """An open, append-only file being written.

    Use as an async context manager: leaving the block closes the writer
    (keeping uncommitted content for a later ``writer(path, append=True)``).
    """

    @property
    @abstractmethod
    def size(self) -> int:
        """Bytes in the file so far, including what earlier writers left."""

    @abstractmethod
    async def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; returns the number of bytes written."""

    @abstractmethod
    async def commit(self) -> None:
        """Make everything written visible at the path, atomically."""

    @abstractmethod
    async def cancel(self) -> None:
        """Discard everything not yet committed."""

    @abstractmethod
    async def close(self) -> None:
        """Release resources; uncommitted content stays resumable."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


#: Decides, for a directory met during ``walk``, whether to go into it.
Descend = Callable[[FileInfo], bool]


class StorageDriver(ABC):
    """A storage backend. Subclasses implement the ``_``-prefixed methods."""

    #: The name of the driver's section in ``config.yml`` (``filesystem``, ``s3``, ...).
    name: ClassVar[str]
    #: Threads of its own a driver used alone may start for blocking calls.
    thread_limit: int = 4

    _threads: Executor | None = None
    _own_threads: ThreadPoolExecutor | None = None
    #: Told of every call when set (``watched``).
    watch: DriverWatch | None = None

    # -- optional capabilities: None unless the driver has them ---------------------------

    @property
    def local_files(self) -> LocalFiles | None:
        return None

    @property
    def redirects(self) -> RedirectURLs | None:
        return None

    @property
    def immediate(self) -> ImmediateFiles | None:
        return None

    @property
    def batch_deletes(self) -> BatchDeletes | None:
        return None

    @property
    def exclusive_creates(self) -> ExclusiveCreates | None:
        return None

    @property
    def delimited_lists(self) -> DelimitedLists | None:
        return None

    @property
    def guarded_moves(self) -> GuardedMoves | None:
        return None

    def _checked_moves(
        self,
        version: Callable[[str], Awaitable[FileVersion]],
        move: Callable[[str, str, FileVersion], Awaitable[None]],
    ) -> GuardedMoves:
        """``guarded_moves`` for a driver whose ``version`` and ``move_unchanged`` are these,
        which then get valid file paths and are watched (as ``Stat`` and ``Move``)."""
        return _CheckedMoves(self, version, move)

    def _checked_listings(
        self, list_delimited: Callable[[str, str, str, str, str | None], Awaitable[DelimitedPage]]
    ) -> DelimitedLists:
        """``delimited_lists`` for a driver whose ``list_delimited(path, delimiter, prefix,
        after, token)`` is ``list_delimited``, which then gets a valid folder path and is
        watched, as the ``_``-prefixed methods are."""
        return _CheckedListings(self, list_delimited)

    def _checked_deletes(
        self, delete_files: Callable[[builtins.list[str]], Awaitable[None]]
    ) -> BatchDeletes:
        """``batch_deletes`` for a driver whose ``delete_files`` is ``delete_files``, which
        then gets valid paths, each once, and is watched, as the ``_``-prefixed methods are."""
        return _CheckedDeletes(self, delete_files)

    def watched_immediate(self) -> ImmediateFiles | None:
        """``immediate``, its reads made as the watch has them (``DriverWatch.immediate``)."""
        files = self.immediate
        if files is None or self.watch is None:
            return files
        return self.watch.immediate(files, self.name)

    # -- threads --------------------------------------------------------------------------

    def use_threads(self, executor: Executor) -> None:
        """Run blocking calls on ``executor``, which its owner shuts down."""
        self._threads = executor

    def in_thread(self, func: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        """``func(*args)`` on the driver's threads."""
        executor = self._threads
        if executor is None:
            if self._own_threads is None:
                self._own_threads = ThreadPoolExecutor(
                    self.thread_limit, thread_name_prefix=f"{self.name}-driver"
                )
            executor = self._own_threads
        return asyncio.get_running_loop().run_in_executor(executor, func, *args)

    # -- the public API: validate, then delegate --------------------------------------

    async def get_content(self, path: str) -> bytes:
        """The whole content at ``path``; meant for small files (links, manifests)."""
        path = self._file_path(path)
        if self.watch is None:
            return await self._get_content(path)
        with self.watch.action(self.name, "GetContent", path):
            return await self._get_content(path)

    async def put_content(self, path: str, content: bytes) -> None:
        """Store ``content`` at ``path``, replacing what was there, atomically."""
        path = self._file_path(path)
        if self.watch is None:
            return await self._put_content(path, content)
        with self.watch.action(self.name, "PutContent", path):
            return await self._put_content(path, content)

    async def put_contents(self, items: Sequence[tuple[str, bytes]]) -> None:
        """``put_content`` for each ``(path, content)``, in order.

        Each file is replaced atomically; a failure or crash part way leaves the
        earlier ones written and the later ones not. Drivers may do the whole
        batch at once (the filesystem driver does it in one trip to a thread).
        """
        checked = [(self._file_path(path), content) for path, content in items]
        if self.watch is None:
            return await self._put_contents(checked)
        with self.watch.action(self.name, "PutContent", checked[0][0] if checked else ""):
            return await self._put_contents(checked)

    async def put_stages(self, stages: Sequence[Sequence[tuple[str, bytes]]]) -> None:
        """``put_content`` for each ``(path, content)``, stage after stage.

        The files of a stage are written in any order, or at once; a stage starts
        once every file of the one before it is written. A failure or crash part
        way may leave any of the files written, but never a file of one stage
        without every file of the stages before it. By default a stage's files are
        written concurrently (a round trip each on an object store); a driver may
        write the whole batch in order (the filesystem does, in one trip to a thread).
        """
        checked = [[(self._file_path(path), content) for path, content in s] for s in stages]
        checked = [stage for stage in checked if stage]
        if self.watch is None:
            return await self._put_stages(checked)
        with self.watch.action(self.name, "PutContent", checked[0][0][0] if checked else ""):
            return await self._put_stages(checked)

    async def reader(
        self, path: str, offset: int = 0, *, chunk_size: int = READ_CHUNK
    ) -> AsyncIterator[bytes]:
        """Stream the content at ``path`` from ``offset`` in chunks of at most ``chunk_size``.

        Raises ``PathNotFound`` or ``InvalidOffset`` here, not on first iteration.
        """
        self._file_path(path)
        if offset < 0:
            raise InvalidOffset(path, self.name, offset, "negative offset")
        if self.watch is None:
            return await self._reader(path, offset, chunk_size)
        with self.watch.action(self.name, "Reader", path):
            return await self._reader(path, offset, chunk_size)

    async def writer(self, path: str, append: bool = False) -> FileWriter:
        """A writer for ``path``; ``append`` resumes earlier content instead of starting over."""
        path = self._file_path(path)
        if self.watch is None:
            return await self._writer(path, append)
        with self.watch.action(self.name, "Writer", path):
            return await self._writer(path, append)

    async def stat(self, path: str) -> FileInfo:
        path = self._any_path(path)
        if self.watch is None:
            return await self._stat(path)
        with self.watch.action(self.name, "Stat", path):
            return await self._stat(path)

    async def written_size(self, path: str) -> int:
        """Bytes at ``path``, a closed writer's uncommitted ones included.

        What ``writer(path, append=True)`` would resume from, without opening one
        (which may read or write what the writer left). ``stat`` sees committed
        files only, and a writer's content may live elsewhere until its commit
        (S3's multipart upload). ``PathNotFound`` when there is neither.
        """
        path = self._file_path(path)
        if self.watch is None:
            return await self._written_size(path)
        # Timed as the Stat it is on most drivers (a HEAD on S3): not an action of its own.
        with self.watch.action(self.name, "Stat", path):
            return await self._written_size(path)

    async def list(self, path: str) -> list[str]:
        """Full paths of the direct children of the directory at ``path``."""
        path = self._any_path(path)
        if self.watch is None:
            return await self._list(path)
        with self.watch.action(self.name, "List", path):
            return await self._list(path)

    async def move(self, source: str, dest: str) -> None:
        """Move ``source`` to ``dest``, replacing ``dest`` atomically if it exists."""
        source, dest = self._file_path(source), self._file_path(dest)
        if self.watch is None:
            return await self._move(source, dest)
        with self.watch.action(self.name, "Move", source):
            return await self._move(source, dest)

    async def delete(self, path: str) -> None:
        """Delete the file or the whole directory tree at ``path``."""
        path = self._file_path(path)
        if self.watch is None:
            return await self._delete(path)
        with self.watch.action(self.name, "Delete", path):
            return await self._delete(path)

    def walk(self, path: str, descend: Descend | None = None) -> AsyncIterator[FileInfo]:
        """Every file and directory below ``path``, depth first, in lexical order.

        ``descend`` is asked about each directory after it is yielded; when it
        answers False the walk does not enter it.
        """
        path = self._any_path(path)
        walked = self._walk(path, descend)
        return walked if self.watch is None else self._watched_walk(path, walked)

    async def _watched_walk(
        self, path: str, walked: AsyncIterator[FileInfo]
    ) -> AsyncIterator[FileInfo]:
        assert self.watch is not None
        with self.watch.action(self.name, "Walk", path):
            async for info in walked:
                yield info

    async def check(self) -> None:  # noqa: B027 - nothing to check for most drivers
        """Raise ``StorageUnavailable`` with one clear line when the storage cannot be used."""

    async def close(self) -> None:
        """Release connections, threads and other resources held by the driver.

        Drivers that hold more call this too.
        """
        own, self._own_threads = self._own_threads, None
        if own is not None:
            own.shutdown(wait=True)

    # -- path validation ------------------------------------------------------------------

    def _file_path(self, path: str) -> str:
        if _PATH.fullmatch(path) is None or _has_dot_component(path):
            raise InvalidPath(path, self.name, "not an absolute path of [A-Za-z0-9._-] components")
        return path

    def _any_path(self, path: str) -> str:
        """Like ``_file_path``, but the root ``/`` is allowed too."""
        return path if path == "/" else self._file_path(path)

    # -- what a driver implements -----------------------------------------------------

    @abstractmethod
    async def _get_content(self, path: str) -> bytes: ...

    @abstractmethod
    async def _put_content(self, path: str, content: bytes) -> None: ...

    async def _put_contents(self, items: Sequence[tuple[str, bytes]]) -> None:
        for path, content in items:
            await self._put_content(path, content)

    async def _put_stages(self, stages: Sequence[Sequence[tuple[str, bytes]]]) -> None:
        for stage in stages:
            if len(stage) == 1:
                await self._put_content(*stage[0])
                continue
            # Every write of the stage runs to its end before a failure is raised: none
            # is left under way, to land after the caller has been told of the failure.
            done = await asyncio.gather(
                *(self._put_content(path, content) for path, content in stage),
                return_exceptions=True,
            )
            for outcome in done:
                if isinstance(outcome, BaseException):
                    raise outcome

    @abstractmethod
    async def _reader(self, path: str, offset: int, chunk_size: int) -> AsyncIterator[bytes]: ...

    @abstractmethod
    async def _writer(self, path: str, append: bool) -> FileWriter: ...

    @abstractmethod
    async def _stat(self, path: str) -> FileInfo: ...

    async def _written_size(self, path: str) -> int:
        # Right for a driver whose writers append to the file itself, as the filesystem's do.
        info = await self._stat(path)
        if info.is_dir:
            raise PathNotFound(path, self.name, "a directory")
        return info.size

    @abstractmethod
    async def _list(self, path: str) -> builtins.list[str]: ...

    @abstractmethod
    async def _move(self, source: str, dest: str) -> None: ...

    @abstractmethod
    async def _delete(self, path: str) -> None: ...

    @abstractmethod
    def _walk(self, path: str, descend: Descend | None) -> AsyncIterator[FileInfo]: ...


def plain_path(path: str) -> bool:
    """The check of a path given to ``ImmediateFiles``: absolute, no ``.``-led component,
    no ``~`` (a driver's temporary files), no NUL.

    Those paths come from the path mapper, built of validated names and digests,
    none of which holds these; this keeps a read inside the root and off partial
    files at a fraction of the grammar's cost. A path it refuses gets None, and
    the async API (which checks the whole grammar) has the last word.
    """
    return path.startswith("/") and "/." not in path and "~" not in path and "\0" not in path


def _has_dot_component(path: str) -> bool:
    # "." and ".." match the character class but would escape or alias paths.
    return "/." in path and any(part in (".", "..") for part in path.split("/"))


def join(parent: str, child: str) -> str:
    """``parent/child`` where ``parent`` may be the root."""
    return f"/{child}" if parent == "/" else f"{parent}/{child}"
