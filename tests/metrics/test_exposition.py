"""A scrape sums every process's store: counters of the dead too, gauges of the living only."""

from __future__ import annotations

import pytest

from cargohold.api.routes import Endpoint, Route
from cargohold.metrics import layout
from cargohold.metrics.exposition import go_float, render
from cargohold.metrics.recorders import HttpMetrics
from cargohold.metrics.store import Row, Store, StoreFile
from tests.support.metrics import parse

# What Go's strconv.FormatFloat(v, 'g', -1, 64) writes, as Distribution's ``le`` labels
# show them (docker/go-metrics buckets), and Go's rule around the exponent form.
GO_FLOATS = [
    (0.005, "0.005"),
    (0.025, "0.025"),
    (1.0, "1"),
    (2.5, "2.5"),
    (60.0, "60"),
    (1024.0, "1024"),
    (524288.0, "524288"),
    (1048576.0, "1.048576e+06"),
    (2147483648.0, "2.147483648e+09"),
    (123456.0, "123456"),
    (1e21, "1e+21"),
    (0.0001, "0.0001"),
    (1e-05, "1e-05"),
    (float("inf"), "+Inf"),
]


@pytest.mark.parametrize(("value", "written"), GO_FLOATS)
def test_bounds_are_written_as_go_writes_them(value: float, written: str) -> None:
    assert go_float(value) == written


def http_row(handler: str, count: float, duration: float) -> Row:
    values = [0.0] * layout.HTTP_WIDTH
    values[layout.HTTP_COUNT] = count
    values[layout.HTTP_DURATION] = duration
    bucket = layout.HTTP_DURATION + 1  # the first bucket: up to 5 ms
    values[bucket] = count
    return Row(layout.HTTP, (handler, "get", "200"), tuple(values))


def store(pid: int, alive: bool, *rows: Row) -> StoreFile:
    return StoreFile(f"/nowhere/worker-{pid}.metrics", alive, list(rows))


def test_counters_sum_the_living_and_the_dead_and_gauges_only_the_living() -> None:
    living = store(1, True, http_row("blob", 3, 0.003), Row(layout.IN_FLIGHT, ("blob",), (2.0,)))
    dead = store(2, False, http_row("blob", 4, 0.004), Row(layout.IN_FLIGHT, ("blob",), (5.0,)))
    body, content_type = render([living, dead], None)
    assert content_type.startswith("text/plain; version=0.0.4")
    found = parse(body.decode())
    labels = {"code": "200", "handler": "blob", "method": "get"}
    assert found.value("registry_http_requests_total", **labels) == 7
    duration = {"handler": "blob", "method": "get"}
    assert found.value("registry_http_request_duration_seconds_count", **duration) == 7
    assert found.value("registry_http_request_duration_seconds_sum", **duration) == 0.007
    assert found.value("registry_http_request_duration_seconds_bucket", le="0.005", **duration) == 7
    assert found.value("registry_http_request_duration_seconds_bucket", le="+Inf", **duration) == 7
    assert found.value("registry_http_in_flight_requests", handler="blob") == 2
    assert found.value("registry_http_in_flight_requests", handler="manifest") == 0
    assert found.value("cargohold_workers") == 1


def test_buckets_are_cumulative() -> None:
    values = [0.0] * layout.STORAGE_WIDTH
    values[0] = 1.5  # the sum
    values[1] = 2  # up to 5 ms
    values[1 + layout.CALL_BUCKETS.index(1.0)] = 1  # up to 1 s
    values[-1] = 1  # past 10 s
    found = parse(
        render([store(1, True, Row(layout.STORAGE, ("s3", "Stat"), tuple(values)))], None)[
            0
        ].decode()
    )
    series = {"action": "Stat", "driver": "s3"}
    name = "registry_storage_action_seconds_bucket"
    assert found.value(name, le="0.005", **series) == 2
    assert found.value(name, le="0.5", **series) == 2
    assert found.value(name, le="1", **series) == 3
    assert found.value(name, le="10", **series) == 3
    assert found.value(name, le="+Inf", **series) == 4
    assert found.value("registry_storage_action_seconds_count", **series) == 4


