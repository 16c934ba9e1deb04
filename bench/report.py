"""The results: a table on stdout, every raw sample in JSON.

Ratios are oriented so that > 1 means cargohold is better: cargohold/Go for
rates (req/s, MiB/s), Go/cargohold for memory and times (the pull storm's p50
and p99 seconds to a complete image). The samples are keyed by server
label; other modes (``--metrics``: "off" and "on") name their two servers and
the ratio they want (``ratio=(numerator, denominator)``).
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


def environment(go: bool = True) -> dict[str, Any]:
    """Date, machine and versions; without ``go``, no docker-registry (a cargohold-only mode)."""
    repo = Path(__file__).resolve().parent.parent
    found: dict[str, Any] = {
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
            "docker-registry": _first_line([go_executable(), "--version"]) if go else "",
            "wrk": _first_line(["wrk", "--version"]),
            "ab": _first_line(["ab", "-V"]),
        },
    }
    if not go:
        del found["versions"]["docker-registry"]
    return found


def median(samples: list[Sample], attribute: str = "value") -> float:
    return statistics.median(getattr(sample, attribute) for sample in samples)


#: The default comparison's two servers, in the order of the table's columns.
PAIR = (CARGOHOLD, GO)


def summarise(
    workloads: list[Workload],
    samples: dict[str, dict[str, list[Sample]]],
    ratio: tuple[str, str] = PAIR,
) -> dict[str, Any]:
    """Per workload: raw samples, medians, ratio and peak RSS of each server.

    The ratio is the median of ``ratio[0]`` over that of ``ratio[1]``; a workload
    missing a sample of either is left out.
    """
    numerator, denominator = ratio
    out: dict[str, Any] = {}
    for workload in workloads:
        by_server = samples[workload.name]
        if not all(by_server.get(name) for name in ratio):
            continue
        medians = {name: median(by_server[name]) for name in by_server}
        out[workload.name] = {
            "title": workload.title,
            "unit": workload.unit,
            "median": medians,
            "ratio": medians[numerator] / medians[denominator] if medians[denominator] else None,
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
        if workload.extras:
            out[workload.name]["extras"] = _extras(workload.extras, by_server, ratio)
    return out


def _extras(
    keys: Sequence[str], by_server: dict[str, list[Sample]], ratio: tuple[str, str]
) -> dict[str, Any]:
    """Median of each further figure per server, and the ratio: times, so the other way up."""
    numerator, denominator = ratio
    found: dict[str, Any] = {}
    for key in keys:
        medians = {
            name: statistics.median(s.extra[key] for s in samples)
            for name, samples in by_server.items()
        }
        mine = medians[numerator]
        found[key] = {"median": medians, "ratio": medians[denominator] / mine if mine else None}
    return found


def summarise_run(
    workloads: list[Workload],
    samples: dict[str, dict[str, list[Sample]]],
    ratio: tuple[str, str] = PAIR,
) -> dict[str, Any]:
    """``summarise``, plus each server's peak RSS over all the workloads."""
    summary = summarise(workloads, samples, ratio)
    labels = list(next(iter(samples.values()), {})) or list(ratio)
    return {
        "workloads": summary,
        "rss_peak_kib": {
            name: max((entry["rss_peak_kib"][name] for entry in summary.values()), default=0)
            for name in labels
        },
    }


def fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def table(
    summary: dict[str, Any],
    calibration: dict[str, float] | None = None,
    pair: tuple[str, str] = PAIR,
    titles: tuple[str, str] = ("cargohold", "Go"),
    short: tuple[str, str] = ("c", "Go"),
    ratio_title: str = "ratio",
) -> str:
    """The human-readable report: the servers labelled ``pair`` side by side.

    ``titles`` head their columns, ``short`` the combined ones (RSS, CPU);
    ``ratio_title`` heads the summary's ratio (however ``summarise`` made it).
    """
    first, second = pair
    rows = [
        ("workload", titles[0], titles[1], "unit", ratio_title, f"RSS MiB {short[0]}/{short[1]}")
    ]
    for entry in summary.values():
        rss = entry["rss_peak_kib"]
        rows.append(
            (
                entry["title"],
                fmt(entry["median"][first]),
                fmt(entry["median"][second]),
                entry["unit"],
                f"{entry['ratio']:.2f}" if entry["ratio"] is not None else "-",
                f"{rss[first] / MIB_KIB:.0f} / {rss[second] / MIB_KIB:.0f}",
            )
        )
        for key, extra in entry.get("extras", {}).items():
            rows.append(
                (
                    f"  {key.removesuffix('_s')}, seconds to a complete image",
                    f"{extra['median'][first]:.2f}",
                    f"{extra['median'][second]:.2f}",
                    "s",
                    f"{extra['ratio']:.2f}" if extra["ratio"] is not None else "-",
                    "",
                )
            )
    lines = columns(rows, right=(1, 2, 4, 5))
    peaks = {name: max(entry["rss_peak_kib"][name] for entry in summary.values()) for name in pair}
    if summary:
        lines.append("")
        lines.append(
            "peak RSS over the run (whole process tree):"
            f" {titles[0]} {peaks[first] / MIB_KIB:.0f} MiB,"
            f" {titles[1]} {peaks[second] / MIB_KIB:.0f} MiB, ratio {titles[1]}/{titles[0]}"
            f" {peaks[second] / peaks[first]:.2f}"
        )
    lines += ["", "CPU during the timed runs, median % of one core (the machine has 200 %):"]
    parts = ["client", "server", "irq", "other"]
    if any(e["cpu_percent_median"][second].get("backend") for e in summary.values()):
        parts.insert(2, "backend")  # SeaweedFS (and redis-server)
    cpu_rows = [("workload", *(f"{_CPU_TITLES[part]} {short[0]} / {short[1]}" for part in parts))]
    if calibration is not None:
        cpu_rows[0] += ("client vs trivial server",)
    for name, entry in summary.items():
        cpu = entry["cpu_percent_median"]
        row = (
            name,
            *(f"{cpu[first][part]:.0f} / {cpu[second][part]:.0f}" for part in parts),
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


def target(summary: dict[str, Any], workloads: Sequence[str], minimum: float) -> dict[str, Any]:
    """The ratio of each of ``workloads`` measured, and whether all reach ``minimum``.

    ``met`` is None when one of them was not measured (left out with ``--only``).
    """
    ratios: dict[str, float | None] = {
        name: summary[name]["ratio"] if name in summary else None for name in workloads
    }
    measured = [ratio for ratio in ratios.values() if ratio is not None]
    met = None if len(measured) < len(workloads) else all(r >= minimum for r in measured)
    return {"minimum_ratio": minimum, "workloads": list(workloads), "ratios": ratios, "met": met}


def target_line(found: dict[str, Any], ratio_title: str, described: str) -> str:
    """One line saying whether ``target`` was met: ``described`` names its workloads."""
    ratios = ", ".join(
        f"{name} {ratio:.2f}" if ratio is not None else f"{name} not measured"
        for name, ratio in found["ratios"].items()
    )
    verdict = {True: "MET", False: "NOT MET", None: "not decided"}[found["met"]]
    return (
        f"target: {ratio_title} >= {found['minimum_ratio']:.1f}x on {described}:"
        f" {verdict} ({ratios})"
    )
