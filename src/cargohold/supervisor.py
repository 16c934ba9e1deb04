"""The supervisor of ``cargohold serve --workers N``: forks the workers and keeps them running.

``cargohold serve`` checks the configuration, storage and port, then replaces
itself with this module (``python -m cargohold.supervisor N --[no-]fast-path
CONFIG``), which imports next to nothing: each worker it forks imports the
server by itself, so memory is spent once per worker and never on the
supervisor. It forwards SIGINT and SIGTERM to the workers and starts a new
worker when one dies, unless it died right after starting (it would only die
again: a port taken, a certificate gone).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
import traceback
from types import FrameType

log = logging.getLogger("cargohold.supervisor")

#: A worker that dies sooner than this after its start is not restarted.
MIN_LIFETIME = 5.0


def _fork_worker(config_path: str | None, fast_path: bool) -> int:
    pid = os.fork()
    if pid != 0:
        return pid
    status = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        from cargohold.server import run_worker

        run_worker(config_path, fast_path)
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        os._exit(status)


def supervise(workers: int, config_path: str | None, fast_path: bool) -> int:
    """Run ``workers`` workers until a signal stops them; returns the exit status."""
    started: dict[int, float] = {}
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    for _ in range(workers):
        started[_fork_worker(config_path, fast_path)] = time.monotonic()
    status = 0
    while started:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        born = started.pop(pid, None)
        if born is None or stopping:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        if time.monotonic() - born < MIN_LIFETIME:
            log.error("worker %d exited with %d right after starting; stopping", pid, code)
            status = 1
            stop(signal.SIGTERM, None)
            continue
        log.warning("worker %d exited with %d; starting another", pid, code)
        started[_fork_worker(config_path, fast_path)] = time.monotonic()
    return status


def main(argv: list[str]) -> int:
    workers, fast, config_path = argv
    logging.basicConfig(format="cargohold: %(message)s", level=logging.WARNING)
    return supervise(int(workers), config_path or None, fast == "--fast-path")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
