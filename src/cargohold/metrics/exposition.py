"""A scrape: every process's samples, summed, in Prometheus' text format.

Counters and histograms are summed over every store in the directory, those
of processes that have died included, so a replaced worker never makes them
go backwards; gauges of requests in flight count living processes only, and
the last collection pass's are those of the latest pass of any process. The
families and their help texts are Distribution's (``registry_*``, as 2.8
and 3.x name them), then cargohold's own (``cargohold_*``) and the process
metrics of every living worker, summed. ``prometheus_client`` writes the text
(or OpenMetrics, when the scraper asks for it).
"""

from __future__ import annotations

import math
import platform
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal

import aiohttp
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

from cargohold import __version__
from cargohold.metrics import layout
from cargohold.metrics.store import StoreFile

__all__ = ["collect", "go_float", "render"]

_LIVE_ONLY = frozenset({layout.IN_FLIGHT, layout.NOTIFY_PENDING})
#: Kinds read from each store apart, never summed.
_UNSUMMED = frozenset({layout.GC_LAST})


def go_float(value: float) -> str:
    """``value`` as Go's ``strconv.FormatFloat(v, 'g', -1, 64)`` writes it (``le`` labels)."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits))
    point = len(text) + exponent  # where the decimal point falls in ``text``
    magnitude = point - 1
    prefix = "-" if sign else ""
    if magnitude < -4 or magnitude >= 6:  # Go's rule for the shortest form
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'+' if magnitude >= 0 else '-'}{abs(magnitude):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{text}"
    if point >= len(text):
        return f"{prefix}{text}{'0' * (point - len(text))}"
    return f"{prefix}{text[:point]}.{text[point:]}"


class _Sums:
    """The rows of every store, summed by kind and labels."""

    def __init__(self, stores: Iterable[StoreFile]) -> None:
        self.rows: dict[str, dict[tuple[str, ...], list[float]]] = defaultdict(dict)
        for store in stores:
            for row in store.rows:
                if row.kind in _UNSUMMED or (row.kind in _LIVE_ONLY and not store.alive):
                    continue
                values = _widened(row.kind, row.values)
                sums = self.rows[row.kind].get(row.labels)
                if sums is None:
                    self.rows[row.kind][row.labels] = values
                else:
                    for index, value in enumerate(values):
                        sums[index] += value

    def of(self, kind: str) -> dict[tuple[str, ...], list[float]]:
        return self.rows.get(kind, {})

    def grouped(
        self, kind: str, key: Sequence[int], start: int, width: int
    ) -> dict[tuple[str, ...], list[float]]:
        """``width`` doubles from ``start`` of each row, summed over rows alike in ``key``."""
        groups: dict[tuple[str, ...], list[float]] = {}
        for labels, values in self.of(kind).items():
            group = tuple(labels[i] for i in key)
            part = values[start : start + width]
            if group in groups:
                groups[group] = [a + b for a, b in zip(groups[group], part, strict=True)]
            else:
                groups[group] = list(part)
        return groups


def _widened(kind: str, values: tuple[float, ...]) -> list[float]:
    """The row as wide as this version writes its kind: an earlier one's padded with zeros."""
    width = layout.WIDTHS.get(kind, len(values))
    return [*values[:width], *[0.0] * (width - len(values))]


def _histogram(
    name: str,
    documentation: str,
    label_names: Sequence[str],
    buckets: tuple[float, ...],
    series: dict[tuple[str, ...], list[float]],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=label_names)
    bounds = [*(go_float(bound) for bound in buckets), "+Inf"]
    for labels, values in sorted(series.items()):
        total, counts = values[0], values[1:]
        cumulative, running = [], 0.0
        for bound, count in zip(bounds, counts, strict=True):
            running += count
            cumulative.append((bound, running))
        family.add_metric(list(labels), cumulative, total)
    return family


