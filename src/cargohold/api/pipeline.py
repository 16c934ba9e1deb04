"""The request pipeline: what every request passes, whichever path answers it.

cargohold answers requests on two paths (see ``docs/ARCHITECTURE.md``): the
fast path (``fastpath.py``), which answers the commonest reads inline from the
connection, and aiohttp's handlers (``app.py``), which answer everything. Both
run the same steps, in this order, through one ``Pipeline``:

1. ``route``: the path (without ``http.prefix``) names an endpoint.
2. ``begin``: an ``Exchange`` is opened for the request, with its route, its
   request id (``request_id``: the client's ``X-Request-Id`` when it is
   well-formed, else a new one; every reply echoes it) and its start time;
   every hook hears ``request_started``.
3. ``authorize`` (or ``authorize_now`` on the fast path): access control decides,
   on the same access records either way.
4. ``limit`` (or ``limit_now``), with ``ratelimit`` on: the request is charged to
   its client's, its user's and its repository's token buckets (``ratelimit/``);
   when one is empty, the reply is ``429 TOOMANYREQUESTS`` (``limited_reply``).
   The fast path charges a request only once it knows it will answer it, and
   leaves an over-limit one to aiohttp, which decides again and answers the 429:
   a request is never charged twice, and the 429 is written in one place.
5. The reply is decided by the one function for its endpoint (``reply.py``).
   When it reports a write (push, mount, delete), the journal (notifications)
   has its event on disk before the reply goes out (``Journal.commit``).
6. ``finish``: once the reply is out, its status, size and event are recorded
   on the exchange and every hook hears ``request_finished``.

Hooks are where per-request features plug in: the access log (``accesslog.py``)
is one; metrics count requests there and notifications pick up each
exchange's event. A hook must be quick and must not raise: it runs on every
request of both paths. The fast path never answers a request a hook could
not see, so adding a hook never turns it off.

A hook that needs of a fast-path request only its numbers is a ``Counter``
too (metrics), and one that needs nothing of it unless it carries a header is
``Selective`` (tracing whose sampler starts no trace of its own: a caller's
``traceparent``). When every hook is one or the other, and the request does
not carry such a header, the fast path opens no exchange: it tells each
counter ``request_counted`` once the reply is written. Making an ``Exchange``
and the two rounds of calls would cost about as much as counting the request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from aiohttp import web

from cargohold.api.auth import required_access
from cargohold.api.context import Api
from cargohold.api.events import PULL, Event
from cargohold.api.reply import Reply
from cargohold.api.routes import Route, match
from cargohold.auth import AccessController
from cargohold.auth.access import EVERYTHING, Grant
from cargohold.errors import TooManyRequests
from cargohold.ratelimit import Limiter

__all__ = [
    "EXCHANGE",
    "PIPELINE",
    "Counter",
    "Exchange",
    "Intent",
    "Journal",
    "Pipeline",
    "RequestHook",
    "Selective",
    "intend",
    "limited_reply",
    "record",
    "respond",
]

log = logging.getLogger("cargohold.api")


@dataclass(slots=True, eq=False)
class Exchange:
    """One request and what came of it, as every hook sees it."""

    method: str
    #: The request target as sent: path and query, still percent-encoded.
    target: str
    #: ``1.1`` or ``1.0``.
    version: str
    #: The client's address.
    remote: str
    headers: Mapping[str, str]
    #: True when the fast path answered, False when aiohttp's handlers did.
    fast: bool
    #: The request id (``Pipeline.request_id``), echoed as ``X-Request-Id``.
    id: str
    #: The endpoint the target names; None for anything else (health, tokens, 404s).
    route: Route | None
    #: Bytes of the request line and headers.
    head_size: int = 0
    #: When it began: wall-clock seconds, and ``time.perf_counter``'s (set by ``begin``).
    started: float = 0.0
    clock: float = 0.0
    #: Who the credentials belong to, when access control identified them.
    user: str | None = None
    status: int = 0
    #: Bytes of body received.
    received: int = 0
    #: Bytes of body sent.
    size: int = 0
    #: Seconds from the start to the reply's last byte handed to the connection.
    duration: float = 0.0
    event: Event | None = None
    #: True when the server stopped before the reply was done (a drain ran out of time).
    cut: bool = False
    #: The transport the request came on (aiohttp's path), for a drain to tell busy ones.
    connection: object = None
    #: What tracing keeps of the request (its span), when it is traced.
    trace: object = None
    #: Done once the journal has the event on disk, when it was kept before the write.
    kept: asyncio.Future[None] | None = None

    @property
    def repository(self) -> str | None:
        route = self.route
        return route.name if route is not None and route.name else None


#: An ``X-Request-Id`` kept as the request's id: visible ASCII, no spaces, at most 128.
_GIVEN_ID = re.compile(r"[!-~]{1,128}", re.ASCII)


class RequestHook(Protocol):
    """Told of every request, on both paths. Quick, and never raising."""

    def request_started(self, exchange: Exchange) -> None: ...

    def request_finished(self, exchange: Exchange) -> None: ...


@runtime_checkable
class Counter(RequestHook, Protocol):
    """A hook that a request the fast path answers can be told of without an exchange.

    Such a request is a 200 answered within one call: ``request_counted`` is all
    it hears, once the reply is written (unless a ``Selective`` hook asks for the
    exchange).
    """

    def request_counted(
        self,
        route: Route,
        method: str,
        status: int,
        received: int,
        sent: int,
        seconds: float,
        event: Event | None,
    ) -> None:
        """A request answered ``status`` in ``seconds``: ``received`` bytes of head and
        body came in, ``sent`` bytes of body went out, and it did ``event``."""


@runtime_checkable
class Selective(RequestHook, Protocol):
    """A hook with nothing to do for a request the fast path answers, unless it carries a
    header (``exchange_with``): then the request has its exchange, and every hook hears it
    through ``request_started`` and ``request_finished``."""

    exchange_with: str


class Intent(Protocol):
    """A write's event, kept before the write is made (``Journal.intend``)."""

    def confirm(self, event: Event) -> None:
        """The write was made: ``event`` is what it did. ``Pipeline.commit`` then waits
        for the intent to be on disk, not for anything more."""

    def abort(self) -> None:
        """The write was not made: nothing is to be told."""


