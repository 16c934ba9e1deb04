"""Faults a test registry injects, and the log of what it was asked, for testing clients.

``Faults`` holds the rules a test arms while the registry serves:

- ``fail``: the next ``times`` requests matching a method and a path pattern
  get ``status`` with the specification's error body (a 429 with
  ``Retry-After`` when asked), and never reach the registry;
- ``delay``: matching requests wait ``seconds`` before they are answered;
- ``cut``: the connection of the next matching requests closes once ``after``
  bytes of the reply's body went out (a client sees a short read).

They apply on aiohttp's path, where a middleware sees each request before
the registry does (``serve(fast_path=False)``, the default). A cut counts the
bytes the reply writes to its connection, so it needs the replies written
there: storage in memory (a folder's large blobs go out through the kernel,
out of its reach; ``cut`` refuses then). ``RequestLog``
is a request hook, so it hears every request on either path: its method,
path, status and headers, and the answers the faults made up.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from aiohttp import web

from cargohold.api import errcode
from cargohold.api.pipeline import Exchange

__all__ = ["Faults", "LoggedRequest", "RequestLog"]


@dataclass(frozen=True)
class LoggedRequest:
    """One request as the registry heard it, and its answer's status."""

    method: str
    #: The request target as sent: path and query.
    path: str
    status: int
    headers: Mapping[str, str]


#: How long reading the log waits for requests still being finished.
SETTLE = 2.0


