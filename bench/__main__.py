"""``python -m bench``: cargohold against CNCF Distribution, side by side.

Starts cargohold and Debian's ``docker-registry`` (filesystem storage, fresh
roots, log level error, no access log) on free loopback ports, gives both the
same content, then runs every workload against both, interleaved: in even
rounds cargohold first, in odd rounds the Go registry first. Prints per
workload the median of each, the ratio (> 1 means cargohold is better) and
each server's peak RSS; writes every raw sample to JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bench import fixtures, report, runner, servers
from bench.client import BenchError
from bench.rawhttp import HttpError
from bench.runner import Sample
from bench.servers import CARGOHOLD, GO, Server
from bench.workloads import Context, Params, Workload, all_workloads

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def _parse(argv: list[str]) -> argparse.Namespace:
    names = [workload.name for workload in all_workloads()]
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="cargohold against CNCF Distribution (docker-registry), side by side.",
    )
    parser.add_argument("--quick", action="store_true", help="1 round, short runs (< 2 min)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, or 1 with --quick)")
    parser.add_argument("--only", help=f"comma-separated workloads: {','.join(names)}")
    parser.add_argument(
        "--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})"
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="also run every workload against a trivial server, to show the clients' capacity",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--s3", action="store_true", help="S3 storage (not yet)")
    args = parser.parse_args(argv)
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.only:
        unknown = set(args.only.split(",")) - set(names)
        if unknown:
            parser.error(
                f"unknown workload(s) {', '.join(sorted(unknown))}; known: {', '.join(names)}"
            )
    return args


def _select(only: str | None) -> list[Workload]:
    workloads = all_workloads()
    if only:
        wanted = set(only.split(","))
        workloads = [workload for workload in workloads if workload.name in wanted]
    return workloads


def _require_tools() -> None:
    missing = [tool for tool in ("wrk", "ab", "docker-registry") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"bench: missing {', '.join(missing)} (Debian packages wrk, apache2-utils,"
            " docker-registry: run `make debs` as root)"
        )


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _setup(server: Server, content: fixtures.Content) -> float:
    started = time.perf_counter()
    fixtures.populate(server.url, content)
    fixtures.check(server.url, content)
    seconds = time.perf_counter() - started
    _say(f"bench: {server.name}: set up and checked in {seconds:.1f} s")
    return seconds


def _rounds(
    ctx: Context, workloads: list[Workload], pair: dict[str, Server], rounds: int
) -> dict[str, dict[str, list[Sample]]]:
    samples: dict[str, dict[str, list[Sample]]] = {
        w.name: {CARGOHOLD: [], GO: []} for w in workloads
    }
    for number in range(rounds):
        ctx.round = number
        order = (CARGOHOLD, GO) if number % 2 == 0 else (GO, CARGOHOLD)
        for index, workload in enumerate(workloads):
            workload.prepare(ctx, index)
            for name in order:
                sample = runner.timed(ctx, workload, pair[name])
                samples[workload.name][name].append(sample)
                _say(
                    f"bench: round {number + 1}/{rounds} {workload.name:16} {name:9}"
                    f" {sample.value:10,.1f} {workload.unit:5}"
                    f"  cpu client {sample.client_cpu:3.0f} %"
                    f" server {sample.server_cpu:3.0f} % softirq {sample.irq_cpu:3.0f} %"
                    f" other {sample.other_cpu:3.0f} %"
                )
    return samples


def _calibrate(
    ctx: Context, workloads: list[Workload], workdir: Path
) -> dict[str, dict[str, float]]:
    """Each workload once against the trivial server: what the clients can drive."""
    found: dict[str, dict[str, float]] = {}
    with servers.start_trivial(workdir, ctx.content.path("big"), ctx.content.big) as trivial:
        for index, workload in enumerate(workloads):
            workload.prepare(ctx, index)
            sample = runner.timed(ctx, workload, trivial)
            found[workload.name] = {
                "value": sample.value,
                "client_cpu": sample.client_cpu,
                "server_cpu": sample.server_cpu,
            }
            _say(
                f"bench: calibration {workload.name:16} {sample.value:10,.1f} {workload.unit:5}"
                f"  cpu client {sample.client_cpu:3.0f} % trivial server {sample.server_cpu:3.0f} %"
            )
    return found


def run(args: argparse.Namespace) -> int:
    began = time.perf_counter()
    quick = bool(args.quick)
    rounds = args.rounds or (1 if quick else 3)
    params = Params.quick() if quick else Params()
    workloads = _select(args.only)
    document: dict[str, Any] = report.environment()
    document.update(quick=quick, rounds=rounds, params=vars(params))
    _say(f"bench: {rounds} round(s) of {len(workloads)} workload(s); generating content")
    content = fixtures.Content.generate()
    with servers.workdir(args.keep) as workdir, contextlib.ExitStack() as stack:
        pair = {name: stack.enter_context(servers.start(name, workdir)) for name in (CARGOHOLD, GO)}
        document["setup_seconds"] = {name: _setup(server, content) for name, server in pair.items()}
        ctx = Context(content=content, params=params, scratch=workdir)
        samples = _rounds(ctx, workloads, pair, rounds)
        if args.calibrate:
            started = time.perf_counter()
            document["calibration"] = _calibrate(ctx, workloads, workdir)
            document["calibration_seconds"] = time.perf_counter() - started
        stack.close()  # stop the servers before removing their roots
        document["total_seconds"] = time.perf_counter() - began
        _report(args.json, document, workloads, samples)
        _say(f"bench: removing {workdir}")
    return 0


def _report(
    path: Path,
    document: dict[str, Any],
    workloads: list[Workload],
    samples: dict[str, dict[str, list[Sample]]],
) -> None:
    summary = report.summarise(workloads, samples)
    document["workloads"] = summary
    document["rss_peak_kib"] = {
        name: max((entry["rss_peak_kib"][name] for entry in summary.values()), default=0)
        for name in (CARGOHOLD, GO)
    }
    report.write_json(path, document)
    calibration = document.get("calibration")
    capacity = (
        {name: value["value"] for name, value in calibration.items()} if calibration else None
    )
    print(report.table(summary, capacity), flush=True)
    spent = f"{document['total_seconds']:.0f} s"
    if calibration:
        spent += f" ({document['calibration_seconds']:.0f} s of it calibrating)"
    print(f"\n{document['rounds']} round(s) in {spent}; raw samples in {path}", flush=True)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # Unwind like Ctrl-C so that every server is stopped and the scratch removed.
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.s3:
        _say("bench: --s3: not yet (the benchmark compares filesystem storage only)")
        return 2
    _require_tools()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args)
    except (BenchError, HttpError) as exc:
        _say(f"bench: FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        _say("bench: interrupted")
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
