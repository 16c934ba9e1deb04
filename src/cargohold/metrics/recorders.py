"""What writes the samples: a request hook, storage, cache, mirror and gc watches, counters.

Each adds to doubles of its process's ``Store`` in place (``layout.py`` says
which); nothing here allocates per request beyond the first request of a
label set. ``Metrics`` makes them all for one process.
"""

from __future__ import annotations

import asyncio
import os
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from http import HTTPStatus
from types import TracebackType

from cargohold.api.events import MOUNT, PULL, PUSH, Event
from cargohold.api.pipeline import Exchange
from cargohold.api.routes import Endpoint
from cargohold.descriptor import Descriptor
from cargohold.metrics import layout
from cargohold.metrics.store import Store
from cargohold.storage.cache import BlobDescriptorCache
from cargohold.storage.cache.watched import WatchedCache

__all__ = [
    "CacheMetrics",
    "GcMetrics",
    "HttpMetrics",
    "Metrics",
    "NotificationMetrics",
    "ProxyMetrics",
    "StorageMetrics",
]

#: How often a process notes its CPU time, for when it has died.
CPU_NOTE_INTERVAL = 1.0
#: Repositories with series of their own unless configured otherwise.
DEFAULT_REPOSITORIES = 1000
#: Upstreams with series of their own; more are counted as ``layout.OTHER_UPSTREAMS``.
DEFAULT_UPSTREAMS = 100


def _observe(values: memoryview[float], at: int, buckets: tuple[float, ...], value: float) -> None:
    """One observation of the histogram whose sum is at ``values[at]``."""
    values[at] += value
    values[at + 1 + bisect_left(buckets, value)] += 1


# Module names for the hot path: a global is found faster than an attribute of ``layout``.
_DURATION = layout.HTTP_DURATION
_REQUEST_SIZE = layout.HTTP_REQUEST_SIZE
_RESPONSE_SIZE = layout.HTTP_RESPONSE_SIZE
_DURATION_BUCKETS = layout.DURATION_BUCKETS
_SIZE_BUCKETS = layout.SIZE_BUCKETS
_CALL_BUCKETS = layout.CALL_BUCKETS
_UPLOAD_ENDPOINTS = frozenset({Endpoint.UPLOADS, Endpoint.UPLOAD})
_PROXY_REQUESTS = layout.PROXY_REQUESTS
_PROXY_HITS = layout.PROXY_HITS
_PROXY_MISSES = layout.PROXY_MISSES
_PROXY_PULLED = layout.PROXY_PULLED_BYTES
_PROXY_PUSHED = layout.PROXY_PUSHED_BYTES
_UPSTREAM_HITS = layout.UPSTREAM_HITS
_UPSTREAM_MISSES = layout.UPSTREAM_MISSES
_UPSTREAM_PULLED = layout.UPSTREAM_PULLED_BYTES


