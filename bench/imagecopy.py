"""``python -m bench --copy``: ``cargohold copy`` against ``skopeo copy``, side by side.

Two cargohold servers on filesystem storage: the source holds one image of five
~205 MiB layers (1 GiB in all), pushed through the API. Each layer is random
bytes in a gzip stream of stored (uncompressed) blocks: media type and content
agree, so skopeo copies it as it is rather than compressing it on the fly, as
it would an uncompressed layer. Each round both tools copy the image to a
destination registry, interleaved (cargohold copy first in even rounds):

    cargohold copy 127.0.0.1:P1/bench/copy:v1 127.0.0.1:P2/bench/copy:v1
    skopeo --insecure-policy copy --src-tls-verify=false --dest-tls-verify=false \\
        docker://127.0.0.1:P1/bench/copy:v1 docker://127.0.0.1:P2/bench/copy:v1

Every copy goes to a fresh destination registry (a new root on a new port),
so the destination repository is new and neither tool finds a blob to skip or
to mount: skopeo's blob info cache remembers where it put each blob and would
mount it from an earlier repository of the same registry. Before each copy the
dirty pages are written out and the source's files are read (warm page cache);
after it, the copied manifest and every blob are checked at the destination.

Reports per tool the median seconds and MiB/s (every blob byte the image
holds), the peak RSS of the tool's process tree and its CPU, and the ratios
oriented so that > 1 means cargohold copy is better. The issue's target:
a time ratio of at least 1.0 and cargohold copy's peak RSS under 128 MiB.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import procs, rawhttp, report, runner, servers
from bench.client import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, BenchError, digest_of
from bench.runner import say
from bench.servers import CARGOHOLD, Server

LAYERS = 5
IMAGE_BYTES = 1 << 30
REPO = "bench/copy"
TAG = "v1"
SKOPEO = "skopeo"
TOOLS = (CARGOHOLD, SKOPEO)
#: The issue's targets for cargohold copy.
TARGET_RATIO = 1.0
TARGET_RSS_MIB = 128
MIB = 1 << 20


@dataclass(frozen=True)
class Image:
    manifest: bytes
    digest: str
    #: (digest, size) of the config and every layer.
    blobs: list[tuple[str, int]]

    @property
    def size(self) -> int:
        return sum(size for _, size in self.blobs)


@dataclass
class CopySample:
    tool: str
    round: int
    seconds: float
    mib_per_second: float
    rss_peak_kib: int
    #: % of one core over the copy: the tool's, both servers' together, the rest.
    tool_cpu: float
    servers_cpu: float
    irq_cpu: float
    other_cpu: float
    sync_seconds: float
    touch_seconds: float


def build_image(
    url: str, repository: str = REPO, count: int = LAYERS, layer_size: int = IMAGE_BYTES // LAYERS
) -> Image:
    """Push ``count`` random layers, a config and the manifest (tag ``TAG``) to ``repository``
    at ``url``; the image."""
    layers, diff_ids = [], []
    for index in range(count):
        raw = os.urandom(layer_size)
        # Stored blocks: a real gzip stream, as large as its content, made at memcpy speed.
        blob = gzip.compress(raw, compresslevel=0, mtime=0)
        digest = digest_of(blob)
        rawhttp.push_monolithic(url, repository, memoryview(blob), digest)
        layers.append((digest, len(blob)))
        diff_ids.append(digest_of(raw))
        say(f"bench: layer {index + 1}/{count} pushed ({len(blob) / MIB:.1f} MiB)")
        del raw, blob
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    config_digest = digest_of(config)
    rawhttp.push_monolithic(url, repository, memoryview(config), config_digest)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
            "layers": [
                {"mediaType": OCI_LAYER, "digest": digest, "size": size} for digest, size in layers
            ],
        },
        separators=(",", ":"),
    ).encode()
    host, port, _ = rawhttp.split_url(url)
    with rawhttp.Connection(host, port) as conn:
        path = f"/v2/{repository}/manifests/{TAG}"
        reply = conn.request("PUT", path, {"Content-Type": OCI_MANIFEST}, manifest)
        rawhttp.expect(reply, 201, f"PUT {path}")
    return Image(manifest, digest_of(manifest), [(config_digest, len(config)), *layers])


def check_copied(url: str, image: Image) -> None:
    """The destination serves the image's manifest under the tag, and every blob."""
    host, port, _ = rawhttp.split_url(url)
    with rawhttp.Connection(host, port) as conn:
        path = f"/v2/{REPO}/manifests/{TAG}"
        reply = rawhttp.expect(conn.request("GET", path, {"Accept": OCI_MANIFEST}), 200, path)
        if reply.body != image.manifest:
            raise BenchError(f"the copied manifest differs from the source's: {reply.body[:200]!r}")
        for digest, size in image.blobs:
            path = f"/v2/{REPO}/blobs/{digest}"
            reply = rawhttp.expect(conn.request("HEAD", path), 200, f"HEAD {path}")
            if reply.headers.get("content-length") != str(size):
                raise BenchError(f"HEAD {path}: {reply.headers.get('content-length')} bytes")


