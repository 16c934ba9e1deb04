"""``python -m bench --gc``: ``cargohold gc`` against Distribution's ``garbage-collect``.

For each size (10k and 100k blobs by default, ``--gc-sizes``) one registry root
is written directly in Distribution's filesystem layout (``bench.gcroot``: a
tenth of the blobs manifests, a fifth referenced by nothing, a third of the
manifests untagged). Each round, for each mode (plain, then with
``--delete-untagged``), each program collects its own fresh copy of that root,
interleaved (cargohold first in even rounds for the first mode, the order
flipping with each mode and round):

    cargohold gc [--delete-untagged] --quiet config.yml
    docker-registry garbage-collect [--delete-untagged] config.yml

Both read the same ``config.yml`` (filesystem root, deletes enabled, log level
error). Timed is the program's whole run, start-up included. Its CPU comes from
``wait4``, its peak RSS from its VmHWM, read every 20 ms until it exits.

The roots live in ``/dev/shm`` (tmpfs) unless ``--gc-dir`` says otherwise: this
machine's disk (ext4) takes ~0.3 ms to create a file and ~0.4 ms a directory
(tmpfs: ~6 us), so writing one 100k-blob root would take minutes, and every
deletion either program makes costs as much again, which would measure the
kernel more than the collectors. Each copy is written afresh from the content
in memory (faster than ``cp -a``); before the run the dirty pages are written
out and, on a disk (``--gc-dir``), every file of the copy read, so that both
start from the same warm page cache (tmpfs has no other copy to warm).

After the pair, what is left is checked: both roots must hold the same blobs
and the same manifest revisions, and exactly what the content says a correct
collection keeps. Any difference fails the run (exit status 1) once every
round is done. Other layout differences (tag index entries, ``_layers`` links)
are reported as notes: they are known and deliberate or harmless.
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import shutil
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from bench import gcroot, procs, report, runner, servers
from bench.client import BenchError
from bench.gcroot import Content, Remains
from bench.runner import say
from bench.servers import CARGOHOLD, GO

DEFAULT_SIZES = (10_000, 100_000)
PLAIN = "plain"
UNTAGGED = "delete-untagged"
MODES = (PLAIN, UNTAGGED)
PROGRAMS = (CARGOHOLD, GO)
#: A collection that takes longer is stuck: the bench stops there.
TIMEOUT = 1800.0
#: Seconds between two reads of the program's peak RSS: only the growth of its
#: last such interval can go unseen.
RSS_INTERVAL = 0.02
#: Where the roots are written unless --gc-dir says otherwise: memory (see above).
SCRATCH = Path("/dev/shm")
#: ... if it has this much room: a 100k-blob root takes ~0.9 GiB of tmpfs (a page a file).
SCRATCH_ROOM = 4 << 30
#: How many differing digests a problem line quotes.
EXAMPLES = 3


@dataclass
class GcSample:
    program: str
    blobs: int
    mode: str
    round: int
    #: Whether this program ran before the other one on this mode and round.
    first: bool
    seconds: float
    #: The program's own peak (VmHWM): neither forks.
    rss_peak_kib: int
    user_seconds: float
    system_seconds: float
    #: % of one core the rest of the machine used meanwhile (a busy neighbour shows here).
    other_cpu: float
    blobs_deleted: int
    manifests_deleted: int
    #: Untimed: writing the copy, writing dirty pages out, reading the copy.
    write_seconds: float
    sync_seconds: float
    touch_seconds: float


def default_rounds(blobs: int) -> int:
    # A round of the large root takes about a minute per program and mode; two still
    # let each program go first once in each mode.
    return 3 if blobs <= 10_000 else 2


def config_text(root: Path) -> str:
    """The ``config.yml`` both programs read: Distribution's format, nothing else set."""
    config = {
        "version": "0.1",
        "log": {"level": "error"},
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
    }
    return yaml.safe_dump(config, sort_keys=False)


def argv(program: str, config: Path, mode: str) -> list[str]:
    untagged = ["--delete-untagged"] if mode == UNTAGGED else []
    if program == CARGOHOLD:
        return [servers.cargohold_executable(), "gc", *untagged, "--quiet", str(config)]
    return [servers.go_executable(), "garbage-collect", *untagged, str(config)]