class Journal(Protocol):
    """Keeps the event of each acknowledged write: ``commit`` returns once it is durable."""

    async def commit(self, exchange: Exchange) -> None:
        """Raises ``OSError`` when the event could not be kept: the write is not acknowledged."""
        ...

    def intend(self, exchange: Exchange, event: Event) -> Intent:
        """Keep ``event`` as far as it is known before the write, while the write is made:
        its disk round trip and the write's then overlap."""
        ...


#: Where the aiohttp path keeps the request's exchange.
EXCHANGE = web.RequestKey("exchange", Exchange)


class Pipeline:
    """The steps every request passes (see the module docstring)."""

    def __init__(
        self,
        *,
        prefix: str = "",
        access: AccessController | None = None,
        hooks: Sequence[RequestHook] = (),
        journal: Journal | None = None,
        limiter: Limiter | None = None,
    ) -> None:
        self.prefix = prefix
        self.access = access
        self.hooks = tuple(hooks)
        self.journal = journal
        #: The rate limiter (``ratelimit``); None when it is off.
        self.limiter = limiter
        # Every hook a counter or selective: the fast path's requests need no exchange
        # unless they carry one of the selective hooks' headers (``counts_only``).
        counters = [hook for hook in self.hooks if isinstance(hook, Counter)]
        selective = [hook for hook in self.hooks if isinstance(hook, Selective)]
        self._counting = bool(self.hooks) and all(
            isinstance(hook, Counter | Selective) for hook in self.hooks
        )
        self._counters = tuple(counter.request_counted for counter in counters)
        self._exchange_with = tuple({hook.exchange_with: None for hook in selective})
        self._sequence = itertools.count(1)
        # Ids are unique across processes and time: a random half, then a sequence.
        random = secrets.token_hex(8)
        self._id_prefix = f"{random[:8]}-{random[8:12]}-{random[12:]}"
        #: Requests aiohttp is answering (the fast path's take no time to wait for).
        self.in_flight: set[Exchange] = set()
        #: Set once the server is stopping: replies then close their connections.
        self.draining = False
        self._idle: asyncio.Event | None = None

    def request_id(self, headers: Mapping[str, str]) -> str:
        """The id of a request: its ``X-Request-Id`` when well-formed, else a new one."""
        given = headers.get("X-Request-Id")
        if given is not None and _GIVEN_ID.fullmatch(given):
            return given
        sequence = f"{next(self._sequence):016x}"
        return f"{self._id_prefix}-{sequence[:4]}-{sequence[4:]}"

    def begin(
        self,
        method: str,
        target: str,
        version: str,
        remote: str,
        headers: Mapping[str, str],
        *,
        fast: bool,
        route: Route | None,
        request_id: str,
        head_size: int = 0,
        clock: float | None = None,
        connection: object = None,
    ) -> Exchange:
        """Open the exchange of a request (``clock``: when it began, if earlier than now)."""
        exchange = Exchange(
            method,
            target,
            version,
            remote,
            headers,
            fast,
            request_id,
            route,
            head_size,
            time.time(),
            time.perf_counter() if clock is None else clock,
        )
        if not fast:
            exchange.connection = connection
            self.in_flight.add(exchange)
        for hook in self.hooks:
            hook.request_started(exchange)
        return exchange

    async def commit(self, exchange: Exchange, status: int) -> bool:
        """Keep the event of a successful write before its reply goes out (step 4).

        False when the journal could not: the reply must not say the write succeeded.
        """
        event = exchange.event
        if self.journal is None or event is None or event.action == PULL or status >= 300:
            return True
        try:
            if exchange.kept is not None:
                await exchange.kept  # kept before the write, on disk by now as a rule
            else:
                await self.journal.commit(exchange)
        except OSError as exc:
            log.error("the event of %s %s was not kept: %s", exchange.method, exchange.target, exc)
            exchange.event = None
            return False
        return True

    def counts_only(self, headers: Mapping[str, str]) -> bool:
        """Whether the hooks are to hear of a fast-path request with these headers through
        ``counted`` alone, no exchange opened (see the module docstring)."""
        if not self._counting:
            return False
        for name in self._exchange_with:  # noqa: SIM110 - all() of a generator costs twice this
            if headers.get(name) is not None:
                return False
        return True

    def counted(
        self,
        route: Route,
        method: str,
        received: int,
        sent: int,
        clock: float,
        event: Event | None,
    ) -> None:
        """A request the fast path answered (200) with no exchange (``counts_only``), which
        began at ``clock`` (``time.perf_counter``), has had its reply written."""
        seconds = time.perf_counter() - clock
        for count in self._counters:
            count(route, method, 200, received, sent, seconds, event)

    def finish(self, exchange: Exchange, status: int, size: int) -> None:
        exchange.status = status
        exchange.size = size
        exchange.duration = time.perf_counter() - exchange.clock
        if not exchange.fast:  # the fast path's are never in flight
            self.in_flight.discard(exchange)
            if not self.in_flight and self._idle is not None:
                self._idle.set()
        for hook in self.hooks:
            hook.request_finished(exchange)

    async def drained(self, within: float) -> bool:
        """Wait up to ``within`` seconds for the requests under way; whether all finished."""
        if not self.in_flight:
            return True
        self._idle = asyncio.Event()
        try:
            async with asyncio.timeout(within):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    def route(self, path: str) -> Route | None:
        """The endpoint ``path`` (as sent, without query) names under ``http.prefix``."""
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return None
            path = path[len(self.prefix) :]
        return match(path)

    async def authorize(
        self, exchange: Exchange, route: Route, headers: Mapping[str, str]
    ) -> Grant | None:
        """The grant of the request's credentials; None without access control.

        Raises ``Unauthorized`` (with the challenge) or ``NameInvalid``.
        """
        if self.access is None:
            return None
        grant = await self.access.authorize(headers, required_access(route, exchange.method))
        exchange.user = grant.subject
        return grant

    def authorize_now(self, route: Route, method: str, headers: Mapping[str, str]) -> Grant | None:
        """The grant, when it can be decided at once and allows the request; else None.

        None covers refusals too: the awaited ``authorize`` decides again and
        explains. Without access control the grant is ``EVERYTHING``.
        """
        if self.access is None:
            return EVERYTHING
        return self.access.authorize_now(headers, required_access(route, method))

    async def limit(self, exchange: Exchange) -> float:
        """Seconds the request must wait before it is answered (0: charged and admitted).

        Called with a limiter only, once access control has decided (``exchange.user``).
        """
        assert self.limiter is not None
        route = exchange.route
        repository = route.name if route is not None else None
        return await self.limiter.check(exchange.method, exchange.remote, exchange.user, repository)

    def limit_now(self, route: Route, method: str, remote: str, user: str | None) -> bool:
        """Whether the fast path may answer the request: it was charged and admitted.

        False covers an empty bucket and a charge that needs waiting (Redis): the
        awaited ``limit`` decides again, and answers. Called with a limiter only.
        """
        assert self.limiter is not None
        return self.limiter.check_now(method, remote, user, route.name) == 0.0


#: Where the application keeps its pipeline.
PIPELINE = web.AppKey("pipeline", Pipeline)


def limited_reply(api: Api, wait: float) -> Reply:
    """The reply to a request over its rate limit, ``wait`` seconds before it would not be."""
    # Whole seconds (RFC 9110's delay-seconds), rounded up: a client that waits as told
    # finds a token.
    return api.error_reply(TooManyRequests(retry_after=max(1, math.ceil(wait))))


def intend(request: web.Request, expected: Callable[[], Event]) -> Intent | None:
    """Keep a write's event before the write (see ``Journal.intend``); None without a journal.

    ``expected`` makes the event only when there is a journal to keep it.
    """
    journal = request.app[PIPELINE].journal
    exchange = request.get(EXCHANGE)
    if journal is None or exchange is None:
        return None
    return journal.intend(exchange, expected())


def record(request: web.Request, event: Event | None) -> None:
    """Note the event a reply reports, for the hooks that run once it is sent."""
    exchange = request.get(EXCHANGE)
    if exchange is not None and event is not None:
        exchange.event = event


def respond(request: web.Request, reply: Reply) -> web.Response:
    """The aiohttp response of ``reply``, its event noted on the request's exchange."""
    record(request, reply.event)
    return reply.response()