class HttpMetrics:
    """A request hook: Distribution's HTTP metrics, and cargohold's per repository and upload."""

    def __init__(self, store: Store, repositories: int = DEFAULT_REPOSITORIES) -> None:
        self._store = store
        self._rows: dict[tuple[Endpoint, str, int], int] = {}
        self._in_flight = {
            endpoint: store.row(layout.IN_FLIGHT, (handler,), layout.IN_FLIGHT_WIDTH)
            for endpoint, handler in layout.HANDLERS.items()
        }
        self._repositories: dict[str, int] = {}
        self._repository_cap = repositories
        self._uploads = store.row(layout.UPLOADS, (), layout.UPLOADS_WIDTH)

    def request_started(self, exchange: Exchange) -> None:
        # The fast path's requests are over before anyone could see them in flight.
        route = exchange.route
        if route is not None and not exchange.fast:
            self._store.values[self._in_flight[route.endpoint]] += 1

    def request_finished(self, exchange: Exchange) -> None:
        # On every request of both paths: written for speed (no calls, local names).
        route = exchange.route
        if route is None:
            return  # no handler of Distribution's answered it: health, tokens, 404s
        endpoint = route.endpoint
        if not exchange.fast:
            self._store.values[self._in_flight[endpoint]] -= 1
        status = exchange.status
        if not status:
            return  # cut by a stopping server: no reply to count
        row = self._rows.get((endpoint, exchange.method, status))
        if row is None:
            row = self._new_row(endpoint, exchange.method, status)
        values = self._store.values
        duration = exchange.duration
        received = exchange.head_size + exchange.received
        sent = exchange.size
        values[row] += 1
        at = row + _DURATION
        values[at] += duration
        values[at + 1 + bisect_left(_DURATION_BUCKETS, duration)] += 1
        at = row + _REQUEST_SIZE
        values[at] += received
        values[at + 1 + bisect_left(_SIZE_BUCKETS, received)] += 1
        at = row + _RESPONSE_SIZE
        values[at] += sent
        values[at + 1 + bisect_left(_SIZE_BUCKETS, sent)] += 1
        event = exchange.event
        # A HEAD is a pull to Distribution's notifications, but moves no content to count.
        if event is not None and (event.action != PULL or exchange.method == "GET"):
            self._content(exchange, endpoint, event)
        if endpoint in _UPLOAD_ENDPOINTS:
            self._upload(exchange.method, endpoint, status)

    def _new_row(self, endpoint: Endpoint, method: str, status: int) -> int:
        labels = (layout.HANDLERS[endpoint], method.lower(), str(status))
        row = self._rows[endpoint, method, status] = self._store.row(
            layout.HTTP, labels, layout.HTTP_WIDTH
        )
        return row

    def _content(self, exchange: Exchange, endpoint: Endpoint, event: Event) -> None:
        """Pulls count the bytes sent (a range sends part); pushes, the content's size."""
        action, name = event.action, event.repository
        row = self._repositories.get(name)
        if row is None:
            if len(self._repositories) >= self._repository_cap:
                name = layout.OTHER_REPOSITORIES
                row = self._repositories.get(name)
            if row is None:
                row = self._store.row(layout.REPOSITORY, (name,), layout.REPOSITORY_WIDTH)
                self._repositories[name] = row
        values = self._store.values
        manifest = endpoint is Endpoint.MANIFEST
        if action == PULL:  # by GET: see request_finished
            values[row + (layout.REPO_MANIFEST_PULLS if manifest else layout.REPO_BLOB_PULLS)] += 1
            values[row + layout.REPO_PULLED_BYTES] += exchange.size
        elif action == PUSH:
            values[
                row + (layout.REPO_MANIFEST_PUSHES if manifest else layout.REPO_BLOB_PUSHES)
            ] += 1
            values[row + layout.REPO_PUSHED_BYTES] += event.size or 0
        elif action == MOUNT:
            values[row + layout.REPO_BLOB_PUSHES] += 1

    def _upload(self, method: str, endpoint: Endpoint, status: int) -> None:
        values, row = self._store.values, self._uploads
        if endpoint is Endpoint.UPLOADS:
            if status == 202:
                values[row + layout.UPLOADS_STARTED] += 1
        elif method == "PUT" and status == 201:
            values[row + layout.UPLOADS_COMPLETED] += 1
        elif method == "DELETE" and status == 204:
            values[row + layout.UPLOADS_CANCELLED] += 1

    def purged(self, count: int, size: int) -> None:
        """A purge run removed ``count`` abandoned uploads, ``size`` bytes of data in all."""
        values, row = self._store.values, self._uploads
        values[row + layout.PURGE_RUNS] += 1
        values[row + layout.UPLOADS_PURGED] += count
        values[row + layout.PURGED_BYTES] += size


class _Timed:
    """Times one call into a histogram row; made once per call, so kept small."""

    __slots__ = ("_at", "_started", "_store")

    def __init__(self, store: Store, at: int) -> None:
        self._store = store
        self._at = at
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        elapsed = time.perf_counter() - self._started
        _observe(self._store.values, self._at, layout.CALL_BUCKETS, elapsed)


class _Untimed:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


_UNTIMED = _Untimed()


