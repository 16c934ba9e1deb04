"""What writes the samples: a request hook, storage, cache, mirror and gc watches, counters.

Each adds to doubles of its process's ``Store`` in place (``layout.py`` says
which); nothing here allocates per request beyond the first request of a
label set. ``Metrics`` makes them all for one process.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import time
from bisect import bisect_left
from collections.abc import Mapping
from contextlib import AbstractContextManager
from http import HTTPStatus
from time import perf_counter
from types import TracebackType

from cargohold.api.events import MOUNT, PULL, PUSH, Event
from cargohold.api.pipeline import Exchange
from cargohold.api.routes import Endpoint, Route
from cargohold.descriptor import Descriptor
from cargohold.metrics import layout
from cargohold.metrics.store import Store
from cargohold.storage.cache import BlobDescriptorCache
from cargohold.storage.cache.watched import WatchedCache
from cargohold.storage.driver.base import ImmediateFiles

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
    values[at + 1 + bisect_left(buckets, value)] += 1.0


# Module names for the hot path: a global is found faster than an attribute of ``layout``.
# Each histogram's bucket is found by ``bisect_left`` only past its first bound, where the
# fast path's observations (microseconds, a request head, a small reply) nearly all fall:
# one comparison instead of a call. Sizes are ints and compared with ints: an int against
# a float compares at half the speed. Counts are added as floats, which a memoryview of
# doubles takes without converting.
_DURATION_BUCKETS = layout.DURATION_BUCKETS
_FIRST_DURATION = _DURATION_BUCKETS[0]
_SIZE_BOUNDS = tuple(int(bound) for bound in layout.SIZE_BUCKETS)
_FIRST_SIZE = _SIZE_BOUNDS[0]
_CALL_BUCKETS = layout.CALL_BUCKETS
_FIRST_CALL = _CALL_BUCKETS[0]
_UPLOADS = Endpoint.UPLOADS
_UPLOAD = Endpoint.UPLOAD
_MANIFEST = Endpoint.MANIFEST
_MANIFEST_PULLS = layout.REPO_MANIFEST_PULLS
_BLOB_PULLS = layout.REPO_BLOB_PULLS
_PULLED_BYTES = layout.REPO_PULLED_BYTES
_PROXY_REQUESTS = layout.PROXY_REQUESTS
_PROXY_HITS = layout.PROXY_HITS
_PROXY_MISSES = layout.PROXY_MISSES
_PROXY_PULLED = layout.PROXY_PULLED_BYTES
_PROXY_PUSHED = layout.PROXY_PUSHED_BYTES
_UPSTREAM_HITS = layout.UPSTREAM_HITS
_UPSTREAM_MISSES = layout.UPSTREAM_MISSES
_UPSTREAM_PULLED = layout.UPSTREAM_PULLED_BYTES


#: Where a request of one (handler, method, code) adds, as indexes into the store's
#: values: its count; the duration histogram's sum, then its first bucket (the others
#: follow it); the same of the request size's, then of the response size's. Worked out
#: once per label set, so that a request does no arithmetic to find them; a plain tuple,
#: which unpacks faster than a named one.
_Series = tuple[int, int, int, int, int, int, int]


def _series_at(row: int) -> _Series:
    duration = row + layout.HTTP_DURATION
    received = row + layout.HTTP_REQUEST_SIZE
    sent = row + layout.HTTP_RESPONSE_SIZE
    return (row, duration, duration + 1, received, received + 1, sent, sent + 1)


class HttpMetrics:
    """A request hook: Distribution's HTTP metrics, and cargohold's per repository and upload."""

    def __init__(self, store: Store, repositories: int = DEFAULT_REPOSITORIES) -> None:
        self._store = store
        self._series: dict[tuple[Endpoint, str, int], _Series] = {}
        self._in_flight = {
            endpoint: store.row(layout.IN_FLIGHT, (handler,), layout.IN_FLIGHT_WIDTH)
            for endpoint, handler in layout.HANDLERS.items()
        }
        self._repositories: dict[str, int] = {}
        self._repository_cap = repositories
        self._uploads = store.row(layout.UPLOADS, (), layout.UPLOADS_WIDTH)

    def request_started(self, exchange: Exchange) -> None:
        # The fast path's requests are over before anyone could see them in flight.
        if not exchange.fast:
            route = exchange.route
            if route is not None:
                self._store.values[self._in_flight[route.endpoint]] += 1.0

    def request_finished(self, exchange: Exchange) -> None:
        # The fast path tells ``request_counted`` alone (a ``pipeline.Counter``), unless
        # another hook needs the exchange.
        route = exchange.route
        if route is None:
            return  # no handler of Distribution's answered it: health, tokens, 404s
        if not exchange.fast:
            self._store.values[self._in_flight[route.endpoint]] -= 1.0
        status = exchange.status
        if not status:
            return  # cut by a stopping server: no reply to count
        self.request_counted(
            route,
            exchange.method,
            status,
            exchange.head_size + exchange.received,
            exchange.size,
            exchange.duration,
            exchange.event,
        )

    def request_counted(
        self,
        route: Route,
        method: str,
        status: int,
        received: int,
        sent: int,
        seconds: float,
        event: Event | None,
    ) -> None:
        # On every request of both paths: written for speed (local names, indexes worked
        # out in advance, a bucket searched for only past the first: see the globals).
        endpoint = route.endpoint
        series = self._series.get((endpoint, method, status))
        if series is None:
            series = self._new_series(endpoint, method, status)
        count, duration_sum, durations, received_sum, received_counts, sent_sum, sent_counts = (
            series
        )
        values = self._store.values
        values[count] += 1.0
        # A histogram's first bucket is the count less its others (``layout.HTTP``): an
        # observation within it adds to the sum alone.
        values[duration_sum] += seconds
        if seconds > _FIRST_DURATION:
            values[durations + bisect_left(_DURATION_BUCKETS, seconds)] += 1.0
        values[received_sum] += received
        if received > _FIRST_SIZE:
            values[received_counts + bisect_left(_SIZE_BOUNDS, received)] += 1.0
        if sent:  # not a HEAD's
            values[sent_sum] += sent
            if sent > _FIRST_SIZE:
                values[sent_counts + bisect_left(_SIZE_BOUNDS, sent)] += 1.0
        if event is not None:
            if event.action != PULL:
                self._pushed(endpoint, event)
            elif method == "GET":  # a HEAD is a pull to notifications, but moves no content
                # Pulls count the bytes sent (a range sends part). Inline: most GETs pull.
                row = self._repositories.get(event.repository)
                if row is None:
                    row = self._repository(event.repository)
                    values = self._store.values  # a new row may have grown the store
                values[row + (_MANIFEST_PULLS if endpoint is _MANIFEST else _BLOB_PULLS)] += 1.0
                values[row + _PULLED_BYTES] += sent
        if endpoint is _UPLOADS or endpoint is _UPLOAD:
            self._upload(method, endpoint, status)

    def _new_series(self, endpoint: Endpoint, method: str, status: int) -> _Series:
        labels = (layout.HANDLERS[endpoint], method.lower(), str(status))
        series = self._series[endpoint, method, status] = _series_at(
            self._store.row(layout.HTTP, labels, layout.HTTP_WIDTH)
        )
        return series

    def _repository(self, name: str) -> int:
        """The row of repository ``name`` (past the cap, ``layout.OTHER_REPOSITORIES``)."""
        row = self._repositories.get(name)
        if row is None:
            if len(self._repositories) >= self._repository_cap:
                name = layout.OTHER_REPOSITORIES
                row = self._repositories.get(name)
            if row is None:
                row = self._store.row(layout.REPOSITORY, (name,), layout.REPOSITORY_WIDTH)
                self._repositories[name] = row
        return row

    def _pushed(self, endpoint: Endpoint, event: Event) -> None:
        """Pushes count the content's size; a mount counts as a blob push of nothing."""
        row = self._repository(event.repository)
        values = self._store.values
        manifest = endpoint is Endpoint.MANIFEST
        if event.action == PUSH:
            values[
                row + (layout.REPO_MANIFEST_PUSHES if manifest else layout.REPO_BLOB_PUSHES)
            ] += 1
            values[row + layout.REPO_PUSHED_BYTES] += event.size or 0
        elif event.action == MOUNT:
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

    def immediate(self, files: ImmediateFiles, driver: str) -> ImmediateFiles:
        return _TimedImmediate(
            files,
            self._store,
            self._row(driver, "GetContent"),
            self._row(driver, "Stat"),
            self._row(driver, "List"),
        )


