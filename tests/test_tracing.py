"""OpenTelemetry traces, as a collector receives them over OTLP/HTTP from a running server.

Tracing is off unless the standard ``OTEL_*`` variables ask for it. Each
request is one trace (or continues the caller's, given a W3C
``traceparent``): a server span named by its route, with a child per storage
driver call, per call to a shared (Redis) cache and per S3 request. An
unreachable collector costs the requests nothing and fills no log.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from cargohold.api.pipeline import Selective
from cargohold.tracing import ContinuingHook, Tracing, TracingHook
from tests.support.http import Reply, location, request
from tests.support.otlp import CLIENT, STATUS_ERROR, Receiver, Span, otlp_receiver
from tests.support.redis import running_redis
from tests.support.seaweed import SeaweedS3
from tests.support.servers import cargohold_argv, free_port, running

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PREFIX = "io.cncf.distribution."


@contextmanager
def traced_server(
    tmp_path: Path,
    environ: Mapping[str, str],
    storage: str | None = None,
    extra: str = "",
) -> Iterator[str]:
    """A one-worker server with ``environ`` added to its environment; yields its URL."""
    port = free_port()
    config = tmp_path / "config.yml"
    storage = storage or f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'root'}\n"
    config.write_text(
        f"version: 0.1\nlog:\n  level: info\n{storage}http:\n  addr: 127.0.0.1:{port}\n{extra}"
    )
    url = f"http://127.0.0.1:{port}"
    argv = cargohold_argv("serve", str(config), "--workers", "1")
    env = {"OTEL_BSP_SCHEDULE_DELAY": "50", **environ}
    with running(argv, f"{url}/v2/", env=env, log=tmp_path / "server.log"):
        yield url


def exporting_to(receiver: Receiver, **more: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        **more,
    }


def sent(
    method: str, url: str, request_id: str, body: bytes | None = None, **headers: str
) -> Reply:
    return request(method, url, body, {"X-Request-Id": request_id, **headers})


def digest_of(content: bytes) -> str:
    return "sha256:" + hashlib.sha256(content).hexdigest()


def push(url: str) -> dict[str, tuple[str, int]]:
    """A config (monolithic POST) and a layer (POST then PUT), then a manifest by tag,
    then pulls; returns, per request id, the span name and status expected."""
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = os.urandom(3000)
    expected: dict[str, tuple[str, int]] = {}

    def check(reply: Reply, request_id: str, name: str, status: int) -> Reply:
        assert reply.status == status, reply.body
        expected[request_id] = (name, status)
        return reply

    check(
        sent("POST", f"{url}/v2/app/blobs/uploads/?digest={digest_of(config)}", "config", config),
        "config",
        "POST /v2/{name}/blobs/uploads/",
        201,
    )
    started = check(
        sent("POST", f"{url}/v2/app/blobs/uploads/", "start"),
        "start",
        "POST /v2/{name}/blobs/uploads/",
        202,
    )
    upload = location(started, url)
    separator = "&" if "?" in upload else "?"
    check(
        sent("PUT", f"{upload}{separator}digest={digest_of(layer)}", "layer", layer),
        "layer",
        "PUT /v2/{name}/blobs/uploads/{uuid}",
        201,
    )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest_of(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    check(
        sent(
            "PUT",
            f"{url}/v2/app/manifests/v1",
            "manifest",
            manifest,
            **{"Content-Type": OCI_MANIFEST},
        ),
        "manifest",
        "PUT /v2/{name}/manifests/{reference}",
        201,
    )
    check(
        sent("GET", f"{url}/v2/app/manifests/v1", "pull", Accept=OCI_MANIFEST),
        "pull",
        "GET /v2/{name}/manifests/{reference}",
        200,
    )
    check(
        sent("GET", f"{url}/v2/app/blobs/{digest_of(layer)}", "layer-pull"),
        "layer-pull",
        "GET /v2/{name}/blobs/{digest}",
        200,
    )
    check(
        sent("HEAD", f"{url}/v2/app/blobs/{digest_of(config)}", "head"),
        "head",
        "HEAD /v2/{name}/blobs/{digest}",
        200,
    )
    return expected


def descends_from(span: Span, root: Span, spans: list[Span]) -> bool:
    """Whether ``span``'s chain of parents, within ``spans``, reaches ``root``."""
    by_id = {s.span_id: s for s in spans}
    at: Span | None = span
    while at is not None and at.parent_id:
        if at.parent_id == root.span_id:
            return True
        at = by_id.get(at.parent_id)
    return False


