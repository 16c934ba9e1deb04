"""What every handler needs: the registry, the settings that shape replies, and reply helpers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from cargohold.api.errcode import ErrorCode, code_for, error_body
from cargohold.api.http import API_VERSION, base_url
from cargohold.errors import RegistryError
from cargohold.registry import Namespace


@dataclass
class Api:
    registry: Namespace
    #: Extra headers from ``http.headers``, added to every reply.
    extra_headers: Mapping[str, list[str]] = field(default_factory=dict)
    #: Answer blob GETs with a redirect when the storage offers one.
    redirect: bool = True
    delete_enabled: bool = False
    read_only: bool = False
    #: ``http.host``: the external URL, when requests do not tell it.
    host: str = ""
    relative_urls: bool = False
    #: ``http.prefix``: where the API is mounted, e.g. ``/registry``.
    prefix: str = ""
    catalog_max_entries: int = 1000
    manifest_max_size: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        base = {API_VERSION[0]: API_VERSION[1]}
        # Multi-valued extra headers are joined, which HTTP defines as equivalent.
        base.update({name: ", ".join(values) for name, values in self.extra_headers.items()})
        self._base_headers = base

    def headers(self, more: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(self._base_headers)
        if more:
            headers.update(more)
        return headers

    def error(self, exc: RegistryError, headers: Mapping[str, str] | None = None) -> web.Response:
        return self.error_code(code_for(exc), exc.message, exc.detail, headers)

    def error_code(
        self,
        code: ErrorCode,
        message: str,
        detail: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        all_headers = self.headers(headers)
        all_headers["Content-Type"] = "application/json"
        return web.Response(
            status=code.status, headers=all_headers, body=error_body(code, message, detail)
        )

    def url(self, request: web.Request, path: str) -> str:
        """An absolute URL for ``path`` (or a relative one, with ``http.relativeurls``)."""
        return base_url(request, self.host, self.relative_urls) + self.prefix + path
