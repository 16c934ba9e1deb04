"""``python -m bench --scale-out``: 1, 2 and 4 cargohold processes on one bucket and one Redis.

One SeaweedFS (redirects off, so that every server answers a blob HEAD itself)
and one ``redis-server`` (the blob descriptor cache, shared by every process,
as a fleet behind a load balancer would share it). cargohold's processes run
``cargohold serve config.yml --workers 1`` on one configuration, each on its
own port (``REGISTRY_HTTP_ADDR``), like ``tests/s3/conftest.py``'s
``serving()``. The fixtures (``bench/r0000``: a small blob and an image) are
pushed once through the first process and read back from each.

Each round starts 1, 2, then 4 processes (the reverse in odd rounds), then the
Go registry (Distribution 2.8, one process using every core, in its own root
directory and Redis database) for reference, and times against each set:

- GET manifest by tag (docker's ``Accept`` list), 64 connections: one ``wrk``
  with one thread per process, each thread's 64/N connections to its own port
  (the Lua ``setup`` hook sets ``thread.addr``);
- HEAD small blob, 64 connections: N ``ab -k -i`` in parallel, 64/N connections
  each, to one port each, their rates summed (wrk 4.1 hangs on HEAD).

CPU is given as in the other modes, as a percentage of one core over the run:
the client (wrk or the ab processes), all N servers' process trees summed, the
backends (SeaweedFS and redis-server), the kernel's (soft) interrupts, and
everything else. On a 2-core machine client, servers and backends share two
cores: the growth factor flattens once they fill them, whatever the servers
could do with more.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.support.servers import free_port, stop, wait_for_http

from bench import backends, fixtures, loadgen, procs, report, runner, servers
from bench.client import DOCKER_ACCEPT, BenchError
from bench.runner import say
from bench.servers import CARGOHOLD, GO, Server
from bench.workloads import Context, HeadBlob, Params, WrkGet

#: How many cargohold processes each set runs.
SCALES = (1, 2, 4)
#: Connections of every run, spread evenly over the processes.
CONNECTIONS = 64
#: Each registry's root directory in the bucket.
ROOTS = {CARGOHOLD: "/cargohold", GO: "/go"}


@dataclass
class Sample:
    """One timed run against one set of servers; CPU in percent of one core."""

    value: float
    round: int
    client_cpu: float
    server_cpu: float
    backend_cpu: float
    irq_cpu: float
    other_cpu: float
    #: Sum over the processes of each one's peak tree RSS during the run.
    rss_peak_kib: int


def _label(scale: int) -> str:
    return f"cargohold x{scale}"


class GetManifest:
    """GET the image's manifest by tag with docker's ``Accept`` list: one wrk, a thread
    per server."""

    name = "get-manifest"

    def __init__(self) -> None:
        self.check = WrkGet("get-manifest", "", "manifest", CONNECTIONS, accept=DOCKER_ACCEPT)

    def ready(self, ctx: Context, server: Server) -> None:
        self.check.ready(ctx, server)

    def run(self, ctx: Context, fleet: list[Server]) -> float:
        path = ctx.content.path("manifest")
        return wrk_spread(fleet, self.check, path, ctx.params.rate_seconds, ctx.scratch)


class HeadSmallBlob:
    """HEAD the small blob: an ab per server, at once."""

    name = "head-blob"

    def __init__(self) -> None:
        self.check = HeadBlob()

    def ready(self, ctx: Context, server: Server) -> None:
        self.check.ready(ctx, server)

    def run(self, ctx: Context, fleet: list[Server]) -> float:
        return ab_spread(fleet, ctx.content.path("small"), ctx.params.rate_seconds)


SpreadWorkload = GetManifest | HeadSmallBlob


@contextlib.contextmanager
def cargohold_fleet(config: Path, count: int, workdir: Path) -> Iterator[list[Server]]:
    """``count`` ``cargohold serve --workers 1`` processes on ``config``, each on its own port."""
    ports: list[int] = []
    while len(ports) < count:
        if (port := free_port()) not in ports:
            ports.append(port)
    with contextlib.ExitStack() as stack:
        started = []
        for number, port in enumerate(ports):
            log = stack.enter_context(open(workdir / f"cargohold-{number}.log", "ab"))
            process = subprocess.Popen(
                [servers.cargohold_executable(), "serve", str(config), "--workers", "1"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}"},
                start_new_session=True,
            )
            stack.callback(stop, process)
            started.append((port, process))
        fleet = []
        # Started together, waited for together: each takes a second or so to import.
        for number, (port, process) in enumerate(started):
            url = f"http://127.0.0.1:{port}"
            try:
                wait_for_http(f"{url}/v2/", process, timeout=60)
            except RuntimeError as exc:
                raise BenchError(f"cargohold-{number}: {exc} (see its log)") from None
            fleet.append(Server(CARGOHOLD, url, workdir, process, f"cargohold-{number}"))
        yield fleet


def wrk_spread(
    fleet: list[Server], workload: WrkGet, path: str, duration: float, scratch: Path
) -> float:
    """GET ``path`` with one ``wrk`` whose threads each load one server; requests per second.

    Every reply must have the status and body length ``workload.ready`` saw.
    """
    rate = loadgen.wrk_rate(
        fleet[0].url,
        path,
        CONNECTIONS,
        duration,
        scratch,
        workload.headers,
        workload.body_length,
        threads=len(fleet),
        status=workload.status or 200,
        ports=[server.host_port[1] for server in fleet],
    )
    return rate.per_second


def ab_spread(fleet: list[Server], path: str, duration: float) -> float:
    """HEAD ``path`` with one ``ab`` per server at once, 64/N connections each; summed req/s."""
    each = CONNECTIONS // len(fleet)
    with ThreadPoolExecutor(len(fleet)) as pool:
        rates = pool.map(lambda s: loadgen.ab_head(s.url, path, each, duration), fleet)
        return sum(rates)


def timed(ctx: Context, workload: SpreadWorkload, fleet: list[Server], warm: list[str]) -> Sample:
    """Check every server of ``fleet``, warm the storage's files, then load them all at once."""
    for server in fleet:
        workload.ready(ctx, server)
    os.sync()
    runner.touch(warm)
    pids = [server.pid for server in fleet]
    servers_before = sum(procs.cpu_seconds(pid) for pid in pids)
    backend_before = sum(procs.cpu_seconds(pid) for pid in ctx.backend_pids)
    client_before = procs.self_cpu_seconds() + procs.children_cpu_seconds()
    busy_before, irq_before = runner.system_seconds()
    started = time.perf_counter()
    seconds = ctx.params.rate_seconds
    with contextlib.ExitStack() as stack:
        peaks = [stack.enter_context(procs.sample_rss(pid)) for pid in pids]
        value = workload.run(ctx, fleet)
    wall = time.perf_counter() - started
    server_cpu = sum(procs.cpu_seconds(pid) for pid in pids) - servers_before
    backend_cpu = sum(procs.cpu_seconds(pid) for pid in ctx.backend_pids) - backend_before
    client_cpu = procs.self_cpu_seconds() + procs.children_cpu_seconds() - client_before
    busy_after, irq_after = runner.system_seconds()
    busy, irq = busy_after - busy_before, irq_after - irq_before
    other = max(0.0, busy - irq - server_cpu - client_cpu - backend_cpu)
    return Sample(
        value=value,
        round=ctx.round,
        client_cpu=100 * client_cpu / seconds,
        server_cpu=100 * server_cpu / seconds,
        backend_cpu=100 * backend_cpu / seconds,
        irq_cpu=100 * irq / wall,
        other_cpu=100 * other / wall,
        rss_peak_kib=sum(peak.peak_kib for peak in peaks),
    )


