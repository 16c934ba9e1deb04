"""Fixtures of the interop tests: images built once per session, a logged cargohold per test."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.accesslog import ACCESS_LOG_ENV
from tests.support.images import SourceImages, build_sources
from tests.support.servers import cargohold


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> SourceImages:
    layout = tmp_path_factory.mktemp("images") / "layout"
    # Sizes around the server's inline limit (256 KiB) and a larger one for sendfile.
    return build_sources(layout, (64 * 1024, 300 * 1024, 2 * 1024 * 1024))


@dataclass(frozen=True)
class Server:
    url: str
    root: Path
    log: Path


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Server]:
    """A cargohold with deletes enabled, logging every request to ``log``."""
    root, log = tmp_path / "root", tmp_path / "cargohold.log"
    env = {**ACCESS_LOG_ENV, "REGISTRY_STORAGE_DELETE_ENABLED": "true"}
    with cargohold(root, env=env, log=log) as url:
        yield Server(url, root, log)