def server_spans(receiver: Receiver, expected: Mapping[str, object]) -> dict[str, Span]:
    receiver.wait_for(lambda: all(receiver.server_span(i) is not None for i in expected))
    found = {request_id: receiver.server_span(request_id) for request_id in expected}
    return {request_id: span for request_id, span in found.items() if span is not None}


def test_tracing_is_off_without_otel_variables(tmp_path: Path) -> None:
    with otlp_receiver() as receiver, traced_server(tmp_path, {}) as url:
        # Where a collector would listen by default: nothing is sent there, or anywhere.
        assert sent("GET", f"{url}/v2/", "base").status == 200
        assert sent("GET", f"{url}/v2/", "again", traceparent=TRACEPARENT).status == 200
    assert receiver.requests == 0
    log = (tmp_path / "server.log").read_text()
    assert "opentelemetry" not in log.lower()


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def test_a_push_is_one_trace_per_request_with_storage_and_cache_children(
    tmp_path: Path,
) -> None:
    with (
        running_redis(tmp_path / "redis") as redis,
        otlp_receiver() as receiver,
        traced_server(
            tmp_path,
            exporting_to(receiver, OTEL_SERVICE_NAME="registry-under-test"),
            storage=(
                f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'root'}\n"
                "  cache:\n    blobdescriptor: redis\n"
            ),
            extra=f"redis:\n  addr: 127.0.0.1:{redis.port}\n",
        ) as url,
    ):
        expected = push(url)
        spans = server_spans(receiver, expected)
        everything = receiver.snapshot()

    # One trace per request, each rooted at its server span.
    assert len({span.trace_id for span in spans.values()}) == len(expected)
    for request_id, (name, status) in expected.items():
        span = spans[request_id]
        assert span.parent_id == ""
        assert span.name == name
        assert span.attributes["http.route"] == name.split(" ", 1)[1]
        assert span.attributes["http.request.method"] == name.split(" ", 1)[0]
        assert span.attributes["http.response.status_code"] == status
        assert span.attributes[PREFIX + "repository.name"] == "app"
        assert span.attributes["url.path"].startswith("/v2/app/")
        assert span.service == "registry-under-test"
        assert span.status != STATUS_ERROR

    def children(request_id: str) -> list[Span]:
        root = spans[request_id]
        found = [s for s in everything if s.trace_id == root.trace_id and s is not root]
        assert all(descends_from(s, root, everything) for s in found)
        return found

    # A manifest push stores the manifest (with its links, in one batch) through the driver.
    manifest = children("manifest")
    writes = [s for s in manifest if s.name == "PutContent"]
    assert writes, [s.name for s in manifest]
    assert all(s.attributes[PREFIX + "storage.driver.name"] == "filesystem" for s in writes)
    paths = {s.attributes[PREFIX + "storage.path"] for s in writes}
    assert any(
        re.fullmatch(r"/docker/registry/v2/blobs/sha256/../[0-9a-f]{64}/data", p) for p in paths
    )
    assert all(s.parent_id == spans["manifest"].span_id for s in writes)
    # The layer's upload is moved into place: driver calls under the PUT.
    moves = [s for s in children("layer") if s.name == "Move"]
    assert moves
    for move in moves:
        assert move.attributes[PREFIX + "storage.path"].startswith(
            "/docker/registry/v2/repositories/app/_uploads/"
        )
    # The descriptor cache is Redis: its calls are client spans of the requests that made them.
    cache = [
        s for request_id in expected for s in children(request_id) if s.name.startswith("redis ")
    ]
    assert cache
    assert all(s.kind == CLIENT and s.attributes["db.system.name"] == "redis" for s in cache)
    assert {s.name for s in cache} >= {"redis RepoSetDescriptor"}


