"""Whole-file reads and writes on descriptors, shared by the filesystem driver and its journal.

``os.read`` and ``os.write`` rather than the io module, which adds an ``fstat`` and an
``ioctl`` to every open.
"""

from __future__ import annotations

import errno
import os
from contextlib import suppress

from cargohold.storage.driver.base import READ_CHUNK

#: What ``read_all`` asks for first; larger files take a second read.
FIRST_READ = 16 * 1024


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
