"""The pytest plugin (entry point ``pytest11``): a real registry as a fixture.

- ``oci_registry``: a fresh registry for each test (in memory);
  ``@pytest.mark.oci_registry(users={...}, tls=True, ...)`` passes its
  arguments to ``cargohold.testing.serve`` for that test.
- ``oci_registry_session``: one registry for the whole session.
- ``--registry-url URL`` (with ``--registry-username``/``--registry-password``
  and ``--registry-ca-file``): both fixtures give that registry instead, a Go
  registry for example, so that the same tests run against it. Its seeding
  helpers work; ``faults`` and ``requests`` raise.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cargohold.client.auth import Credentials
from cargohold.testing.server import ExternalRegistry, Registry, serve

__all__ = ["oci_registry", "oci_registry_session"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cargohold", "cargohold registry fixtures")
    group.addoption(
        "--registry-url",
        default=None,
        help="run the oci_registry fixtures' tests against this registry instead of "
        "starting one (http://host:port, or https://...)",
    )
    group.addoption("--registry-username", default=None, help="its user, if it asks for one")
    group.addoption("--registry-password", default=None, help="that user's password")
    group.addoption("--registry-ca-file", default=None, help="a CA file to trust its TLS with")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "oci_registry(**options): options of cargohold.testing.serve for the oci_registry "
        "fixture (users, tls, root, read_only, delete, config, fast_path)",
    )


def _external(config: pytest.Config) -> ExternalRegistry | None:
    url = config.getoption("--registry-url")
    if not url:
        return None
    username = config.getoption("--registry-username")
    credentials = None
    if username:
        credentials = Credentials(username, config.getoption("--registry-password") or "")
    return ExternalRegistry(
        url, credentials=credentials, ca_file=config.getoption("--registry-ca-file")
    )


@pytest.fixture
def oci_registry(request: pytest.FixtureRequest) -> Iterator[Registry | ExternalRegistry]:
    """A registry for this test: a fresh one, or the one ``--registry-url`` names."""
    external = _external(request.config)
    if external is not None:
        yield external
        return
    marker = request.node.get_closest_marker("oci_registry")
    options: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    with serve(**options) as registry:
        yield registry


@pytest.fixture(scope="session")
def oci_registry_session(
    pytestconfig: pytest.Config,
) -> Iterator[Registry | ExternalRegistry]:
    """One registry for the whole session: started at its first use, stopped at the end."""
    external = _external(pytestconfig)
    if external is not None:
        yield external
        return
    with serve() as registry:
        yield registry
