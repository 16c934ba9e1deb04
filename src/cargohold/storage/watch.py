"""Watching local folders for change: inotify, and one instance shared across processes.

Kept listings of local folders (the catalog's scan, the tag lists) stand until
a folder they read changes. The kernel says so (inotify) on a local
filesystem; elsewhere, or past the kernel's limit of watches, a folder's
modification time does (one ``stat`` a folder, sound only for times safely in
the past: ``SETTLE``).

Every watch counts against one per-user limit (``fs.inotify.max_user_watches``)
and each inotify instance holds its own, so workers watching the same tree each
with their own instance need the tree's folders times the workers.
``SharedInotify`` is the one instance every process of this user on this host
serving one folder holds: the first makes it, the others are handed its
descriptors over a Unix socket (``SCM_RIGHTS``), so a folder costs one watch
however many processes watch it. An event is read by whichever process reads
first; so that the others still learn of it, the reader counts it in a
generation number in memory they all map, under a lock, before reading it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import select
import socket
import struct
import termios
import threading
import time
from dataclasses import dataclass

IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_UNMOUNT = 0x2000
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
#: What changes a folder's listing, or ends the watch of the folder itself.
ENTRIES = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE_SELF | IN_MOVE_SELF
#: Events after which the watch's folder is not the one watched any more (or no longer watched).
GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED

#: A folder changed this recently may change again within the same tick of its clock.
SETTLE = 2.0

LOCAL_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "zfs", "overlay", "jfs", "reiserfs"}
)

_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)


def filesystem_type(path: str) -> str:
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


def settled(mtime_ns: int, since_ns: int) -> bool:
    """Whether a folder last changed at ``mtime_ns`` can be trusted by its time at ``since_ns``."""
    return mtime_ns < since_ns - int(SETTLE * 1e9)


@dataclass(frozen=True, slots=True)
class Event:
    """One inotify event: the watch, what happened, and the entry's name (if any)."""

    wd: int
    mask: int
    name: str