class StorageMetrics:
    """A driver watch (``DriverWatch``): ``registry_storage_action_seconds``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._rows: dict[tuple[str, str], int] = {}

    def _row(self, driver: str, action: str) -> int:
        at = self._rows.get((driver, action))
        if at is None:
            at = self._store.row(layout.STORAGE, (driver, action), layout.STORAGE_WIDTH)
            self._rows[driver, action] = at
        return at

    def action(self, driver: str, action: str, path: str) -> AbstractContextManager[object]:
        if action not in layout.TIMED_ACTIONS:
            return _UNTIMED  # Distribution times these only
        return _Timed(self._store, self._row(driver, action))

    def timer(self, driver: str, action: str) -> Callable[[float], None] | None:
        store, at = self._store, self._row(driver, action)

        def observe(seconds: float) -> None:
            values = store.values
            values[at] += seconds
            values[at + 1 + bisect_left(_CALL_BUCKETS, seconds)] += 1

        return observe


class CacheMetrics:
    """A cache watch (``CacheWatch``): counts the lookups of a descriptor cache, and times
    each call when it is shared (Redis): ``registry_storage_cache_*``."""

    def __init__(self, cache: BlobDescriptorCache, store: Store) -> None:
        self._cache = cache
        self._store = store
        self._row = store.row(layout.CACHE, (), layout.CACHE_WIDTH)
        self._calls: dict[str, int] = {}
        self._errors_seen = cache.errors

    def call(self, operation: str) -> AbstractContextManager[object]:
        if not self._cache.shared:
            return _UNTIMED
        at = self._calls.get(operation)
        if at is None:
            at = self._store.row(layout.CACHE_CALLS, (operation,), layout.STORAGE_WIDTH)
            self._calls[operation] = at
        return _Timed(self._store, at)

    def called(self, found: Descriptor | None = None, lookup: bool = False) -> None:
        values, row = self._store.values, self._row
        errors = self._cache.errors
        if errors != self._errors_seen:
            values[row + layout.CACHE_ERRORS] += errors - self._errors_seen
            self._errors_seen = errors
        if lookup:
            values[row + layout.CACHE_REQUESTS] += 1
            values[row + (layout.CACHE_HITS if found is not None else layout.CACHE_MISSES)] += 1


class NotificationMetrics:
    """A delivery watch (``DeliveryWatch``): ``registry_notifications_*``."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._rows: dict[str, int] = {}
        self._statuses: dict[tuple[str, str], int] = {}
        self._pending: dict[str, int] = {}

    def _row(self, endpoint: str) -> int:
        row = self._rows.get(endpoint)
        if row is None:
            row = self._rows[endpoint] = self._store.row(
                layout.NOTIFY, (endpoint,), layout.NOTIFY_WIDTH
            )
        return row

    def _add(self, endpoint: str, at: int) -> None:
        self._store.values[self._row(endpoint) + at] += 1

    def event(self, endpoint: str) -> None:
        self._add(endpoint, layout.NOTIFY_EVENTS)

    def answered(self, endpoint: str, status: int) -> None:
        self._add(endpoint, layout.NOTIFY_SUCCESSES if status < 400 else layout.NOTIFY_FAILURES)
        try:
            code = f"{status} {HTTPStatus(status).phrase}"
        except ValueError:
            code = f"{status} "
        row = self._statuses.get((code, endpoint))
        if row is None:
            row = self._statuses[code, endpoint] = self._store.row(
                layout.NOTIFY_STATUS, (code, endpoint), layout.NOTIFY_STATUS_WIDTH
            )
        self._store.values[row] += 1

    def unanswered(self, endpoint: str) -> None:
        self._add(endpoint, layout.NOTIFY_ERRORS)

    def buried(self, endpoint: str) -> None:
        self._add(endpoint, layout.NOTIFY_DEAD)

    def pending(self, endpoint: str, count: int) -> None:
        self._row(endpoint)  # the endpoint's series exist from the first look
        row = self._pending.get(endpoint)
        if row is None:
            row = self._pending[endpoint] = self._store.row(
                layout.NOTIFY_PENDING, (endpoint,), layout.NOTIFY_PENDING_WIDTH
            )
        self._store.values[row] = count


