"""The mark set keeps 64 bits of each digest: what was added is always found, a digest
sharing those bits is found too (so its blob is kept, never deleted), and an entry costs
about half what the digest's text would."""

from __future__ import annotations

import hashlib
import tracemalloc

from cargohold.storage.markset import MarkSet


def digest(n: int) -> str:
    return "sha256:" + hashlib.sha256(b"%d" % n).hexdigest()


def test_what_was_added_is_found_and_nothing_else() -> None:
    marks = MarkSet(digest(n) for n in range(1000))
    assert all(digest(n) in marks for n in range(1000))
    assert not any(digest(n) in marks for n in range(1000, 2000))
    assert len(marks) == 1000
    marks.add(digest(0))
    assert len(marks) == 1000


def test_a_digest_sharing_the_first_64_bits_counts_as_marked() -> None:
    """The only error the compact set makes keeps a blob; it never loses a mark."""
    marked = digest(1)
    twin = marked[:23] + ("0" if marked[23] != "0" else "1") + marked[24:]
    assert twin != marked
    assert twin in MarkSet([marked])


def test_text_that_is_no_digest_is_never_marked() -> None:
    marks = MarkSet(["not a digest", "sha256:zz", digest(1)])
    assert len(marks) == 1
    for odd in ("not a digest", "sha256:zz", "", "sha256:", 42):
        assert odd not in marks


def test_an_entry_costs_about_half_the_digest_text() -> None:
    texts = [digest(n) for n in range(100_000)]
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        as_text = set(texts)
        text_cost = tracemalloc.get_traced_memory()[0] - before
        del as_text
        before = tracemalloc.get_traced_memory()[0]
        marks = MarkSet(texts)
        mark_cost = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(marks) == 100_000
    # The set of text holds references to strings already in memory: with the strings it
    # costs about 160 bytes an entry, the mark set about 80 (its keys are objects of its own).
    string_cost = sum(len(t) + 49 for t in texts)
    assert mark_cost < 0.6 * (text_cost + string_cost), (mark_cost, text_cost, string_cost)
    assert mark_cost / 100_000 < 90  # bytes an entry
