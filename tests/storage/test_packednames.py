"""Packed names: a sequence of sorted names kept as one string, read like a list."""

from __future__ import annotations

import bisect
import sys

import pytest

from cargohold.storage.packednames import PackedNames

NAMES = ["a", "a/b", "alpine", "b", "library/ubuntu", "z" * 200]


def test_reads_back_every_name_by_index_and_from_the_end() -> None:
    packed = PackedNames(NAMES)
    assert len(packed) == len(NAMES)
    assert [packed[i] for i in range(len(NAMES))] == NAMES
    assert packed[-1] == NAMES[-1]
    assert packed[-len(NAMES)] == NAMES[0]
    assert list(packed) == NAMES


@pytest.mark.parametrize("index", [len(NAMES), -len(NAMES) - 1])
def test_an_index_past_either_end_is_an_index_error(index: int) -> None:
    with pytest.raises(IndexError):
        PackedNames(NAMES)[index]


@pytest.mark.parametrize(
    "window",
    [
        slice(2, 4),
        slice(4, 100),
        slice(None, 2),
        slice(3, 3),
        slice(4, 2),
        slice(-2, None),
        slice(None, None, 2),
        slice(None, None, -1),
    ],
)
def test_slices_are_lists_of_names(window: slice) -> None:
    assert PackedNames(NAMES)[window] == NAMES[window]


@pytest.mark.parametrize("last", ["", "a", "a/a", "alpine", "library", "zz", "~"])
def test_bisecting_finds_the_same_place_as_in_the_list(last: str) -> None:
    assert bisect.bisect_right(PackedNames(NAMES), last) == bisect.bisect_right(NAMES, last)


def test_empty() -> None:
    packed = PackedNames([])
    assert len(packed) == 0
    assert packed[0:100] == []
    assert bisect.bisect_right(packed, "a") == 0


def test_empty_names_read_back_empty() -> None:
    names = ["", "a", ""]
    packed = PackedNames(names)
    assert list(packed) == names
    assert packed[0:3] == names
    assert packed[1:2] == ["a"]


def test_a_name_with_a_newline_is_refused() -> None:
    with pytest.raises(ValueError, match="newline"):
        PackedNames(["a", "b\nc"])


def test_names_that_are_not_ascii_read_back_whole() -> None:
    names = ["caf\u00e9", "na\u00efve/\u6f22\u5b57"]
    assert list(PackedNames(names)) == names


def test_costs_a_fraction_of_the_list_it_replaces() -> None:
    names = sorted(f"scale/r{i:06d}" for i in range(10_000))
    packed = PackedNames(names)
    as_list = sys.getsizeof(names) + sum(sys.getsizeof(name) for name in names)
    as_packed = sys.getsizeof(packed._text) + sys.getsizeof(packed._starts)
    assert as_packed * 3 < as_list, (as_packed, as_list)
