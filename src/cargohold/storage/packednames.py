"""Sorted names packed into one string, for lists kept as long as nothing changes.

A list of 100k repository names costs about 7 MiB in each worker (a string
object of about 60 bytes and an 8-byte pointer per name); packed, it costs
their characters and one 8-byte offset each, about a quarter of that. Lookups
bisect on slices of the string, so a page still costs its page.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import overload


class PackedNames(Sequence[str]):
    """Names, in the order given (sorted, for bisecting), each a slice of one string."""

    __slots__ = ("_ends", "_text")

    def __init__(self, names: Iterable[str]) -> None:
        names = names if isinstance(names, list) else list(names)
        self._text = "".join(names)
        #: Where each name ends in ``_text``.
        self._ends = array("q", accumulate(len(name) for name in names))

    def __len__(self) -> int:
        return len(self._ends)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self._name(i) for i in range(*index.indices(len(self._ends)))]
        if index < 0:
            index += len(self._ends)
        if not 0 <= index < len(self._ends):
            raise IndexError(index)
        return self._name(index)

    def _name(self, index: int) -> str:
        start = self._ends[index - 1] if index else 0
        return self._text[start : self._ends[index]]
