"""The supervisor of ``cargohold serve --workers N``: forks the workers and keeps them running.

``cargohold serve`` checks the configuration, storage and port, imports what a
worker needs (``server.preload``), and then becomes this supervisor. Workers
are forked from it ready to serve: none imports anything, so a start (or a
restart after a crash) answers as soon as a worker has made its application,
and the code and start-up objects they share stay in pages the kernel keeps
once for all of them, copied only where a worker writes. The supervisor
forwards SIGINT and SIGTERM to the workers and starts a new worker when one
dies, unless it died right after starting (it would only die again: a port
taken, a certificate gone).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from types import FrameType

#: A worker that dies sooner than this after its start is not restarted.
MIN_LIFETIME = 5.0


#: The signals that stop the server: the supervisor forwards them, each worker handles them.
_STOPS = (signal.SIGINT, signal.SIGTERM)


def _fork_worker(work: Callable[[], None]) -> int:
    # Held back across the fork: until the new worker has its own handlers, a SIGTERM the
    # supervisor sends it would run the supervisor's handler, inherited, and be lost there
    # (the worker then served on while the supervisor waited for it to stop).
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _STOPS)
    pid = os.fork()
    if pid != 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        return pid
    status = 1
    try:
        for signum in _STOPS:
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # one sent meanwhile stops it now
        work()
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        logging.shutdown()
        os._exit(status)


def _say(message: str) -> None:
    sys.stderr.write(f"cargohold: {message}\n")
    sys.stderr.flush()


def supervise(workers: int, work: Callable[[], None]) -> int:
    """Run ``workers`` forked processes, each calling ``work``, until a signal stops them.

    Returns the exit status: 0 after a signal, 1 when a worker died right after starting.
    """
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

    for signum in _STOPS:
        signal.signal(signum, stop)
    for _ in range(workers):
        started[_fork_worker(work)] = time.monotonic()
    status = 0
    while started:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
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
        started[_fork_worker(work)] = time.monotonic()
    return status
