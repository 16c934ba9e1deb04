"""Serving an application on a listening socket: the fast path in front, aiohttp behind.

``Listener`` is what ``cargohold serve`` runs in each worker, and what tests
and embedders run in process, so every way of serving takes the same path.
It uses aiohttp's public API only: an ``AppRunner`` (with no site), whose
``server`` is the protocol factory of aiohttp's connections, and
``loop.create_server`` on the socket. With the fast path on, each connection
is a ``connection.Connection`` that hands itself to aiohttp's protocol when it
meets a request it does not answer; with it off, aiohttp's protocol takes the
connection from the first byte. Either way the ``Connection`` stays in front
and keeps the limits (``connection.Limits``): idle, head and body timeouts and
the longest head, swept by the listener's ``ConnectionSet``. aiohttp's own
limits are set to the same: its keep-alive timer to the idle timeout, its
longest line and header field to the longest head.

Closing stops accepting, closes the connections the fast path holds (each is
between requests: its replies are written whole), then lets aiohttp finish
the requests it is answering, for up to ``shutdown_timeout`` seconds (the
drain), cuts those still running, and runs the application's cleanup. The
drain and every request it cut are logged.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import TYPE_CHECKING, Any

from aiohttp import web

from cargohold.api.app import PIPELINE_KEY
from cargohold.api.connection import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    IDLE_TIMEOUT,
    LONGEST_HEAD,
    WRITE_TIMEOUT,
    Connection,
    ConnectionSet,
    Limits,
)
from cargohold.api.fastpath import fast_path_for
from cargohold.api.tls import server_context

if TYPE_CHECKING:
    from cargohold.config import HTTPConfig

__all__ = ["KEEPALIVE_TIMEOUT", "Listener"]

log = logging.getLogger("cargohold.server")

#: Seconds an idle keep-alive connection stays open (aiohttp's ``run_app`` default).
KEEPALIVE_TIMEOUT = IDLE_TIMEOUT


class _ServerLog(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server log, where a request whose client went away is no error.

    A handler reading a body from a connection that was lost (the client
    reset it, or a timeout closed it) ends in ``ConnectionResetError``, which
    aiohttp would log with its traceback: there was no one to answer and
    nothing to fix, so it is told at debug level, as aiohttp tells other
    disconnections.
    """

    def exception(self, msg: object, *args: object, exc_info: Any = True, **kwargs: Any) -> None:
        if isinstance(exc_info, ConnectionResetError):
            self.debug("%s: the client went away (%s)", str(msg) % args, exc_info)
            return
        super().exception(msg, *args, exc_info=exc_info, **kwargs)


_SERVER_LOG = _ServerLog(logging.getLogger("aiohttp.server"), None)


class Listener:
    """One application served on one listening socket."""

    def __init__(
        self,
        app: web.Application,
        *,
        fast_path: bool = True,
        ssl_context: ssl.SSLContext | None = None,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        header_timeout: float = HEADER_TIMEOUT,
        body_timeout: float = BODY_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        max_head: int = LONGEST_HEAD,
        shutdown_timeout: float = 5.0,
        backlog: int = 1024,
    ) -> None:
        """``keepalive_timeout``, ``header_timeout``, ``body_timeout``, ``write_timeout``:
        seconds, 0 for none (``http.timeouts``); ``max_head``: bytes
        (``http.maxheaderbytes``)."""
        self.app = app
        self._drain = shutdown_timeout
        self._fast_path = fast_path
        self._ssl = ssl_context
        self._backlog = backlog
        self._runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,  # the pipeline's access log hook logs both paths
            logger=_SERVER_LOG,
            keepalive_timeout=keepalive_timeout,
            max_line_size=max_head,
            max_field_size=max_head,
            # aiohttp reads 0 as "wait for ever": no drain time means cutting at once.
            shutdown_timeout=max(shutdown_timeout, 0.001),
        )
        limits = Limits(keepalive_timeout, header_timeout, body_timeout, write_timeout, max_head)
        self._connections = ConnectionSet(limits)
        self._server: asyncio.Server | None = None
        #: Whether connections start on the fast path (known once started).
        self.fast = False

    @classmethod
    def configured(
        cls,
        app: web.Application,
        http: HTTPConfig,
        *,
        fast_path: bool = True,
        shutdown_timeout: float | None = None,
    ) -> Listener:
        """A listener as ``http`` has it: TLS, timeouts, the head bound and the drain.

        ``shutdown_timeout`` replaces ``http.draintimeout`` (an embedded test server
        does not wait for stragglers).
        """
        timeouts = http.timeouts
        return cls(
            app,
            fast_path=fast_path,
            ssl_context=server_context(http.tls),
            keepalive_timeout=timeouts.idle,
            header_timeout=timeouts.header,
            body_timeout=timeouts.body,
            write_timeout=timeouts.write,
            max_head=http.maxheaderbytes,
            shutdown_timeout=http.draintimeout if shutdown_timeout is None else shutdown_timeout,
        )

    async def start(self, sock: socket.socket) -> None:
        """Set the application up and accept connections on ``sock`` (already listening)."""
        runner = self._runner
        await runner.setup()
        full = runner.server
        assert full is not None
        fast = fast_path_for(self.app) if self._fast_path else None
        pipeline, connections = self.app[PIPELINE_KEY], self._connections

        def factory() -> asyncio.Protocol:
            return Connection(fast, pipeline, full, connections)

        self.fast = fast is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            factory, sock=sock, ssl=self._ssl, backlog=self._backlog
        )
        connections.start()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def close(self) -> None:
        """Stop: close idle connections, let requests under way finish (the drain), cut the rest.

        aiohttp's own shutdown stops reading from every connection at once, which
        would starve an upload whose body is still arriving; so the drain is
        waited for here, with every reply closing its connection, before aiohttp
        shuts down what is left.
        """
        server, self._server = self._server, None
        if server is not None:
            server.close()
        self._connections.stop()
        pipeline = self.app[PIPELINE_KEY]
        pipeline.draining = True
        running = list(pipeline.in_flight)
        self._connections.close_idle({exchange.connection for exchange in running})
        if running:
            log.info("stopping: draining %d requests for up to %gs", len(running), self._drain)
            await pipeline.drained(self._drain)
        await self._runner.cleanup()
        for exchange in running:
            if exchange.cut:
                log.warning(
                    "stopping: cut %s %s after %.1fs (request %s)",
                    exchange.method,
                    exchange.target,
                    exchange.duration,
                    exchange.id,
                    extra={"fields": {"http.request.id": exchange.id}},
                )
        if running:
            cut = sum(exchange.cut for exchange in running)
            log.info("stopped: %d requests finished, %d cut", len(running) - cut, cut)
        if server is not None:
            await server.wait_closed()
