"""``python -m bench --s3 --redis``: the Redis blob descriptor cache against none.

Both registries on one SeaweedFS (``bench.s3``), redirects off so that both
answer a blob HEAD themselves, each given only ``bench/r0000`` (the small blob
and the image). One ``redis-server`` serves both, cargohold in database 0 and
the Go registry in database 1, so neither reads what the other cached. Every
round restarts both servers twice on the same storage, once with
``storage.cache.blobdescriptor: redis`` and once without (the order alternates
by round), and runs the HEAD-blob and GET-manifest workloads against both,
interleaved. The check before each run fills the cache with what the run reads.

Prints the four combinations side by side, then the usual table for each.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from bench import backends, fixtures, report, runner, servers
from bench.runner import Sample, say
from bench.s3 import pair_on
from bench.servers import CARGOHOLD, GO
from bench.workloads import Context, Params, all_workloads

WORKLOADS = ("head-blob", "get-manifest")
#: The two settings compared: key in the results, cache on.
SETTINGS = (("no-cache", False), ("redis", True))


def run(args: argparse.Namespace, json_path: Path) -> int:
    began = time.perf_counter()
    quick = bool(args.quick)
    rounds = args.rounds or (1 if quick else 3)
    params = Params.quick() if quick else Params()
    workloads = [workload for workload in all_workloads() if workload.name in WORKLOADS]
    document: dict[str, Any] = report.environment()
    document["versions"]["seaweedfs"] = backends.version()
    document.update(
        storage="s3", redirect=False, quick=quick, rounds=rounds, params=vars(params), modes={}
    )
    say(f"bench: S3, Redis cache against none, {rounds} round(s); generating content")
    content = fixtures.Content.generate()
    samples: dict[str, dict[str, dict[str, list[Sample]]]] = {
        key: {w.name: {CARGOHOLD: [], GO: []} for w in workloads} for key, _ in SETTINGS
    }
    with (
        servers.workdir(args.keep) as workdir,
        backends.seaweedfs(workdir / "seaweedfs") as s3,
        backends.redis(workdir / "redis") as redis,
    ):
        redis_addr = f"{redis.host}:{redis.port}"
        for number in range(rounds):
            order = SETTINGS if number % 2 == 0 else SETTINGS[::-1]
            for key, cache in order:
                with pair_on(
                    s3, workdir, redirect=False, cache=cache, redis_addr=redis_addr
                ) as pair:
                    if "setup_seconds" not in document:
                        document["setup_seconds"] = {
                            name: runner.setup(server, content, full=False)
                            for name, server in pair.items()
                        }
                    say(f"bench: S3, {key}")
                    ctx = Context(
                        content=content,
                        params=params,
                        scratch=workdir,
                        backend_pids=[s3.pid, redis.process.pid],
                    )
                    got = runner.interleave(ctx, workloads, pair, 1, first_round=number)
                for name, by_server in got.items():
                    for server, found in by_server.items():
                        samples[key][name][server] += found
        for key, _ in SETTINGS:
            document["modes"][key] = report.summarise_run(workloads, samples[key])
        document["combinations"] = _combinations(document["modes"])
        document["total_seconds"] = time.perf_counter() - began
        report.write_json(json_path, document)
        print(combinations_table(document["combinations"]), flush=True)
        for key, _ in SETTINGS:
            print(f"\nS3 (SeaweedFS), redirects off, {key}:\n", flush=True)
            print(report.table(document["modes"][key]["workloads"]), flush=True)
        print(
            f"\n{rounds} round(s) in {document['total_seconds']:.0f} s; raw samples in {json_path}",
            flush=True,
        )
    return 0


def _combinations(modes: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per workload the median of each server with and without the cache."""
    out: dict[str, dict[str, float]] = {}
    for name in WORKLOADS:
        entry: dict[str, float] = {}
        for key, _ in SETTINGS:
            found = modes[key]["workloads"].get(name)
            if found is None:
                continue
            for server in (CARGOHOLD, GO):
                entry[f"{server}+{key}"] = found["median"][server]
        if entry:
            out[name] = entry
    return out


def combinations_table(combinations: dict[str, dict[str, float]]) -> str:
    """The four combinations per workload, and the ratios that matter."""
    title = "HEAD blob and GET manifest on S3 (SeaweedFS), redirects off, median req/s:"
    rows = [
        (
            "workload",
            "cargohold",
            "cargohold+Redis",
            "Go",
            "Go+Redis",
            "Redis gain c / Go",
            "c/Go no cache",
            "c/Go Redis",
        )
    ]
    for name, entry in combinations.items():
        c, cr = entry[f"{CARGOHOLD}+no-cache"], entry[f"{CARGOHOLD}+redis"]
        g, gr = entry[f"{GO}+no-cache"], entry[f"{GO}+redis"]
        rows.append(
            (
                name,
                report.fmt(c),
                report.fmt(cr),
                report.fmt(g),
                report.fmt(gr),
                f"{cr / c:.2f} / {gr / g:.2f}",
                f"{c / g:.2f}",
                f"{cr / gr:.2f}",
            )
        )
    return "\n".join([title, "", *report.columns(rows, right=tuple(range(1, 8)))])