class ProxyMetrics:
    """A mirror's watch (``ProxyWatch``): Distribution's ``registry_proxy_*``, and
    cargohold's per upstream.

    ``served`` runs on every cached blob HEAD of the fast path: one dict lookup finds
    both rows of an (upstream, type), and the rest is adding in place.
    """

    def __init__(self, store: Store, upstreams: int = DEFAULT_UPSTREAMS) -> None:
        self._store = store
        # Made now, as Distribution sets both types to 0 at start: a dashboard's hit
        # ratio has series to divide before the first pull.
        self._totals = {
            kind: store.row(layout.PROXY, (kind,), layout.PROXY_WIDTH)
            for kind in layout.PROXY_TYPES
        }
        #: type -> upstream -> (its type's row, its own row). Keyed by type first so
        #: that a lookup builds no tuple; upstreams past the cap are not kept, so that
        #: neither this nor the scrape grows without bound.
        self._rows: dict[str, dict[str, tuple[int, int]]] = {
            kind: {} for kind in layout.PROXY_TYPES
        }
        self._upstreams: set[str] = set()
        self._upstream_cap = upstreams

    def _new_rows(self, upstream: str, kind: str) -> tuple[int, int]:
        total = self._totals.get(kind)
        if total is None:
            raise ValueError(f"not a proxied kind of content: {kind!r}")
        if upstream not in self._upstreams:
            if len(self._upstreams) >= self._upstream_cap:
                upstream = layout.OTHER_UPSTREAMS
                found = self._rows[kind].get(upstream)
                if found is not None:
                    return found
            else:
                self._upstreams.add(upstream)
        own = self._store.row(layout.PROXY_UPSTREAM, (upstream, kind), layout.PROXY_UPSTREAM_WIDTH)
        rows = self._rows[kind][upstream] = (total, own)
        return rows

    def served(self, upstream: str, kind: str, size: int, hit: bool) -> None:
        by_upstream = self._rows.get(kind)
        rows = by_upstream.get(upstream) if by_upstream is not None else None
        if rows is None:
            rows = self._new_rows(upstream, kind)
        total, own = rows
        values = self._store.values
        values[total + _PROXY_REQUESTS] += 1
        values[total + _PROXY_PUSHED] += size
        # Every serve is a hit or a miss, so that hits + misses == requests.
        if hit:
            values[total + _PROXY_HITS] += 1
            values[own + _UPSTREAM_HITS] += 1
        else:
            values[total + _PROXY_MISSES] += 1
            values[own + _UPSTREAM_MISSES] += 1

    def pulled(self, upstream: str, kind: str, size: int) -> None:
        by_upstream = self._rows.get(kind)
        rows = by_upstream.get(upstream) if by_upstream is not None else None
        if rows is None:
            rows = self._new_rows(upstream, kind)
        total, own = rows
        values = self._store.values
        values[total + _PROXY_PULLED] += size
        values[own + _UPSTREAM_PULLED] += size


def _number(report: Mapping[str, object], key: str) -> float:
    """``report[key]`` when it is a number, else 0."""
    value = report.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


class GcMetrics:
    """A collection watch (``GcWatch``): ``cargohold_gc_*``, of passes while serving.

    Every process that serves runs passes, and at most one at a time runs among
    them all (the storage's lease): the others' are skipped. A dry run counts as a
    pass that collected, but adds nothing to what was deleted or kept.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        # Made now: a scrape shows every family at 0 before the first pass.
        self._row = store.row(layout.GC, (), layout.GC_WIDTH)
        self._last = store.row(layout.GC_LAST, (), layout.GC_LAST_WIDTH)

    def _deleted(self, report: Mapping[str, object]) -> None:
        if report.get("dry_run"):
            return  # what it would have deleted: nothing was
        values, row = self._store.values, self._row
        values[row + layout.GC_DELETED_BLOBS] += _number(report, "deleted_blobs")
        values[row + layout.GC_DELETED_MANIFESTS] += _number(report, "deleted_manifests")
        values[row + layout.GC_RECLAIMED_BYTES] += _number(report, "reclaimed_bytes")
        values[row + layout.GC_YOUNG_BLOBS] += _number(report, "young_blobs")
        values[row + layout.GC_REMOVED_TAGS] += _number(report, "removed_tags")

    def collected(self, report: Mapping[str, object]) -> None:
        values = self._store.values
        values[self._row + layout.GC_COLLECTED] += 1
        self._deleted(report)
        values[self._last + layout.GC_LAST_DURATION] = _number(report, "duration")
        values[self._last + layout.GC_LAST_ENDED] = _number(report, "ended")

    def skipped(self) -> None:
        self._store.values[self._row + layout.GC_SKIPPED] += 1

    def failed(self, report: Mapping[str, object] | None) -> None:
        self._store.values[self._row + layout.GC_FAILED] += 1
        if report is not None:
            self._deleted(report)  # deleted before it failed to save its report


class Metrics:
    """The recorders of one process, on its store."""

    def __init__(self, store: Store, repositories: int = DEFAULT_REPOSITORIES) -> None:
        self.store = store
        self.http = HttpMetrics(store, repositories)
        self.storage = StorageMetrics(store)
        self.notifications = NotificationMetrics(store)
        self.proxy = ProxyMetrics(store)
        self.gc = GcMetrics(store)
        self._process = store.row(layout.PROCESS, (), layout.PROCESS_WIDTH)

    def cache(self, cache: BlobDescriptorCache) -> BlobDescriptorCache:
        return WatchedCache(cache, CacheMetrics(cache, self.store))

    def note_cpu(self) -> None:
        """Note this process's CPU seconds, which count on after it has died."""
        times = os.times()
        self.store.values[self._process + layout.PROCESS_CPU] = times.user + times.system

    async def noting_cpu(self) -> None:
        """Note the CPU time every second until cancelled."""
        while True:
            self.note_cpu()
            await asyncio.sleep(CPU_NOTE_INTERVAL)
