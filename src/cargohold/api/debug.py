"""The debug listener (``http.debug.addr``): health, and metrics for Prometheus.

As in Distribution, a second listener, apart from the API, answers
``/debug/health`` and, with ``http.debug.prometheus.enabled``, the metrics at
``http.debug.prometheus.path`` (``/metrics``). Every worker of
``serve --workers N`` listens on it (the port is shared like the API's), and
whichever one a scrape reaches reads the stores of all of them
(``metrics/store.py``), so one scrape shows the whole server. The scrape is
read and written on the application's threads: it never holds up a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from cargohold.api.app import API_KEY, HEALTH_KEY, METRICS_KEY
from cargohold.config import Config

__all__ = ["create_debug_app"]


def create_debug_app(
    config: Config, api_app: web.Application, metrics_directory: str | None
) -> web.Application:
    """The debug application beside ``api_app``: its health checks, and the metrics read
    from ``metrics_directory`` (every process's store) or ``api_app``'s own store."""
    prometheus = config.http.debug.prometheus
    app = web.Application()
    checks = api_app[HEALTH_KEY]
    app.router.add_route("*", "/debug/health", checks.handle)
    if prometheus.enabled:
        app.router.add_get(prometheus.path, _scrape(api_app, metrics_directory))
    return app


def _scrape(
    api_app: web.Application, directory: str | None
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    from cargohold.metrics.exposition import render
    from cargohold.metrics.store import StoreFile, read_stores

    api = api_app[API_KEY]
    metrics = api_app[METRICS_KEY]

    def stores() -> list[StoreFile]:
        if directory is not None:
            return read_stores(directory)
        return [] if metrics is None else [metrics.store.as_file()]

    async def scrape(request: web.Request) -> web.StreamResponse:
        accept = request.headers.get("Accept")
        loop = asyncio.get_running_loop()
        body, content_type = await loop.run_in_executor(
            api.threads, lambda: render(stores(), accept)
        )
        return web.Response(body=body, headers={"Content-Type": content_type})

    return scrape