def test_a_requests_first_buckets_are_its_count_less_the_others() -> None:
    # How the recorder writes a row: the first buckets are left alone (``layout.HTTP``).
    written = Store()
    try:
        http = HttpMetrics(written)
        route = Route(Endpoint.BLOB, "repo", "sha256:" + "0" * 64)
        http.request_counted(route, "GET", 200, 300, 700, 0.001, None)  # all in the first
        http.request_counted(route, "GET", 200, 1500, 5000, 0.007, None)  # none in the first
        (row,) = [row for row in written.rows() if row.kind == layout.HTTP]
        for at, _ in layout.HTTP_DERIVED:
            assert row.values[at + 1] == 0
        found = parse(render([written.as_file()], None)[0].decode())
    finally:
        written.close()
    labels = {"code": "200", "handler": "blob", "method": "get"}
    assert found.value("registry_http_requests_total", **labels) == 2
    duration = {"handler": "blob", "method": "get"}
    name = "registry_http_request_duration_seconds"
    assert found.value(f"{name}_bucket", le="0.005", **duration) == 1
    assert found.value(f"{name}_bucket", le="0.01", **duration) == 2
    assert found.value(f"{name}_count", **duration) == 2
    assert found.value(f"{name}_sum", **duration) == pytest.approx(0.008)
    for name, small, large, bound in (
        ("registry_http_request_size_bytes", 300, 1500, "2048"),
        ("registry_http_response_size_bytes", 700, 5000, "8192"),
    ):
        assert found.value(f"{name}_bucket", le="1024", handler="blob") == 1
        assert found.value(f"{name}_bucket", le=bound, handler="blob") == 2
        assert found.value(f"{name}_count", handler="blob") == 2
        assert found.value(f"{name}_sum", handler="blob") == small + large


def test_uploads_in_progress_never_go_below_zero() -> None:
    # More purged than started: uploads left by an earlier run of the server.
    uploads = Row(layout.UPLOADS, (), (1.0, 0.0, 0.0, 3.0, 2.0))
    found = parse(render([store(1, True, uploads)], None)[0].decode())
    assert found.value("cargohold_uploads_in_progress") == 0
    assert found.value("cargohold_uploads_purged_total") == 3
    assert found.value("cargohold_upload_purge_runs_total") == 2


def test_rows_an_earlier_version_left_read_with_zeros_in_the_new_places() -> None:
    # $CARGOHOLD_METRICS_DIR keeps stores across restarts, an upgrade's included: an
    # earlier version's uploads row ends before the bytes purged.
    earlier = store(1, False, Row(layout.UPLOADS, (), (0.0, 0.0, 0.0, 2.0, 5.0)))
    values = [0.0] * layout.UPLOADS_WIDTH
    values[layout.UPLOADS_PURGED] = 1
    values[layout.PURGE_RUNS] = 1
    values[layout.PURGED_BYTES] = 4096
    now = store(2, True, Row(layout.UPLOADS, (), tuple(values)))
    for stores in ([earlier, now], [now, earlier]):
        found = parse(render(stores, None)[0].decode())
        assert found.value("cargohold_uploads_purged_total") == 3
        assert found.value("cargohold_upload_purge_runs_total") == 6
        assert found.value("cargohold_upload_purge_bytes_total") == 4096
    alone = parse(render([earlier], None)[0].decode())
    assert alone.value("cargohold_upload_purge_runs_total") == 5
    assert alone.samples["cargohold_upload_purge_bytes_total", frozenset()] == 0


def test_openmetrics_is_written_when_asked_for() -> None:
    body, content_type = render([store(1, True)], "application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")
