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

While the fast path holds a connection, the connection keeps its own idle
timer (aiohttp's starts at hand-over): it closes once no request has come
for ``keepalive_timeout`` seconds. While the client reads no replies (the
transport asks to pause writing), it reads no more requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import httptools

from cargohold.api.fastpath import Answer, Counted, FastPath, RequestHead

if TYPE_CHECKING:
    from cargohold.api.pipeline import Pipeline

__all__ = ["Connection", "ConnectionSet"]

#: A request head longer than aiohttp's line limit is left to aiohttp, whose limits then apply.
MAX_HEAD = 8190
#: As many header fields, likewise (aiohttp allows 128).
MAX_FIELDS = 64
#: The versions the fast path answers, as the request line ends.
_VERSIONS = {b"HTTP/1.1": "1.1", b"HTTP/1.0": "1.0"}


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
    """Every open connection of a listener, so that a drain can close the idle ones."""

    def __init__(self, keepalive_timeout: float) -> None:
        self.keepalive_timeout = keepalive_timeout
        self.open: set[Connection] = set()

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
    and stays here only so that its listener knows it.
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
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self) if fast is not None else None
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._remote = "-"
        #: Bytes since the end of the last answered request, all fed to the parser.
        self._pending = b""
        self._headers_done = False
        self._keep_alive = False
        self._complete = False
        self._writing_paused = False
        self._last_active = 0.0
        self._idle: asyncio.TimerHandle | None = None

    # -- the transport's calls ---------------------------------------------------------

    @property
    def transport(self) -> asyncio.Transport | None:
        return self._transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._connections.open.add(self)
        if self._fast is None:
            self._hand_over(b"")
            return
        peer = transport.get_extra_info("peername")
        if peer:
            self._remote = str(peer[0])
        self._last_active = self._loop.time()
        self._idle = self._loop.call_at(
            self._last_active + self._connections.keepalive_timeout, self._check_idle
        )

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.data_received(data)
            return
        self._last_active = self._loop.time()
        parser = self._parser
        assert parser is not None
        pending = self._pending + data if self._pending else data
        size = len(pending)
        answers: list[Answer] = []
        boundary = 0  # where the first request not answered yet begins
        fed = len(self._pending)
        while fed < size:
            cut = pending.find(b"\r\n\r\n", max(fed - 3, boundary))
            end = cut + 4 if cut >= 0 else size
            try:
                parser.feed_data(pending if fed == 0 and end == size else pending[fed:end])
            except (httptools.HttpParserError, httptools.HttpParserUpgrade):
                break  # malformed, or an upgrade: aiohttp's to answer or refuse
            fed = end
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
                self._hand_over(self._pending)
            return
        self._write(answers)
        self._hand_over(pending[boundary:])

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
            self._hand_over(self._pending)  # a request cut short: aiohttp answers it
        if self._inner is not None:
            return self._inner.eof_received()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._connections.open.discard(self)
        self._cancel_idle()
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

    def on_headers_complete(self) -> None:
        self._headers_done = True
        # Asked now: llhttp clears what it knows of the connection once the message ends.
        assert self._parser is not None
        self._keep_alive = self._parser.should_keep_alive()

    def on_message_complete(self) -> None:
        self._complete = True

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

    def _hand_over(self, data: bytes) -> None:
        """From here on aiohttp serves the connection, starting with ``data``."""
        transport = self._transport
        assert transport is not None
        self._parser = None
        self._pending = b""
        self._cancel_idle()
        inner = self._inner = self._full()
        inner.connection_made(transport)
        if self._writing_paused:
            inner.pause_writing()
            transport.resume_reading()  # aiohttp pauses reading itself as it needs
        if data:
            inner.data_received(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- the idle timer -----------------------------------------------------------------

    def _check_idle(self) -> None:
        self._idle = None
        if self._inner is not None or self._transport is None:
            return
        due = self._last_active + self._connections.keepalive_timeout
        if self._loop.time() >= due:
            self._transport.close()
        else:
            self._idle = self._loop.call_at(due, self._check_idle)

    def _cancel_idle(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
