"""cargohold's metrics are a drop-in for Distribution's: names, types, labels and counts.

Debian's Distribution 2.8.2 and cargohold, each with its debug listener and
Prometheus on, get the same requests, each answered alike by both; then one
scrape of each is compared: the families, their types and help texts, every
label set of the HTTP metrics, every request count, every histogram's bucket
bounds (``le`` as Go writes it), and the label names and action names of the
storage timings. Timings themselves are not compared.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass

import aiohttp
import pytest

from cargohold import __version__
from tests.support.distribution import distribution
from tests.support.http import location, request, with_query
from tests.support.metrics import Scrape, scrape
from tests.support.servers import cargohold, free_port

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

HTTP_FAMILIES = {
    "registry_http_requests": "counter",
    "registry_http_request_duration_seconds": "histogram",
    "registry_http_request_size_bytes": "histogram",
    "registry_http_response_size_bytes": "histogram",
    "registry_http_in_flight_requests": "gauge",
}
#: Every action Distribution's base driver times (``URLFor`` is 2.8's ``RedirectURL``).
DISTRIBUTION_ACTIONS = {
    *("GetContent", "PutContent", "Stat", "List", "Move", "Delete"),
    *("RedirectURL", "URLFor"),
}


@dataclass(frozen=True)
class Pair:
    go: Scrape
    ours: Scrape
    go_text: str
    our_text: str


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def expect(status: int, method: str, url: str, body: bytes = b"", **headers: str) -> str:
    reply = request(method, url, body or None, headers)
    assert reply.status == status, (method, url, reply.status, reply.body)
    return location(reply, url.split("/v2/")[0]) if "Location" in reply.headers else ""


def drive(url: str) -> None:
    """The same requests for both registries; each is answered alike by both."""
    octets = {"Content-Type": "application/octet-stream"}
    expect(200, "GET", f"{url}/v2/")
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = os.urandom(5000)
    for blob in (config, layer):  # POST, then PUT with the whole blob
        started = expect(202, "POST", f"{url}/v2/app/blobs/uploads/")
        expect(201, "PUT", with_query(started, f"digest={digest(blob)}"), blob, **octets)
    chunked = os.urandom(3000)  # POST, PATCH, GET, PUT
    started = expect(202, "POST", f"{url}/v2/app/blobs/uploads/")
    patched = expect(202, "PATCH", started, chunked, **octets)
    expect(204, "GET", patched)
    expect(201, "PUT", with_query(patched, f"digest={digest(chunked)}"))
    cancelled = expect(202, "POST", f"{url}/v2/app/blobs/uploads/")
    expect(204, "DELETE", cancelled)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest(blob),
                    "size": len(blob),
                }
                for blob in (layer, chunked)
            ],
        }
    ).encode()
    expect(201, "PUT", f"{url}/v2/app/manifests/v1", manifest, **{"Content-Type": OCI_MANIFEST})
    accept = {"Accept": OCI_MANIFEST}
    for _ in range(3):
        expect(200, "HEAD", f"{url}/v2/app/blobs/{digest(layer)}")
        expect(200, "GET", f"{url}/v2/app/blobs/{digest(layer)}")
        expect(200, "GET", f"{url}/v2/app/manifests/v1", **accept)
    expect(200, "HEAD", f"{url}/v2/app/manifests/{digest(manifest)}", **accept)
    expect(200, "GET", f"{url}/v2/app/tags/list")
    expect(200, "GET", f"{url}/v2/_catalog")
    expect(404, "HEAD", f"{url}/v2/app/blobs/{digest(b'nothing')}")
    expect(404, "GET", f"{url}/v2/app/manifests/v2", **accept)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    base = tmp_path_factory.mktemp("names")
    go_metrics, our_metrics = free_port(), free_port()
    config = base / "cargohold.yml"
    config.write_text(
        "version: 0.1\n"
        "storage:\n  cache:\n    blobdescriptor: inmemory\n  delete:\n    enabled: true\n"
        f"http:\n  debug:\n    addr: 127.0.0.1:{our_metrics}\n"
        "    prometheus:\n      enabled: true\n"
    )
    (base / "go").mkdir()
    (base / "ours").mkdir()
    with (
        distribution(base / "go" / "root", metrics_port=go_metrics) as go,
        cargohold(base / "ours" / "root", config=config) as ours,
    ):
        texts = []
        for url, port in ((go, go_metrics), (ours, our_metrics)):
            drive(url)
            texts.append(request("GET", f"http://127.0.0.1:{port}/metrics").body.decode())
        go_scrape = scrape(f"http://127.0.0.1:{go_metrics}/metrics")
        our_scrape = scrape(f"http://127.0.0.1:{our_metrics}/metrics")
        yield Pair(go_scrape, our_scrape, texts[0], texts[1])


def test_the_http_families_have_distributions_types(pair: Pair) -> None:
    for name, kind in HTTP_FAMILIES.items():
        assert pair.go.types[name] == kind, name
        assert pair.ours.types[name] == kind, name


def test_the_help_texts_are_distributions(pair: Pair) -> None:
    def helps(text: str) -> dict[str, str]:
        lines = (line.split(" ", 3) for line in text.splitlines() if line.startswith("# HELP "))
        return {parts[2]: parts[3] for parts in lines}

    go, ours = helps(pair.go_text), helps(pair.our_text)
    shared = [name for name in go if name.startswith("registry_")]
    assert len(shared) >= 7
    assert {name: ours.get(name) for name in shared} == {name: go[name] for name in shared}


def test_every_request_is_counted_under_the_same_labels(pair: Pair) -> None:
    name = "registry_http_requests_total"
    go = {labels: pair.go.samples[name, labels] for labels in pair.go.label_sets(name)}
    ours = {labels: pair.ours.samples[name, labels] for labels in pair.ours.label_sets(name)}
    assert len(go) >= 12
    assert ours == go


@pytest.mark.parametrize(
    "name",
    [
        "registry_http_request_duration_seconds_count",
        "registry_http_request_size_bytes_count",
        "registry_http_response_size_bytes_count",
    ],
)
def test_each_histogram_has_the_same_series_and_counts(pair: Pair, name: str) -> None:
    go = {labels: pair.go.samples[name, labels] for labels in pair.go.label_sets(name)}
    ours = {labels: pair.ours.samples[name, labels] for labels in pair.ours.label_sets(name)}
    assert ours == go


@pytest.mark.parametrize(
    "name",
    [
        "registry_http_request_duration_seconds_bucket",
        "registry_http_request_size_bytes_bucket",
        "registry_http_response_size_bytes_bucket",
        "registry_storage_action_seconds_bucket",
    ],
)
def test_the_bucket_bounds_are_written_as_go_writes_them(pair: Pair, name: str) -> None:
    def bounds(found: Scrape) -> set[str]:
        return {dict(labels)["le"] for labels in found.label_sets(name)}

    assert len(bounds(pair.go)) >= 12
    assert bounds(pair.ours) == bounds(pair.go)


def test_in_flight_has_every_handler_and_referrers_beside(pair: Pair) -> None:
    name = "registry_http_in_flight_requests"

    def handlers(found: Scrape) -> set[str]:
        return {dict(labels)["handler"] for labels in found.label_sets(name)}

    assert handlers(pair.ours) == handlers(pair.go) | {"referrers"}
    assert pair.ours.total(name) == 0


def test_storage_actions_are_timed_under_distributions_labels_and_names(pair: Pair) -> None:
    name = "registry_storage_action_seconds_count"
    go, ours = pair.go.label_sets(name), pair.ours.label_sets(name)
    assert {key for labels in go for key, _ in labels} == {"action", "driver"}
    assert {key for labels in ours for key, _ in labels} == {"action", "driver"}
    assert {dict(labels)["driver"] for labels in ours} == {"filesystem"}
    go_actions = {dict(labels)["action"] for labels in go}
    our_actions = {dict(labels)["action"] for labels in ours}
    assert go_actions <= DISTRIBUTION_ACTIONS
    assert our_actions <= DISTRIBUTION_ACTIONS
    # Both made and read files and folders; how many of each is their own affair.
    assert {"GetContent", "PutContent", "Stat", "List"} <= our_actions & go_actions


def test_the_cache_is_counted_in_both_of_distributions_spellings(pair: Pair) -> None:
    types = set(pair.ours.by("registry_storage_cache_total", "type"))
    assert set(pair.go.by("registry_storage_cache_total", "type")) >= {"Request"}
    assert {"Request"} <= types <= {"Request", "Hit", "Miss", "Error"}
    requests = pair.ours.value("registry_storage_cache_total", type="Request")
    assert requests > 0
    assert pair.ours.value("registry_storage_cache_requests_total") == requests
    hits = pair.ours.value("registry_storage_cache_total", type="Hit")
    misses = pair.ours.value("registry_storage_cache_total", type="Miss")
    assert hits + misses == requests
    assert pair.ours.value("registry_storage_cache_hits_total") == hits


def test_build_info_names_the_versions(pair: Pair) -> None:
    (labels,) = pair.ours.label_sets("cargohold_build_info")
    assert dict(labels)["version"] == __version__
    assert dict(labels)["python"] == platform.python_version()
    assert dict(labels)["aiohttp"] == aiohttp.__version__
    assert pair.ours.value("cargohold_build_info", **dict(labels)) == 1
