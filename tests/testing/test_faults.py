"""Faults a test registry injects, and its request log: for testing how clients cope.

``fail`` answers the next N requests matching a method and a path pattern with
an error status and the specification's error body (429 with ``Retry-After``
when asked), and they never reach the registry; ``delay`` holds matching
requests; the log has every request, injected answers included, with its
method, path, status and headers.
"""

from __future__ import annotations

import http.client
import json
import os
import time
from pathlib import Path

import pytest

from cargohold.errors import CargoholdError
from cargohold.testing import serve
from tests.testing.test_serve import codes, fetch


def test_the_next_requests_matching_fail_and_the_rest_go_through() -> None:
    with serve() as registry:
        registry.push_image("team/app", "v1")
        registry.faults.fail("GET", r"/tags/list$", status=503, times=2)
        assert fetch(registry, "HEAD", "/v2/team/app/manifests/v1")[0] == 200  # not matched
        for _ in range(2):
            status, _, body = fetch(registry, "GET", "/v2/team/app/tags/list")
            assert (status, codes(body)) == (503, ["UNAVAILABLE"])
        assert fetch(registry, "GET", "/v2/team/app/tags/list")[0] == 200  # the third


def test_a_429_asks_the_client_to_wait() -> None:
    with serve() as registry:
        registry.faults.fail(path="/v2/", status=429, retry_after=3)
        status, headers, body = fetch(registry, "GET", "/v2/")
        assert (status, headers["Retry-After"], codes(body)) == (429, "3", ["TOOMANYREQUESTS"])


def test_a_client_that_retries_gets_through_and_the_log_shows_how() -> None:
    with serve() as registry:
        registry.faults.fail("PUT", "/manifests/", status=500)
        pushed = registry.push_image("team/app", "v1")  # cargohold's client tries again
        puts = [(r.path, r.status) for r in registry.requests if r.method == "PUT"]
        manifest = "/v2/team/app/manifests/v1"
        assert [p for p in puts if p[0] == manifest] == [(manifest, 500), (manifest, 201)]
        assert fetch(registry, "GET", manifest)[0] == 200
        assert pushed.size > 0


def test_a_failed_push_never_reaches_the_registry() -> None:
    with serve() as registry:
        registry.faults.fail("PUT", "/manifests/", status=500, times=100)
        with pytest.raises(CargoholdError):
            registry.push_image("team/app", "v1")
        status, _, body = fetch(registry, "GET", "/v2/team/app/manifests/v1")
        assert (status, codes(body)) == (404, ["MANIFEST_UNKNOWN"])


def test_delay_holds_matching_requests() -> None:
    with serve() as registry:
        registry.faults.delay(0.3, "GET", "/v2/$", times=1)
        started = time.monotonic()
        assert fetch(registry, "GET", "/v2/")[0] == 200
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        assert fetch(registry, "GET", "/v2/")[0] == 200
        assert time.monotonic() - started < 0.3  # once only


def test_clear_disarms_every_fault() -> None:
    with serve() as registry:
        registry.faults.fail(status=503, times=5)
        registry.faults.clear()
        assert fetch(registry, "GET", "/v2/")[0] == 200


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"status": 200}, "status must be an error"),
        ({"times": 0}, "times must be at least 1"),
        ({"retry_after": -1}, "must not be negative"),
    ],
)
def test_a_fault_that_makes_no_sense_is_refused(arguments: dict[str, int], message: str) -> None:
    with serve() as registry, pytest.raises(ValueError, match=message):
        registry.faults.fail(**arguments)


def test_the_log_has_every_request_with_its_status_and_headers() -> None:
    with serve() as registry:
        registry.faults.fail("GET", "/tags/list", status=503)
        fetch(registry, "GET", "/v2/", {"X-Test": "first"})
        fetch(registry, "GET", "/v2/team/app/tags/list")
        fetch(registry, "HEAD", "/v2/nothing/manifests/latest")
        logged = [(r.method, r.path, r.status) for r in registry.requests]
        assert logged == [
            ("GET", "/v2/", 200),
            ("GET", "/v2/team/app/tags/list", 503),
            ("HEAD", "/v2/nothing/manifests/latest", 404),
        ]
        assert registry.requests[0].headers["X-Test"] == "first"


def test_the_log_hears_the_fast_path_too() -> None:
    with serve(fast_path=True) as registry:
        pushed = registry.push_image("team/app", "v1")
        before = len(registry.requests)
        assert fetch(registry, "HEAD", f"/v2/team/app/manifests/{pushed.digest}")[0] == 200
        assert [(r.method, r.status) for r in registry.requests[before:]] == [("HEAD", 200)]


def test_a_cut_closes_the_connection_after_so_many_bytes_of_body() -> None:
    with serve() as registry:
        image = registry.push_image("team/app", "v1", layers=[os.urandom(100_000)])
        _, _, raw = fetch(registry, "GET", f"/v2/team/app/manifests/{image.digest}")
        layer = json.loads(raw)["layers"][0]
        path = f"/v2/team/app/blobs/{layer['digest']}"
        registry.faults.cut(1000, "GET", "/blobs/")
        connection = http.client.HTTPConnection("127.0.0.1", registry.port, timeout=10)
        connection.request("GET", path)
        response = connection.getresponse()
        assert (response.status, int(response.headers["Content-Length"])) == (200, layer["size"])
        with pytest.raises(http.client.IncompleteRead) as short:
            response.read()
        assert len(short.value.partial) == 1000
        connection.close()
        status, _, body = fetch(registry, "GET", path)  # once only: the next one is whole
        assert (status, len(body)) == (200, layer["size"])


def test_a_cut_needs_the_storage_in_memory(tmp_path: Path) -> None:
    with serve(root=tmp_path) as registry, pytest.raises(ValueError, match="in memory"):
        registry.faults.cut(10)
