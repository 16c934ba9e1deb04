"""What every handler needs: the registry, the settings that shape replies, and reply helpers."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field

from aiohttp import web

from cargohold import __version__
from cargohold.api.errcode import ErrorCode, code_for, error_body
from cargohold.api.filesend import FileSender
from cargohold.api.http import API_VERSION, base_url
from cargohold.api.reply import Reply
from cargohold.api.uploadslots import UploadSlots
from cargohold.errors import RegistryError
from cargohold.registry import Namespace

#: The ``Server`` header of every reply: set here, so that both request paths send the same.
SERVER = ("Server", f"cargohold/{__version__}")


@dataclass
class Api:
    registry: Namespace
    #: Where blocking work runs: the application's one executor (``app.py``).
    threads: Executor | None = None
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
    #: ``tags.maxtags``: the most tags a page asked for with ``n`` holds.
    tags_max_entries: int = 1000
    #: ``limits``: see ``config.Limits``.
    manifest_max_size: int = 4 * 1024 * 1024
    json_depth: int = 64
    tags_per_push: int = 100
    uploads_per_client: int = 64
    #: ``http.secret``: signs the ``_state`` of upload URLs, for Go registries sharing storage.
    upload_secret: str = ""

    def __post_init__(self) -> None:
        base = {API_VERSION[0]: API_VERSION[1], SERVER[0]: SERVER[1]}
        # Multi-valued extra headers are joined, which HTTP defines as equivalent.
        base.update({name: ", ".join(values) for name, values in self.extra_headers.items()})
        self._base_headers = base
        self.files = FileSender(self.threads)
        self.upload_slots = UploadSlots(self.uploads_per_client)

    def headers(self, more: Mapping[str, str] | None = None) -> dict[str, str]:
        return {**self._base_headers, **more} if more else dict(self._base_headers)

    def error_reply(self, exc: RegistryError, headers: Mapping[str, str] | None = None) -> Reply:
        if exc.retry_after is not None:
            headers = {**(headers or {}), "Retry-After": str(exc.retry_after)}
        return self.code_reply(code_for(exc), exc.message, exc.detail, headers)

    def code_reply(
        self,
        code: ErrorCode,
        message: str,
        detail: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        all_headers = self.headers(headers)
        all_headers["Content-Type"] = "application/json"
        return Reply(code.status, all_headers, error_body(code, message, detail))

    def error(self, exc: RegistryError, headers: Mapping[str, str] | None = None) -> web.Response:
        return self.error_reply(exc, headers).response()

    def error_code(
        self,
        code: ErrorCode,
        message: str,
        detail: object = None,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        return self.code_reply(code, message, detail, headers).response()

    def url(self, request: web.Request, path: str) -> str:
        """An absolute URL for ``path`` (or a relative one, with ``http.relativeurls``)."""
        return base_url(request, self.host, self.relative_urls) + self.prefix + path
