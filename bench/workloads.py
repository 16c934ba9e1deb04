"""The workloads, each run the same way against either server.

A workload's ``prepare`` runs once per round before the two timed runs (it
makes a distinct blob and computes its digest, so nothing is deduplicated and
no hashing is timed); ``run`` is the timed part and returns the measured rate.

On S3 storage with redirects on (``Context.redirect``), a server may answer a
blob GET or HEAD with a 307 to SeaweedFS: the pulls follow it (one connection to
the registry, one to SeaweedFS, per pull), while the small-blob request rates
count the registry's own replies, whatever their status, as long as every reply
has the status and length the check before the run saw, and the check found
that the redirect leads to the right bytes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import fixtures, loadgen, rawhttp, storm
from bench.client import DOCKER_ACCEPT, digest_of
from bench.fixtures import Content
from bench.servers import TRIVIAL, Server

MIB = 1 << 20


@dataclass(frozen=True)
class Params:
    """How long each timed run lasts; --quick shortens them."""

    rate_seconds: float = 10.0
    pulls_one_stream: int = 8
    pulls_per_stream: int = 4
    put_processes: int = 2
    put_coroutines: int = 8
    #: Manifests PUT per run: a count, not a time, so that both servers end with
    #: the same manifests (the catalog and tags workloads then see the same state).
    put_count: int = 3000
    #: Requests of a workload that sends them one at a time (the catalog on S3).
    sequential_count: int = 5

    @classmethod
    def quick(cls) -> Params:
        return cls(
            rate_seconds=3.0,
            pulls_one_stream=4,
            pulls_per_stream=2,
            put_count=1000,
            sequential_count=2,
        )


@dataclass
class Context:
    content: Content
    params: Params
    scratch: Path
    round: int = 0
    #: Per server: the files and directories the set-up made, read before each run.
    warm_paths: dict[str, list[str]] = field(default_factory=dict)
    #: The blob the push workloads send this round, and its digest.
    push_digest: str = ""
    #: Blob reads may be answered with a redirect to the storage (S3, redirect on).
    redirect: bool = False
    #: Processes the servers depend on (SeaweedFS, redis-server): their CPU is shown apart.
    backend_pids: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Measured:
    value: float
    #: Seconds of load (for CPU percentages); may be shorter than the call.
    seconds: float
    #: Client CPU seconds spent outside the load (starting client processes).
    client_startup_cpu: float = 0.0
    #: Further figures of the run, by name (the pull storm's p50 and p99 seconds).
    extra: dict[str, float] = field(default_factory=dict)


class Workload:
    name = ""
    title = ""
    unit = "req/s"
    #: Names of the further figures ``run`` gives in ``Measured.extra`` (times: lower is better).
    extras: tuple[str, ...] = ()

    def prepare(self, ctx: Context, index: int) -> None:
        """Untimed work before this round's two timed runs."""

    def ready(self, ctx: Context, server: Server) -> None:
        """Untimed work just before the timed run against ``server``."""

    def run(self, ctx: Context, server: Server) -> Measured:
        raise NotImplementedError


class Push(Workload):
    unit = "MiB/s"

    def __init__(self, chunk: int | None) -> None:
        self.chunk = chunk
        self.name = "push-chunked" if chunk else "push-monolithic"
        size = f"{fixtures.BIG_SIZE // MIB} MiB"
        self.title = (
            f"push {size} in {chunk // MIB} MiB chunks" if chunk else f"push {size} monolithic"
        )

    def prepare(self, ctx: Context, index: int) -> None:
        # A distinct blob per workload and round: both servers get these same bytes.
        ctx.content.big[:16] = f"push{index:04d}r{ctx.round:07d}".encode()
        ctx.push_digest = digest_of(ctx.content.big)

    def run(self, ctx: Context, server: Server) -> Measured:
        data = memoryview(ctx.content.big)
        started = time.perf_counter()
        if self.chunk:
            rawhttp.push_chunked(server.url, fixtures.PUSH_REPO, data, ctx.push_digest, self.chunk)
        else:
            rawhttp.push_monolithic(server.url, fixtures.PUSH_REPO, data, ctx.push_digest)
        seconds = time.perf_counter() - started
        return Measured(len(data) / MIB / seconds, seconds)


