"""One client connection: framed by llhttp, answered by the fast path until it cannot.

Each connection starts here. Every byte the client sends goes through llhttp
(``httptools``) in strict mode, so requests are framed exactly as the
specification says: whitespace before a colon, a doubled or signed
``Content-Length``, an unknown ``Transfer-Encoding``, a bare LF, and whatever
else llhttp rejects are never answered by this side. A complete, body-less
GET or HEAD that is plainly well-formed goes to the fast path
(``fastpath.py``), whose reply is written at once; pipelined requests are
answered in order, several to one write.

The first request that is anything else (a body, a query, an error from the
parser, a reply the fast path leaves alone) hands the connection to aiohttp
for good: aiohttp's protocol is attached to the transport only then, and is
given every byte from the first unanswered request on. aiohttp parses those
bytes again with its own llhttp and answers them, errors and all; a request
llhttp rejects is rejected by aiohttp the same way, whichever path saw it.

Where each request ends is known exactly without trusting a search: data is
fed to the parser in pieces cut after each CRLF CRLF, and a body-less request
ends at its header section's end, which is such a cut; the parser's
``on_message_complete`` within the piece confirms it. Once llhttp has
accepted a request head, its request line and header lines are read by
position (``_Headers``): llhttp has already refused every line that is not
``name: value``.

While the client reads no replies (the transport asks to pause writing),
the fast path reads no more requests.

**Limits.** A client may keep a connection waiting only so long (``Limits``,
from ``http.timeouts`` and ``http.maxheaderbytes``). The parser goes on
following the requests after the hand-over (aiohttp still parses them; this
one only watches where each begins and ends), so every connection is in one
phase: idle (no request begun), reading a head, reading a body, or the
server's turn. The listener's ``ConnectionSet`` sweeps its connections a few
times per shortest timeout and closes a connection idle for ``idle`` seconds
while the fast path holds it (aiohttp's keep-alive timer, set to the same,
times the idle connections it holds), a head not whole ``header`` seconds
after its first byte (so a head dribbled a byte at a time is not held for
ever), and a body with no byte for ``body`` seconds while the server was
reading (a stall the server caused, by pausing the transport, is not the
client's), and a reply whose bytes the client has taken none of for ``write``
seconds: bytes wait for it (in the transport's buffer or the kernel's send
queue, which is where a ``sendfile``, a copying thread or a ``splice`` leaves
them) and their count has not changed since. That close resets the
connection, and shuts the socket down first, so that a thread or a relay
writing to a duplicate of it fails at once too. A head longer than ``head``
bytes gets ``431`` and the connection is closed; after the hand-over the
answer waits until aiohttp has no request of the connection under way, so
that it never lands inside another reply (one pipelined ahead that aiohttp
has not begun is not seen, and goes unanswered). A head's length is exact on
the fast path and, after the hand-over, for a head that starts a piece (after
a reply, or after a body-less head); one that follows a body in the same read
is counted from the body's last byte, so a chunked body's closing framing
counts as its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import socket
import struct
import termios
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httptools

from cargohold.api.fastpath import Answer, Counted, FastPath, RequestHead

if TYPE_CHECKING:
    from cargohold.api.pipeline import Pipeline

__all__ = [
    "BODY_TIMEOUT",
    "HEADER_TIMEOUT",
    "IDLE_TIMEOUT",
    "LONGEST_HEAD",
    "WRITE_TIMEOUT",
    "Connection",
    "ConnectionSet",
    "Limits",
]

log = logging.getLogger("cargohold.server")

#: A request head longer than aiohttp's line limit is left to aiohttp, whose limits then apply.
MAX_HEAD = 8190
#: As many header fields, likewise (aiohttp allows 128).
MAX_FIELDS = 64
#: The versions the fast path answers, as the request line ends.
_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}

#: The defaults of ``http.timeouts`` (seconds) and ``http.maxheaderbytes``.
IDLE_TIMEOUT = 75.0  # aiohttp's run_app default
HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 60.0
WRITE_TIMEOUT = 60.0
LONGEST_HEAD = 64 * 1024

# A connection's phase: what it waits for.
_IDLE = 0  # a request to begin (after the hand-over: aiohttp's keep-alive timer times it)
_HEAD = 1  # the rest of a request head
_BODY = 2  # the rest of a request body
_BUSY = 3  # the server's reply (after the hand-over)
_REFUSING = 4  # for aiohttp to finish, to answer a head too long


@dataclass(frozen=True, slots=True)
class Limits:
    """How long a client may keep a connection waiting (seconds), and how long a head may be.

    The defaults are ``http.timeouts``' and ``http.maxheaderbytes``'; a timeout
    of 0 is none.
    """

    #: Between requests.
    idle: float = IDLE_TIMEOUT
    #: From a head's first byte to its end.
    header: float = HEADER_TIMEOUT
    #: A body with no byte arriving.
    body: float = BODY_TIMEOUT
    #: A reply with no byte taken by the client while some wait for it.
    write: float = WRITE_TIMEOUT
    #: The bytes of a request head, its request line and blank line included.
    head: int = LONGEST_HEAD

    def seconds(self, phase: int) -> float:
        """The timeout of ``phase``; infinite for none."""
        timeout = (self.idle, self.header, self.body)[phase] if phase <= _BODY else 0.0
        return timeout if timeout > 0 else math.inf

    @property
    def writing(self) -> float:
        """The write timeout; infinite for none."""
        return self.write if self.write > 0 else math.inf

    @property
    def sweep(self) -> float:
        """How often connections are looked at: a quarter of the shortest timeout, 50 ms to 1 s."""
        shortest = min(self.seconds(_IDLE), self.seconds(_HEAD), self.seconds(_BODY), self.writing)
        return min(max(shortest / 4, 0.05), 1.0)


#: What each header name looks like in a lower-cased header block (few names are asked for).
_KEYS: dict[str, bytes] = {}


class _Headers(Mapping[str, str]):
    """The header fields of a request head that llhttp has validated, read on lookup.

    llhttp (strict) has checked every line: ``name:`` with no space before the
    colon, no obsolete line folding, no bare CR or LF. So a field ``name`` is
    exactly where ``CRLF name:`` occurs in the lower-cased block, and its value
    runs to the next CRLF. The first field of a name wins, as in aiohttp's
    ``CIMultiDict.get``; values are decoded as aiohttp decodes them.
    """

    __slots__ = ("_lowered", "_raw")

    def __init__(self, raw: bytes, lowered: bytes) -> None:
        self._raw = raw  # the request head: its line, then CRLF name: value ... CRLF CRLF
        self._lowered = lowered

    def get(self, name: str, default: Any = None) -> Any:
        key = _KEYS.get(name)
        if key is None:
            key = b"\r\n" + name.lower().encode("latin-1") + b":"
            if len(_KEYS) < 64:
                _KEYS[name] = key
        at = self._lowered.find(key)
        if at < 0:
            return default
        start = at + len(key)
        value = self._raw[start : self._raw.index(b"\r\n", start)]
        return value.strip(b" \t").decode("utf-8", "surrogateescape")

    def __getitem__(self, name: str) -> str:
        value: str | None = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def _names(self) -> list[str]:
        lines = self._raw.split(b"\r\n")[1:]  # the request line is no field
        return [line.partition(b":")[0].decode("latin-1") for line in lines if line]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


class ConnectionSet:
    """Every open connection of a listener: timed by one sweep, and closed when idle at a drain."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.open: set[Connection] = set()
        self._sweeping: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Sweep the connections every ``limits.sweep`` seconds until ``stop``."""
        loop = asyncio.get_running_loop()
        self._sweeping = loop.call_later(self.limits.sweep, self._sweep, loop)

    def stop(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        # One pass over every connection instead of a timer each: a request then costs
        # no timer at all, and a few thousand connections take a millisecond.
        now = loop.time()
        for connection in list(self.open):
            connection.expire(now)
        self._sweeping = loop.call_later(self.limits.sweep, self._sweep, loop)

    def close_idle(self, busy: set[object]) -> None:
        """Close every connection whose transport is not in ``busy`` (answering a request).

        A connection the fast path holds is always between requests: its replies
        are written whole as soon as they are decided.
        """
        for connection in list(self.open):
            if connection.transport not in busy:
                connection.close()


class Connection(asyncio.Protocol):
    """A connection served by the fast path until it hands itself to aiohttp.

    Without a fast path (``fast`` None) it is aiohttp's from the first byte,
    and stays here so that its listener knows it and its limits hold.
    """

    def __init__(
        self,
        fast: FastPath | None,
        pipeline: Pipeline,
        full: Callable[[], asyncio.Protocol],
        connections: ConnectionSet,
    ) -> None:
        self._fast = fast
        self._pipeline = pipeline
        self._full = full
        self._connections = connections
        self._limits = connections.limits
        self._loop = asyncio.get_running_loop()
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._remote = "-"
        #: Bytes since the end of the last answered request, all fed to the parser.
        self._pending = b""
        self._headers_done = False
        self._keep_alive = False
        self._complete = False
        self._writing_paused = False
        self._socket: socket.socket | None = None
        # Bytes waiting for the client when the sweep last looked, and since when that count.
        self._unsent = 0
        self._unsent_since = 0.0
        # What the connection waits for, since when (the loop's clock), as the parser sees it.
        self._phase = _IDLE
        self._since = 0.0
        self._now = 0.0
        # After the hand-over, positions in the bytes fed to the parser: how many were fed,
        # where the current request began, and the body bytes of the piece being fed (in
        # all, and once the head ended: -1 while it has not).
        self._fed = 0
        self._head_at = 0
        self._piece_body = 0
        self._head_end_body = -1

    # -- the transport's calls ---------------------------------------------------------

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.open.add(self)
        self._since = self._now = self._loop.time()
        self._socket = transport.get_extra_info("socket")
        if self._fast is None:
            self._hand_over(b"")
            return
        peer = transport.get_extra_info("peername")
        if peer:
            self._remote = str(peer[0])

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._follow(data)
            return
        self._now = self._loop.time()
        parser = self._parser
        assert parser is not None
        pending = self._pending + data if self._pending else data
        size = len(pending)
        answers: list[Answer] = []
        boundary = 0  # where the first request not answered yet begins
        fed = len(self._pending)
        limit = self._limits.head
        while fed < size:
            cut = pending.find(b"\r\n\r\n", max(fed - 3, boundary))
            end = cut + 4 if cut >= 0 else size
            try:
                parser.feed_data(pending if fed == 0 and end == size else pending[fed:end])
            except (httptools.HttpParserError, httptools.HttpParserUpgrade):
                self._parser = None  # no longer followed: aiohttp answers or refuses
                break  # malformed, or an upgrade: aiohttp's to answer or refuse
            fed = end
            if end - boundary > limit and (self._headers_done or self._phase == _HEAD):
                self._write(answers)
                self._refuse()
                return
            if self._complete:
                self._complete = self._headers_done = False
                answer = self._answer(parser, pending, boundary, end)
                if answer is None:
                    break
                answers.append(answer)
                boundary = end
            elif self._headers_done:
                break  # the request has a body: aiohttp's
        else:
            self._pending = pending[boundary:] if boundary else pending
            self._write(answers)
            if len(self._pending) > MAX_HEAD:
                self._fed, self._head_at = len(self._pending), 0
                self._hand_over(self._pending)
            return
        self._write(answers)
        self._fed, self._head_at = fed, boundary  # where the parser stands in what follows
        self._hand_over(pending[boundary:], pending[fed:])

    def _answer(
        self, parser: httptools.HttpRequestParser, data: bytes, start: int, end: int
    ) -> Answer | None:
        """The fast path's answer to the request ``data[start:end]``, if it is plain enough.

        llhttp has validated the request line (``METHOD SP target SP HTTP/x.y``)
        and the header lines, so they are read here by position.
        """
        if end - start > MAX_HEAD or not self._keep_alive:
            return None
        block = data[start:end] if start or end != len(data) else data
        if block[:1] in (b"\r", b"\n"):
            block = block.lstrip(b"\r\n")  # blank lines before a request, which llhttp skips
        line_end = block.index(b"\r\n")
        version = _VERSIONS.get(block[line_end - 8 : line_end])
        if block.startswith(b"HEAD "):
            method = "HEAD"
        elif block.startswith(b"GET "):
            method = "GET"
        else:
            return None
        target = block[len(method) + 1 : line_end - 9]
        if version is None or target[:1] != b"/" or b"?" in target or not target.isascii():
            return None
        # The request line holds no CRLF, so below it "CRLF name:" can only start a field.
        lowered = block.lower()
        if version == "1.1" and b"\r\nhost:" not in lowered:
            return None  # aiohttp refuses an HTTP/1.1 request without Host: let it
        if (
            b"\r\ncontent-length:" in lowered
            or b"\r\ntransfer-encoding:" in lowered
            or b"\r\nexpect:" in lowered  # a body, or a reply with more than the answer
            or lowered.count(b"\r\n") > MAX_FIELDS + 2
        ):
            return None
        head = RequestHead(method, target.decode(), version, _Headers(block, lowered), len(block))
        assert self._fast is not None
        return self._fast.answer(head, self._remote)

    def eof_received(self) -> bool | None:
        if self._inner is None and self._pending:
            self._fed, self._head_at = len(self._pending), 0
            self._hand_over(self._pending)  # a request cut short: aiohttp answers it
        if self._inner is not None:
            return self._inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.open.discard(self)
        self._parser = None
        if self._inner is not None:
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._writing_paused = True
        if self._inner is not None:
            self._inner.pause_writing()
        elif self._transport is not None:
            self._transport.pause_reading()  # no more requests until the client reads

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._inner is not None:
            self._inner.resume_writing()
        elif self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    # -- the parser's calls (httptools) ------------------------------------------------

    def on_message_begin(self) -> None:
        self._phase, self._since = _HEAD, self._now
        self._head_at = self._fed + self._piece_body  # exact but for a chunked body's framing

    def on_headers_complete(self) -> None:
        self._phase, self._since = _BODY, self._now
        self._head_end_body = self._piece_body
        if self._inner is None:
            self._headers_done = True
            # Asked now: llhttp clears what it knows of the connection once the message ends.
            assert self._parser is not None
            self._keep_alive = self._parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        # Only after the hand-over: before it, no body is ever fed.
        self._piece_body += len(body)
        self._since = self._now

    def on_message_complete(self) -> None:
        if self._inner is None:
            self._complete = True
            self._phase, self._since = _IDLE, self._now
        else:
            self._phase = _BUSY

    # -- what the connection does --------------------------------------------------------

    def _write(self, answers: list[Answer]) -> None:
        if not answers:
            return
        transport = self._transport
        assert transport is not None
        if len(answers) == 1:
            transport.write(answers[0].data)
        else:
            transport.write(b"".join(answer.data for answer in answers))
        pipeline = self._pipeline
        if not pipeline.hooks:
            return  # no one to tell
        for answer in answers:
            if answer.exchange is not None:
                pipeline.finish(answer.exchange, 200, answer.size)
            elif isinstance(answer, Counted):
                pipeline.counted(
                    answer.route,
                    answer.method,
                    answer.received,
                    answer.size,
                    answer.clock,
                    answer.event,
                )

    def _hand_over(self, data: bytes, unfed: bytes = b"") -> None:
        """From here on aiohttp serves the connection, starting with ``data``.

        The parser goes on following the requests from ``unfed``, the end of
        ``data`` it has not been fed yet.
        """
        transport = self._transport
        assert transport is not None
        self._pending = b""
        inner = self._inner = self._full()
        inner.connection_made(transport)
        if self._writing_paused:
            inner.pause_writing()
            transport.resume_reading()  # aiohttp pauses reading itself as it needs
        if unfed:
            self._follow(unfed, data)
        elif data:
            inner.data_received(data)

    def _follow(self, data: bytes, forward: bytes | None = None) -> None:
        """After the hand-over: follow the requests in ``data``, then give aiohttp ``forward``
        (by default ``data``; else bytes that end with it).

        The parser is fed in pieces cut after each CRLF CRLF while no body is
        being read, so that a head ends where a piece does; a body is fed whole.
        """
        inner = self._inner
        assert inner is not None
        parser = self._parser
        if parser is not None and self._phase != _REFUSING:
            self._now = self._loop.time()
            start, size = 0, len(data)
            while start < size:
                if self._phase == _BODY:
                    end = size
                else:
                    cut = data.find(b"\r\n\r\n", start)
                    end = cut + 4 if cut >= 0 else size
                self._piece_body, self._head_end_body = 0, -1
                try:
                    parser.feed_data(data if start == 0 and end == size else data[start:end])
                except (httptools.HttpParserError, httptools.HttpParserUpgrade):
                    self._parser = None  # aiohttp refuses it and closes; its limits apply
                    break
                self._fed += end - start
                start = end
                if self._head_length() > self._limits.head:
                    # What comes before the head is aiohttp's; the head and after, no one's.
                    given = data if forward is None else forward
                    lead = self._head_at - (self._fed - end) + len(given) - len(data)
                    if lead > 0:
                        inner.data_received(given[:lead])
                    self._phase = _REFUSING
                    self._refuse_when_free()
                    return
        elif self._phase == _REFUSING:
            return  # the head is refused: nothing of it or after it is read
        inner.data_received(data if forward is None else forward)

    def _head_length(self) -> int:
        """The bytes so far of the request head being read, or 0 if none is."""
        if self._phase == _HEAD:
            return self._fed - self._head_at
        if self._head_end_body >= 0:  # it ended in the piece just fed: before its body
            return self._fed - (self._piece_body - self._head_end_body) - self._head_at
        return 0

    def _refuse_when_free(self) -> None:
        """Answer 431 once aiohttp has no request of this connection under way."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.pause_reading()
        if not any(exchange.connection is transport for exchange in self._pipeline.in_flight):
            self._refuse()

    def _refuse(self) -> None:
        """Answer a head too long with 431, and close (RFC 6585, 5)."""
        transport = self._transport
        assert transport is not None
        limit = self._limits.head
        body = f"request head larger than {limit} bytes (http.maxheaderbytes)\n".encode()
        transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        log.debug("refused a request head over %d bytes from %s", limit, self._remote)
        self._parser = None
        transport.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- the limits ---------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Close the connection if it has waited longer than its phase allows (the sweep's call)."""
        transport = self._transport
        phase = self._phase
        if transport is None or transport.is_closing():
            return
        if phase == _REFUSING:
            self._refuse_when_free()
            return
        if self._stalled(transport, now):
            log.debug(
                "closed a connection to %s: no byte of the reply taken for %gs",
                self._remote,
                self._limits.write,
            )
            if self._socket is not None:
                with contextlib.suppress(OSError):
                    # A reset, not a FIN queued behind bytes the client will not take: the
                    # kernel would go on offering them to a closed window for minutes.
                    self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                    self._socket.shutdown(socket.SHUT_RDWR)
            transport.abort()
            return
        if phase == _BUSY or (phase == _IDLE and self._inner is not None):
            return  # the server's turn, or aiohttp's keep-alive timer
        if phase == _BODY and not transport.is_reading():
            self._since = now  # the server stopped reading: the wait is not the client's
            return
        if now - self._since < self._limits.seconds(phase):
            return
        log.debug(
            "closed a connection from %s: %s for %gs",
            self._remote,
            ("idle", "no whole request head", "no body byte")[phase],
            self._limits.seconds(phase),
        )
        if transport.get_write_buffer_size():
            transport.abort()  # a client that reads nothing would hold a closing one
        else:
            transport.close()

    def _stalled(self, transport: asyncio.Transport, now: float) -> bool:
        """Whether bytes have waited for the client, their count unchanged, for ``write``."""
        if self._limits.writing == math.inf:
            return False  # no write timeout: not even the ioctl
        unsent = transport.get_write_buffer_size() + _queued(self._socket)
        if unsent == 0 or unsent != self._unsent:
            self._unsent, self._unsent_since = unsent, now
            return False
        return now - self._unsent_since >= self._limits.writing


#: ``SO_LINGER`` on with no time: closing the socket resets the connection.
_RESET = struct.pack("ii", 1, 0)


def _queued(sock: socket.socket | None) -> int:
    """The bytes in a socket's send queue not yet taken by its peer (``SIOCOUTQ``)."""
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        queued: int = struct.unpack("i", raw)[0]
    except OSError:
        return 0
    return queued