def run(args: argparse.Namespace, json_path: Path) -> int:
    others = ["s3", "redis", "copy", "calibrate", "metrics", "notifications", "proxy", "gc"]
    others += ["scale", "only"]
    if any(getattr(args, name, None) for name in others):
        raise SystemExit(f"bench: --scale-out takes no {', '.join('--' + n for n in others)}")
    if shutil.which("redis-server") is None:
        raise SystemExit("bench: missing redis-server (Debian package redis-server)")
    began = time.perf_counter()
    quick = bool(args.quick)
    rounds = args.rounds or (1 if quick else 3)
    params = Params.quick() if quick else Params()
    workloads: list[SpreadWorkload] = [GetManifest(), HeadSmallBlob()]
    document: dict[str, Any] = report.environment()
    document["versions"]["seaweedfs"] = backends.version()
    document.update(
        storage="s3",
        redirect=False,
        cache="redis",
        quick=quick,
        rounds=rounds,
        params=vars(params),
        scales=list(SCALES),
        connections=CONNECTIONS,
    )
    say(f"bench: scale-out on S3 + Redis, {rounds} round(s) of {SCALES}; generating content")
    content = fixtures.Content.generate()
    labels = [_label(scale) for scale in SCALES] + [GO]
    samples: dict[str, dict[str, list[Sample]]] = {
        w.name: {label: [] for label in labels} for w in workloads
    }
    with (
        servers.workdir(args.keep) as workdir,
        backends.seaweedfs(workdir / "seaweedfs") as s3,
        backends.redis(workdir / "redis") as redis,
    ):
        addr = f"{redis.host}:{redis.port}"
        config = workdir / "cargohold-scale-config.yml"
        storage = s3.storage(ROOTS[CARGOHOLD], redirect=False, cache=True)
        # No pool settings: cargohold refuses Go's maxidle (its client keeps idle connections).
        redis_section = {"redis": {"addr": addr, "db": 0}}
        config.write_text(servers.config_text(free_port(), storage, extra=redis_section))
        go_storage = s3.storage(ROOTS[GO], redirect=False, cache=True)
        go_redis = {"addr": addr, "db": 1}
        ctx = Context(
            content=content,
            params=params,
            scratch=workdir,
            backend_pids=[s3.pid, redis.process.pid],
        )
        setup: dict[str, float] = {}
        with cargohold_fleet(config, 1, workdir) as fleet:
            setup[CARGOHOLD] = runner.setup(fleet[0], content, full=False)
        with servers.start(GO, workdir, storage=go_storage, root=s3.data, redis=go_redis) as go:
            setup[GO] = runner.setup(go, content, full=False)
        document["setup_seconds"] = setup
        warm = runner.snapshot(s3.data)
        for number in range(rounds):
            ctx.round = number
            order = SCALES if number % 2 == 0 else SCALES[::-1]
            for scale in order:
                with cargohold_fleet(config, scale, workdir) as fleet:
                    _round(ctx, workloads, _label(scale), fleet, warm, samples, rounds)
            with servers.start(GO, workdir, storage=go_storage, root=s3.data, redis=go_redis) as go:
                _round(ctx, workloads, GO, [go], warm, samples, rounds)
        document["total_seconds"] = time.perf_counter() - began
        document["workloads"] = summarise(samples)
        report.write_json(json_path, document)
        print(table(document["workloads"]), flush=True)
        print(
            f"\n{rounds} round(s) in {document['total_seconds']:.0f} s; raw samples in {json_path}",
            flush=True,
        )
    return 0


