"""Fixtures of the client tests: one cargohold and one Go registry for the whole session.

Each test works in repositories of its own (:func:`unique_name`), so the servers
are shared rather than started per test: the client tests stay well under their
time budget. The Go registry is Debian's ``docker-registry`` (Distribution
2.8.2) on a free loopback port with filesystem storage and deletes enabled; if
it cannot start, the tests fail.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cargohold.testing import ExternalRegistry, Registry, serve
from tests.support.distribution import distribution
from tests.support.images import SourceImages, build_sources
from tests.support.servers import cargohold, cargohold_argv, free_port, running


def unique_name(prefix: str = "client") -> str:
    """A repository name no other test uses."""
    return f"{prefix}/{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def cargohold_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A ``cargohold serve`` (filesystem storage, deletes enabled) for the session."""
    folder = tmp_path_factory.mktemp("cargohold")
    env = {"REGISTRY_STORAGE_DELETE_ENABLED": "true"}
    with cargohold(folder / "root", env=env, log=folder / "cargohold.log") as url:
        yield url


@pytest.fixture(scope="session")
def cargohold_for_skopeo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A cargohold without the fast path, for tests that point skopeo at it.

    skopeo tries HTTPS first; the fast path never answers a TLS ClientHello on the
    plain-HTTP port, so skopeo waits 10 s per connection before it falls back
    (test_server_findings.py records the bug). Everything else uses the default server.
    """
    folder = tmp_path_factory.mktemp("cargohold-skopeo")
    port = free_port()
    env = {
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(folder / "root"),
        "REGISTRY_STORAGE_DELETE_ENABLED": "true",
        "REGISTRY_LOG_LEVEL": "warn",
    }
    argv = cargohold_argv("serve", "--workers", "1", "--no-fast-path")
    url = f"http://127.0.0.1:{port}"
    with running(argv, f"{url}/v2/", env=env, log=folder / "cargohold.log"):
        yield url


@pytest.fixture(scope="session")
def distribution_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's ``docker-registry`` (Distribution 2.8.2) for the session."""
    folder = tmp_path_factory.mktemp("distribution")
    with distribution(folder / "root", log=folder / "distribution.log") as url:
        yield url


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> SourceImages:
    layout = tmp_path_factory.mktemp("images") / "layout"
    return build_sources(layout, (64 * 1024, 300 * 1024, 1024 * 1024))


@pytest.fixture(params=["cargohold", "go"])
def cargohold_or_go(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Registry | ExternalRegistry]:
    """An empty registry of each kind in turn: ``cargohold.testing``'s, and the Go registry."""
    if request.param == "cargohold":
        with serve() as served:
            yield served
        return
    with distribution(tmp_path / "go") as url:
        yield ExternalRegistry(url)
