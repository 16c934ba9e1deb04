"""The rows of a metrics store: what each kind holds, and where.

The writers (``recorders.py``) and the reader (``exposition.py``) share this
one description. A row is a kind, label values, and a fixed run of doubles; a
histogram in a row is its sum, then one count per bucket (the last is
``+Inf``), not yet cumulative; its count is the sum of its buckets.
"""

from __future__ import annotations

from cargohold.api.routes import Endpoint

#: Distribution's (docker/go-metrics) buckets: request durations, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0)
#: Request and response sizes: 1 KiB to 4 GiB, doubling.
SIZE_BUCKETS = tuple(float(1024 << n) for n in range(22))
#: Storage and cache calls: Prometheus' default buckets, as Distribution's timers use.
CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def histogram_width(buckets: tuple[float, ...]) -> int:
    """Doubles of one histogram: the sum, each bucket, and ``+Inf``."""
    return 2 + len(buckets)


#: Distribution's route names, the ``handler`` label (``referrers`` is cargohold's).
HANDLERS: dict[Endpoint, str] = {
    Endpoint.BASE: "base",
    Endpoint.BLOB: "blob",
    Endpoint.UPLOADS: "blob_upload",
    Endpoint.UPLOAD: "blob_upload_chunk",
    Endpoint.MANIFEST: "manifest",
    Endpoint.TAGS: "tags",
    Endpoint.CATALOG: "catalog",
    Endpoint.REFERRERS: "referrers",
}

# -- kinds ------------------------------------------------------------------------------

#: One per (handler, method, code): the count, then duration, request size and
#: response size histograms. Every request counted observes all three, so their
#: first buckets are left unwritten (``HTTP_DERIVED``): each is the count less its
#: histogram's other buckets, which spares a request three of its six or seven
#: additions. A store of an earlier version, which wrote them, reads the same.
HTTP = "http"
HTTP_COUNT = 0
HTTP_DURATION = 1
HTTP_REQUEST_SIZE = HTTP_DURATION + histogram_width(DURATION_BUCKETS)
HTTP_RESPONSE_SIZE = HTTP_REQUEST_SIZE + histogram_width(SIZE_BUCKETS)
HTTP_WIDTH = HTTP_RESPONSE_SIZE + histogram_width(SIZE_BUCKETS)
#: Each histogram of the row (where its sum is, its bounds) whose first bucket is derived.
HTTP_DERIVED = (
    (HTTP_DURATION, DURATION_BUCKETS),
    (HTTP_REQUEST_SIZE, SIZE_BUCKETS),
    (HTTP_RESPONSE_SIZE, SIZE_BUCKETS),
)

#: One per handler: requests under way (counted only while their process lives).
IN_FLIGHT = "in_flight"
IN_FLIGHT_WIDTH = 1

#: One per (driver, action): a histogram of its seconds.
STORAGE = "storage"
STORAGE_WIDTH = histogram_width(CALL_BUCKETS)
#: The actions Distribution times (``registry/storage/driver/base``), and cargohold's
#: one of its own, ``DeleteFiles`` (``BatchDeletes``): collection's deletes on S3.
TIMED_ACTIONS = frozenset(
    {"GetContent", "PutContent", "Stat", "List", "Move", "Delete", "DeleteFiles"}
)

#: The descriptor cache: requests, hits, misses, errors.
CACHE = "cache"
CACHE_REQUESTS, CACHE_HITS, CACHE_MISSES, CACHE_ERRORS = range(4)
CACHE_WIDTH = 4
#: One per operation on a shared (Redis) cache: a histogram of its seconds.
CACHE_CALLS = "cache_calls"

#: One per repository (up to the configured number, then ``OTHER_REPOSITORIES``).
REPOSITORY = "repository"
(
    REPO_BLOB_PULLS,
    REPO_MANIFEST_PULLS,
    REPO_PULLED_BYTES,
    REPO_BLOB_PUSHES,
    REPO_MANIFEST_PUSHES,
    REPO_PUSHED_BYTES,
) = range(6)
REPOSITORY_WIDTH = 6
#: The label of repositories past the cap: no repository name starts with ``_``.
OTHER_REPOSITORIES = "_other"

