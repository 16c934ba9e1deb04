"""The fast path: the commonest reads answered inline, on the connection that asked.

A registry spends most of its requests on a few reads: HEAD and GET of small
blobs, GET of manifests (by tag or digest), tag lists, the version check. On
storage that can answer them at once (``registry.ImmediateReads``: a local
disk with its page cache, or memory), each is a couple of small reads, and
aiohttp's request and response objects would cost several times the work. So
the connection (``connection.py``) hands each complete, body-less GET or HEAD
to ``FastPath.answer`` first.

The fast path is not a second implementation. It runs the request pipeline's
steps (``pipeline.py``: route, access control, hooks) and decides the reply
with the same functions as aiohttp's handlers (``blob_reply``,
``manifest_reply``, ``tags_reply``, ``base_reply``). What it adds is speed:
the storage reads are the immediate ones, and the reply is written straight
to the connection. It answers only when the reply is a plain 200; anything
else (an error, a 304, a range, a large body, a schema1 manifest, a decision
that needs waiting) returns None, and the connection goes to aiohttp, which
answers as it always does.

It engages on an allow-list (``fast_path_for``): storage with immediate
reads. Nothing else turns it off: hooks see its requests, access control
answers it at once when it can (``AccessController.authorize_now``), and so
does the rate limiter (``Pipeline.limit_now``) when its buckets are in this
host's memory; a request over its limit is aiohttp's, which answers the 429.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import formatdate

from aiohttp import web

from cargohold.api.app import API_KEY, PIPELINE_KEY
from cargohold.api.base import base_reply
from cargohold.api.blobs import INLINE_LIMIT, blob_reply
from cargohold.api.context import Api
from cargohold.api.events import Event
from cargohold.api.listing import tags_reply
from cargohold.api.manifests import manifest_reply
from cargohold.api.pipeline import Exchange, Pipeline
from cargohold.api.reply import Reply
from cargohold.api.routes import Endpoint, Route
from cargohold.digest import Digest
from cargohold.errors import RegistryError
from cargohold.registry import ImmediateReads

__all__ = ["Answer", "Counted", "FastPath", "RequestHead", "fast_path_for"]


@dataclass(slots=True)
class RequestHead:
    """A complete, body-less request as the connection parsed it (a ``RequestView``)."""

    method: str
    #: The target as sent: an origin-form path without a query.
    target: str
    #: ``1.1``, or ``1.0`` with keep-alive.
    version: str
    headers: Mapping[str, str]
    #: Bytes of the request line and headers.
    size: int = 0


@dataclass(slots=True)
class Answer:
    """The reply's bytes, and the exchange to finish once they are written.

    Without hooks there is no one to tell: no exchange is opened at all. Nor
    is one when the hooks need only the request's numbers (``Counted``).
    """

    data: bytes
    exchange: Exchange | None
    #: Bytes of body sent.
    size: int


@dataclass(slots=True)
class Counted(Answer):
    """An answer whose hooks are told its numbers (``Pipeline.counted``) once it is written,
    no exchange opened (``Pipeline.counts_only``)."""

    route: Route
    method: str
    #: Bytes of the request head.
    received: int
    #: When the request began (``time.perf_counter``).
    clock: float
    event: Event | None


_STATUS_LINES = {"1.1": b"HTTP/1.1 200 OK\r\n", "1.0": b"HTTP/1.0 200 OK\r\n"}
#: How many encoded header lines are kept before starting afresh.
_LINE_CACHE = 4096


class _Clock:
    """The ``Date`` header, formatted once a second."""

    __slots__ = ("_second", "_value")

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


class FastPath:
    """Answers the commonest reads at once, or says it cannot (None)."""

    def __init__(self, api: Api, pipeline: Pipeline, reads: ImmediateReads) -> None:
        self._api = api
        self._pipeline = pipeline
        self._reads = reads
        # A GET of a blob may have to be a redirect: then it is the async path's.
        self._blob_gets = not (api.redirect and reads.redirects)
        self._clock = _Clock()
        #: Encoded header lines: most repeat (the fixed headers, a hot blob's digest).
        self._lines: dict[tuple[str, str], bytes] = {}

    def answer(self, head: RequestHead, remote: str) -> Answer | None:
        """The reply to ``head`` and what to tell the hooks, or None to leave it to aiohttp."""
        pipeline = self._pipeline
        started = time.perf_counter() if pipeline.hooks else 0.0
        route = pipeline.route(head.target)
        if route is None:
            return None
        try:
            grant = pipeline.authorize_now(route, head.method, head.headers)
            if grant is None:
                return None
            reply = self._reply(head, route)
        except RegistryError:
            return None  # every error is answered by the async path
        if reply is None or reply.status != 200:
            return None
        # Charged only now that the reply is sure: a request handed over is charged by aiohttp.
        if pipeline.limiter is not None and not pipeline.limit_now(
            route, head.method, remote, grant.subject or None
        ):
            return None  # over the limit: aiohttp decides again and answers the 429
        body = b"" if head.method == "HEAD" else reply.body
        request_id = pipeline.request_id(head.headers)
        data = self._encode(reply, head, body, request_id)
        if not pipeline.hooks:
            return Answer(data, None, len(body))
        if pipeline.counts_only(head.headers):
            return Counted(
                data, None, len(body), route, head.method, head.size, started, reply.event
            )
        exchange = pipeline.begin(
            head.method,
            head.target,
            head.version,
            remote,
            head.headers,
            fast=True,
            route=route,
            request_id=request_id,
            head_size=head.size,
            clock=started,
        )
        exchange.user = grant.subject or None
        exchange.event = reply.event
        return Answer(data, exchange, len(body))

    def _reply(self, head: RequestHead, route: Route) -> Reply | None:
        api, reads, endpoint = self._api, self._reads, route.endpoint
        if endpoint is Endpoint.BASE:
            return base_reply(api)
        name = route.name  # checked by the immediate reads, as ``repository()`` checks it
        if endpoint is Endpoint.BLOB:
            if head.method == "GET" and not self._blob_gets:
                return None
            source = reads.blob(name, Digest.parse(route.argument))
            if source is None:
                return None
            answer = blob_reply(api, head, name, source)
            if answer.length:
                if answer.length > INLINE_LIMIT:
                    return None  # large blobs go out with sendfile, on the async path
                body = reads.content(source, answer.offset, answer.length)
                if body is None:
                    return None
                answer.reply.body = body
            return answer.reply
        if endpoint is Endpoint.MANIFEST:
            reference = route.argument
            tag: str | None = None
            if ":" in reference:
                digest: Digest | None = Digest.parse(reference)
            else:
                tag = reference
                digest = reads.tag(name, tag)
            manifest = reads.manifest(name, digest) if digest is not None else None
            return None if manifest is None else manifest_reply(api, head, name, manifest, tag)
        if endpoint is Endpoint.TAGS:
            tags = reads.tags(name)
            return None if tags is None else tags_reply(api, name, tags)
        return None

    def _encode(self, reply: Reply, head: RequestHead, body: bytes, request_id: str) -> bytes:
        """The reply as aiohttp writes it: its headers, the request id, then Content-Length,
        Date and Connection."""
        headers = reply.headers
        lines = [_STATUS_LINES[head.version]]
        cache = self._lines
        for item in headers.items():
            line = cache.get(item)
            if line is None:
                if len(cache) >= _LINE_CACHE:
                    cache.clear()
                line = cache[item] = f"{item[0]}: {item[1]}\r\n".encode("latin-1")
            lines.append(line)
        lines.append(f"X-Request-Id: {request_id}\r\n".encode("latin-1"))
        if "Content-Length" not in headers:
            lines.append(b"Content-Length: %d\r\n" % len(reply.body))
        lines += (b"Date: ", self._clock.date(), b"\r\n")
        if head.version == "1.0":
            lines.append(b"Connection: keep-alive\r\n")
        lines += (b"\r\n", body)
        return b"".join(lines)


def fast_path_for(app: web.Application) -> FastPath | None:
    """The fast path of ``app``, or None where it would not answer as aiohttp does.

    The allow-list: storage that answers the commonest reads at once.
    """
    api = app[API_KEY]
    reads = api.registry.immediate
    if reads is None:
        return None
    return FastPath(api, app[PIPELINE_KEY], reads)
