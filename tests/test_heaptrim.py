"""A worker hands freed heap memory back to the kernel (``heaptrim.py``)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cargohold import heaptrim, server
from cargohold.config import parse_config

# Freed 64 KiB pieces between live ones: glibc keeps them, below the top of its heap.
_FRAGMENTED = """
import os, sys
from cargohold.heaptrim import trimmer

def resident_mib():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

pieces = [bytearray(64 << 10) for _ in range(640)]  # 40 MiB, every page touched
for piece in pieces:
    piece[::4096] = b"x" * len(piece[::4096])
kept = pieces[1::2]
del pieces
before = resident_mib()
returned = trimmer()()
print(before, resident_mib(), returned, len(kept))
"""


def test_the_trim_returns_what_was_freed_below_the_top_of_the_heap() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _FRAGMENTED], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    before, after, returned, _ = done.stdout.split()
    assert returned == "1"
    assert float(before) - float(after) >= 15, (before, after)  # of the 20 MiB freed


def test_this_c_library_has_it() -> None:
    # The tests run on glibc (Debian); elsewhere ``trimmer`` is None and nothing is trimmed.
    assert heaptrim.trimmer() is not None


async def test_a_worker_trims_every_interval_until_it_stops() -> None:
    trims = 0

    def counted() -> int:
        nonlocal trims
        trims += 1
        return 0

    trimming = asyncio.create_task(heaptrim.keep_trimmed(0.01, counted))
    for _ in range(500):
        if trims >= 3:
            break
        await asyncio.sleep(0.01)
    trimming.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trimming
    seen = trims
    await asyncio.sleep(0.05)
    assert seen >= 3
    assert trims == seen, "no trim after the worker stops"


async def test_a_serving_worker_trims_until_it_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def watched() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    monkeypatch.setattr(server, "keep_trimmed", watched)
    config = parse_config(
        f"version: 0.1\nstorage: {{filesystem: {{rootdirectory: {tmp_path}}}}}\n"
        "http: {addr: 127.0.0.1:0}\nlog: {level: error}\n",
        environ={},
    )
    serving = asyncio.create_task(server._serve(config, server.listen_socket(config), True))
    await asyncio.wait_for(started.wait(), 30)
    assert not cancelled.is_set()
    os.kill(os.getpid(), signal.SIGTERM)  # the worker's own handler: it stops serving
    await asyncio.wait_for(serving, 30)
    assert cancelled.is_set()