def _counter(
    name: str,
    documentation: str,
    label_names: Sequence[str],
    series: Iterable[tuple[Sequence[str], float]],
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=label_names)
    for labels, value in sorted(series):
        family.add_metric(list(labels), value)
    return family


def _http(sums: _Sums) -> Iterator[Metric]:
    rows = sums.of(layout.HTTP)
    for values in rows.values():
        # Not written by a request: the count less the others (see ``layout.HTTP``).
        count = values[layout.HTTP_COUNT]
        for at, buckets in layout.HTTP_DERIVED:
            first = at + 1
            values[first] = count - sum(values[first + 1 : first + 1 + len(buckets)])
    # Label names in Go's order: alphabetical.
    yield _counter(
        "registry_http_requests",
        "Total number of HTTP requests made.",
        ["code", "handler", "method"],
        (
            ((code, handler, method), values[layout.HTTP_COUNT])
            for (handler, method, code), values in rows.items()
        ),
    )
    duration = layout.histogram_width(layout.DURATION_BUCKETS)
    sizes = layout.histogram_width(layout.SIZE_BUCKETS)
    yield _histogram(
        "registry_http_request_duration_seconds",
        "The HTTP request latencies in seconds.",
        ["handler", "method"],
        layout.DURATION_BUCKETS,
        sums.grouped(layout.HTTP, (0, 1), layout.HTTP_DURATION, duration),
    )
    yield _histogram(
        "registry_http_request_size_bytes",
        "The HTTP request sizes in bytes.",
        ["handler"],
        layout.SIZE_BUCKETS,
        sums.grouped(layout.HTTP, (0,), layout.HTTP_REQUEST_SIZE, sizes),
    )
    yield _histogram(
        "registry_http_response_size_bytes",
        "The HTTP response sizes in bytes.",
        ["handler"],
        layout.SIZE_BUCKETS,
        sums.grouped(layout.HTTP, (0,), layout.HTTP_RESPONSE_SIZE, sizes),
    )
    in_flight = GaugeMetricFamily(
        "registry_http_in_flight_requests", "The in-flight HTTP requests", labels=["handler"]
    )
    counts = {labels[0]: values[0] for labels, values in sums.of(layout.IN_FLIGHT).items()}
    for handler in sorted(layout.HANDLERS.values()):
        in_flight.add_metric([handler], max(0.0, counts.get(handler, 0.0)))
    yield in_flight


def _storage(sums: _Sums) -> Iterator[Metric]:
    yield _histogram(
        "registry_storage_action_seconds",
        "The number of seconds that the storage action takes",
        ["action", "driver"],
        layout.CALL_BUCKETS,
        {(action, driver): values for (driver, action), values in sums.of(layout.STORAGE).items()},
    )
    cache = sums.of(layout.CACHE).get((), [0.0] * layout.CACHE_WIDTH)
    requests, hits = cache[layout.CACHE_REQUESTS], cache[layout.CACHE_HITS]
    misses, errors = cache[layout.CACHE_MISSES], cache[layout.CACHE_ERRORS]
    # Distribution 2.8's one family, its series made on first use...
    by_type = {"Request": requests, "Hit": hits, "Miss": misses, "Error": errors}
    yield _counter(
        "registry_storage_cache",
        "The number of cache request received",
        ["type"],
        (((kind,), value) for kind, value in by_type.items() if value),
    )
    # ... and 3.x's three.
    yield _counter(
        "registry_storage_cache_requests",
        "The number of cache request received",
        [],
        [((), requests)],
    )
    yield _counter(
        "registry_storage_cache_hits", "The number of cache request received", [], [((), hits)]
    )
    yield _counter(
        "registry_storage_cache_errors", "The number of cache request errors", [], [((), errors)]
    )
    calls = sums.of(layout.CACHE_CALLS)
    if calls:
        yield _histogram(
            "registry_storage_cache_redis_seconds",
            "The time taken by the Redis cache operations",
            ["operation"],
            layout.CALL_BUCKETS,
            calls,
        )


