"""The local catalog's scan is redone exactly when the repositories tree may have changed.

Every test runs with both ways of noticing change: inotify (local filesystems)
and the folders' modification times (everything else, NFS included).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cargohold.storage import catalog as local
from cargohold.storage.catalog import LocalScan

TOP = "docker/registry/v2/repositories"


def make(root: Path, *names: str, marker: str = "_layers") -> None:
    for name in names:
        (root / TOP / name / marker).mkdir(parents=True, exist_ok=True)


def age(root: Path, seconds: float = 60) -> None:
    """Make every folder look untouched for ``seconds``, as a settled tree is."""
    past = time.time() - seconds
    for folder, _, _ in os.walk(root):
        os.utime(folder, (past, past))


@pytest.fixture(params=["inotify", "mtime"])
def watch(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "mtime":
        monkeypatch.setattr(local, "_change_watch", lambda root: local._MtimeWatch())
    else:
        assert local._filesystem_type("/tmp") in local._LOCAL_FILESYSTEMS
        assert isinstance(local._change_watch("/tmp"), local._InotifyWatch)
    return str(request.param)


def test_a_settled_tree_is_scanned_once(tmp_path: Path, watch: str, scans: list[int]) -> None:
    make(tmp_path, "a", "b/c", "b/c/d")
    age(tmp_path)
    catalog = LocalScan(str(tmp_path / TOP))
    assert list(catalog.names()) == ["a", "b/c", "b/c/d"]
    assert list(catalog.cached() or ()) == ["a", "b/c", "b/c/d"]
    assert list(catalog.names()) == ["a", "b/c", "b/c/d"]
    assert len(scans) == 1


@pytest.mark.parametrize(
    ("new", "expected"),
    [
        ("new", ["a", "b/c", "new"]),
        ("a/new", ["a", "a/new", "b/c"]),
        ("b/new", ["a", "b/c", "b/new"]),
    ],
    ids=["top", "nested under a repository", "nested under a namespace"],
)
def test_any_new_repository_is_seen(
    tmp_path: Path, watch: str, scans: list[int], new: str, expected: list[str]
) -> None:
    make(tmp_path, "a", "b/c")
    age(tmp_path)
    catalog = LocalScan(str(tmp_path / TOP))
    assert list(catalog.names()) == ["a", "b/c"]
    make(tmp_path, new, marker="_manifests")
    assert catalog.cached() is None
    assert list(catalog.names()) == expected
    assert len(scans) == 2


def test_a_repository_that_loses_its_folders_is_gone(tmp_path: Path, watch: str) -> None:
    make(tmp_path, "a", "b")
    age(tmp_path)
    catalog = LocalScan(str(tmp_path / TOP))
    assert list(catalog.names()) == ["a", "b"]
    (tmp_path / TOP / "b" / "_layers").rmdir()
    assert list(catalog.names()) == ["a"]


def test_a_recently_changed_tree_is_trusted_only_with_inotify(
    tmp_path: Path, watch: str, scans: list[int]
) -> None:
    make(tmp_path, "a")  # just now: with times, a second change in this tick would hide
    catalog = LocalScan(str(tmp_path / TOP))
    assert list(catalog.names()) == ["a"]
    assert list(catalog.names()) == ["a"]
    assert len(scans) == (1 if watch == "inotify" else 2)


def test_a_repositories_folder_made_later_is_seen(tmp_path: Path, watch: str) -> None:
    catalog = LocalScan(str(tmp_path / TOP))
    assert list(catalog.names()) == []
    make(tmp_path, "late")
    assert list(catalog.names()) == ["late"]


def test_folders_that_are_not_repositories_are_not_listed(tmp_path: Path, watch: str) -> None:
    make(tmp_path, "repo")
    (tmp_path / TOP / "empty-namespace" / "deeper").mkdir(parents=True)
    (tmp_path / TOP / "repo" / "_manifests").mkdir()
    (tmp_path / TOP / ".~stray.partial").mkdir()
    assert list(LocalScan(str(tmp_path / TOP)).names()) == ["repo"]
    assert list(LocalScan(str(tmp_path / "nothing" / TOP)).names()) == []


def test_network_filesystems_are_watched_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "_filesystem_type", lambda path: "nfs4")
    assert isinstance(local._change_watch("/srv/registry"), local._MtimeWatch)