class Pull(Workload):
    unit = "MiB/s"

    def __init__(self, streams: int) -> None:
        self.streams = streams
        self.name = f"pull-{streams}"
        plural = "stream" if streams == 1 else "concurrent streams"
        self.title = f"pull {fixtures.BIG_SIZE // MIB} MiB, {streams} {plural}"

    def run(self, ctx: Context, server: Server) -> Measured:
        p = ctx.params
        times = p.pulls_one_stream if self.streams == 1 else p.pulls_per_stream
        path = ctx.content.path("big")
        total, seconds = rawhttp.pull_streams(
            server.url, path, self.streams, times, follow=ctx.redirect
        )
        expected = fixtures.BIG_SIZE * self.streams * times
        if total != expected:
            raise rawhttp.HttpError(f"pulled {total} bytes, expected {expected}")
        return Measured(total / MIB / seconds, seconds)


class PullStorm(Workload):
    """``storm.CLIENTS`` clients pulling the storm's image at once, as containerd does."""

    name = "pull-storm"
    unit = "MiB/s"
    #: The extra figures: seconds to a complete image, lower is better.
    extras = ("p50_s", "p99_s")

    def __init__(self, clients: int = storm.CLIENTS) -> None:
        self.clients = clients
        self.title = f"pull storm: {clients} clients, a 5-layer 200 MiB image each"

    def run(self, ctx: Context, server: Server) -> Measured:
        image = ctx.content.storm
        if image is None:
            raise rawhttp.HttpError("pull-storm: the fixtures were made without its image")
        wall, each = storm.storm(server.url, fixtures.PULL_REPO, image, self.clients)
        return Measured(
            len(each) * image.size / MIB / wall,
            wall,
            extra={"p50_s": storm.percentile(each, 0.5), "p99_s": storm.percentile(each, 0.99)},
        )


class HeadBlob(Workload):
    name = "head-blob"
    title = "HEAD small blob, 64 connections (ab)"
    redirected = False

    def ready(self, ctx: Context, server: Server) -> None:
        reply = _checked_reply(ctx, server, "HEAD", ctx.content.path("small"), {}, None)
        self.redirected = reply.status == 307

    def run(self, ctx: Context, server: Server) -> Measured:
        seconds = ctx.params.rate_seconds
        path = ctx.content.path("small")
        rate = loadgen.ab_head(server.url, path, 64, seconds, redirects=self.redirected)
        return Measured(rate, seconds)


def _checked_reply(
    ctx: Context,
    server: Server,
    method: str,
    path: str,
    headers: dict[str, str],
    wanted: bytes | None,
) -> rawhttp.Response:
    """One request before the run: a 200 with ``wanted`` as body (if given), or,
    when redirects are allowed, a 307 whose target answers that way."""
    host, port, _ = rawhttp.split_url(server.url)
    with rawhttp.Connection(host, port) as conn:
        reply = conn.request(method, path, headers)
    served = reply
    if reply.status == 307 and ctx.redirect:
        target_host, target_port, target = rawhttp.split_url(reply.headers["location"])
        with rawhttp.Connection(target_host, target_port) as conn:
            served = conn.request(method, target, headers)
    rawhttp.expect(served, 200, f"{method} {path}")
    if server.name == TRIVIAL:
        return reply
    if method == "HEAD" and served.headers.get("content-length") != str(fixtures.SMALL_SIZE):
        length = served.headers.get("content-length")
        raise rawhttp.HttpError(f"HEAD {path}: Content-Length {length}")
    if wanted is not None and served.body != wanted:
        raise rawhttp.HttpError(f"{method} {path}: the body differs from what was pushed")
    return reply


