"""The results: a table on stdout, every raw sample in JSON.

Ratios are oriented so that > 1 means cargohold is better: cargohold/Go for
rates (req/s, MiB/s), Go/cargohold for memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp

from bench.runner import Sample
from bench.servers import CARGOHOLD, GO, go_executable
from bench.workloads import Workload

MIB_KIB = 1024


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if done.stdout or done.stderr else ""
    )


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as file:
        for line in file:
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor()


def _tree_digest(root: Path) -> str:
    """sha256 over the Python sources under ``root``: which code was measured, exactly."""
    hasher = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        hasher.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return hasher.hexdigest()[:16]


def environment() -> dict[str, Any]:
    repo = Path(__file__).resolve().parent.parent
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cores": os.cpu_count(),
            "cpu": _cpu_model(),
            "kernel": platform.release(),
            "memory_mib": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20,
        },
        "versions": {
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "cargohold": _first_line(
                ["git", "-C", str(repo), "describe", "--always", "--dirty", "--tags"]
            ),
            # The tree may differ from the commit: hash what was actually run.
            "cargohold_sources_sha256": _tree_digest(repo / "src" / "cargohold"),
            "docker-registry": _first_line([go_executable(), "--version"]),
            "wrk": _first_line(["wrk", "--version"]),
            "ab": _first_line(["ab", "-V"]),
        },
    }


def median(samples: list[Sample], attribute: str = "value") -> float:
    return statistics.median(getattr(sample, attribute) for sample in samples)


def summarise(
    workloads: list[Workload], samples: dict[str, dict[str, list[Sample]]]
) -> dict[str, Any]:
    """Per workload: raw samples, medians, ratio and peak RSS of each server."""
    out: dict[str, Any] = {}
    for workload in workloads:
        by_server = samples[workload.name]
        if not all(by_server.get(name) for name in (CARGOHOLD, GO)):
            continue
        medians = {name: median(by_server[name]) for name in (CARGOHOLD, GO)}
        out[workload.name] = {
            "title": workload.title,
            "unit": workload.unit,
            "median": medians,
            "ratio": medians[CARGOHOLD] / medians[GO] if medians[GO] else None,
            "rss_peak_kib": {
                name: max(s.rss_peak_kib for s in by_server[name]) for name in by_server
            },
            "cpu_percent_median": {
                name: {
                    part: median(by_server[name], f"{part}_cpu")
                    for part in ("client", "server", "backend", "irq", "other")
                }
                for name in by_server
            },
            "samples": {name: [s.to_json() for s in by_server[name]] for name in by_server},
        }
    return out


def summarise_run(
    workloads: list[Workload], samples: dict[str, dict[str, list[Sample]]]
) -> dict[str, Any]:
    """``summarise``, plus each server's peak RSS over all the workloads."""
    summary = summarise(workloads, samples)
    return {
        "workloads": summary,
        "rss_peak_kib": {
            name: max((entry["rss_peak_kib"][name] for entry in summary.values()), default=0)
            for name in (CARGOHOLD, GO)
        },
    }


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def table(summary: dict[str, Any], calibration: dict[str, float] | None = None) -> str:
    """The human-readable report."""
    rows = [("workload", "cargohold", "Go", "unit", "ratio", "RSS MiB c/Go")]
    for entry in summary.values():
        rss = entry["rss_peak_kib"]
        rows.append(
            (
                entry["title"],
                fmt(entry["median"][CARGOHOLD]),
                fmt(entry["median"][GO]),
                entry["unit"],
                f"{entry['ratio']:.2f}" if entry["ratio"] is not None else "-",
                f"{rss[CARGOHOLD] / MIB_KIB:.0f} / {rss[GO] / MIB_KIB:.0f}",
            )
        )
    lines = columns(rows, right=(1, 2, 4, 5))
    peaks = {
        name: max(entry["rss_peak_kib"][name] for entry in summary.values())
        for name in (CARGOHOLD, GO)
    }
    if summary:
        lines.append("")
        lines.append(
            "peak RSS over the run (whole process tree):"
            f" cargohold {peaks[CARGOHOLD] / MIB_KIB:.0f} MiB,"
            f" Go {peaks[GO] / MIB_KIB:.0f} MiB, ratio Go/cargohold"
            f" {peaks[GO] / peaks[CARGOHOLD]:.2f}"
        )
    lines += ["", "CPU during the timed runs, median % of one core (the machine has 200 %):"]
    parts = ["client", "server", "irq", "other"]
    if any(e["cpu_percent_median"][GO].get("backend") for e in summary.values()):
        parts.insert(2, "backend")  # SeaweedFS (and redis-server)
    cpu_rows = [("workload", *(f"{_CPU_TITLES[part]} c / Go" for part in parts))]
    if calibration is not None:
        cpu_rows[0] += ("client vs trivial server",)
    for name, entry in summary.items():
        cpu = entry["cpu_percent_median"]
        row = (
            name,
            *(f"{cpu[CARGOHOLD][part]:.0f} / {cpu[GO][part]:.0f}" for part in parts),
        )
        if calibration is not None:
            capacity = calibration.get(name)
            row += (f"{fmt(capacity)} {entry['unit']}" if capacity else "-",)
        cpu_rows.append(row)
    lines += columns(cpu_rows, right=tuple(range(1, len(cpu_rows[0]))))
    return "\n".join(lines)


_CPU_TITLES = {
    "client": "client",
    "server": "server",
    "backend": "backend",
    "irq": "softirq",
    "other": "other",
}


def columns(rows: Sequence[tuple[str, ...]], right: tuple[int, ...]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


def write_json(path: Path, document: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2) + "\n")