@dataclass
class Finished:
    seconds: float
    status: int
    rss_peak_kib: int
    usage: resource.struct_rusage


def _run_child(command: list[str], log: Path) -> Finished:
    """Run ``command``, output to ``log``, until it exits; how it went.

    A pidfd says when it exits, so that it is reaped (``wait4``: its CPU) only
    then, and a stuck one killed before (never a pid reused meanwhile). Popen
    returns once the child has exec'd, so every VmHWM read is the program's.
    """
    with open(log, "wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        pidfd = os.pidfd_open(process.pid)
        peak = 0
        try:
            while True:
                peak = max(peak, procs.peak_rss_kib(process.pid))
                exited, _, _ = select.select([pidfd], [], [], RSS_INTERVAL)
                if exited or time.perf_counter() - started > TIMEOUT:
                    break
            if not exited:
                process.kill()
        finally:
            os.close(pidfd)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if not exited:
        raise BenchError(f"{' '.join(command)} did not finish in {TIMEOUT:.0f} s")
    return Finished(seconds, process.returncode, peak, usage)


def collect_once(
    program: str,
    mode: str,
    number: int,
    first: bool,
    content: Content,
    workdir: Path,
    warm: bool,
) -> tuple[GcSample, Remains]:
    """Write a root of ``content``, with ``warm`` read it, time ``program`` collecting it;
    the sample and what it left. The root is removed afterwards."""
    label = f"{program}-{len(content.blobs)}-{mode}-r{number}"
    root = workdir / f"{label}-root"
    began = time.perf_counter()
    gcroot.write(root, content)
    written = time.perf_counter()
    os.sync()
    synced = time.perf_counter()
    if warm:
        runner.touch(runner.snapshot(root))
    touched = time.perf_counter()
    config = workdir / f"{label}.yml"
    config.write_text(config_text(root))
    command = argv(program, config, mode)
    busy_before, _ = runner.system_seconds()
    done = _run_child(command, workdir / f"{label}.log")
    busy_after, _ = runner.system_seconds()
    if done.status != 0:
        tail = (workdir / f"{label}.log").read_text(errors="replace")[-1500:]
        raise BenchError(f"{' '.join(command)} exited {done.status}:\n{tail}")
    left = gcroot.remains(root, content)
    shutil.rmtree(root)
    usage, seconds = done.usage, done.seconds
    cpu = usage.ru_utime + usage.ru_stime
    sample = GcSample(
        program=program,
        blobs=len(content.blobs),
        mode=mode,
        round=number,
        first=first,
        seconds=seconds,
        rss_peak_kib=done.rss_peak_kib,
        user_seconds=usage.ru_utime,
        system_seconds=usage.ru_stime,
        other_cpu=100 * max(0.0, busy_after - busy_before - cpu) / seconds,
        blobs_deleted=len(content.blobs) - len(left.blobs),
        manifests_deleted=content.revisions - len(left.revisions),
        write_seconds=written - began,
        sync_seconds=synced - written,
        touch_seconds=touched - synced,
    )
    return sample, left


#: How the problems and notes name each root.
TITLES = {CARGOHOLD: "cargohold", GO: "Go"}


def _shown(items: list[Any]) -> str:
    """A few of ``items`` (digests, or (repository, digest)) as text."""
    shown = ["@".join(item) if isinstance(item, tuple) else str(item) for item in items]
    return ", ".join(shown[:EXAMPLES]) + (", ..." if len(items) > EXAMPLES else "")


def _difference(what: str, ours: set[Any], theirs: set[Any], names: tuple[str, str]) -> str:
    only_ours, only_theirs = sorted(ours - theirs), sorted(theirs - ours)
    return (
        f"{what}: {len(only_ours)} left by {names[0]} only [{_shown(only_ours)}],"
        f" {len(only_theirs)} left by {names[1]} only [{_shown(only_theirs)}]"
    )


def problems(left: dict[str, Remains], expected: Remains) -> list[str]:
    """How the two roots differ from each other and from what a correct collection leaves."""
    found = []
    pairs = [((TITLES[CARGOHOLD], TITLES[GO]), left[CARGOHOLD], left[GO])]
    pairs += [((TITLES[name], "a correct collection"), left[name], expected) for name in PROGRAMS]
    for names, ours, theirs in pairs:
        if ours.blobs != theirs.blobs:
            found.append(_difference("blobs", ours.blobs, theirs.blobs, names))
        if ours.revisions != theirs.revisions:
            found.append(_difference("manifest revisions", ours.revisions, theirs.revisions, names))
    return found


def notes(left: dict[str, Remains]) -> list[str]:
    """Layout differences that are no failure: what the tag indexes and ``_layers`` keep."""
    found = []
    ours, theirs = left[CARGOHOLD], left[GO]
    if ours.tag_index != theirs.tag_index:
        found.append(
            f"tag index entries left: cargohold {len(ours.tag_index)}, Go {len(theirs.tag_index)}"
            " (Go removes a deleted manifest's entries from every tag's index)"
        )
    if ours.layer_links != theirs.layer_links:
        found.append(
            f"_layers links left: cargohold {ours.layer_links}, Go {theirs.layer_links}"
            " (Go leaves the links of swept blobs dangling)"
        )
    return found


def summarise(samples: list[GcSample]) -> list[dict[str, Any]]:
    """Per size and mode: each program's median seconds and CPU, peak RSS, and the ratio."""
    out = []
    for blobs in dict.fromkeys(s.blobs for s in samples):
        for mode in MODES:
            group = [s for s in samples if s.blobs == blobs and s.mode == mode]
            if not group:
                continue
            by_program = {p: [s for s in group if s.program == p] for p in PROGRAMS}
            entry: dict[str, Any] = {"blobs": blobs, "mode": mode}
            for program, mine in by_program.items():
                entry[program] = {
                    "seconds": statistics.median(s.seconds for s in mine),
                    "cpu_seconds": statistics.median(
                        s.user_seconds + s.system_seconds for s in mine
                    ),
                    "rss_peak_kib": max(s.rss_peak_kib for s in mine),
                    "blobs_deleted": mine[-1].blobs_deleted,
                    "manifests_deleted": mine[-1].manifests_deleted,
                }
            entry["ratio"] = entry[GO]["seconds"] / entry[CARGOHOLD]["seconds"]
            out.append(entry)
    return out


def table(summary: list[dict[str, Any]], rounds: dict[int, int]) -> str:
    rows = [
        (
            "blobs",
            "mode",
            "rounds",
            "cargohold s",
            "Go s",
            "Go/c",
            "RSS MiB c / Go",
            "CPU s c / Go",
            "blobs deleted",
            "manifests deleted",
        )
    ]
    for entry in summary:
        ours, theirs = entry[CARGOHOLD], entry[GO]
        rows.append(
            (
                f"{entry['blobs']:,}",
                entry["mode"],
                str(rounds[entry["blobs"]]),
                f"{ours['seconds']:.2f}",
                f"{theirs['seconds']:.2f}",
                f"{entry['ratio']:.2f}",
                f"{ours['rss_peak_kib'] / 1024:.0f} / {theirs['rss_peak_kib'] / 1024:.0f}",
                f"{ours['cpu_seconds']:.1f} / {theirs['cpu_seconds']:.1f}",
                f"{ours['blobs_deleted']:,}",
                f"{ours['manifests_deleted']:,}",
            )
        )
    return "\n".join(
        [
            "Garbage collection of one registry root (filesystem), medians; Go/c > 1:"
            " cargohold is faster",
            "",
            *report.columns(rows, right=tuple(range(2, len(rows[0])))),
        ]
    )


def sizes_of(args: argparse.Namespace) -> list[int]:
    if args.gc_sizes:
        return [int(size) for size in args.gc_sizes.split(",")]
    return [DEFAULT_SIZES[0]] if args.quick else list(DEFAULT_SIZES)


def _one_size(
    blobs: int,
    rounds: int,
    workdir: Path,
    document: dict[str, Any],
    samples: list[GcSample],
) -> None:
    warm = document["scratch"]["filesystem"] != "tmpfs"
    started = time.perf_counter()
    content = gcroot.generate(blobs)
    made = time.perf_counter() - started
    document["roots"][str(blobs)] = {**content.summary(), "generate_seconds": made}
    say(f"bench: gc {blobs:,} blobs: content generated in {made:.1f} s: {content.summary()}")
    for number in range(rounds):
        for index, mode in enumerate(MODES):
            order = PROGRAMS if (number + index) % 2 == 0 else PROGRAMS[::-1]
            left: dict[str, Remains] = {}
            for program in order:
                sample, left[program] = collect_once(
                    program, mode, number, program == order[0], content, workdir, warm
                )
                samples.append(sample)
                say(
                    f"bench: gc {blobs:,} {mode:15} round {number + 1}/{rounds} {program:9}"
                    f" {sample.seconds:7.2f} s rss {sample.rss_peak_kib / 1024:4.0f} MiB"
                    f" cpu {sample.user_seconds + sample.system_seconds:6.1f} s"
                    f" other {sample.other_cpu:3.0f} %  deleted {sample.blobs_deleted:,} blobs,"
                    f" {sample.manifests_deleted:,} manifests"
                    f"  (write {sample.write_seconds:.0f} s, warm {sample.touch_seconds:.0f} s)"
                )
            where = f"{blobs} blobs, {mode}, round {number + 1}"
            for problem in problems(left, content.kept(mode == UNTAGGED)):
                say(f"bench: gc MISMATCH ({where}): {problem}")
                document["problems"].append(f"{where}: {problem}")
            for note in notes(left):
                key = f"{blobs} blobs, {mode}: {note}"
                if key not in document["notes"]:
                    say(f"bench: gc note: {key}")
                    document["notes"].append(key)


def scratch_of(args: argparse.Namespace) -> Path | None:
    """Where the scratch directory goes: --gc-dir, else tmpfs if it has room, else the default."""
    if args.gc_dir is not None:
        return Path(args.gc_dir)
    if SCRATCH.is_dir() and shutil.disk_usage(SCRATCH).free >= SCRATCH_ROOM:
        return SCRATCH
    say(f"bench: gc: {SCRATCH} is missing or too small: the roots go to the temporary directory")
    return None


def _filesystem(path: Path) -> str:
    """The type of the filesystem ``path`` is on, as /proc/mounts names it."""
    found, longest = "unknown", -1
    resolved = str(path.resolve())
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, point, kind = line.split()[:3]
            inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
            if inside and len(point) > longest:
                found, longest = kind, len(point)
    return found


def run(args: argparse.Namespace, json_path: Path) -> int:
    began = time.perf_counter()
    sizes = sizes_of(args)
    rounds = {blobs: args.rounds or (1 if args.quick else default_rounds(blobs)) for blobs in sizes}
    document: dict[str, Any] = report.environment()
    document.update(mode="gc", sizes=sizes, rounds=rounds, roots={}, problems=[], notes=[])
    samples: list[GcSample] = []
    with servers.workdir(args.keep, scratch_of(args)) as workdir:
        document["scratch"] = {"path": str(workdir), "filesystem": _filesystem(workdir)}
        say(f"bench: gc: roots under {workdir} ({document['scratch']['filesystem']})")
        for blobs in sizes:
            _one_size(blobs, rounds[blobs], workdir, document, samples)
    summary = summarise(samples)
    document["gc"] = summary
    document["samples"] = [asdict(sample) for sample in samples]
    document["total_seconds"] = time.perf_counter() - began
    report.write_json(json_path, document)
    print(table(summary, rounds), flush=True)
    for note in document["notes"]:
        print(f"note: {note}", flush=True)
    print(f"\ndone in {document['total_seconds']:.0f} s; raw samples in {json_path}", flush=True)
    if document["problems"]:
        print(
            f"\nMISMATCH: {len(document['problems'])} difference(s) between what the two"
            " collections left, or from what a correct one leaves (see above)",
            flush=True,
        )
        return 1
    return 0
