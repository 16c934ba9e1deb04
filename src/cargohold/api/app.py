"""The aiohttp application: the registry's HTTP face.

Handlers stay thin: they parse the request, call the domain, and turn the
domain's answer (or error) into a response.
"""

from __future__ import annotations

from aiohttp import web

from cargohold.config import Config

API_VERSION_HEADER = ("Docker-Distribution-API-Version", "registry/2.0")


async def base(request: web.Request) -> web.Response:
    """``GET /v2/``: the registry speaks the V2 API."""
    return web.Response(body=b"{}", content_type="application/json")


def create_app(config: Config) -> web.Application:
    """An application serving the configured registry."""
    app = web.Application()
    extra = [(name, value) for name, values in config.http.headers.items() for value in values]

    async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
        response.headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
        for name, value in extra:
            response.headers.add(name, value)

    app.on_response_prepare.append(add_headers)
    app.router.add_get("/v2/", base)
    app.router.add_get("/v2", base)
    return app
