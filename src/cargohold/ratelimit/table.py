"""Buckets in a table that every worker of one server maps into memory.

``cargohold serve --workers N`` is N processes, and a client's connections
land on any of them: a limit kept in each process's memory would let a client
through N times over. So the buckets live in one file that every worker maps
(``serve`` makes it in the directory the workers' metrics stores share, on the
tmpfs), and a charge is made under an exclusive ``flock`` on it: read each
bucket, decide, write, unlock, a few microseconds. A worker that dies holding
the lock releases it with its last file descriptor. Without a file (one
process: an embedded registry, a test) the table is anonymous memory and
needs no lock: a process charges from its event loop's thread alone.

The table is a 16-byte header (``MAGIC``, then the number of slots) and
slots of two 64-bit numbers: a hash of the bucket's key (0: never used) and
the bucket's ``tat`` (``bucket.py``)::

    MAGIC | u64 slots | (u64 key hash | i64 tat) * (slots + WINDOW)

A key's slot is one of the ``WINDOW`` slots from its hash onwards (the
table has ``WINDOW`` spare slots at its end, so a window never wraps). A new
key takes the slot of the window whose bucket is fullest: one never used,
or one whose ``tat`` is past (a full bucket, the same as one never seen).
Only with more than ``SLOTS`` buckets active at once does a new key evict a
bucket that was not full, which then starts full again: the table bounds
its memory (1 MiB), not the number of clients.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
from collections.abc import Sequence

from cargohold.ratelimit.bucket import Charge, Clock, admit, microseconds

__all__ = ["MAGIC", "SLOTS", "WINDOW", "SharedBuckets"]

MAGIC = b"cgh-rlt1"
#: Buckets the table holds.
SLOTS = 65536
#: The slots a key may occupy: the one its hash names and the next ones.
WINDOW = 8
_HEADER = struct.Struct("<8sQ")
_SLOT = struct.Struct("<Qq")
_TAT = struct.Struct("<q")
_WINDOW = struct.Struct("<" + "Qq" * WINDOW)
#: Keys whose slot this process remembers; it starts afresh beyond.
_REMEMBERED = 4096


def _code(key: str) -> int:
    """The key's hash: the same in every process (Python's ``hash`` is salted per run)."""
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1  # 0 marks a slot never used


class SharedBuckets:
    """Buckets in a memory-mapped table (see the module docstring).

    ``path`` None keeps the table in this process's memory. Else the file at
    ``path`` is made if absent (or not a table of ``slots``) and shared with
    every process that opens it.
    """

    def __init__(
        self, path: str | None = None, *, slots: int = SLOTS, clock: Clock = microseconds
    ) -> None:
        self.path = path
        self._slots = slots
        self._clock = clock
        size = _HEADER.size + (slots + WINDOW) * _SLOT.size
        self._fd: int | None = None
        if path is None:
            self._map = mmap.mmap(-1, size)
            _HEADER.pack_into(self._map, 0, MAGIC, slots)
        else:
            self._fd = fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.read(fd, _HEADER.size) != _HEADER.pack(MAGIC, slots):
                    os.ftruncate(fd, 0)  # new, or another table: every bucket starts full
                    os.ftruncate(fd, size)
                    os.pwrite(fd, _HEADER.pack(MAGIC, slots), 0)
                self._map = mmap.mmap(fd, size)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        #: Per key: its hash, and the offset of the slot it was last found in.
        self._where: dict[str, tuple[int, int]] = {}

    def take_now(self, charges: Sequence[Charge]) -> int:
        now = self._clock()
        fd = self._fd
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            data, where = self._map, self._where
            wait = 0
            updates = []
            for key, limit in charges:
                known = where.get(key)
                if known is not None and _SLOT.unpack_from(data, known[1])[0] == known[0]:
                    at = known[1]  # where it was last time, as a rule
                else:
                    at = self._slot(key, known)
                tat, waits = admit(_TAT.unpack_from(data, at + 8)[0], limit, now)
                if waits > wait:
                    wait = waits
                updates.append((at + 8, tat))
            if wait == 0:
                for at, tat in updates:
                    _TAT.pack_into(data, at, tat)
            return wait
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)

    async def take(self, charges: Sequence[Charge]) -> int:
        return self.take_now(charges)

    def _slot(self, key: str, known: tuple[int, int] | None) -> int:
        """The offset of the slot of ``key``'s bucket, taking one when it has none.

        ``known``: the key's hash and the slot it was last found in, which another
        key has taken since.
        """
        data = self._map
        code = _code(key) if known is None else known[0]
        start = _HEADER.size + (code % self._slots) * _SLOT.size
        window = _WINDOW.unpack_from(data, start)
        codes = window[0::2]
        if code in codes:
            index = codes.index(code)
        else:
            tats = window[1::2]
            index = tats.index(min(tats))  # never used (0), full (past), or else the fullest
            _SLOT.pack_into(data, start + index * _SLOT.size, code, 0)
        at = start + index * _SLOT.size
        if len(self._where) >= _REMEMBERED:
            self._where.clear()
        self._where[key] = (code, at)
        return at

    async def close(self) -> None:
        self._map.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
