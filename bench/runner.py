"""One timed run: warm the server's files, then run a workload while recording
the server tree's peak RSS and the CPU time of server, client and the rest of
the machine.

The machine reclaims idle page cache within ~30 s, and the push workloads
leave hundreds of MiB of dirty pages behind, so before every timed run the
dirty pages are written out (``sync``) and every directory and file the set-up
made under the server's root is listed or read once. (What the timed runs
write, pushed blobs and PUT manifests, no workload reads; touching all of it
would take longer every round.)

CPU is given as a percentage of one core: the client's (this process and the
load generators it ran), the server's (its whole process tree), the kernel's
interrupt and softirq time (loopback TCP is mostly processed there, charged
to neither process), the backends' (SeaweedFS and redis-server in the S3
modes) and "other" (everything else the machine was busy with, such as other
users of the machine), so a reader can see whether the load generator, the
storage or a neighbour, rather than the server, set the pace.

``interleave`` runs every workload against every server round after round:
in even rounds in the order given (cargohold, then the Go registry), in odd
rounds in the reverse order.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench import fixtures, procs
from bench.fixtures import Content
from bench.servers import Server
from bench.workloads import Context, Workload


@dataclass
class Sample:
    value: float
    seconds: float
    round: int
    client_cpu: float
    server_cpu: float
    irq_cpu: float
    other_cpu: float
    rss_peak_kib: int
    #: Untimed: writing dirty pages out, then reading the server's files.
    sync_seconds: float
    touch_seconds: float
    #: SeaweedFS and redis-server, when the servers store there.
    backend_cpu: float = 0.0
    #: The workload's further figures (``Measured.extra``).
    extra: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, float | int]:
        return asdict(self)


def system_seconds() -> tuple[float, float]:
    """CPU seconds the machine has been busy, and how many of them in (soft) interrupts."""
    with open("/proc/stat") as file:
        fields = [int(value) for value in file.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq + steal) / tick, (irq + softirq) / tick


def snapshot(root: Path) -> list[str]:
    """Every directory and file under ``root``, directories first."""
    directories, files = [], []
    for directory, _subdirs, names in os.walk(root):
        directories.append(directory)
        files += [os.path.join(directory, name) for name in names]
    return directories + files


def touch(paths: list[str]) -> None:
    """List every directory and read every file of ``paths`` (a snapshot) once."""
    for path in paths:
        try:
            if os.path.isdir(path):
                os.listdir(path)
                continue
            with open(path, "rb", buffering=0) as file:
                while file.read(1 << 20):
                    pass
        except FileNotFoundError:
            continue


def timed(ctx: Context, workload: Workload, server: Server) -> Sample:
    prepared = time.perf_counter()
    os.sync()
    synced = time.perf_counter()
    if server.key not in ctx.warm_paths:
        ctx.warm_paths[server.key] = snapshot(server.root)
    touch(ctx.warm_paths[server.key])
    touched = time.perf_counter()
    workload.ready(ctx, server)
    server_before = procs.cpu_seconds(server.pid)
    backend_before = sum(procs.cpu_seconds(pid) for pid in ctx.backend_pids)
    client_before = procs.self_cpu_seconds() + procs.children_cpu_seconds()
    busy_before, irq_before = system_seconds()
    started = time.perf_counter()
    with procs.sample_rss(server.pid) as rss:
        measured = workload.run(ctx, server)
    wall = time.perf_counter() - started
    server_cpu = procs.cpu_seconds(server.pid) - server_before
    backend_cpu = sum(procs.cpu_seconds(pid) for pid in ctx.backend_pids) - backend_before
    client_cpu = procs.self_cpu_seconds() + procs.children_cpu_seconds() - client_before
    busy_after, irq_after = system_seconds()
    busy, irq = busy_after - busy_before, irq_after - irq_before
    other = max(0.0, busy - irq - server_cpu - client_cpu - backend_cpu)
    # The load may be shorter than the call (the PUT client's processes start first):
    # client and server CPU are spread over the load, less the client's start-up.
    seconds = measured.seconds
    client_cpu -= measured.client_startup_cpu
    return Sample(
        value=measured.value,
        seconds=seconds,
        round=ctx.round,
        client_cpu=100 * client_cpu / seconds,
        server_cpu=100 * server_cpu / seconds,
        irq_cpu=100 * irq / wall,
        other_cpu=100 * other / wall,
        rss_peak_kib=rss.peak_kib,
        sync_seconds=synced - prepared,
        touch_seconds=touched - synced,
        backend_cpu=100 * backend_cpu / seconds,
        extra=measured.extra,
    )


def say(message: str) -> None:
    """A progress line on stderr (stdout carries the tables)."""
    print(message, file=sys.stderr, flush=True)


def setup(server: Server, content: Content, full: bool = True) -> float:
    """Give ``server`` the fixtures and read them back; the seconds it took."""
    started = time.perf_counter()
    fixtures.populate(server.url, content, full)
    fixtures.check(server.url, content, full)
    seconds = time.perf_counter() - started
    say(f"bench: {server.key}: set up and checked in {seconds:.1f} s")
    return seconds


def interleave(
    ctx: Context,
    workloads: list[Workload],
    pair: dict[str, Server],
    rounds: int,
    first_round: int = 0,
) -> dict[str, dict[str, list[Sample]]]:
    """Rounds ``first_round`` ... of every workload against every server; the samples.

    ``pair`` maps a label to each server (``{CARGOHOLD: ..., GO: ...}``, or any
    labels): the samples are keyed by workload name, then by those labels. Even
    rounds run the servers in ``pair``'s order, odd rounds in the reverse order.
    Rounds are numbered on across calls (``first_round``) so that a second set of
    rounds on the same storage pushes new blobs and PUTs new manifests.
    """
    labels = list(pair)
    samples: dict[str, dict[str, list[Sample]]] = {
        w.name: {label: [] for label in labels} for w in workloads
    }
    for number in range(first_round, first_round + rounds):
        ctx.round = number
        order = labels if number % 2 == 0 else labels[::-1]
        for index, workload in enumerate(workloads):
            workload.prepare(ctx, index)
            for name in order:
                sample = timed(ctx, workload, pair[name])
                samples[workload.name][name].append(sample)
                backend = f" backend {sample.backend_cpu:3.0f} %" if ctx.backend_pids else ""
                say(
                    f"bench: round {number - first_round + 1}/{rounds} {workload.name:16}"
                    f" {name:9} {sample.value:10,.1f} {workload.unit:5}"
                    f"  cpu client {sample.client_cpu:3.0f} %"
                    f" server {sample.server_cpu:3.0f} %{backend}"
                    f" softirq {sample.irq_cpu:3.0f} % other {sample.other_cpu:3.0f} %"
                )
    return samples
