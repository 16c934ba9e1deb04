"""``python -m bench --proxy``: cargohold and the Go registry as pull-through caches, side by side.

One upstream, Debian's ``docker-registry`` (plain HTTP, no auth, filesystem) on a
free loopback port, is given one image with cargohold's client
(``cargohold.client.RemoteRegistry``): a config and ``--layers`` layers (default
5) of ``--layer-mib`` MiB (default 20) of random bytes, each a gzip stream of
stored blocks, under an OCI manifest tagged ``v1``. Then, round after round
(``ROUNDS``, 5, unless ``--rounds``; 1 with ``--quick``), cargohold and the Go
registry each run as a proxy of it (``proxy: {remoteurl:
http://127.0.0.1:UPSTREAMPORT}``, the usual bench settings otherwise: log level
error, no access log, cargohold with its default workers) on a fresh, empty
root and a new port (cargohold first in even rounds, Go first in odd ones), and
the same client (``rawhttp``, blocking sockets, threads) measures:

0. ``direct``, once per round before the proxies: the cold pull's client
   straight from the upstream, the bound of any cold pull through a proxy.
1. ``cold``: the first pull through the empty proxy, one connection: the
   manifest by tag (``Accept``: the OCI and Docker manifest types docker sends),
   then the config and every layer, in order; every blob's sha256 is checked as
   it arrives. Before it, dirty pages are written out and the upstream's files
   read, the same for both.
2. Untimed: the run waits until every blob is in the proxy's storage (the Go
   proxy stores in the background), pulls the image once more checking every
   digest, writes dirty pages out and reads the proxy's files.
3. ``warm``: the same pull, everything cached, ``WARM_PULLS`` times one after
   the other; bodies are counted (lengths checked), not hashed.
4. ``warm-32``: ``CONCURRENT`` threads pull the image at once, each on its own
   connection: aggregate MiB/s over the wall time, and p50/p99 of the time each
   took to a complete image (nearest rank: of 32, the p99 is the slowest).

cargohold checks a tag upstream (one HEAD) at most once per ``recheck`` per
worker (5 s by default, left as it is); the Go proxy checks it on every manifest
pull. Both are measured as they are configured out of the box, and the output
says so.

Reports per phase the median of each proxy, the ratio cargohold/Go (> 1:
cargohold is better; Go/cargohold for times), the targets (warm >= 1.0, on one
pull and on the 32 concurrent ones, cold >= 0.9) and whether they were met
(the exit status does not depend on them); then CPU per phase (the proxy's
process tree, the upstream's, the client's, softirq, the rest of the machine),
the bytes the upstream wrote (its ``wchar``: sockets, mostly) and each proxy's
peak RSS. Writes every raw sample to JSON (``bench/results/proxy.json``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench import imagecopy, procs, rawhttp, report, runner, servers
from bench.client import DOCKER_ACCEPT, BenchError
from bench.imagecopy import Image
from bench.runner import say
from bench.servers import CARGOHOLD, GO, Server

REPO = "bench/proxy"
TAG = imagecopy.TAG
LAYERS = 5
LAYER_MIB = 20
#: Rounds unless --rounds or --quick says otherwise: a round takes ~15 s here.
ROUNDS = 5
#: Warm pulls of one image, one after the other, per proxy and round.
WARM_PULLS = 3
#: Concurrent warm pulls.
CONCURRENT = 32
PAIR = (CARGOHOLD, GO)
COLD, WARM, WARM_MANY = "cold", "warm", "warm-32"
#: The cold pull's client, straight from the upstream: the bound of a cold pull.
DIRECT = "direct"
P50, P99 = "warm-32-p50", "warm-32-p99"
#: The targets: cargohold/Go at least this much on these phases.
COLD_TARGET = 0.9
WARM_TARGET = 1.0
COLD_TARGETED = (COLD,)
WARM_TARGETED = (WARM, WARM_MANY)
#: cargohold's default ``proxy.recheck`` (the bench does not set it).
RECHECK_SECONDS = 5.0
#: How long the Go proxy may take to store a blob it served (it stores in the background).
STORED_TIMEOUT = 120.0
MIB = 1 << 20
BLOBS_DIR = Path("docker/registry/v2/blobs")
REPOSITORIES_DIR = Path("docker/registry/v2/repositories")

_T = TypeVar("_T")


@dataclass
class PullSample:
    """One timed run of one phase against one proxy."""

    phase: str
    round: int
    seconds: float
    mib_per_second: float
    #: The time each image took, from its first request to its last byte.
    image_seconds: list[float]
    p50_seconds: float
    p99_seconds: float
    #: % of one core over the run: the proxy's tree, the upstream's, this process's, the
    #: kernel's (soft) interrupts, everything else.
    server_cpu: float
    upstream_cpu: float
    client_cpu: float
    irq_cpu: float
    other_cpu: float
    #: What the upstream wrote (wchar: its sockets, mostly) during the run.
    upstream_mib: float
    rss_peak_kib: int


# -- the image ---------------------------------------------------------------------------------


def build_image(url: str, layers: int, layer_bytes: int) -> Image:
    """Push the image to the upstream at ``url``; what was pushed."""
    return imagecopy.build_image(url, REPO, layers, layer_bytes)


# -- the client --------------------------------------------------------------------------------


def pull_image(url: str, image: Image, verify: bool) -> float:
    """Pull the image as a client would, one connection; the seconds it took.

    The manifest by tag must be the one pushed; each blob named in it is read
    whole: with ``verify`` hashed as it arrives and checked against its digest,
    else discarded by the kernel and its length checked.
    """
    started = time.perf_counter()
    host, port, _ = rawhttp.split_url(url)
    with rawhttp.Connection(host, port) as conn:
        path = f"/v2/{REPO}/manifests/{TAG}"
        reply = rawhttp.expect(conn.request("GET", path, {"Accept": DOCKER_ACCEPT}), 200, path)
        if reply.body != image.manifest:
            raise BenchError(f"GET {url}{path}: not the manifest pushed: {reply.body[:200]!r}")
        if reply.headers.get("docker-content-digest") != image.digest:
            raise BenchError(
                f"GET {url}{path}: Docker-Content-Digest"
                f" {reply.headers.get('docker-content-digest')}, not {image.digest}"
            )
        parsed = json.loads(reply.body)
        for descriptor in [parsed["config"], *parsed["layers"]]:
            digest, size = descriptor["digest"], descriptor["size"]
            path = f"/v2/{REPO}/blobs/{digest}"
            hasher = hashlib.sha256() if verify else None
            sink = hasher.update if hasher is not None else None
            reply = conn.request("GET", path, drain=True, sink=sink)
            rawhttp.expect(reply, 200, f"GET {url}{path}")
            if reply.length != size:
                raise BenchError(f"GET {url}{path}: {reply.length} bytes, not {size}")
            if hasher is not None and f"sha256:{hasher.hexdigest()}" != digest:
                raise BenchError(f"GET {url}{path}: the content does not match its digest")
    return time.perf_counter() - started


def pull_many(url: str, image: Image, count: int) -> tuple[float, list[float]]:
    """``count`` threads pulling the image at once; (wall seconds, each image's seconds)."""
    took, wall = rawhttp.together(count, lambda _: pull_image(url, image, verify=False))
    return wall, took


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank: the smallest value at or above ``fraction`` of them."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# -- one timed run -----------------------------------------------------------------------------


def _written_bytes(root: int) -> int:
    """``wchar`` summed over the process tree under ``root``: bytes written, sockets included."""
    total = 0
    for pid in procs.tree(root):
        try:
            with open(f"/proc/{pid}/io") as file:
                for line in file:
                    if line.startswith("wchar:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def measure(
    phase: str,
    number: int,
    proxy: Server,
    upstream: Server,
    image: Image,
    work: Callable[[], tuple[float, list[float]]],
) -> PullSample:
    """Run ``work`` (which returns wall seconds and per-image seconds) and what it cost."""
    server_before = procs.cpu_seconds(proxy.pid)
    upstream_before = procs.cpu_seconds(upstream.pid)
    client_before = procs.self_cpu_seconds()
    written_before = _written_bytes(upstream.pid)
    busy_before, irq_before = runner.system_seconds()
    with procs.sample_rss(proxy.pid) as rss:
        wall, each = work()
    busy_after, irq_after = runner.system_seconds()
    server = procs.cpu_seconds(proxy.pid) - server_before
    upstream_cpu = procs.cpu_seconds(upstream.pid) - upstream_before
    client = procs.self_cpu_seconds() - client_before
    written = _written_bytes(upstream.pid) - written_before
    busy, irq = busy_after - busy_before, irq_after - irq_before
    other = max(0.0, busy - irq - server - upstream_cpu - client)
    return PullSample(
        phase=phase,
        round=number,
        seconds=wall,
        mib_per_second=len(each) * image.size / MIB / wall,
        image_seconds=each,
        p50_seconds=percentile(each, 0.5),
        p99_seconds=percentile(each, 0.99),
        server_cpu=100 * server / wall,
        upstream_cpu=100 * upstream_cpu / wall,
        client_cpu=100 * client / wall,
        irq_cpu=100 * irq / wall,
        other_cpu=100 * other / wall,
        upstream_mib=written / MIB,
        rss_peak_kib=rss.peak_kib,
    )


def wait_stored(root: Path, image: Image) -> float:
    """Wait until ``root`` holds every blob of the image, linked into the repository.

    The Go proxy stores a blob it serves in the background, after (or while) it
    streams it to the client: a warm pull started at once could still miss.
    Returns the seconds waited.
    """
    started = time.perf_counter()
    while True:
        missing = []
        for digest, size in image.blobs:
            algorithm, _, hexdigest = digest.partition(":")
            data = root / BLOBS_DIR / algorithm / hexdigest[:2] / hexdigest / "data"
            link = root / REPOSITORIES_DIR / REPO / "_layers" / algorithm / hexdigest / "link"
            try:
                stored = data.stat().st_size == size and link.exists()
            except FileNotFoundError:
                stored = False
            if not stored:
                missing.append(digest)
        if not missing:
            return time.perf_counter() - started
        if time.perf_counter() - started > STORED_TIMEOUT:
            raise BenchError(f"{root}: {len(missing)} blob(s) still not stored, e.g. {missing[0]}")
        time.sleep(0.05)


def warm_upstream(files: list[str]) -> float:
    """Write dirty pages out and read the upstream's files; the seconds it took."""
    started = time.perf_counter()
    os.sync()
    runner.touch(files)
    return time.perf_counter() - started


def direct_pull(number: int, upstream: Server, files: list[str], image: Image) -> PullSample:
    """The cold pull's client straight from the upstream (its "proxy" figures are the
    upstream's own)."""

    def once() -> tuple[float, list[float]]:
        took = pull_image(upstream.url, image, verify=True)
        return took, [took]

    warm_upstream(files)
    return measure(DIRECT, number, upstream, upstream, image, once)


def proxy_round(
    name: str, number: int, upstream: Server, upstream_files: list[str], image: Image, workdir: Path
) -> tuple[list[PullSample], dict[str, float]]:
    """One proxy on a fresh root: the cold pull, the warm ones, the concurrent ones."""
    label = f"{name}-r{number}"
    extra = {"proxy": {"remoteurl": upstream.url}}
    samples: list[PullSample] = []
    untimed: dict[str, float] = {}
    with servers.start(name, workdir, label=label, config_extra=extra) as proxy:

        def once(verify: bool) -> tuple[float, list[float]]:
            took = pull_image(proxy.url, image, verify)
            return took, [took]

        untimed["warm_upstream_seconds"] = warm_upstream(upstream_files)
        samples.append(measure(COLD, number, proxy, upstream, image, lambda: once(True)))

        untimed["stored_seconds"] = wait_stored(proxy.root, image)
        started = time.perf_counter()
        pull_image(proxy.url, image, verify=True)  # the cached copy is the image, byte for byte
        untimed["check_seconds"] = time.perf_counter() - started
        started = time.perf_counter()
        os.sync()
        runner.touch(runner.snapshot(proxy.root))
        untimed["warm_proxy_seconds"] = time.perf_counter() - started

        for _ in range(WARM_PULLS):
            samples.append(measure(WARM, number, proxy, upstream, image, lambda: once(False)))
        samples.append(
            measure(
                WARM_MANY,
                number,
                proxy,
                upstream,
                image,
                lambda: pull_many(proxy.url, image, CONCURRENT),
            )
        )
    shutil.rmtree(proxy.root, ignore_errors=True)
    return samples, untimed


# -- the summary and the tables ----------------------------------------------------------------

PHASE_TITLES = {
    COLD: "cold pull (empty cache)",
    WARM: "warm pull",
    WARM_MANY: f"{CONCURRENT} concurrent warm pulls, aggregate",
    P50: f"  time to an image, p50 of {CONCURRENT}",
    P99: f"  time to an image, p99 of {CONCURRENT}",
}
CPU_PARTS = ("server", "upstream", "client", "irq", "other")


def _median(samples: list[PullSample], attribute: str) -> float:
    return float(statistics.median(getattr(sample, attribute) for sample in samples))


def summarise(samples: dict[str, list[PullSample]]) -> dict[str, Any]:
    """Per phase (and the concurrent run's p50 and p99): medians, ratio, CPU, RSS, samples."""

    def phase_of(name: str, phase: str) -> list[PullSample]:
        return [sample for sample in samples[name] if sample.phase == phase]

    out: dict[str, Any] = {}
    for phase in (COLD, WARM, WARM_MANY):
        by_name = {name: phase_of(name, phase) for name in PAIR}
        medians = {name: _median(by_name[name], "mib_per_second") for name in PAIR}
        out[phase] = {
            "title": PHASE_TITLES[phase],
            "unit": "MiB/s",
            "median": medians,
            "ratio": medians[CARGOHOLD] / medians[GO],
            "seconds_median": {name: _median(by_name[name], "seconds") for name in PAIR},
            "upstream_mib_median": {name: _median(by_name[name], "upstream_mib") for name in PAIR},
            "rss_peak_kib": {name: max(s.rss_peak_kib for s in by_name[name]) for name in PAIR},
            "cpu_percent_median": {
                name: {part: _median(by_name[name], f"{part}_cpu") for part in CPU_PARTS}
                for name in PAIR
            },
            "samples": {name: [asdict(s) for s in by_name[name]] for name in PAIR},
        }
    for key, attribute in ((P50, "p50_seconds"), (P99, "p99_seconds")):
        medians = {name: _median(phase_of(name, WARM_MANY), attribute) for name in PAIR}
        out[key] = {
            "title": PHASE_TITLES[key],
            "unit": "s",
            "median": medians,
            # A time: > 1 when cargohold's is shorter.
            "ratio": medians[GO] / medians[CARGOHOLD],
        }
    return out


def _verdict(phase: str, ratio: float) -> tuple[str, str]:
    if phase in COLD_TARGETED:
        minimum = COLD_TARGET
    elif phase in WARM_TARGETED:
        minimum = WARM_TARGET
    else:
        return "", ""
    return f">= {minimum:.1f}", "met" if ratio >= minimum else "NOT met"


def table(summary: dict[str, Any], direct: float, image: Image, layers: int, rounds: int) -> str:
    layer_mib = image.blobs[-1][1] / MIB
    rows = [("phase", "cargohold", "Go", "unit", "ratio", "target", "verdict")]
    for phase, entry in summary.items():
        target, verdict = _verdict(phase, entry["ratio"])
        rows.append(
            (
                entry["title"],
                _fmt(entry["median"][CARGOHOLD], entry["unit"]),
                _fmt(entry["median"][GO], entry["unit"]),
                entry["unit"],
                f"{entry['ratio']:.2f}",
                target,
                verdict,
            )
        )
    lines = [
        f"Pull of a {layers}-layer image ({layers} x {layer_mib:.1f} MiB and a config,"
        f" {image.size / MIB:.1f} MiB) through each proxy of one Go upstream, median of"
        f" {rounds} round(s):",
        "",
        *report.columns(rows, right=(1, 2, 4)),
        "",
        "ratio: cargohold/Go, > 1 when cargohold is better (Go/cargohold for the times).",
        f"The same cold pull straight from the upstream, no proxy: {report.fmt(direct)} MiB/s"
        f" (cargohold's cold pull {summary[COLD]['median'][CARGOHOLD] / direct:.2f} of it,"
        f" Go's {summary[COLD]['median'][GO] / direct:.2f}).",
        f"cargohold checks a tag upstream at most once per proxy.recheck per worker (default"
        f" {RECHECK_SECONDS:.0f} s, left as is); the Go proxy checks it on every manifest pull.",
        "",
        "CPU, median % of one core (the machine has 200 %), upstream writes, peak RSS:",
    ]
    cpu_rows: list[tuple[str, ...]] = [
        (
            "phase",
            "proxy c / Go",
            "upstream c / Go",
            "client c / Go",
            "softirq c / Go",
            "other c / Go",
            "upstream MiB c / Go",
            "RSS MiB c / Go",
        )
    ]
    for phase in (COLD, WARM, WARM_MANY):
        entry = summary[phase]
        cpu = entry["cpu_percent_median"]
        sent = entry["upstream_mib_median"]
        rss = entry["rss_peak_kib"]
        cpu_rows.append(
            (
                phase,
                *(f"{cpu[CARGOHOLD][part]:.0f} / {cpu[GO][part]:.0f}" for part in CPU_PARTS),
                f"{sent[CARGOHOLD]:.1f} / {sent[GO]:.1f}",
                f"{rss[CARGOHOLD] / 1024:.0f} / {rss[GO] / 1024:.0f}",
            )
        )
    lines += report.columns(cpu_rows, right=tuple(range(1, len(cpu_rows[0]))))
    lines += [
        "",
        f"upstream MiB: what the upstream wrote (wchar, its sockets) during the run; the image"
        f" is {image.size / MIB:.1f} MiB. Each proxy runs with its default workers; the cold",
        "pull is one connection, so one of cargohold's workers fills the cache.",
    ]
    return "\n".join(lines)


def _fmt(value: float, unit: str) -> str:
    return f"{value:.3f}" if unit == "s" else report.fmt(value)


# -- the mode ----------------------------------------------------------------------------------


def run(args: argparse.Namespace, json_path: Path) -> int:
    began = time.perf_counter()
    rounds = args.rounds or (1 if args.quick else ROUNDS)
    layers = args.layers or LAYERS
    layer_mib = args.layer_mib or LAYER_MIB
    layer_bytes = int(layer_mib * MIB)
    document: dict[str, Any] = report.environment()
    document.update(
        mode="proxy",
        quick=bool(args.quick),
        rounds=rounds,
        params={
            "layers": layers,
            "layer_bytes": layer_bytes,
            "warm_pulls": WARM_PULLS,
            "concurrent": CONCURRENT,
            "cargohold_recheck_seconds": RECHECK_SECONDS,
        },
    )
    say(
        f"bench: cargohold and Go as proxies of one Go upstream, {rounds} round(s),"
        f" {layers} x {layer_mib:g} MiB layers"
    )
    samples: dict[str, list[PullSample]] = {name: [] for name in PAIR}
    direct: list[PullSample] = []
    untimed: dict[str, list[dict[str, float]]] = {name: [] for name in PAIR}
    with (
        servers.workdir(args.keep) as workdir,
        servers.start(GO, workdir, label="upstream") as upstream,
    ):
        started = time.perf_counter()
        image = build_image(upstream.url, layers, layer_bytes)
        pull_image(upstream.url, image, verify=True)
        document["setup_seconds"] = time.perf_counter() - started
        document["image"] = {
            "digest": image.digest,
            "bytes": image.size,
            "blobs": [{"digest": d, "size": s} for d, s in image.blobs],
        }
        upstream_files = runner.snapshot(upstream.root)
        for number in range(rounds):
            order = PAIR if number % 2 == 0 else PAIR[::-1]
            direct.append(direct_pull(number, upstream, upstream_files, image))
            say(
                f"bench: round {number + 1}/{rounds} upstream  {DIRECT:8}"
                f" {direct[-1].mib_per_second:8,.1f} MiB/s (the same cold pull, no proxy)"
            )
            for name in order:
                found, spent = proxy_round(name, number, upstream, upstream_files, image, workdir)
                samples[name] += found
                untimed[name].append(spent)
                for sample in found:
                    extra = (
                        f" p50 {sample.p50_seconds:.2f} s p99 {sample.p99_seconds:.2f} s"
                        if sample.phase == WARM_MANY
                        else ""
                    )
                    say(
                        f"bench: round {number + 1}/{rounds} {name:9} {sample.phase:8}"
                        f" {sample.mib_per_second:8,.1f} MiB/s{extra}"
                        f"  cpu proxy {sample.server_cpu:3.0f} %"
                        f" upstream {sample.upstream_cpu:3.0f} %"
                        f" client {sample.client_cpu:3.0f} %"
                        f" other {sample.other_cpu:3.0f} %"
                        f" upstream wrote {sample.upstream_mib:6.1f} MiB"
                    )
    summary = summarise(samples)
    document["phases"] = summary
    document["direct"] = {
        "title": "the cold pull straight from the upstream",
        "unit": "MiB/s",
        "median": _median(direct, "mib_per_second"),
        "samples": [asdict(sample) for sample in direct],
    }
    document["untimed_seconds"] = untimed
    document["targets"] = targets = {
        "cold": report.target(summary, COLD_TARGETED, COLD_TARGET),
        "warm": report.target(summary, WARM_TARGETED, WARM_TARGET),
    }
    document["total_seconds"] = time.perf_counter() - began
    report.write_json(json_path, document)
    print(table(summary, document["direct"]["median"], image, layers, rounds), flush=True)
    print("", flush=True)
    print(report.target_line(targets["warm"], "cargohold/Go", "warm pulls"), flush=True)
    print(report.target_line(targets["cold"], "cargohold/Go", "the cold pull"), flush=True)
    print(
        f"\n{rounds} round(s) in {document['total_seconds']:.0f} s; raw samples in {json_path}",
        flush=True,
    )
    return 0