def _notifications(sums: _Sums) -> Iterator[Metric]:
    """Distribution's ``registry_notifications_*``, and cargohold's dead letters."""
    rows = sums.of(layout.NOTIFY)
    types = {
        "Events": layout.NOTIFY_EVENTS,
        "Successes": layout.NOTIFY_SUCCESSES,
        "Failures": layout.NOTIFY_FAILURES,
        "Errors": layout.NOTIFY_ERRORS,
    }
    yield _counter(
        "registry_notifications_events",
        "The number of total events",
        ["endpoint", "type"],
        (
            ((endpoint, kind), values[at])
            for (endpoint,), values in rows.items()
            for kind, at in types.items()
        ),
    )
    yield _counter(
        "registry_notifications_status",
        "The number of status code",
        ["code", "endpoint"],
        ((labels, values[0]) for labels, values in sums.of(layout.NOTIFY_STATUS).items()),
    )
    pending = GaugeMetricFamily(
        "registry_notifications_pending",
        "The gauge of pending events in queue",
        labels=["endpoint"],
    )
    waiting = sums.of(layout.NOTIFY_PENDING)
    for (endpoint,) in sorted(rows):
        pending.add_metric([endpoint], max(0.0, waiting.get((endpoint,), [0.0])[0]))
    yield pending
    yield _counter(
        "cargohold_notifications_dead_letters",
        "Events an endpoint gave up on, kept for 'cargohold notifications replay'.",
        ["endpoint"],
        (((endpoint,), values[layout.NOTIFY_DEAD]) for (endpoint,), values in rows.items()),
    )


def _proxy(sums: _Sums) -> Iterator[Metric]:
    """Distribution's ``registry_proxy_*`` (3.x), and cargohold's per upstream."""
    rows = sums.of(layout.PROXY)
    zeros = [0.0] * layout.PROXY_WIDTH
    # Both types always, as Distribution sets them to 0 at start.
    totals = {kind: rows.get((kind,), zeros) for kind in layout.PROXY_TYPES}
    for name, documentation, at in (
        ("requests", "The number of total incoming proxy request received", layout.PROXY_REQUESTS),
        ("hits", "The number of total proxy request hits", layout.PROXY_HITS),
        ("misses", "The number of total proxy request misses", layout.PROXY_MISSES),
        (
            "pulled_bytes",
            "The size of total bytes pulled from the upstream",
            layout.PROXY_PULLED_BYTES,
        ),
        ("pushed_bytes", "The size of total bytes pushed to the client", layout.PROXY_PUSHED_BYTES),
    ):
        yield _counter(
            f"registry_proxy_{name}",
            documentation,
            ["type"],
            (((kind,), values[at]) for kind, values in totals.items()),
        )
    upstreams = sums.of(layout.PROXY_UPSTREAM)
    for name, documentation, at in (
        (
            "hits",
            "Manifests and blobs of each upstream served from the cache.",
            layout.UPSTREAM_HITS,
        ),
        (
            "misses",
            "Manifests and blobs served from each upstream, not from the cache.",
            layout.UPSTREAM_MISSES,
        ),
        (
            "pulled_bytes",
            "Bytes of manifests and blobs pulled from each upstream.",
            layout.UPSTREAM_PULLED_BYTES,
        ),
    ):
        yield _counter(
            f"cargohold_proxy_upstream_{name}",
            documentation,
            ["upstream", "type"],
            ((labels, values[at]) for labels, values in upstreams.items()),
        )


