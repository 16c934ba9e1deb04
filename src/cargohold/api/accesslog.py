"""The access log: one line per request, whichever path answered it.

A request hook (``pipeline.py``). The message keeps the shape of aiohttp's
default access log, Apache's combined format without the identity fields
(``%a %t "%r" %s %b "%{Referer}i" "%{User-Agent}i"``), so tools that read
that keep working. The same facts, and more, are fields under the names
Distribution logs them with, so with ``formatter: json`` each is a key of
its own: the request's id, method, URI, host, remote address, user agent,
the bytes of body received (``http.request.received``, cargohold's) and
sent, the status, the duration in seconds, the repository (``vars.name``)
and the user access control identified (``auth.user.name``).
"""

from __future__ import annotations

import logging
import time

from cargohold.api.pipeline import Exchange

__all__ = ["AccessLog"]


class AccessLog:
    """Logs each finished exchange at info on ``cargohold.access``."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("cargohold.access")

    def request_started(self, exchange: Exchange) -> None:
        pass

    def request_finished(self, exchange: Exchange) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        headers = exchange.headers
        stamp = time.strftime("[%d/%b/%Y:%H:%M:%S +0000]", time.gmtime(exchange.started))
        agent = headers.get("User-Agent", "-")
        fields: dict[str, object] = {
            "http.request.id": exchange.id,
            "http.request.method": exchange.method,
            "http.request.uri": exchange.target,
            "http.request.host": headers.get("Host", ""),
            "http.request.remoteaddr": exchange.remote,
            "http.request.useragent": agent,
            "http.request.received": exchange.received,
            "http.response.status": exchange.status,
            "http.response.written": exchange.size,
            "http.response.duration": round(exchange.duration, 6),
        }
        repository = exchange.repository
        if repository:
            fields["vars.name"] = repository
        if exchange.user:
            fields["auth.user.name"] = exchange.user
        self._log.info(
            '%s %s "%s %s HTTP/%s" %d %d "%s" "%s"',
            exchange.remote,
            stamp,
            exchange.method,
            exchange.target,
            exchange.version,
            exchange.status,
            exchange.size,
            headers.get("Referer", "-"),
            agent,
            extra={"fields": fields},
        )