def _round(
    ctx: Context,
    workloads: list[SpreadWorkload],
    label: str,
    fleet: list[Server],
    warm: list[str],
    samples: dict[str, dict[str, list[Sample]]],
    rounds: int,
) -> None:
    for workload in workloads:
        sample = timed(ctx, workload, fleet, warm)
        samples[workload.name][label].append(sample)
        say(
            f"bench: round {ctx.round + 1}/{rounds} {workload.name:12} {label:12}"
            f" {sample.value:9,.0f} req/s  cpu client {sample.client_cpu:3.0f} %"
            f" servers {sample.server_cpu:3.0f} % backend {sample.backend_cpu:3.0f} %"
            f" softirq {sample.irq_cpu:3.0f} % other {sample.other_cpu:3.0f} %"
        )


def summarise(samples: dict[str, dict[str, list[Sample]]]) -> dict[str, Any]:
    """Per workload and label: the median of every field, the growth over one process,
    and the raw samples."""
    out: dict[str, Any] = {}
    for name, by_label in samples.items():
        entry: dict[str, Any] = {}
        for label, found in by_label.items():
            medians = {
                key: statistics.median(getattr(s, key) for s in found)
                for key in asdict(found[0])
                if key != "round"
            }
            entry[label] = {"median": medians, "samples": [asdict(s) for s in found]}
        single = entry[_label(SCALES[0])]["median"]["value"]
        for value in entry.values():
            value["growth"] = value["median"]["value"] / single
        out[name] = entry
    return out


def table(summary: dict[str, Any]) -> str:
    """Per workload and process count: median req/s, growth over one process, CPU."""
    title = (
        "Scale-out on S3 (SeaweedFS) + Redis, redirects off; cargohold --workers 1 per process,"
        " Go (one process, every core) for reference. Median req/s, CPU in % of one core:"
    )
    head = ("workload", "servers", "req/s", "growth", "client", "servers", "backend", "softirq")
    rows = [(*head, "other", "RSS MiB")]
    for name, entry in summary.items():
        for label, found in entry.items():
            m = found["median"]
            rows.append(
                (
                    name,
                    label,
                    report.fmt(m["value"]),
                    f"{found['growth']:.2f}",
                    f"{m['client_cpu']:.0f}",
                    f"{m['server_cpu']:.0f}",
                    f"{m['backend_cpu']:.0f}",
                    f"{m['irq_cpu']:.0f}",
                    f"{m['other_cpu']:.0f}",
                    f"{m['rss_peak_kib'] / 1024:.0f}",
                )
            )
    return "\n".join([title, "", *report.columns(rows, right=tuple(range(2, 10)))])