def _gc(sums: _Sums, stores: Sequence[StoreFile]) -> Iterator[Metric]:
    """cargohold's ``cargohold_gc_*``: collection passes while serving."""
    gc = sums.of(layout.GC).get((), [0.0] * layout.GC_WIDTH)
    outcomes = (layout.GC_COLLECTED, layout.GC_SKIPPED, layout.GC_FAILED)
    yield _counter(
        "cargohold_gc_runs",
        "Garbage collection passes while serving, by outcome: collected (dry runs "
        "included), skipped (another process's pass was under way) or failed.",
        ["outcome"],
        (((outcome,), gc[at]) for outcome, at in zip(layout.GC_OUTCOMES, outcomes, strict=True)),
    )
    for name, documentation, at in (
        (
            "deleted_blobs",
            "Blobs deleted by garbage collection while serving (not by dry runs).",
            layout.GC_DELETED_BLOBS,
        ),
        (
            "deleted_manifests",
            "Manifests deleted by garbage collection while serving (not by dry runs).",
            layout.GC_DELETED_MANIFESTS,
        ),
        (
            "reclaimed_bytes",
            "Bytes of the blobs deleted by garbage collection while serving (not by dry runs).",
            layout.GC_RECLAIMED_BYTES,
        ),
        (
            "young_blobs_kept",
            "Unreferenced blobs garbage collection while serving kept, as younger than the "
            "grace period, summed over its passes (not dry runs).",
            layout.GC_YOUNG_BLOBS,
        ),
        (
            "removed_tags",
            "Tags retention policies removed in garbage collection while serving (not by "
            "dry runs).",
            layout.GC_REMOVED_TAGS,
        ),
    ):
        yield _counter(f"cargohold_gc_{name}", documentation, [], [((), gc[at])])
    # The pass that ended last, of any process's (dead ones' too): its end and its own
    # duration, not the longest of any, so that the two describe one pass.
    ended, duration = 0.0, 0.0
    for store in stores:
        for row in store.rows:
            if row.kind == layout.GC_LAST:
                values = _widened(row.kind, row.values)
                if values[layout.GC_LAST_ENDED] > ended:
                    ended = values[layout.GC_LAST_ENDED]
                    duration = values[layout.GC_LAST_DURATION]
    yield GaugeMetricFamily(
        "cargohold_gc_last_run_timestamp_seconds",
        "When the last garbage collection pass while serving that collected ended, in "
        "seconds since the epoch; 0 before one has.",
        value=ended,
    )
    yield GaugeMetricFamily(
        "cargohold_gc_last_run_duration_seconds",
        "How long the last garbage collection pass while serving that collected took, in seconds.",
        value=duration,
    )


