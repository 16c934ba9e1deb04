"""The mark set of a collection: which blobs something kept references, in little memory.

A collection marks every blob a kept manifest references: a hundred thousand
digests at the scale of a large registry, read once each and looked up once
per blob in storage. Kept as Python text, a digest costs about 150 bytes in
a set; kept here as the first 64 bits of its hex, about 60.

Two digests sharing 64 bits look the same here. That can only make a blob
look marked when it is not, so it is kept: a collision never deletes
anything, and among a million blobs it happens with odds of about 3e-8.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["MarkSet"]

#: Hex digits of a digest kept: 64 bits.
KEPT = 16


def _key(digest: str) -> int | None:
    """The 64 bits of ``digest`` (``alg:hex``) kept; None for text that is no digest."""
    start = digest.find(":") + 1
    if start == 0:
        return None
    try:
        return int(digest[start : start + KEPT], 16)
    except ValueError:
        return None


class MarkSet:
    """Digests marked, as 64-bit keys: ``in`` may say yes for a digest never added (with odds
    of about 3e-8 among a million), never no for one that was."""

    __slots__ = ("_keys",)

    def __init__(self, digests: Iterable[str] = ()) -> None:
        self._keys: set[int] = set()
        self.update(digests)

    def add(self, digest: str) -> None:
        key = _key(digest)
        if key is not None:
            self._keys.add(key)

    def update(self, digests: Iterable[str]) -> None:
        for digest in digests:
            self.add(digest)

    def __contains__(self, digest: object) -> bool:
        if not isinstance(digest, str):
            return False
        key = _key(digest)
        return key is not None and key in self._keys

    def __len__(self) -> int:
        return len(self._keys)
