"""``python -m bench --notifications``: what one notification endpoint costs cargohold.

Two cargohold servers side by side, each on its own fresh filesystem root given
the same fixtures: "off" with no endpoint, "on" with one endpoint, a receiver
on a loopback port that answers 200 at once (``tests/support/webhooks.py``).
The push, PUT manifest and HEAD small blob workloads run against both,
interleaved as the other modes interleave. Every write's event on "on" is
fsynced before its reply (group commit), and every pull's spooled; unless the
receiver got events the run fails, since it would not have measured them.

Prints per workload the median of each and the ratio on/off, then whether the
target (on/off >= 0.9 on push and PUT manifest) was met; writes every raw
sample to JSON (``bench/results/notifications.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import Any

from tests.support.webhooks import webhook_receiver

from bench import fixtures, report, runner, servers
from bench.client import BenchError
from bench.runner import say
from bench.servers import CARGOHOLD
from bench.workloads import Context, Params, all_workloads

OFF, ON = "off", "on"
WORKLOADS = ("push-monolithic", "put-manifest", "head-blob")
TARGETED = ("push-monolithic", "put-manifest")
TARGET = 0.9


def run(args: argparse.Namespace, json_path: Path) -> int:
    began = time.perf_counter()
    quick = bool(args.quick)
    rounds = args.rounds or (1 if quick else 3)
    params = Params.quick() if quick else Params()
    wanted = set(args.only.split(",")) if args.only else set(WORKLOADS)
    workloads = [w for w in all_workloads() if w.name in WORKLOADS and w.name in wanted]
    document: dict[str, Any] = report.environment(go=False)
    document.update(mode="notifications", quick=quick, rounds=rounds, params=vars(params))
    say(f"bench: cargohold without and with one notification endpoint, {rounds} round(s)")
    content = fixtures.Content.generate()
    with (
        webhook_receiver() as receiver,
        servers.workdir(args.keep) as workdir,
        contextlib.ExitStack() as stack,
    ):
        endpoint = {"name": "bench", "url": receiver.url}
        extra = {"notifications": {"endpoints": [endpoint]}}
        pair = {
            OFF: stack.enter_context(servers.start(CARGOHOLD, workdir, label=OFF)),
            ON: stack.enter_context(
                servers.start(CARGOHOLD, workdir, label=ON, config_extra=extra)
            ),
        }
        document["setup_seconds"] = {
            label: runner.setup(server, content) for label, server in pair.items()
        }
        ctx = Context(content=content, params=params, scratch=workdir)
        samples = runner.interleave(ctx, workloads, pair, rounds)
        received = len(receiver.events())
        if received == 0:
            raise BenchError("the receiver got no event: notifications were not on")
        say(f"bench: {ON}: the receiver got {received:,} events")
        document["events_received"] = received
        stack.close()
    document.update(report.summarise_run(workloads, samples, ratio=(ON, OFF)))
    document["target"] = target = report.target(document["workloads"], TARGETED, TARGET)
    document["total_seconds"] = time.perf_counter() - began
    report.write_json(json_path, document)
    print(
        report.table(
            document["workloads"],
            pair=(OFF, ON),
            titles=(OFF, ON),
            short=(OFF, ON),
            ratio_title="on/off",
        ),
        flush=True,
    )
    print(f"\n{report.target_line(target, 'on/off', 'push and PUT manifest')}", flush=True)
    return 0
