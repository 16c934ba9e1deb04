"""The local catalog past the kernel's limit of inotify watches.

The limit (``fs.inotify.max_user_watches``) is per user and shared by every
process, each worker holding a watch per folder of the repositories tree: at
100k repositories two workers need more than many machines allow. The
folders that get no watch are watched by their modification times, so the
catalog stays right and only those folders cost a ``stat`` per check.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cargohold.storage import catalog as local
from cargohold.storage.catalog import LocalScan
from cargohold.storage.watch import SharedInotify

from .test_catalog_local import TOP, age, make


def limited(watches: int) -> Callable[[str], local._InotifyWatch]:
    """A change watch whose kernel grants only ``watches`` new watches, then says ENOSPC."""

    def change_watch(root: str) -> local._InotifyWatch:
        inotify = SharedInotify(root)
        granted = inotify.add
        left = [watches]

        def add(path: str, mask: int) -> int | None:
            if left[0] == 0:
                return None
            left[0] -= 1
            return granted(path, mask)

        inotify.add = add  # type: ignore[method-assign]
        return local._InotifyWatch(inotify)

    return change_watch


@pytest.mark.parametrize("watches", [0, 2, 4])
def test_a_settled_tree_past_the_limit_is_scanned_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scans: list[int], watches: int
) -> None:
    monkeypatch.setattr(local, "_change_watch", limited(watches))
    make(tmp_path, "a", "b/c", "b/d", "e")
    age(tmp_path)
    catalog = LocalScan(str(tmp_path / TOP))
    assert list(catalog.names()) == ["a", "b/c", "b/d", "e"]
    assert list(catalog.cached() or ()) == ["a", "b/c", "b/d", "e"]
    assert list(catalog.names()) == ["a", "b/c", "b/d", "e"]
    assert len(scans) == 1
    # Still inotify for the folders it could watch, not times for every folder.
    assert isinstance(catalog._watch, local._InotifyWatch)


@pytest.mark.parametrize("watches", [0, 2, 4])
def test_a_new_repository_below_any_folder_is_seen_past_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, watches: int
) -> None:
    monkeypatch.setattr(local, "_change_watch", limited(watches))
    names = ["a", "b/c", "b/d", "e"]
    make(tmp_path, *names)
    age(tmp_path)
    catalog = LocalScan(str(tmp_path / TOP))
    assert list(catalog.names()) == names
    # Below every folder in turn: some have a watch, the others only their times.
    for parent in ["", "a/", "b/", "b/c/", "b/d/", "e/"]:
        age(tmp_path)
        assert list(catalog.names()) == names
        make(tmp_path, f"{parent}new", marker="_manifests")
        names = sorted([*names, f"{parent}new"])
        assert catalog.cached() is None
        assert list(catalog.names()) == names
