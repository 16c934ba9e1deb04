"""Whole-file reads and writes on descriptors, and temporary names, shared by the
filesystem driver and its intent log.

``os.read`` and ``os.write`` rather than the io module, which adds an ``fstat`` and an
``ioctl`` to every open.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
from contextlib import suppress

from cargohold.storage.driver.base import READ_CHUNK

#: What ``read_all`` asks for first; larger files take a second read.
FIRST_READ = 16 * 1024
#: Marks a temporary file's name; never in a valid driver path, so listings skip it.
HIDDEN = "~"


class _TempNames:
    """Names for temporary files no other process picks: a random token per process and
    a counter, where a token per file would cost a ``getrandom`` call each."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)  # a worker must not share its parent's

    def renew(self) -> None:
        self._token = secrets.token_hex(8)
        self._count = itertools.count()

    def beside(self, path: str) -> str:
        head, _, leaf = path.rpartition("/")
        return f"{head}/.{HIDDEN}{leaf}.{self._token}{next(self._count):x}.tmp"


#: A temporary name in the folder of ``path``, for a file to be renamed to ``path``.
temp_name = _TempNames().beside


def read_all(fd: int) -> bytes:
    pieces = [os.read(fd, FIRST_READ)]
    while pieces[-1]:
        pieces.append(os.read(fd, READ_CHUNK))
    return pieces[0] if len(pieces) == 2 else b"".join(pieces)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def unlink_quietly(path: str) -> None:
    # Cleanup after a failure: the failure is what the caller must see, not this.
    with suppress(OSError):
        os.unlink(path)


def fsync_folder(folder: str) -> None:
    """Make the names in ``folder`` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return  # removed since, with the names it held
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # a filesystem that cannot sync folders
            raise
    finally:
        os.close(fd)