def _argv(tool: str, source: Server, destination: Server) -> list[str]:
    src, dst = (f"{s.url.removeprefix('http://')}/{REPO}:{TAG}" for s in (source, destination))
    if tool == CARGOHOLD:
        return [servers.cargohold_executable(), "copy", src, dst]
    return [
        SKOPEO,
        "--insecure-policy",
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        f"docker://{src}",
        f"docker://{dst}",
    ]


def copy_once(
    tool: str, number: int, source: Server, warm: list[str], image: Image, workdir: Path
) -> CopySample:
    prepared = time.perf_counter()
    os.sync()
    synced = time.perf_counter()
    runner.touch(warm)
    touched = time.perf_counter()
    label = f"dest-{tool}-r{number}"
    with servers.start(CARGOHOLD, workdir, label=label) as destination:
        argv = _argv(tool, source, destination)
        log = workdir / f"{label}-{tool}.log"
        tool_before = procs.children_cpu_seconds()
        servers_before = procs.cpu_seconds(source.pid) + procs.cpu_seconds(destination.pid)
        busy_before, irq_before = runner.system_seconds()
        started = time.perf_counter()
        with open(log, "wb") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            with procs.sample_rss(process.pid) as rss:
                try:
                    process.wait(timeout=1800)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                    raise BenchError(f"{tool} copy did not finish in 30 minutes") from None
        seconds = time.perf_counter() - started
        servers_cpu = (
            procs.cpu_seconds(source.pid) + procs.cpu_seconds(destination.pid) - servers_before
        )
        tool_cpu = procs.children_cpu_seconds() - tool_before
        busy_after, irq_after = runner.system_seconds()
        if process.returncode != 0:
            tail = log.read_text(errors="replace")[-1500:]
            raise BenchError(f"{' '.join(argv)} exited {process.returncode}:\n{tail}")
        check_copied(destination.url, image)
    shutil.rmtree(destination.root, ignore_errors=True)
    busy, irq = busy_after - busy_before, irq_after - irq_before
    return CopySample(
        tool=tool,
        round=number,
        seconds=seconds,
        mib_per_second=image.size / MIB / seconds,
        rss_peak_kib=rss.peak_kib,
        tool_cpu=100 * tool_cpu / seconds,
        servers_cpu=100 * servers_cpu / seconds,
        irq_cpu=100 * irq / seconds,
        other_cpu=100 * max(0.0, busy - irq - tool_cpu - servers_cpu) / seconds,
        sync_seconds=synced - prepared,
        touch_seconds=touched - synced,
    )


