"""A webhook receiver on a loopback port: what a registry's notifications told it, and how
it answers (taking them, failing, stalling, going away and coming back)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.servers import free_port
from tests.support.waiting import until


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def events(self) -> list[dict[str, Any]]:
        """The events of a Distribution envelope (or the one CloudEvent's data)."""
        document = json.loads(self.body)
        if "specversion" in document:
            return [document["data"]]
        events: list[dict[str, Any]] = document["events"]
        return events


class Receiver:
    """Records every POST; answers as ``answer`` says (default: 200 at once)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/events"
        self.deliveries: list[Delivery] = []
        self.attempts = 0
        #: Status to answer with (after ``delay`` seconds); None: close without answering.
        self.status: int | None = 200
        self.delay = 0.0
        self.reply_body = b""
        self.redirect: str | None = None
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Go away: the port refuses connections until ``start``."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            assert self._thread is not None
            self._thread.join()
            self._server = None

    def take(self, delivery: Delivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)

    def events(self) -> list[dict[str, Any]]:
        """Every event of every accepted delivery, in arrival order."""
        with self._lock:
            return [event for delivery in self.deliveries for event in delivery.events]

    async def arrived(self, count: int, within: float = 20) -> list[dict[str, Any]]:
        """Every event so far, once there are ``count``; the test's event loop runs meanwhile."""
        await until(lambda: len(self.events()) >= count, within, f"fewer than {count} events")
        return self.events()


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with receiver._lock:
                receiver.attempts += 1
            if receiver.delay:
                time.sleep(receiver.delay)
            if receiver.redirect is not None:
                self.send_response(307)
                self.send_header("Location", receiver.redirect)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = receiver.status
            if status is None:
                self.close_connection = True
                return
            if 200 <= status < 400:
                receiver.take(Delivery(self.path, dict(self.headers.items()), body))
            self.send_response(status)
            self.send_header("Content-Length", str(len(receiver.reply_body)))
            self.end_headers()
            self.wfile.write(receiver.reply_body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    """A receiver on a free loopback port, stopped when the block ends."""
    receiver = Receiver(free_port())
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
