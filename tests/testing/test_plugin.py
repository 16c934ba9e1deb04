"""The pytest plugin, as another project's test suite uses it (run by ``pytester``).

- ``oci_registry`` is a fresh registry per test, and ``@pytest.mark.oci_registry``
  passes options to ``serve``; ``oci_registry_session`` is one for the session.
- ``--registry-url`` runs the same tests against another registry (the Go
  registry here): the seeding helpers work there, ``faults`` says it cannot.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.distribution import distribution

pytest_plugins = ["pytester"]

SUITE = """
import json
import urllib.request

import pytest


def get(registry, path):
    request = urllib.request.Request(registry.url + path, headers=registry.basic_auth())
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


def test_push_and_list(oci_registry):
    oci_registry.push_image("team/app", "v1")
    assert get(oci_registry, "/v2/team/app/tags/list")["tags"] == ["v1"]


@pytest.mark.oci_registry(users={"ci": "secret"})
def test_with_users(oci_registry):
    assert oci_registry.credentials.username == "ci"
    oci_registry.push_image("team/app", "v2")
    assert get(oci_registry, "/v2/team/app/tags/list")["tags"] == ["v2"]


def test_faults(oci_registry):
    oci_registry.faults.fail("GET", "/v2/$", status=503)
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(oci_registry.url + "/v2/")


PORTS = []


@pytest.mark.parametrize("n", [1, 2])
def test_session(oci_registry_session, n):
    PORTS.append(oci_registry_session.port)
    assert len(set(PORTS)) == 1
"""


def test_the_fixtures_serve_a_registry_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    result = pytester.runpytest_subprocess("-p", "no:randomly")
    result.assert_outcomes(passed=5)


def test_registry_url_points_the_same_tests_at_the_go_registry(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    with distribution(tmp_path / "go") as url:
        result = pytester.runpytest_subprocess(
            "-p", "no:randomly", f"--registry-url={url}", "-k", "push_and_list or faults"
        )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*is an external registry: it injects no faults*"])
