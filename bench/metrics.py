"""``python -m bench --metrics``: what metrics and tracing cost cargohold.

Two cargohold servers side by side, each on its own fresh filesystem root given
the same fixtures (``runner.setup``):

- "off": the plain configuration of the default comparison, no debug listener,
  and no ``OTEL_*`` variable in its environment;
- "on": ``http.debug.addr`` on a free loopback port with
  ``http.debug.prometheus.enabled: true``, and tracing on with a sampler that
  keeps nothing: ``OTEL_TRACES_EXPORTER=otlp``, ``OTEL_EXPORTER_OTLP_ENDPOINT``
  a free loopback port nothing listens on, ``OTEL_EXPORTER_OTLP_PROTOCOL=
  http/protobuf``, ``OTEL_TRACES_SAMPLER=traceidratio``,
  ``OTEL_TRACES_SAMPLER_ARG=0``.

The HEAD small blob, GET small blob, GET manifest and PUT manifest workloads run
against both, interleaved as the default comparison interleaves cargohold and
Go ("off" first in even rounds, "on" first in odd ones). Before the "on" server
stops, its metrics are scraped once: unless ``registry_http_requests_total``
sums to more than 0 the run fails, since it would not have measured metrics.

Prints per workload the median of each, the ratio on/off and each peak RSS,
then whether the target (on/off >= 0.9 on HEAD small blob and GET manifest)
was met; writes every raw sample to JSON (``bench/results/metrics.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from tests.support.servers import free_port

from bench import fixtures, report, runner, servers
from bench.client import BenchError
from bench.runner import say
from bench.servers import CARGOHOLD
from bench.workloads import Context, Params, Workload, all_workloads

OFF, ON = "off", "on"
#: The workloads this mode runs (``--only`` may pick among them), in the usual order.
WORKLOADS = ("head-blob", "get-blob", "get-manifest", "put-manifest")
#: on/off must reach TARGET on these.
TARGETED = ("head-blob", "get-manifest")
TARGET = 0.9
METRICS_PATH = "/metrics"
REQUESTS_TOTAL = "registry_http_requests_total"


def select(only: str | None) -> list[Workload]:
    wanted = set(only.split(",")) if only else set(WORKLOADS)
    return [w for w in all_workloads() if w.name in WORKLOADS and w.name in wanted]


def _two_ports() -> tuple[int, int]:
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


def settings(debug_port: int, otlp_port: int) -> dict[str, dict[str, Any]]:
    """Per label the ``config_extra`` and ``env`` given to ``servers.start``."""
    # "off" must not trace either: no OTEL_* variable of this process reaches it.
    inherited: dict[str, str | None] = {key: None for key in os.environ if key.startswith("OTEL_")}
    on_env: dict[str, str | None] = {
        **inherited,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0",
    }
    debug = {"addr": f"127.0.0.1:{debug_port}", "prometheus": {"enabled": True}}
    return {
        OFF: {"config_extra": {}, "env": inherited},
        ON: {"config_extra": {"http": {"debug": debug}}, "env": on_env},
    }


def requests_total(url: str) -> float:
    """The sum of ``registry_http_requests_total`` over every series at ``url``."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError) as exc:
        raise BenchError(f"scraping {url}: {exc}") from exc
    total, seen = 0.0, False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == REQUESTS_TOTAL:
                total += sample.value
                seen = True
    if not seen:
        raise BenchError(f"{url} has no {REQUESTS_TOTAL}: the metrics are not on")
    return total


def run(args: argparse.Namespace, json_path: Path) -> int:
    began = time.perf_counter()
    quick = bool(args.quick)
    rounds = args.rounds or (1 if quick else 3)
    params = Params.quick() if quick else Params()
    workloads = select(args.only)
    debug_port, otlp_port = _two_ports()
    per_label = settings(debug_port, otlp_port)
    scrape_url = f"http://127.0.0.1:{debug_port}{METRICS_PATH}"
    document: dict[str, Any] = report.environment(go=False)
    document.update(
        mode="metrics",
        quick=quick,
        rounds=rounds,
        params=vars(params),
        servers={
            label: {"config_extra": found["config_extra"], "env": found["env"]}
            for label, found in per_label.items()
        },
    )
    say(
        f"bench: cargohold with metrics and tracing off and on, {rounds} round(s) of"
        f" {len(workloads)} workload(s); generating content"
    )
    content = fixtures.Content.generate()
    with servers.workdir(args.keep) as workdir, contextlib.ExitStack() as stack:
        pair = {
            label: stack.enter_context(
                servers.start(
                    CARGOHOLD,
                    workdir,
                    label=label,
                    config_extra=found["config_extra"],
                    env=found["env"],
                )
            )
            for label, found in per_label.items()
        }
        document["setup_seconds"] = {
            label: runner.setup(server, content) for label, server in pair.items()
        }
        ctx = Context(content=content, params=params, scratch=workdir)
        samples = runner.interleave(ctx, workloads, pair, rounds)
        total = requests_total(scrape_url)  # before "on" stops
        if total <= 0:
            raise BenchError(f"{scrape_url}: {REQUESTS_TOTAL} sums to {total}: metrics are not on")
        say(f"bench: {ON}: {REQUESTS_TOTAL} sums to {total:,.0f} at {scrape_url}")
        document["scrape"] = {"url": scrape_url, REQUESTS_TOTAL: total}
        stack.close()  # stop the servers before removing their roots
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
    line = report.target_line(target, "on/off", "HEAD small blob and GET manifest")
    print(f"\n{line}", flush=True)
    print(
        f"\n{rounds} round(s) in {document['total_seconds']:.0f} s; raw samples in {json_path}",
        flush=True,
    )
    return 0
