"""A server a test may stop mid-request and start again, on the same port and data.

The port is below Linux's ephemeral range (32768 and up): while the server is
down, any outgoing connection on the machine may be given a port of that range
as its local port, and then the server could not bind it again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Generic, Protocol, TypeVar

from tests.support.seaweed import free_port_pairs
from tests.support.servers import stop


class Running(Protocol):
    @property
    def process(self) -> subprocess.Popen[bytes]: ...


S = TypeVar("S", bound=Running)


class Restartable(Generic[S]):
    """``launch(directory, port)`` started, stopped and started again on one port.

    ``graceful``: stopped with SIGTERM (SIGKILL only if that takes over 10 s), for a
    server that would lose acknowledged writes to a SIGKILL; else killed, as a crash
    would.
    """

    def __init__(
        self, directory: Path, launch: Callable[[Path, int], S], *, graceful: bool
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._launch = launch
        self._graceful = graceful
        self._port = free_port_pairs(1, 10000, 20000)[0]
        self._server: S | None = None

    @property
    def server(self) -> S:
        assert self._server is not None
        return self._server

    @property
    def alive(self) -> bool:
        return self._server is not None and self._server.process.poll() is None

    def start(self) -> None:
        if self._server is not None:
            self._server.process.wait(10)  # a stop under way (in another thread) ends first
        self._server = self._launch(self._directory, self._port)

    def stop(self) -> None:
        """Stop the server now, and wait until it is gone."""
        if self._server is None:
            return
        process = self._server.process
        if self._graceful:
            stop(process, timeout=10)
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
