"""A reply, decided once whichever path sends it.

The functions that decide a reply (``blobs.blob_reply``, ``manifests.manifest_reply``,
``listing.tags_reply``, ``Api.error_reply``, ...) see a request only as a
``RequestView`` (its method and headers) and return a ``Reply``: a status,
headers and a body, plus the ``Event`` the request produced. aiohttp's
handlers turn it into a ``web.Response`` (``Reply.response``); the fast path
writes it to the connection itself (``fastpath.py``). Neither adds or drops a
header of its own: the one list of headers is the reply's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from cargohold.api.events import Event

__all__ = ["Reply", "RequestView"]


class RequestView(Protocol):
    """What a reply may depend on: the method and the headers (looked up case-insensitively).

    An aiohttp ``web.Request`` is one; so is the fast path's parsed request head.
    """

    @property
    def method(self) -> str: ...

    @property
    def headers(self) -> Mapping[str, str]: ...


@dataclass(slots=True)
class Reply:
    """Status, headers and body of a reply, and the event it reports when sent."""

    status: int
    headers: dict[str, str]
    #: The whole body; empty for a HEAD, whose ``Content-Length`` is in ``headers``.
    body: bytes = b""
    event: Event | None = None

    def response(self) -> web.Response:
        return web.Response(status=self.status, headers=self.headers, body=self.body)