def summarise(samples: dict[str, list[CopySample]]) -> dict[str, Any]:
    def median(tool: str, attribute: str) -> float:
        return float(statistics.median(getattr(sample, attribute) for sample in samples[tool]))

    out: dict[str, Any] = {
        tool: {
            "seconds": median(tool, "seconds"),
            "mib_per_second": median(tool, "mib_per_second"),
            "rss_peak_kib": max(sample.rss_peak_kib for sample in samples[tool]),
            "cpu_percent_median": {
                part: median(tool, f"{part}_cpu") for part in ("tool", "servers", "irq", "other")
            },
            "samples": [asdict(sample) for sample in samples[tool]],
        }
        for tool in TOOLS
    }
    out["ratio"] = out[SKOPEO]["seconds"] / out[CARGOHOLD]["seconds"]
    out["rss_ratio"] = out[SKOPEO]["rss_peak_kib"] / out[CARGOHOLD]["rss_peak_kib"]
    out["target_met"] = (
        out["ratio"] >= TARGET_RATIO and out[CARGOHOLD]["rss_peak_kib"] < TARGET_RSS_MIB * 1024
    )
    return out


def table(summary: dict[str, Any], image_mib: float) -> str:
    rows = [("tool", "seconds", "MiB/s", "peak RSS MiB", "cpu tool %", "servers %", "other %")]
    for tool in TOOLS:
        entry = summary[tool]
        cpu = entry["cpu_percent_median"]
        rows.append(
            (
                "cargohold copy" if tool == CARGOHOLD else "skopeo copy",
                f"{entry['seconds']:.1f}",
                report.fmt(entry["mib_per_second"]),
                f"{entry['rss_peak_kib'] / 1024:.0f}",
                f"{cpu['tool']:.0f}",
                f"{cpu['servers']:.0f}",
                f"{cpu['other']:.0f}",
            )
        )
    met = "met" if summary["target_met"] else "NOT met"
    return "\n".join(
        [
            f"Copy of a {LAYERS}-layer {image_mib:,.0f} MiB image between two cargohold"
            " registries (filesystem), medians:",
            "",
            *report.columns(rows, right=(1, 2, 3, 4, 5, 6)),
            "",
            f"ratio skopeo/cargohold: time {summary['ratio']:.2f},"
            f" peak RSS {summary['rss_ratio']:.2f} (> 1: cargohold copy is better)",
            f"target (time ratio >= {TARGET_RATIO:.1f}, cargohold copy's peak RSS"
            f" < {TARGET_RSS_MIB} MiB): {met}",
        ]
    )


def _skopeo_version() -> str:
    done = subprocess.run([SKOPEO, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def run(args: argparse.Namespace, json_path: Path) -> int:
    began = time.perf_counter()
    rounds = args.rounds or (1 if args.quick else 3)
    document: dict[str, Any] = report.environment()
    document["versions"]["skopeo"] = _skopeo_version()
    document.update(mode="copy", quick=bool(args.quick), rounds=rounds)
    samples: dict[str, list[CopySample]] = {tool: [] for tool in TOOLS}
    with (
        servers.workdir(args.keep) as workdir,
        servers.start(CARGOHOLD, workdir, label="source") as source,
    ):
        say(f"bench: building the {LAYERS}-layer image in the source registry")
        started = time.perf_counter()
        image = build_image(source.url)
        check_copied(source.url, image)
        document["setup_seconds"] = time.perf_counter() - started
        document["image"] = {
            "digest": image.digest,
            "bytes": image.size,
            "blobs": [{"digest": d, "size": s} for d, s in image.blobs],
        }
        warm = runner.snapshot(source.root)
        for number in range(rounds):
            order = TOOLS if number % 2 == 0 else TOOLS[::-1]
            for tool in order:
                sample = copy_once(tool, number, source, warm, image, workdir)
                samples[tool].append(sample)
                say(
                    f"bench: round {number + 1}/{rounds} {tool:9} {sample.seconds:6.1f} s"
                    f" {sample.mib_per_second:7.1f} MiB/s rss {sample.rss_peak_kib / 1024:5.0f} MiB"
                    f"  cpu tool {sample.tool_cpu:3.0f} % servers {sample.servers_cpu:3.0f} %"
                    f" other {sample.other_cpu:3.0f} %"
                )
    summary = summarise(samples)
    document["copy"] = summary
    document["total_seconds"] = time.perf_counter() - began
    report.write_json(json_path, document)
    print(table(summary, image.size / MIB), flush=True)
    print(
        f"\n{rounds} round(s) in {document['total_seconds']:.0f} s; raw samples in {json_path}",
        flush=True,
    )
    return 0
