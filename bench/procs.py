"""Resident memory and CPU time of a whole process tree, read from /proc.

A server's tree is the server process and all its descendants (cargohold's
worker processes). Its resident memory is the sum over the tree of each
process's proportional set size (Pss, from ``/proc/PID/smaps_rollup``): a
page that forked workers still share with their parent counts once, split
between them, where adding up VmRSS as ``ps`` shows it would count it once per
process. For a single process (the Go registry) Pss and RSS differ only by its
share of shared libraries. A sampler thread records the peak every ~50 ms
while a workload runs; the process list is refreshed less often, since walking
all of /proc on every sample would steal CPU from the servers on a 2-core
machine.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read().decode()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ")".
    return text[text.rindex(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """``root`` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def rss_kib(pids: list[int]) -> int:
    """Sum of Pss (KiB) over ``pids``: shared pages count once; processes gone count 0."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup", "rb") as file:
            for line in file:
                if line.startswith(b"Pss:"):
                    total += int(line.split()[1])
                    break
    return total


def peak_rss_kib(pid: int) -> int:
    """The peak RSS (KiB) of process ``pid`` since it last exec'd: its VmHWM; 0 once it exited.

    Not ``wait4``'s ru_maxrss: that keeps the peak of the memory the child was
    (v)forked with, the parent's, however small the program it ran.
    """
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", "rb") as file:
        for line in file:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(root: int) -> float:
    """User + system CPU seconds used so far by the live tree under ``root``."""
    total = 0
    for pid in tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            # utime, stime (fields 14, 15), plus cutime, cstime of reaped children.
            total += sum(int(value) for value in fields[11:15])
    return total / _TICK


def children_cpu_seconds() -> float:
    """CPU seconds of this process's reaped children (wrk, ab, client processes)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu_seconds() -> float:
    """CPU seconds of this process (all threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class RssPeak:
    """The highest tree RSS seen while sampling, in KiB."""

    peak_kib: int = 0
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self, root: int, interval: float) -> None:
        pids = tree(root)
        refreshed = time.monotonic()
        while True:
            now = time.monotonic()
            if now - refreshed > 1.0:
                pids, refreshed = tree(root), now
            self.peak_kib = max(self.peak_kib, rss_kib(pids))
            self.samples += 1
            if self._stop.wait(interval):
                return


@contextmanager
def sample_rss(root: int, interval: float = 0.05) -> Iterator[RssPeak]:
    """Sample the RSS of the tree under ``root`` in a thread until the block ends."""
    peak = RssPeak()
    thread = threading.Thread(target=peak.run, args=(root, interval), daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        peak._stop.set()
        thread.join()