class WrkGet(Workload):
    def __init__(
        self, name: str, title: str, key: str, connections: int, accept: str | None = None
    ) -> None:
        self.name, self.title, self.key = name, title, key
        self.connections = connections
        self.headers = {"Accept": accept} if accept else {}
        self.body_length = 0
        self.status: int | None = None

    def ready(self, ctx: Context, server: Server) -> None:
        # wrk then requires every reply to carry this status and a body of this length.
        path = ctx.content.path(self.key)
        wanted = {"blob4k": ctx.content.blob4k, "manifest": ctx.content.image}.get(self.key)
        reply = _checked_reply(ctx, server, "GET", path, self.headers, wanted)
        self.body_length = len(reply.body)
        self.status = reply.status

    def run(self, ctx: Context, server: Server) -> Measured:
        seconds = ctx.params.rate_seconds
        path = ctx.content.path(self.key)
        rate = loadgen.wrk(
            server.url,
            path,
            self.connections,
            seconds,
            ctx.scratch,
            headers=self.headers,
            body_length=self.body_length,
            status=self.status,
        )
        return Measured(rate, seconds)


class SequentialGet(Workload):
    """GET one path ``sequential_count`` times, one after another on one connection.

    For requests that take seconds (the catalog on S3 walks every repository
    with listings), where a timed wrk run would end before the first reply.
    """

    def __init__(self, name: str, title: str, key: str) -> None:
        self.name, self.title, self.key = name, title, key
        self.body_length = 0

    def ready(self, ctx: Context, server: Server) -> None:
        path = ctx.content.path(self.key)
        self.body_length = len(_checked_reply(ctx, server, "GET", path, {}, None).body)

    def run(self, ctx: Context, server: Server) -> Measured:
        count = ctx.params.sequential_count
        path = ctx.content.path(self.key)
        host, port, _ = rawhttp.split_url(server.url)
        with rawhttp.Connection(host, port) as conn:
            started = time.perf_counter()
            for _ in range(count):
                reply = rawhttp.expect(conn.request("GET", path), 200, f"GET {path}")
                if len(reply.body) != self.body_length:
                    raise rawhttp.HttpError(f"GET {path}: {len(reply.body)} bytes, not the same")
            seconds = time.perf_counter() - started
        return Measured(count / seconds, seconds)


class PutManifests(Workload):
    name = "put-manifest"
    title = "PUT distinct small manifests by tag, 16 concurrent"

    def run(self, ctx: Context, server: Server) -> Measured:
        p = ctx.params
        config, layer = ctx.scratch / "config.json", ctx.scratch / "layer.bin"
        if not config.exists():
            config.write_bytes(ctx.content.config)
            layer.write_bytes(ctx.content.layer)
        rate, seconds, startup_cpu = loadgen.put_manifests(
            server.url,
            fixtures.PUT_REPO,
            p.put_processes,
            p.put_coroutines,
            p.put_count,
            f"r{ctx.round}",
            config,
            layer,
        )
        return Measured(rate, seconds, startup_cpu)


def catalog_one_at_a_time() -> Workload:
    """The catalog workload where one request takes seconds (S3)."""
    return SequentialGet(
        "catalog", "catalog ?n=1000, 1000 repositories, one request at a time", "catalog"
    )


def all_workloads() -> list[Workload]:
    return [
        Push(None),
        Push(8 * MIB),
        Pull(1),
        Pull(4),
        PullStorm(),
        HeadBlob(),
        WrkGet("get-blob", "GET 4 KiB blob, 64 connections (wrk -t1)", "blob4k", 64),
        WrkGet(
            "get-manifest",
            "GET manifest by tag, docker's Accept list, 64 connections (wrk -t1)",
            "manifest",
            64,
            accept=DOCKER_ACCEPT,
        ),
        PutManifests(),
        WrkGet("tags-list", "tags/list, 1000 tags, 16 connections (wrk -t1)", "tags", 16),
        WrkGet(
            "catalog", "catalog ?n=1000, 1000 repositories, 16 connections (wrk -t1)", "catalog", 16
        ),
    ]
