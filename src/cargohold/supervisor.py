"""The supervisor of ``cargohold serve --workers N``: forks the workers and keeps them running.

``cargohold serve`` checks the configuration, storage and port, then replaces
itself with this module (``python -m cargohold.supervisor N --[no-]fast-path
CONFIG``), which imports next to nothing: each worker it forks imports the
server by itself, so memory is spent once per worker and never on the
supervisor (it avoids even ``logging``). It forwards SIGINT and SIGTERM to the
workers and starts a new worker when one dies, unless it died right after
starting (it would only die again: a port taken, a certificate gone).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from types import FrameType

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
        import traceback

        traceback.print_exc()
    finally:
        import logging

        logging.shutdown()
        os._exit(status)


def _say(message: str) -> None:
    # One line on stderr; the supervisor does without the logging module to stay small.
    sys.stderr.write(f"cargohold: {message}\n")
    sys.stderr.flush()


def supervise(workers: int, config_path: str | None, fast_path: bool) -> int:
    """Run ``workers`` workers until a signal stops them; returns the exit status."""
    started: dict[int, float] = {}
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in started:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue  # it died on its own meanwhile

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    # The web UI's sessions, signed with a key every worker shares when http.secret is not
    # set (the name is cargohold.ui.session.KEY_VARIABLE, not imported: see above).
    os.environ.setdefault("CARGOHOLD_UI_KEY", os.urandom(32).hex())
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
            _say(f"worker {pid} exited with {code} right after starting; stopping")
            status = 1
            stop(signal.SIGTERM, None)
            continue
        _say(f"worker {pid} exited with {code}; starting another")
        started[_fork_worker(config_path, fast_path)] = time.monotonic()
    return status


def main(argv: list[str]) -> int:
    workers, fast, config_path = argv
    try:
        return supervise(int(workers), config_path or None, fast == "--fast-path")
    finally:
        from cargohold.metrics import remove_metrics_dir

        remove_metrics_dir()  # the workers' metrics stores, when made for this run


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
