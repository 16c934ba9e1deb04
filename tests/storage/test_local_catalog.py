"""The local catalog is rescanned exactly when the repositories tree may have changed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cargohold.storage.local import LocalCatalog

TOP = "docker/registry/v2/repositories"


def make(root: Path, *names: str, marker: str = "_layers") -> None:
    for name in names:
        (root / TOP / name / marker).mkdir(parents=True, exist_ok=True)


def age(root: Path, seconds: float = 60) -> None:
    """Make every folder look untouched for ``seconds``, as a settled tree is."""
    past = time.time() - seconds
    for folder, _, _ in os.walk(root):
        os.utime(folder, (past, past))


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    scans: list[int] = []
    original = LocalCatalog._scan

    def scan(self: LocalCatalog, path: str, *args: object) -> None:
        if path.endswith("/repositories"):
            scans.append(1)
        original(self, path, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalCatalog, "_scan", scan)
    return scans


def test_a_settled_tree_is_scanned_once(tmp_path: Path, counted: list[int]) -> None:
    make(tmp_path, "a", "b/c", "b/c/d")
    age(tmp_path)
    catalog = LocalCatalog(str(tmp_path))
    assert catalog.names() == ["a", "b/c", "b/c/d"]
    assert catalog.names() == ["a", "b/c", "b/c/d"]
    assert len(counted) == 1


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("top", ["a", "b/c", "new"]),
        ("nested under a repository", ["a", "a/new", "b/c"]),
        ("nested under a namespace", ["a", "b/c", "b/new"]),
    ],
)
def test_any_new_repository_is_seen(
    tmp_path: Path, counted: list[int], change: str, expected: list[str]
) -> None:
    make(tmp_path, "a", "b/c")
    age(tmp_path)
    catalog = LocalCatalog(str(tmp_path))
    assert catalog.names() == ["a", "b/c"]
    new = {"top": "new", "nested under a repository": "a/new", "nested under a namespace": "b/new"}
    make(tmp_path, new[change], marker="_manifests")
    assert catalog.names() == expected
    assert len(counted) == 2


def test_a_recently_changed_tree_is_not_trusted(tmp_path: Path, counted: list[int]) -> None:
    make(tmp_path, "a")  # just now: a second change in the same clock tick would hide
    catalog = LocalCatalog(str(tmp_path))
    assert catalog.names() == ["a"]
    assert catalog.names() == ["a"]
    assert len(counted) == 2


def test_folders_that_are_not_repositories_are_not_listed(tmp_path: Path) -> None:
    make(tmp_path, "repo")
    (tmp_path / TOP / "empty-namespace" / "deeper").mkdir(parents=True)
    (tmp_path / TOP / "repo" / "_manifests").mkdir()
    (tmp_path / TOP / ".~stray.partial").mkdir()
    assert LocalCatalog(str(tmp_path)).names() == ["repo"]
    assert LocalCatalog(str(tmp_path / "nothing")).names() == []
