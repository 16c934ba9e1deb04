"""oras-py's own published test suite, run against a registry ``cargohold.testing`` serves.

``make test`` fetches the suite from the sdist of the oras version installed
(``.venv/peer-tests``). It reads the registry from ``ORAS_HOST``/``ORAS_PORT``
and runs in two passes, as its authors run it: without authentication, and
with ``ORAS_AUTH=true`` against HTTPS (a certificate it does not verify) and
Basic auth. Every test passes or is skipped by the suite itself for the other
pass, except the four that ask ghcr.io (this machine has no internet; each is
named in ``NEEDS_INTERNET``), deselected here, and ``test_chunked_push``, which
pushes and pulls a 16 GiB file: it runs in ``make campaigns``, on a registry
with filesystem storage.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from cargohold.testing import serve

VERSION = importlib.metadata.version("oras")
SOURCE = Path(sys.prefix) / "peer-tests" / f"oras-{VERSION}"

#: Tests of the suite that talk to ghcr.io, and cannot pass without the internet.
NEEDS_INTERNET = [
    "oras/tests/test_oras.py::test_get_many_tags",
    "oras/tests/test_oras.py::test_ssl_no_verify",
    "oras/tests/test_oras.py::test_ssl_verify_fails_if_bad_ca",
    "oras/tests/test_oras.py::test_ssl_verify_fails_fast_if_bad_ca",
]

#: Pushes and pulls 16 GiB (a sparse file): minutes, and as much disk.
HUGE = "oras/tests/test_provider.py::test_chunked_push"

#: The suite's tests that need the registry to ask for credentials: it skips them in the
#: first pass, and they run in the second.
WITH_AUTH = {
    "test_login_logout",
    "test_directory_push_pull_selfsigned_auth",
    "test_custom_docker_config_path",
}


def run_suite(
    tmp_path: Path, port: int, *, only: str | None = None, **environment: str
) -> dict[str, str]:
    """Run the suite (or its test ``only``) against 127.0.0.1:``port``: each test's outcome
    by name."""
    if not (SOURCE / "oras" / "tests").is_dir():
        pytest.fail(f"oras-py's test suite is not at {SOURCE}: make test fetches it")
    report = tmp_path / "report.xml"
    home = tmp_path / "home"  # its logins write docker's config.json: not the user's
    home.mkdir()
    env = {
        **os.environ,
        "ORAS_HOST": "127.0.0.1",
        "ORAS_PORT": str(port),
        "HOME": str(home),
        **environment,
    }
    env.pop("DOCKER_CONFIG", None)
    if only is not None:
        selection = [only]
    else:
        skipped = [*NEEDS_INTERNET, HUGE]
        selection = ["oras/tests", *(arg for name in skipped for arg in ("--deselect", name))]
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            *selection,
            "-p",
            "no:cacheprovider",
            "-p",
            "no:cargohold",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            f"--junitxml={report}",
        ],
        cwd=SOURCE,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    outcomes: dict[str, str] = {}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        outcomes[case.attrib["name"]] = kinds.pop() if kinds else "passed"
    assert run.returncode in (0, 5) or "failure" in outcomes.values(), run.stdout + run.stderr
    return outcomes


def test_without_authentication(tmp_path: Path) -> None:
    with serve() as registry:
        outcomes = run_suite(tmp_path, registry.port)
    failed = {name: kind for name, kind in outcomes.items() if kind in ("failure", "error")}
    assert failed == {}
    skipped = {name for name, kind in outcomes.items() if kind == "skipped"}
    assert skipped == WITH_AUTH
    assert sum(kind == "passed" for kind in outcomes.values()) >= 60


def test_with_basic_auth_over_tls(tmp_path: Path) -> None:
    with serve(tls=True, users={"myuser": "mypass"}) as registry:
        outcomes = run_suite(
            tmp_path,
            registry.port,
            ORAS_AUTH="true",
            ORAS_USER="myuser",
            ORAS_PASS="mypass",
        )
    passed = {name for name, kind in outcomes.items() if kind == "passed"}
    failed = {name: kind for name, kind in outcomes.items() if kind in ("failure", "error")}
    assert failed == {}
    assert passed >= WITH_AUTH


@pytest.mark.campaign
def test_a_chunked_push_of_16_gib(tmp_path: Path) -> None:
    """Minutes, and 16 GiB of disk twice over (the registry's copy and the pulled one)."""
    with serve(root=tmp_path / "storage") as registry:
        outcomes = run_suite(tmp_path, registry.port, only=HUGE)
    assert outcomes == {"test_chunked_push": "passed"}
