"""One garbage collection at a time, among every process on one storage: a lease in storage.

The lease is a small file (``paths.GcLease``) naming its holder and when it
expires. The holder renews it while it works; a holder killed outright stops
renewing, and the lease is free once it expires, or at once when the holder
was a process of this host that is gone.

Where the driver writes a file only where there is none (``ExclusiveCreates``:
a local disk), a process takes the lease by creating it, and a free one by
first moving it aside (of two movers, one finds it): no wait. Elsewhere (an
object store) a process takes it when it is absent or free, writes itself in,
waits a moment and reads it back: of two that wrote at once, only the one read
back holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from cargohold.errors import CargoholdError, PathNotFound
from cargohold.storage.driver.base import ExclusiveCreates, StorageDriver
from cargohold.storage.paths import GcLease, GcLeaseAside, path_for

__all__ = ["LEASE", "LeaseHeld", "holding"]

#: How long a lease lasts unless renewed; renewed every third of it.
LEASE = 60.0
#: How long a writer waits before reading the lease back (two writes must both have landed).
SETTLE = 0.5


class LeaseHeld(CargoholdError):
    """Another process holds the lease: its collection is under way."""


def _machine() -> str:
    """This boot of this host, and this process-ID namespace: where a pid means one process.

    Containers may share a host name and not their pids; two hosts may share a name.
    """
    parts = [socket.gethostname()]
    try:
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
        parts.append(os.readlink("/proc/self/ns/pid"))
    except OSError:
        parts.append("?")  # unknown: never matches, so the lease waits for its expiry
    return " ".join(parts)


def _owner() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


async def _read(driver: StorageDriver) -> dict[str, object] | None:
    try:
        document = json.loads(await driver.get_content(path_for(GcLease())))
    except PathNotFound:
        return None
    except ValueError:
        return None  # a torn or damaged lease holds nothing
    return document if isinstance(document, dict) else None


def _document(owner: str, lease: float) -> bytes:
    document = {
        "owner": owner,
        "host": socket.gethostname(),
        "machine": _machine(),
        "pid": os.getpid(),
        "expires": time.time() + lease,
    }
    return json.dumps(document).encode()


async def _write(driver: StorageDriver, owner: str, lease: float) -> None:
    await driver.put_content(path_for(GcLease()), _document(owner, lease))


def _under_way(current: dict[str, object] | None) -> LeaseHeld:
    holder = current.get("owner") if current is not None else "another process"
    return LeaseHeld(f"a garbage collection is under way ({holder})")


async def _take_exclusively(
    driver: StorageDriver, creates: ExclusiveCreates, owner: str, lease: float
) -> None:
    """Take the lease by creating it; a free one is moved aside first. ``LeaseHeld`` else."""
    path = path_for(GcLease())
    if await creates.create(path, _document(owner, lease)):
        return
    current = await _read(driver)
    if current is not None and _held(current):
        raise _under_way(current)
    aside = path_for(GcLeaseAside(uuid.uuid4().hex))
    try:
        await driver.move(path, aside)
    except PathNotFound:
        raise _under_way(None) from None  # another process moved it first: it takes it
    try:
        moved = await driver.get_content(aside)
    finally:
        with contextlib.suppress(PathNotFound):
            await driver.delete(aside)
    try:
        judged = json.loads(moved)
    except ValueError:
        judged = None
    seen = current.get("owner") if current is not None else None
    if not isinstance(judged, dict) or judged.get("owner") != seen:
        # Taken (or renewed) between the read and the move: not the lease judged free.
        # Back where it was, unless someone took the place meanwhile.
        await creates.create(path, moved)
        raise _under_way(judged if isinstance(judged, dict) else None)
    if not await creates.create(path, _document(owner, lease)):
        raise _under_way(await _read(driver))


def _held(current: dict[str, object]) -> bool:
    """Whether the lease read is held: unexpired, by a process that may still be alive."""
    expires, pid = current.get("expires"), current.get("pid")
    if not isinstance(expires, int | float) or expires <= time.time():
        return False
    machine = current.get("machine")
    if (
        isinstance(machine, str)
        and "?" not in machine.split()
        and machine == _machine()
        and isinstance(pid, int)
    ):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False  # its holder on this host is gone
        except PermissionError:
            return True  # alive, someone else's
    return True


@contextlib.asynccontextmanager
async def holding(driver: StorageDriver, lease: float = LEASE) -> AsyncIterator[str]:
    """Hold the lease for the block (``LeaseHeld`` when another process does); its owner name."""
    owner = _owner()
    creates = driver.exclusive_creates
    if creates is not None:
        await _take_exclusively(driver, creates, owner, lease)
    else:
        current = await _read(driver)
        if current is not None and _held(current):
            raise _under_way(current)
        await _write(driver, owner, lease)
        await asyncio.sleep(SETTLE)
        current = await _read(driver)
        if current is None or current.get("owner") != owner:
            raise _under_way(current)

    async def renewing() -> None:
        while True:
            await asyncio.sleep(lease / 3)
            await _write(driver, owner, lease)

    renewal = asyncio.ensure_future(renewing())
    try:
        yield owner
    finally:
        renewal.cancel()
        with contextlib.suppress(asyncio.CancelledError, CargoholdError):
            await renewal
        with contextlib.suppress(CargoholdError):
            current = await _read(driver)
            if current is not None and current.get("owner") == owner:
                await driver.delete(path_for(GcLease()))
