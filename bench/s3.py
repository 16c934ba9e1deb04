"""``python -m bench --s3``: both registries on one SeaweedFS, redirects off, then on.

One ``weed mini`` on free loopback ports, one bucket, a root directory per
registry (``/cargohold``, ``/go``). Each registry is given the fixtures once,
with redirects off (the set-up's read-back compares what each server itself
answers); then the rounds run twice, first with ``storage.redirect.disable:
true``, then with redirects on (the default), restarting both servers on the
same storage in between. The rounds are numbered on, so the second set pushes
new blobs and PUTs new manifests.

With redirects on, both registries answer a blob GET with a 307 to a presigned
SeaweedFS URL, and the pulls follow it: the pull figures then measure mostly
SeaweedFS. The Go registry redirects HEAD as well, cargohold answers HEAD
itself; the small-blob HEAD and GET figures count the registry's replies (a
client following the 307 makes one more request, to SeaweedFS).

The catalog walks every repository with S3 listings and takes seconds (about
3 s for cargohold, 1.3 s for Go on this machine): it is timed one request at a
time rather than with wrk. With ``--quick`` the PUT workload sends 300 manifests.

Before every timed run the runner reads SeaweedFS's data directory (volumes
and filer store), the same for both servers, so that neither meets a cold page
cache. SeaweedFS's CPU is shown apart from "other".
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import backends, fixtures, report, runner, servers
from bench.runner import say
from bench.servers import CARGOHOLD, GO, Server
from bench.workloads import Context, Params, Workload, catalog_one_at_a_time

#: Each registry's root directory in the bucket.
ROOTS = {CARGOHOLD: "/cargohold", GO: "/go"}
#: The sub-modes, in the order they run: (key in the results, redirects on).
SUBMODES = (("redirect-off", False), ("redirect-on", True))


@contextlib.contextmanager
def pair_on(
    s3: backends.S3,
    workdir: Path,
    redirect: bool,
    cache: bool = False,
    redis_addr: str | None = None,
) -> Iterator[dict[str, Server]]:
    """Both registries on ``s3``, each in its root directory; yields {name: Server}."""
    with contextlib.ExitStack() as stack:
        pair: dict[str, Server] = {}
        for db, name in enumerate((CARGOHOLD, GO)):
            storage = s3.storage(ROOTS[name], redirect=redirect, cache=cache)
            redis = {"addr": redis_addr, "db": db} if redis_addr else None
            server = servers.start(name, workdir, storage=storage, root=s3.data, redis=redis)
            pair[name] = stack.enter_context(server)
        yield pair


def run(args: argparse.Namespace, json_path: Path, workloads: list[Workload]) -> int:
    began = time.perf_counter()
    quick = bool(args.quick)
    rounds = args.rounds or (1 if quick else 3)
    # Manifest PUTs on S3 run at tens per second: 1000 would take half a minute a run.
    params = dataclasses.replace(Params.quick(), put_count=300) if quick else Params()
    workloads = [catalog_one_at_a_time() if w.name == "catalog" else w for w in workloads]
    document: dict[str, Any] = report.environment()
    document["versions"]["seaweedfs"] = backends.version()
    document.update(storage="s3", quick=quick, rounds=rounds, params=vars(params), modes={})
    say(
        f"bench: S3, redirects off then on, {rounds} round(s) of {len(workloads)} workload(s);"
        " generating content"
    )
    content = fixtures.Content.generate()
    with servers.workdir(args.keep) as workdir, backends.seaweedfs(workdir / "seaweedfs") as s3:
        first_round = 0
        for key, redirect in SUBMODES:
            with pair_on(s3, workdir, redirect) as pair:
                if "setup_seconds" not in document:
                    document["setup_seconds"] = {
                        name: runner.setup(server, content) for name, server in pair.items()
                    }
                say(f"bench: S3, {key}")
                ctx = Context(
                    content=content,
                    params=params,
                    scratch=workdir,
                    redirect=redirect,
                    backend_pids=[s3.pid],
                )
                samples = runner.interleave(ctx, workloads, pair, rounds, first_round)
            first_round += rounds
            document["modes"][key] = report.summarise_run(workloads, samples)
        document["total_seconds"] = time.perf_counter() - began
        report.write_json(json_path, document)
        for key, _redirect in SUBMODES:
            print(f"\nS3 (SeaweedFS), {key.replace('-', ' ')}:\n", flush=True)
            print(report.table(document["modes"][key]["workloads"]), flush=True)
        print(
            f"\n{rounds} round(s) per mode in {document['total_seconds']:.0f} s"
            f" (set-up {_setup_text(document['setup_seconds'])}); raw samples in {json_path}",
            flush=True,
        )
    return 0


def _setup_text(seconds: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
