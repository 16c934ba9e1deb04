"""Dead letters: the events an endpoint gave up on, to list and to send again.

An event still undelivered ``maxage`` after it happened is moved from the
spool's stream to its endpoint's dead letters (``delivery.py``). Replaying
puts them back in the spool, marked for that endpoint only, with their ids:
a receiver that already has one of them can tell.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cargohold.notifications.spool import EVENTS, dead_letters

__all__ = ["dead", "replay"]


def _read(path: Path) -> list[dict[str, Any]]:
    kept = []
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            kept.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash while it was written
    return kept


def dead(directory: Path, endpoint: str) -> list[dict[str, Any]]:
    """The dead letters of ``endpoint``, oldest first."""
    return _read(dead_letters(directory, endpoint))


def replay(directory: Path, endpoint: str) -> int:
    """Put the dead letters of ``endpoint`` back in the spool for it alone; how many."""
    path = dead_letters(directory, endpoint)
    # Set aside first: a letter buried meanwhile starts a new file rather than being lost.
    taken = path.with_name(path.name + ".replaying")
    if not taken.exists():
        try:
            os.replace(path, taken)
        except FileNotFoundError:
            return 0
    letters = _read(taken)
    lines = b"".join(
        json.dumps({**kept, "only": endpoint}, separators=(",", ":")).encode() + b"\n"
        for kept in letters
    )
    fd = os.open(directory / EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, lines)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    taken.unlink()
    return len(letters)