def test_an_incoming_traceparent_is_continued_on_both_paths(tmp_path: Path) -> None:
    blob = os.urandom(100)
    with otlp_receiver() as receiver, traced_server(tmp_path, exporting_to(receiver)) as url:
        digest = digest_of(blob)
        reply = sent(
            "POST",
            f"{url}/v2/lib/x/blobs/uploads/?digest={digest}",
            "push",
            blob,
            traceparent=TRACEPARENT,
        )
        assert reply.status == 201
        # A HEAD of a blob is answered on the fast path.
        assert (
            sent("HEAD", f"{url}/v2/lib/x/blobs/{digest}", "head", traceparent=TRACEPARENT).status
            == 200
        )
        spans = server_spans(receiver, {"push": 0, "head": 0})
    for span in spans.values():
        assert span.trace_id == TRACE_ID
        assert span.parent_id == PARENT_ID
        assert span.attributes[PREFIX + "repository.name"] == "lib/x"
    assert spans["head"].name == "HEAD /v2/{name}/blobs/{digest}"
    assert spans["head"].attributes["http.response.status_code"] == 200


def test_with_a_sampler_of_zero_only_sampled_callers_are_traced(tmp_path: Path) -> None:
    environ = {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
    with (
        otlp_receiver() as receiver,
        traced_server(tmp_path, exporting_to(receiver, **environ)) as url,
    ):
        assert sent("GET", f"{url}/v2/", "unasked").status == 200
        unsampled = f"00-{secrets.token_hex(16)}-{PARENT_ID}-00"
        assert sent("GET", f"{url}/v2/", "declined", traceparent=unsampled).status == 200
        assert sent("GET", f"{url}/v2/", "asked", traceparent=TRACEPARENT).status == 200
        spans = server_spans(receiver, {"asked": 0})
        # Spans are sent in the order they end: the two before it would have come first.
        assert receiver.server_span("unasked") is None
        assert receiver.server_span("declined") is None
    assert spans["asked"].trace_id == TRACE_ID
    assert spans["asked"].name == "GET /v2/"


@pytest.mark.parametrize(
    ("sampler", "hook"),
    [
        ("always_on", TracingHook),
        ("parentbased_always_on", TracingHook),
        ("traceidratio", TracingHook),  # OTEL_TRACES_SAMPLER_ARG: 0.5
        ("parentbased_traceidratio", ContinuingHook),  # with 0
        ("parentbased_always_off", ContinuingHook),
        ("traceidratio", None),  # with 0: it ignores the caller's choice
        ("always_off", None),
    ],
)
def test_what_the_sampler_may_keep_decides_what_a_request_costs(
    sampler: str, hook: type[TracingHook] | None
) -> None:
    """A sampler that keeps nothing costs nothing; one that only continues a caller's
    trace costs the fast path a header's lookup (``ContinuingHook``, selective)."""
    ratio = "0.5" if hook is TracingHook else "0"
    environ = {"OTEL_TRACES_SAMPLER": sampler, "OTEL_TRACES_SAMPLER_ARG": ratio}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environ.items():
            patch.setenv(name, value)
        tracing = Tracing(TracerProvider())
    try:
        if hook is None:
            assert (tracing.hook, tracing.watch) == (None, None)
        else:
            assert type(tracing.hook) is hook
            assert tracing.watch is not None
        assert isinstance(tracing.hook, Selective) is (hook is ContinuingHook)
    finally:
        tracing.shutdown()


def test_s3_requests_are_children_of_the_driver_calls_that_made_them(
    tmp_path: Path, seaweedfs: SeaweedS3
) -> None:
    root = f"/t-{secrets.token_hex(6)}"
    storage = (
        "storage:\n  s3:\n"
        f"    bucket: {seaweedfs.bucket}\n    region: {seaweedfs.region}\n"
        f"    regionendpoint: {seaweedfs.endpoint}\n"
        f"    accesskey: {seaweedfs.accesskey}\n    secretkey: {seaweedfs.secretkey}\n"
        f"    forcepathstyle: true\n    secure: false\n    rootdirectory: {root}\n"
        "  redirect:\n    disable: true\n"
    )
    with (
        otlp_receiver() as receiver,
        traced_server(tmp_path, exporting_to(receiver), storage=storage) as url,
    ):
        expected = push(url)
        spans = server_spans(receiver, expected)
        everything = receiver.snapshot()
    requests = [s for s in everything if s.name.startswith("S3.")]
    by_id = {s.span_id: s for s in everything}
    servers = {s.span_id for s in spans.values()}
    under_driver_calls = 0
    for span in requests:
        assert span.kind == CLIENT
        status = span.attributes.get("http.response.status_code")
        # A push asks first whether what it writes is there: HEADs answered 404 are expected.
        assert status in (200, 204, 206) or (status, span.name) == (404, "S3.HeadObject"), span
        # Each S3 request sits under the driver call that sent it or, for what an open
        # writer sends after that call returned, under the request itself.
        parent = by_id[span.parent_id]
        if parent.span_id not in servers:
            assert parent.attributes[PREFIX + "storage.driver.name"] == "s3aws"
            under_driver_calls += 1
        assert any(descends_from(span, root, everything) for root in spans.values())
    assert under_driver_calls >= 1
    methods = {s.attributes["rpc.method"] for s in requests}
    # The lean path's (PutObject, GetObject, HeadObject) and botocore's (the rest) both.
    assert {"PutObject", "HeadObject"} <= methods
    assert methods - {"PutObject", "GetObject", "HeadObject"}


def test_with_the_collector_down_requests_succeed_and_its_warnings_are_few(tmp_path: Path) -> None:
    environ = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens
        "OTEL_EXPORTER_OTLP_TIMEOUT": "0.2",
        "OTEL_BSP_SCHEDULE_DELAY": "10",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "1",
        "CARGOHOLD_OTEL_LOG_INTERVAL": "1",
    }
    log = tmp_path / "server.log"
    with traced_server(tmp_path, environ) as url:
        started = time.monotonic()
        count = 0
        # Until the throttle has held records back and then said so: many exports failed.
        while "held back" not in log.read_text():
            assert sent("GET", f"{url}/v2/", f"r{count}").status == 200
            count += 1
            assert time.monotonic() - started < 30, log.read_text()
        elapsed = time.monotonic() - started
    lines = [line for line in log.read_text().splitlines() if "export" in line.lower()]
    held = sum(
        int(n) for n in re.findall(r"\((\d+) more such records held back\)", log.read_text())
    )
    assert count >= 2
    assert held >= 1
    # One record per interval (1 s here), not one per failed export.
    assert len(lines) <= elapsed / 1 + 2, lines
    assert "Traceback" not in log.read_text()


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "http/protobuf"),
        ("OTEL_TRACES_EXPORTER", "zipkin", "not built in"),
        ("OTEL_TRACES_SAMPLER", "sometimes", "not a built-in sampler"),
        ("OTEL_TRACES_SAMPLER_ARG", "2", "not a ratio"),
        ("CARGOHOLD_OTEL_LOG_INTERVAL", "never", "seconds"),
    ],
)
def test_what_cannot_be_done_stops_the_start_with_one_line(
    tmp_path: Path, variable: str, value: str, says: str
) -> None:
    environ = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path),
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        variable: value,
    }
    done = subprocess.run(
        cargohold_argv("serve"), env=environ, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert variable in lines[0]
    assert says in lines[0]