class _TimedImmediate:
    """A driver's immediate reads, each timed into its action's histogram.

    On the fast path, a read or two per request: the seconds are added here, in the
    read's own call, and the bucket is searched for only past the first (5 ms).
    """

    __slots__ = ("_files", "_list", "_read", "_size", "_store")

    def __init__(
        self, files: ImmediateFiles, store: Store, read: int, size: int, listing: int
    ) -> None:
        self._files = files
        self._store = store
        # Where each action's histogram begins: its sum, then its buckets.
        self._read = read
        self._size = size
        self._list = listing

    def read_now(self, path: str, limit: int) -> bytes | None:
        started = perf_counter()
        content = self._files.read_now(path, limit)
        seconds = perf_counter() - started
        values = self._store.values  # not kept: the store replaces it as it grows
        at = self._read
        values[at] += seconds
        if seconds > _FIRST_CALL:
            at += bisect_left(_CALL_BUCKETS, seconds)
        values[at + 1] += 1.0
        return content

    def size_now(self, path: str) -> int | None:
        started = perf_counter()
        size = self._files.size_now(path)
        seconds = perf_counter() - started
        values = self._store.values
        at = self._size
        values[at] += seconds
        if seconds > _FIRST_CALL:
            at += bisect_left(_CALL_BUCKETS, seconds)
        values[at + 1] += 1.0
        return size

    def list_now(self, path: str) -> builtins.list[str] | None:
        started = perf_counter()
        names = self._files.list_now(path)
        _observe(self._store.values, self._list, _CALL_BUCKETS, perf_counter() - started)
        return names


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