def _cargohold(sums: _Sums, stores: Sequence[StoreFile]) -> Iterator[Metric]:
    repositories = sums.of(layout.REPOSITORY)

    def per_repository(index: int) -> list[tuple[Sequence[str], float]]:
        return [((name,), values[index]) for (name,), values in repositories.items()]

    def per_type(blobs: int, manifests: int) -> list[tuple[Sequence[str], float]]:
        return [
            ((name, kind), values[index])
            for (name,), values in repositories.items()
            for kind, index in (("blob", blobs), ("manifest", manifests))
        ]

    yield _counter(
        "cargohold_repository_pulls",
        "Blobs and manifests pulled (GET) from each repository.",
        ["repository", "type"],
        per_type(layout.REPO_BLOB_PULLS, layout.REPO_MANIFEST_PULLS),
    )
    yield _counter(
        "cargohold_repository_pulled_bytes",
        "Bytes of blobs and manifests sent from each repository.",
        ["repository"],
        per_repository(layout.REPO_PULLED_BYTES),
    )
    yield _counter(
        "cargohold_repository_pushes",
        "Blobs (uploaded or mounted) and manifests pushed to each repository.",
        ["repository", "type"],
        per_type(layout.REPO_BLOB_PUSHES, layout.REPO_MANIFEST_PUSHES),
    )
    yield _counter(
        "cargohold_repository_pushed_bytes",
        "Bytes of blobs and manifests received by each repository.",
        ["repository"],
        per_repository(layout.REPO_PUSHED_BYTES),
    )
    uploads = sums.of(layout.UPLOADS).get((), [0.0] * layout.UPLOADS_WIDTH)
    for field, name, documentation in (
        (layout.UPLOADS_STARTED, "started", "Blob uploads started (POST answered 202)."),
        (layout.UPLOADS_COMPLETED, "completed", "Blob uploads completed (PUT answered 201)."),
        (layout.UPLOADS_CANCELLED, "cancelled", "Blob uploads cancelled (DELETE)."),
        (layout.UPLOADS_PURGED, "purged", "Abandoned blob uploads removed by upload purging."),
    ):
        yield _counter(f"cargohold_uploads_{name}", documentation, [], [((), uploads[field])])
    yield _counter(
        "cargohold_upload_purge_runs",
        "Runs of upload purging.",
        [],
        [((), uploads[layout.PURGE_RUNS])],
    )
    yield _counter(
        "cargohold_upload_purge_bytes",
        "Bytes of abandoned uploads' data removed by upload purging.",
        [],
        [((), uploads[layout.PURGED_BYTES])],
    )
    open_uploads = (
        uploads[layout.UPLOADS_STARTED]
        - uploads[layout.UPLOADS_COMPLETED]
        - uploads[layout.UPLOADS_CANCELLED]
        - uploads[layout.UPLOADS_PURGED]
    )
    yield GaugeMetricFamily(
        "cargohold_uploads_in_progress",
        "Blob uploads started since the server started and neither completed, cancelled "
        "nor purged.",
        value=max(0.0, open_uploads),
    )
    build = GaugeMetricFamily(
        "cargohold_build_info",
        "cargohold's version, and the Python and aiohttp it runs on.",
        labels=["version", "python", "aiohttp"],
    )
    build.add_metric([__version__, platform.python_version(), aiohttp.__version__], 1.0)
    yield build
    yield GaugeMetricFamily(
        "cargohold_workers",
        "Processes serving requests.",
        value=sum(1 for store in stores if store.alive),
    )


def _fixed(pid: int) -> Callable[[], int]:
    return lambda: pid


def _process(stores: Sequence[StoreFile], sums: _Sums) -> Iterator[Metric]:
    """The process metrics of every living worker, summed; CPU time of the dead added."""
    totals: dict[str, float] = defaultdict(float)
    kinds: dict[str, Metric] = {}
    cpu_of_dead = sum(
        row.values[layout.PROCESS_CPU]
        for store in stores
        if not store.alive
        for row in store.rows
        if row.kind == layout.PROCESS
    )
    start = math.inf
    for store in stores:
        pid = store.pid
        if not store.alive or pid is None:
            continue
        collector = ProcessCollector(pid=_fixed(pid), registry=None)
        for family in collector.collect():
            kinds.setdefault(family.name, family)
            for sample in family.samples:
                if sample.name == "process_start_time_seconds":
                    start = min(start, sample.value)
                elif sample.name == "process_max_fds":
                    totals[sample.name] = sample.value
                else:
                    totals[sample.name] += sample.value
    totals["process_cpu_seconds_total"] += cpu_of_dead
    for name, family in kinds.items():
        sample_name = f"{name}_total" if family.type == "counter" else name
        value = start if sample_name == "process_start_time_seconds" else totals[sample_name]
        if family.type == "counter":
            yield CounterMetricFamily(name, family.documentation, value=value)
        else:
            yield GaugeMetricFamily(name, family.documentation, value=value)


class _Collected:
    """What ``prometheus_client``'s writers take: something with ``collect``."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


def collect(stores: Sequence[StoreFile]) -> list[Metric]:
    """The families of a scrape of ``stores``."""
    sums = _Sums(stores)
    return [
        *_http(sums),
        *_storage(sums),
        *_notifications(sums),
        *_proxy(sums),
        *_cargohold(sums, stores),
        *_gc(sums, stores),
        *_process(stores, sums),
    ]


def render(stores: Sequence[StoreFile], accept: str | None) -> tuple[bytes, str]:
    """The scrape's body and its content type, in the format ``accept`` asks for."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(_Collected(collect(stores))), content_type