#: Uploads started, completed, cancelled, purged; purge runs; bytes purged.
UPLOADS = "uploads"
(
    UPLOADS_STARTED,
    UPLOADS_COMPLETED,
    UPLOADS_CANCELLED,
    UPLOADS_PURGED,
    PURGE_RUNS,
    PURGED_BYTES,
) = range(6)
UPLOADS_WIDTH = 6

#: The process: its CPU seconds when last noted (for a process that has died).
PROCESS = "process"
PROCESS_CPU = 0
PROCESS_WIDTH = 1

#: One per notification endpoint: events it was to be sent, successes, failures,
#: errors (no answer), and events dead-lettered.
NOTIFY = "notify"
NOTIFY_EVENTS, NOTIFY_SUCCESSES, NOTIFY_FAILURES, NOTIFY_ERRORS, NOTIFY_DEAD = range(5)
NOTIFY_WIDTH = 5
#: One per (status, endpoint): the receiver's answers, by Go's status text ("200 OK").
NOTIFY_STATUS = "notify_status"
NOTIFY_STATUS_WIDTH = 1
#: One per endpoint: events waiting (counted only while the delivering process lives).
NOTIFY_PENDING = "notify_pending"
NOTIFY_PENDING_WIDTH = 1

#: The pull-through cache, one per type (``PROXY_TYPES``): manifests and blobs served
#: (requests), from the cache (hits) or the upstream (misses); bytes pulled from the
#: upstreams, and bytes sent to the clients.
PROXY = "proxy"
PROXY_REQUESTS, PROXY_HITS, PROXY_MISSES, PROXY_PULLED_BYTES, PROXY_PUSHED_BYTES = range(5)
PROXY_WIDTH = 5
#: Distribution's ``type`` label values, each exposed from the start.
PROXY_TYPES = ("blob", "manifest")
#: One per (upstream, type), up to a number of upstreams, then ``OTHER_UPSTREAMS``:
#: hits, misses, bytes pulled.
PROXY_UPSTREAM = "proxy_upstream"
UPSTREAM_HITS, UPSTREAM_MISSES, UPSTREAM_PULLED_BYTES = range(3)
PROXY_UPSTREAM_WIDTH = 3
#: The label of upstreams past the cap: a host name does not start with ``_``.
OTHER_UPSTREAMS = "_other"

#: Collection passes while serving (``storage.maintenance.gc``): passes by outcome
#: (``GC_OUTCOMES``, in that order), then what passes deleted (a dry run adds nothing),
#: the blobs they kept for being younger than the grace period, and the tags retention
#: policies removed.
GC = "gc"
(
    GC_COLLECTED,
    GC_SKIPPED,
    GC_FAILED,
    GC_DELETED_BLOBS,
    GC_DELETED_MANIFESTS,
    GC_RECLAIMED_BYTES,
    GC_YOUNG_BLOBS,
    GC_REMOVED_TAGS,
) = range(8)
GC_WIDTH = 8
#: The ``outcome`` label values, each exposed from the start.
GC_OUTCOMES = ("collected", "skipped", "failed")
#: This process's last pass that collected: when it ended (seconds since the epoch; 0
#: before one has), and its seconds. Not summed: a scrape shows the latest of them all.
GC_LAST = "gc_last"
GC_LAST_ENDED, GC_LAST_DURATION = range(2)
GC_LAST_WIDTH = 2

#: Each kind's width in this version. A new field goes at the end of its row, never
#: between: a store left in ``$CARGOHOLD_METRICS_DIR`` by an earlier version, with
#: narrower rows, then reads as this version's rows with zeros in the new places.
WIDTHS = {
    HTTP: HTTP_WIDTH,
    IN_FLIGHT: IN_FLIGHT_WIDTH,
    STORAGE: STORAGE_WIDTH,
    CACHE: CACHE_WIDTH,
    CACHE_CALLS: STORAGE_WIDTH,
    REPOSITORY: REPOSITORY_WIDTH,
    UPLOADS: UPLOADS_WIDTH,
    PROCESS: PROCESS_WIDTH,
    NOTIFY: NOTIFY_WIDTH,
    NOTIFY_STATUS: NOTIFY_STATUS_WIDTH,
    NOTIFY_PENDING: NOTIFY_PENDING_WIDTH,
    PROXY: PROXY_WIDTH,
    PROXY_UPSTREAM: PROXY_UPSTREAM_WIDTH,
    GC: GC_WIDTH,
    GC_LAST: GC_LAST_WIDTH,
}
