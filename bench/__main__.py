"""``python -m bench``: cargohold against CNCF Distribution, side by side.

Starts cargohold and Debian's ``docker-registry`` (filesystem storage, fresh
roots, log level error, no access log) on free loopback ports, gives both the
same content, then runs every workload against both, interleaved: in even
rounds cargohold first, in odd rounds the Go registry first. Prints per
workload the median of each, the ratio (> 1 means cargohold is better) and
each server's peak RSS; writes every raw sample to JSON.

``--s3`` runs the workloads with both servers on one SeaweedFS (``bench.s3``),
``--s3 --redis`` compares the Redis blob descriptor cache with none
(``bench.rediscache``), ``--copy`` compares ``cargohold copy`` with
``skopeo copy`` (``bench.imagecopy``), ``--metrics`` compares cargohold with
metrics and tracing off and on (``bench.metrics``), ``--notifications`` without
and with one webhook endpoint (``bench.notifications``), ``--proxy`` both
registries as pull-through caches of one upstream (``bench.proxy``), ``--gc``
``cargohold gc`` against Distribution's ``garbage-collect`` on the same roots
(``bench.gc``), ``--scale`` both on one root of 1k, 10k and 100k repositories
(``bench.scale``).
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
from bench.runner import Sample, say
from bench.servers import CARGOHOLD, GO
from bench.workloads import Context, Params, PullStorm, Workload, all_workloads

RESULTS = Path(__file__).resolve().parent / "results"
STORM = PullStorm.name
#: Where each mode writes its results unless --json says otherwise.
DEFAULT_JSON = {
    "filesystem": RESULTS / "latest.json",
    "s3": RESULTS / "s3.json",
    "redis": RESULTS / "s3-redis.json",
    "copy": RESULTS / "copy.json",
    "metrics": RESULTS / "metrics.json",
    "notifications": RESULTS / "notifications.json",
    "proxy": RESULTS / "proxy.json",
    "gc": RESULTS / "gc.json",
    "scale": RESULTS / "scale.json",
}


def _parse(argv: list[str]) -> argparse.Namespace:
    names = [workload.name for workload in all_workloads()]
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="cargohold against CNCF Distribution (docker-registry), side by side.",
    )
    parser.add_argument("--quick", action="store_true", help="1 round, short runs")
    parser.add_argument(
        "--rounds",
        type=int,
        help="rounds (default 3, 5 with --proxy, 3 or 1 by size with --gc, 1 with --quick)",
    )
    parser.add_argument("--only", help=f"comma-separated workloads: {','.join(names)}")
    parser.add_argument(
        "--json",
        type=Path,
        help=f"results file (default {DEFAULT_JSON['filesystem']}, or s3.json, s3-redis.json,"
        " copy.json, metrics.json, notifications.json, proxy.json, gc.json beside it for the"
        " other modes)",
    )
    parser.add_argument(
        "--calibrate",
        action="store_true",
        help="also run every workload against a trivial server, to show the clients' capacity",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument(
        "--s3",
        action="store_true",
        help="both servers on one SeaweedFS, redirects on and off",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="with --s3: HEAD blob and GET manifest with and without the Redis cache",
    )
    parser.add_argument(
        "--copy",
        action="store_true",
        help="cargohold copy against skopeo copy of a 1 GiB image between two registries",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="two cargohold servers, metrics and tracing off and on: HEAD/GET small blob,"
        " GET/PUT manifest",
    )
    parser.add_argument(
        "--notifications",
        action="store_true",
        help="two cargohold servers, without and with one notification endpoint: push,"
        " PUT manifest, HEAD small blob",
    )
    parser.add_argument(
        "--proxy",
        action="store_true",
        help="cargohold and Go as pull-through caches of one Go upstream: cold, warm and"
        " 32 concurrent warm pulls of a 5-layer image",
    )
    parser.add_argument("--layers", type=int, help="with --proxy: layers of the image (default 5)")
    parser.add_argument(
        "--layer-mib", type=float, help="with --proxy: MiB of each layer (default 20)"
    )
    parser.add_argument(
        "--gc",
        action="store_true",
        help="cargohold gc against docker-registry garbage-collect, plain and with"
        " --delete-untagged, on copies of one root of 10k and one of 100k blobs",
    )
    parser.add_argument(
        "--gc-sizes",
        help="with --gc: comma-separated blob counts of the roots (default 10000,100000,"
        " or 10000 with --quick)",
    )
    parser.add_argument(
        "--gc-dir",
        type=Path,
        help="with --gc: where the roots are written (default /dev/shm, tmpfs)",
    )
    parser.add_argument(
        "--scale-out",
        action="store_true",
        help="1, 2 and 4 cargohold processes on one SeaweedFS and one Redis: GET manifest and"
        " HEAD blob spread over them, Go beside (results in scale-out.json)",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="both registries on one root of 1k, 10k and 100k repositories (and as many tags"
        " in one): GET manifest, HEAD blob, catalog and tags pages, the full catalog walk",
    )
    parser.add_argument(
        "--scale-sizes",
        help="with --scale: comma-separated repository counts (default 1000,10000,100000,"
        " or 1000,10000 with --quick)",
    )
    parser.add_argument(
        "--scale-dir",
        type=Path,
        help="with --scale: the registry root to add to (default a fresh folder in /dev/shm);"
        " the run writes under its own prefix and removes it afterwards unless --keep",
    )
    parser.add_argument(
        "--scale-walk-budget",
        type=float,
        help="with --scale: seconds after which a full catalog walk is cut (default 300)",
    )
    args = parser.parse_args(argv)
    _check_gc(parser, args)
    _check_scale(parser, args)
    if args.proxy and (
        args.s3 or args.copy or args.calibrate or args.metrics or args.notifications or args.only
    ):
        parser.error(
            "--proxy takes no --s3, --copy, --calibrate, --metrics, --notifications or --only"
        )
    if (args.layers is not None or args.layer_mib is not None) and not args.proxy:
        parser.error("--layers and --layer-mib go with --proxy")
    if args.layers is not None and args.layers < 1:
        parser.error("--layers must be at least 1")
    if args.layer_mib is not None and args.layer_mib <= 0:
        parser.error("--layer-mib must be positive")
    if args.notifications and (args.s3 or args.copy or args.calibrate or args.metrics):
        parser.error("--notifications takes no --s3, --copy, --calibrate or --metrics")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.redis and not args.s3:
        parser.error("--redis compares caches on S3 storage: use --s3 --redis")
    if args.copy and (args.s3 or args.only or args.calibrate):
        parser.error("--copy takes no --s3, --only or --calibrate")
    if args.calibrate and args.s3:
        parser.error("--calibrate goes with the filesystem comparison only")
    if args.redis and args.only:
        parser.error("--redis runs head-blob and get-manifest; it takes no --only")
    if args.metrics and (args.s3 or args.copy or args.calibrate):
        parser.error("--metrics takes no --s3, --copy or --calibrate")
    if args.metrics and args.only:
        from bench.metrics import WORKLOADS

        outside = set(args.only.split(",")) - set(WORKLOADS)
        if outside:
            parser.error(f"--metrics runs {', '.join(WORKLOADS)}; not {', '.join(sorted(outside))}")
    if args.only:
        unknown = set(args.only.split(",")) - set(names)
        if unknown:
            parser.error(
                f"unknown workload(s) {', '.join(sorted(unknown))}; known: {', '.join(names)}"
            )
    return args


def _check_gc(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.gc_sizes is not None or args.gc_dir is not None) and not args.gc:
        parser.error("--gc-sizes and --gc-dir go with --gc")
    if not args.gc:
        return
    others = ("s3", "copy", "calibrate", "metrics", "notifications", "proxy", "only")
    if any(getattr(args, name) for name in others):
        parser.error(f"--gc takes no {', '.join('--' + name for name in others)}")
    if args.gc_sizes is not None:
        from bench.gcroot import MIN_BLOBS

        sizes = args.gc_sizes.split(",")
        if not all(size.isdigit() and int(size) >= MIN_BLOBS for size in sizes):
            parser.error(f"--gc-sizes: blob counts of at least {MIN_BLOBS}, comma-separated")


def _check_scale(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    options = (args.scale_sizes, args.scale_dir, args.scale_walk_budget)
    if any(option is not None for option in options) and not args.scale:
        parser.error("--scale-sizes, --scale-dir and --scale-walk-budget go with --scale")
    if not args.scale:
        return
    others = ("s3", "copy", "calibrate", "metrics", "notifications", "proxy", "gc", "only")
    if any(getattr(args, name) for name in others):
        parser.error(f"--scale takes no {', '.join('--' + name for name in others)}")
    if args.scale_sizes is not None:
        sizes = args.scale_sizes.split(",")
        if not all(size.isdigit() and int(size) >= 1000 for size in sizes):
            parser.error("--scale-sizes: repository counts of at least 1000, comma-separated")
    if args.scale_dir is not None and not args.scale_dir.is_dir():
        parser.error(f"--scale-dir: {args.scale_dir} is not a folder")
    if args.scale_walk_budget is not None and args.scale_walk_budget <= 0:
        parser.error("--scale-walk-budget must be positive")


def _select(only: str | None) -> list[Workload]:
    workloads = all_workloads()
    if only:
        wanted = set(only.split(","))
        workloads = [workload for workload in workloads if workload.name in wanted]
    return workloads


def _mode(args: argparse.Namespace) -> str:
    if args.scale:
        return "scale"
    if args.gc:
        return "gc"
    if args.proxy:
        return "proxy"
    if args.copy:
        return "copy"
    if args.metrics:
        return "metrics"
    if args.notifications:
        return "notifications"
    if args.s3:
        return "redis" if args.redis else "s3"
    return "filesystem"


def _require_tools(mode: str) -> None:
    needed = {
        "filesystem": ("wrk", "ab", "docker-registry"),
        "s3": ("wrk", "ab", "docker-registry"),
        "redis": ("wrk", "ab", "docker-registry", "redis-server"),
        "copy": ("skopeo",),
        "metrics": ("wrk", "ab"),
        "notifications": ("ab",),
        "proxy": ("docker-registry",),
        "gc": ("docker-registry",),
        "scale": ("wrk", "ab", "docker-registry"),
    }[mode]
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        raise SystemExit(
            f"bench: missing {', '.join(missing)} (Debian packages wrk, apache2-utils,"
            " docker-registry, redis-server, skopeo: run `make debs` as root)"
        )


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
            say(
                f"bench: calibration {workload.name:16} {sample.value:10,.1f} {workload.unit:5}"
                f"  cpu client {sample.client_cpu:3.0f} % trivial server {sample.server_cpu:3.0f} %"
            )
    return found


def run(args: argparse.Namespace, json_path: Path) -> int:
    began = time.perf_counter()
    quick = bool(args.quick)
    rounds = args.rounds or (1 if quick else 3)
    params = Params.quick() if quick else Params()
    workloads = _select(args.only)
    document: dict[str, Any] = report.environment()
    document.update(quick=quick, rounds=rounds, params=vars(params))
    say(f"bench: {rounds} round(s) of {len(workloads)} workload(s); generating content")
    content = fixtures.Content.generate(with_storm=any(w.name == STORM for w in workloads))
    with servers.workdir(args.keep) as workdir, contextlib.ExitStack() as stack:
        pair = {name: stack.enter_context(servers.start(name, workdir)) for name in (CARGOHOLD, GO)}
        document["setup_seconds"] = {
            name: runner.setup(server, content) for name, server in pair.items()
        }
        ctx = Context(content=content, params=params, scratch=workdir)
        samples = runner.interleave(ctx, workloads, pair, rounds)
        if args.calibrate:
            started = time.perf_counter()
            document["calibration"] = _calibrate(ctx, workloads, workdir)
            document["calibration_seconds"] = time.perf_counter() - started
        stack.close()  # stop the servers before removing their roots
        document["total_seconds"] = time.perf_counter() - began
        _report(json_path, document, workloads, samples)
    return 0


def _report(
    path: Path,
    document: dict[str, Any],
    workloads: list[Workload],
    samples: dict[str, dict[str, list[Sample]]],
) -> None:
    document.update(report.summarise_run(workloads, samples))
    summary = document["workloads"]
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
    mode = _mode(args)
    _require_tools(mode)
    json_path = args.json or DEFAULT_JSON[mode]
    signal.signal(signal.SIGTERM, _terminate)
    try:
        # Imported when wanted: the S3 modes pull in botocore and the tests' helpers.
        if args.scale_out:
            from bench import scaleout

            return scaleout.run(args, args.json or RESULTS / "scale-out.json")
        if mode == "copy":
            from bench import imagecopy

            return imagecopy.run(args, json_path)
        if mode == "scale":
            from bench import scale

            return scale.run(args, json_path)
        if mode == "gc":
            from bench import gc

            return gc.run(args, json_path)
        if mode == "proxy":
            from bench import proxy

            return proxy.run(args, json_path)
        if mode == "metrics":
            from bench import metrics

            return metrics.run(args, json_path)
        if mode == "notifications":
            from bench import notifications

            return notifications.run(args, json_path)
        if mode == "redis":
            from bench import rediscache

            return rediscache.run(args, json_path)
        if mode == "s3":
            from bench import s3

            # 64 x 200 MiB through SeaweedFS would measure the object store: filesystem only.
            workloads = [w for w in _select(args.only) if w.name != STORM]
            return s3.run(args, json_path, workloads)
        return run(args, json_path)
    except (BenchError, HttpError) as exc:
        say(f"bench: FAILED: {exc}")
        return 1
    except KeyboardInterrupt:
        say("bench: interrupted")
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
