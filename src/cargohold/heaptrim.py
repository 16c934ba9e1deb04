"""Freed heap memory handed back to the kernel, where the C library can (glibc's ``malloc_trim``).

glibc gives freed memory back to the kernel only from the top of its heap.
What a burst of requests allocated and freed below the top (a push's request
and send buffers, a load's per-connection buffers) stays resident until the
process happens to reuse it: on S3, each worker ended a benchmark's rounds
10-20 MiB above where it started, and the next push's buffers came on top of
that. ``malloc_trim(0)`` returns every free page. A worker asks for it once a
second (``INTERVAL``): 0.2 ms when there is nothing to return, about 2 ms
after a burst that freed 18 MiB in pieces. In a 2-round S3 benchmark it took
3 MiB off the peak with redirects on and 7-10 MiB off with them off.

Where the C library has no ``malloc_trim`` (musl, macOS), nothing is done.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable

#: Seconds between two trims in a worker.
INTERVAL = 1.0


def trimmer() -> Callable[[], int] | None:
    """glibc's ``malloc_trim(0)``: 1 if it returned memory, else 0; None without glibc."""
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int

    def trimmed() -> int:
        return int(trim(0))

    return trimmed


async def keep_trimmed(interval: float = INTERVAL, trim: Callable[[], int] | None = None) -> None:
    """Trim the heap every ``interval`` seconds until cancelled (``trim``: ``trimmer()``)."""
    trim = trim or trimmer()
    if trim is None:
        return
    while True:
        await asyncio.sleep(interval)
        trim()