def parse_events(raw: bytes) -> list[Event]:
    """The events of what one or more reads of an inotify descriptor returned."""
    events = []
    offset = 0
    while offset + _EVENT.size <= len(raw):
        wd, mask, _, length = _EVENT.unpack_from(raw, offset)
        offset += _EVENT.size
        name = raw[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        events.append(Event(wd, mask, os.fsdecode(name)))
    return events


_libc: ctypes.CDLL | None = None


def libc() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


class Inotify:
    """One inotify instance, read without waiting.

    ``fd`` adopts a descriptor of an instance made elsewhere (received from
    another process); without it a fresh instance is made (``OSError`` if the
    kernel has none to give).
    """

    def __init__(self, fd: int | None = None) -> None:
        lib = libc()
        self._add = lib.inotify_add_watch
        self._rm = lib.inotify_rm_watch
        if fd is None:
            fd = lib.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self.fd: int | None = fd

    def add(self, path: str, mask: int) -> int | None:
        """Watch ``path``; its watch descriptor, or None when the user is out of watches.

        ``OSError`` for anything else (``FileNotFoundError`` when there is no such folder).
        """
        wd = -1 if self.fd is None else int(self._add(self.fd, os.fsencode(path), mask))
        if wd >= 0:
            return wd
        error = ctypes.get_errno() if self.fd is not None else errno.EBADF
        if error == errno.ENOSPC:
            return None
        raise OSError(error, os.strerror(error), path)

    def remove(self, wd: int) -> None:
        if self.fd is not None:
            self._rm(self.fd, wd)  # a watch the kernel already dropped: nothing to do

    def waiting(self) -> int:
        """How many bytes of events are queued (without reading them)."""
        if self.fd is None:
            return 0
        count = bytearray(4)
        fcntl.ioctl(self.fd, termios.FIONREAD, count)
        return int.from_bytes(count, "little")

    def read(self) -> bytes:
        """Every event queued now, as the kernel wrote them (b"" when there is none)."""
        chunks = []
        if self.fd is None:
            return b""
        try:
            while chunk := os.read(self.fd, 65536):
                chunks.append(chunk)
        except BlockingIOError:
            pass
        return b"".join(chunks)

    def events(self) -> list[Event]:
        return parse_events(self.read())

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class SharedInotify:
    """The inotify instance of every process of this user on this host watching ``top``.

    ``generation`` counts the times any of them found events queued; a kept
    listing made at one generation stands while the generation is the same.
    Watches are added as on a private instance: adding a folder another process
    already watches returns the same watch, which counts once. Without a way to
    share (no abstract Unix sockets, a holder that does not answer), the
    instance is this process's own and works the same.
    """

    #: How long joining waits for a holder to hand the descriptors over.
    JOIN_TIMEOUT = 2.0
    _HELLO = b"cargohold watch 1"
    _SIZE = 4096  # the shared page: the generation at its start

    def __init__(self, top: str) -> None:
        self._stop: tuple[int, int] | None = None
        self._server: threading.Thread | None = None
        address = _address(top)
        fds = _join(address, self.JOIN_TIMEOUT) or _create(address)
        #: Whether other processes can share it (else it is this process's own).
        self.shared = len(fds) == 3
        self.inotify = Inotify(fds[0])
        self._memory_fd = fds[1]
        # flock excludes per open file description, and every holder's received descriptor
        # is the same description: each process locks through a description of its own.
        self._lock_fd = os.open(f"/proc/self/fd/{fds[1]}", os.O_RDWR | os.O_CLOEXEC)
        self._memory = mmap.mmap(self._lock_fd, self._SIZE)
        self._threads = threading.Lock()  # flock does not exclude threads sharing _lock_fd
        if self.shared:
            self._serve(fds)

    def generation(self) -> int:
        """The generation now, counting any events queued until this call."""
        with self._threads:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                current: int = struct.unpack_from("<Q", self._memory, 0)[0]
                if self.inotify.waiting():
                    # Counted before they are read: a reader killed in between leaves
                    # a needless count, never a change no one counted.
                    current += 1
                    struct.pack_into("<Q", self._memory, 0, current)
                    self.inotify.read()
                return current
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def add(self, path: str, mask: int) -> int | None:
        return self.inotify.add(path, mask)

    def close(self) -> None:
        if self._stop is not None:
            os.write(self._stop[1], b"x")
            if self._server is not None:
                self._server.join()
            for fd in self._stop:
                os.close(fd)
            self._stop = None
        if self.inotify.fd is not None:
            self._memory.close()
            os.close(self._lock_fd)
            os.close(self._memory_fd)
            self.inotify.close()

    def _serve(self, fds: list[int]) -> None:
        """Hand the descriptors to every process of this user that asks, until ``close``."""
        self._stop = os.pipe()
        self._server = threading.Thread(
            target=_hand_over, args=(self._stop[0], fds), daemon=True, name="watch"
        )
        self._server.start()


def _address(top: str) -> bytes:
    """The abstract socket name of ``top``'s shared instance for this user."""
    key = hashlib.sha256(os.fsencode(os.path.realpath(top))).hexdigest()[:32]
    return f"\0cargohold-watch/{os.getuid()}/{key}".encode()


def _same_user(sock: socket.socket) -> bool:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return bool(struct.unpack("3i", creds)[1] == os.getuid())


def _join(address: bytes, timeout: float) -> list[int] | None:
    """The descriptors a holder of the instance hands over; None when there is no holder."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except (ConnectionRefusedError, FileNotFoundError):
            return None
        try:
            if not _same_user(sock):
                return None  # someone else took the name: a private instance
            message, fds, _, _ = socket.recv_fds(sock, 64, 3, socket.MSG_CMSG_CLOEXEC)
        except OSError:
            return None
        if message == SharedInotify._HELLO and len(fds) == 3:
            return fds
        for fd in fds:
            os.close(fd)
        return None


def _create(address: bytes) -> list[int]:
    """A new instance, its shared page and the listening socket that hands them over (only
    the first two when the name cannot be taken: the instance is then this process's own)."""
    inotify = Inotify()
    assert inotify.fd is not None
    memory = os.memfd_create("cargohold-watch", os.MFD_CLOEXEC)
    os.ftruncate(memory, SharedInotify._SIZE)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    for _ in range(50):
        try:
            listener.bind(address)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                break
            # Taken a moment ago by a process about to listen: join it instead.
            joined = _join(address, SharedInotify.JOIN_TIMEOUT)
            if joined is None:
                time.sleep(0.01)
                continue
            listener.close()
            inotify.close()
            os.close(memory)
            return joined
        listener.listen(64)
        # Non-blocking: every holder accepts on it, and another may take a connection first.
        listener.setblocking(False)
        return [inotify.fd, memory, listener.detach()]
    listener.close()
    return [inotify.fd, memory]


def _hand_over(stop: int, fds: list[int]) -> None:
    """Accept on the listening socket (every holder's) and send ``fds`` to each asker."""
    listener = socket.socket(fileno=fds[2])
    listener.setblocking(False)
    poller = select.poll()
    poller.register(listener, select.POLLIN)
    poller.register(stop, select.POLLIN)
    with listener:
        while stop not in {fd for fd, _ in poller.poll()}:
            try:
                conn, _ = listener.accept()
            except OSError:
                continue  # another holder took it
            with conn:
                conn.settimeout(SharedInotify.JOIN_TIMEOUT)
                try:
                    if _same_user(conn):
                        socket.send_fds(conn, [SharedInotify._HELLO], fds)
                except OSError:
                    pass