class RequestLog:
    """A request hook keeping every finished request (``registry.requests``).

    A request is finished (and logged) once its reply is out: a client may read
    the reply a moment before. So reading the log waits, briefly, for every
    request started to be finished: what a client was answered is there.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._entries: list[LoggedRequest] = []
        self._open = 0

    def request_started(self, exchange: Exchange) -> None:
        with self._changed:
            self._open += 1

    def request_finished(self, exchange: Exchange) -> None:
        entry = LoggedRequest(
            exchange.method, exchange.target, exchange.status, dict(exchange.headers)
        )
        with self._changed:
            self._open -= 1
            self._entries.append(entry)
            self._changed.notify_all()

    def add(self, entry: LoggedRequest) -> None:
        with self._changed:
            self._entries.append(entry)

    def entries(self) -> list[LoggedRequest]:
        with self._changed:
            self._changed.wait_for(lambda: self._open <= 0, timeout=SETTLE)
            return list(self._entries)

    def clear(self) -> None:
        with self._changed:
            self._entries.clear()


@dataclass
class _Rule:
    method: str
    path: re.Pattern[str]
    #: Requests still to affect; None: every one.
    times: int | None
    status: int = 0
    retry_after: int | None = None
    seconds: float = 0.0
    after: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method in ("*", method)) and self.path.search(path) is not None


#: The error code each failing status answers with; any other status answers UNKNOWN.
_CODES = {
    401: errcode.UNAUTHORIZED,
    403: errcode.DENIED,
    429: errcode.TOOMANYREQUESTS,
    503: errcode.UNAVAILABLE,
}


@dataclass
class Faults:
    """The faults armed on one test registry. Safe to arm from any thread."""

    #: Where the answers it makes up are logged (the registry's request log).
    log: RequestLog | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _failures: list[_Rule] = field(default_factory=list)
    _delays: list[_Rule] = field(default_factory=list)
    _cuts: list[_Rule] = field(default_factory=list)
    #: Whether replies are written where a cut can count them (the storage is in memory).
    cuttable: bool = True

    def fail(
        self,
        method: str = "*",
        path: str = "",
        *,
        status: int = 503,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next ``times`` requests whose method is ``method`` (``*``: any) and whose
        path ``path`` (a regular expression) is found in with ``status``; ``retry_after``:
        the seconds a ``Retry-After`` header asks the client to wait."""
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an error (400-599), not {status}")
        if times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must not be negative")
        rule = _Rule(method.upper(), re.compile(path), times, status, retry_after)
        with self._lock:
            self._failures.append(rule)

    def delay(
        self, seconds: float, method: str = "*", path: str = "", *, times: int | None = None
    ) -> None:
        """Make matching requests wait ``seconds`` first (the next ``times``, or every one)."""
        if seconds < 0:
            raise ValueError("seconds must not be negative")
        if times is not None and times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        with self._lock:
            self._delays.append(_Rule(method.upper(), re.compile(path), times, seconds=seconds))

    def cut(self, after: int, method: str = "GET", path: str = "", *, times: int = 1) -> None:
        """Close the connection of the next ``times`` matching requests once ``after`` bytes
        of their reply's body went out."""
        if not self.cuttable:
            raise ValueError(
                "cut needs the replies written through the connection: serve() with storage "
                "in memory (a folder's large blobs go out through the kernel)"
            )
        if after < 0:
            raise ValueError("after must not be negative")
        if times < 1:
            raise ValueError(f"times must be at least 1, not {times}")
        with self._lock:
            self._cuts.append(_Rule(method.upper(), re.compile(path), times, after=after))

    def clear(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self._failures.clear()
            self._delays.clear()
            self._cuts.clear()

    def _take(self, rules: list[_Rule], method: str, path: str) -> _Rule | None:
        with self._lock:
            for rule in rules:
                if rule.matches(method, path):
                    if rule.times is not None:
                        rule.times -= 1
                        if rule.times == 0:
                            rules.remove(rule)
                    return rule
        return None

    @web.middleware
    async def middleware(
        self,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        path = request.raw_path
        delay = self._take(self._delays, request.method, path)
        if delay is not None:
            await asyncio.sleep(delay.seconds)
        failure = self._take(self._failures, request.method, path)
        if failure is None:
            cut = self._take(self._cuts, request.method, path)
            if cut is None or request.transport is None:
                return await handler(request)
            counter = _Cutter(request.transport, cut.after)
            try:
                return await handler(request)
            finally:
                counter.restore()
        code = _CODES.get(failure.status, errcode.ErrorCode("UNKNOWN", failure.status))
        headers = {"Content-Type": "application/json"}
        if failure.retry_after is not None:
            headers["Retry-After"] = str(failure.retry_after)
        body = errcode.error_body(code, f"injected by the test: {failure.status}")
        if self.log is not None:
            self.log.add(LoggedRequest(request.method, path, failure.status, dict(request.headers)))
        return web.Response(status=failure.status, headers=headers, body=body)


class _Cutter:
    """Counts what a reply writes to its connection, and closes it once ``after`` bytes of
    the body (what follows the header's blank line) went out."""

    def __init__(self, transport: asyncio.BaseTransport, after: int) -> None:
        self._transport = transport
        self._write = transport.write  # type: ignore[attr-defined]
        self._writelines = transport.writelines  # type: ignore[attr-defined]
        self._head = b""
        self._body: int | None = None  # bytes of body sent; None while in the header
        self._left = after
        self._done = False
        transport.write = self.write  # type: ignore[attr-defined]
        transport.writelines = self.writelines  # type: ignore[attr-defined]

    def writelines(self, chunks: Iterable[bytes | bytearray | memoryview]) -> None:
        self.write(b"".join(chunks))

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._done:
            return
        data = bytes(data)
        if self._body is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                self._write(data)
                return
            start = len(self._head) - len(data)
            split = max(end + 4 - start, 0)
            self._write(data[:split])
            self._body = 0
            data = data[split:]
        if len(data) < self._left:
            self._left -= len(data)
            self._write(data)
            return
        self._write(data[: self._left])
        self._done = True
        self.restore()
        self._transport.close()  # what was written goes out first, then the end

    def restore(self) -> None:
        self._transport.write = self._write  # type: ignore[attr-defined]
        self._transport.writelines = self._writelines  # type: ignore[attr-defined]
