"""Natural order: tags as a person reads them, ``1.9`` before ``1.10``."""

from __future__ import annotations

import re

__all__ = ["natural_key"]

_RUNS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[tuple[int, int, str], ...]:
    """A key ordering runs of digits by their value and the rest as text.

    Each part is a triple, so that a number and a word never meet in one
    comparison: numbers sort before words at the same position (``1`` before
    ``latest``), and ``01`` and ``1`` are told apart by their text last.
    """
    parts: list[tuple[int, int, str]] = []
    for index, part in enumerate(_RUNS.split(text)):
        if not part:
            continue
        if index % 2:  # a run of digits
            parts.append((0, int(part), part))
        else:
            parts.append((1, 0, part))
    return tuple(parts)
