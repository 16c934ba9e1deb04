"""The workloads, each run the same way against either server.

A workload's ``prepare`` runs once per round before the two timed runs (it
makes a distinct blob and computes its digest, so nothing is deduplicated and
no hashing is timed); ``run`` is the timed part and returns the measured rate.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import fixtures, loadgen, rawhttp
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

    @classmethod
    def quick(cls) -> Params:
        return cls(rate_seconds=3.0, pulls_one_stream=4, pulls_per_stream=2, put_count=1000)


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


@dataclass(frozen=True)
class Measured:
    value: float
    #: Seconds of load (for CPU percentages); may be shorter than the call.
    seconds: float
    #: Client CPU seconds spent outside the load (starting client processes).
    client_startup_cpu: float = 0.0


class Workload:
    name = ""
    title = ""
    unit = "req/s"

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
        total, seconds = rawhttp.pull_streams(server.url, path, self.streams, times)
        expected = fixtures.BIG_SIZE * self.streams * times
        if total != expected:
            raise rawhttp.HttpError(f"pulled {total} bytes, expected {expected}")
        return Measured(total / MIB / seconds, seconds)


class HeadBlob(Workload):
    name = "head-blob"
    title = "HEAD small blob, 64 connections (ab)"

    def run(self, ctx: Context, server: Server) -> Measured:
        seconds = ctx.params.rate_seconds
        rate = loadgen.ab_head(server.url, ctx.content.path("small"), 64, seconds)
        return Measured(rate, seconds)


class WrkGet(Workload):
    def __init__(
        self, name: str, title: str, key: str, connections: int, accept: str | None = None
    ) -> None:
        self.name, self.title, self.key = name, title, key
        self.connections = connections
        self.headers = {"Accept": accept} if accept else {}
        self.body_length = 0

    def ready(self, ctx: Context, server: Server) -> None:
        # wrk then requires every reply to carry a body of this length.
        path = ctx.content.path(self.key)
        host, port, _ = rawhttp.split_url(server.url)
        with rawhttp.Connection(host, port) as conn:
            reply = rawhttp.expect(conn.request("GET", path, self.headers), 200, f"GET {path}")
        wanted = {"blob4k": ctx.content.blob4k, "manifest": ctx.content.image}.get(self.key)
        if wanted is not None and server.name != TRIVIAL and reply.body != wanted:
            raise rawhttp.HttpError(f"GET {path}: the body differs from what was pushed")
        self.body_length = len(reply.body)

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
        )
        return Measured(rate, seconds)


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


def all_workloads() -> list[Workload]:
    return [
        Push(None),
        Push(8 * MIB),
        Pull(1),
        Pull(4),
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
