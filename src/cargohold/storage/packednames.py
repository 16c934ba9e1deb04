"""Sorted names packed into one string, for lists kept as long as nothing changes.

A list of 100k repository names costs about 7 MiB in each worker (a string
object of about 60 bytes and an 8-byte pointer per name); packed, it costs
their characters, a newline and one 8-byte offset each, about a quarter of
that. Lookups bisect on slices of the string, so a page still costs its page;
a page of names is one slice of the string split at its newlines, so a page
of a thousand costs what slicing a list would (cutting the names out one by
one cost a hundred times more).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate
from typing import overload

_END = "\n"


class PackedNames(Sequence[str]):
    """Names, in the order given (sorted, for bisecting), each a slice of one string.

    No name may contain a newline (repository names and tags cannot).
    """

    __slots__ = ("_starts", "_text")

    def __init__(self, names: Iterable[str]) -> None:
        names = names if isinstance(names, list) else list(names)
        #: Each name followed by a newline.
        self._text = _END.join(names) + _END if names else ""
        if self._text.count(_END) != len(names):
            raise ValueError("a name contains a newline")
        #: Where each name starts in ``_text``, and where the text ends.
        self._starts = array("q", accumulate((len(name) + 1 for name in names), initial=0))

    def __len__(self) -> int:
        return len(self._starts) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        count = len(self._starts) - 1
        if isinstance(index, slice):
            first, last, step = index.indices(count)
            if step != 1:
                return [self._name(i) for i in range(first, last, step)]
            if first >= last:
                return []
            # The names from first to last, each with its newline but the last's dropped.
            return self._text[self._starts[first] : self._starts[last] - 1].split(_END)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(index)
        return self._name(index)

    def _name(self, index: int) -> str:
        return self._text[self._starts[index] : self._starts[index + 1] - 1]
