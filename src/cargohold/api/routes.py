"""Which endpoint a request path names.

Repository names contain slashes, and may end in ``blobs``, ``manifests``,
``tags`` or ``uploads``, so each pattern anchors on the end of the path and
takes the longest name that leaves a well-formed tail. The path is matched as
sent (percent-encoded), so ``%2e%2e`` or ``%2f`` can never become ``..`` or
``/`` inside a name; the name grammar then refuses the ``%``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Endpoint(Enum):
    BASE = "base"
    CATALOG = "catalog"
    TAGS = "tags"
    MANIFEST = "manifest"
    BLOB = "blob"
    UPLOADS = "uploads"
    UPLOAD = "upload"
    REFERRERS = "referrers"


@dataclass(frozen=True, slots=True)
class Route:
    endpoint: Endpoint
    name: str = ""
    #: The tag or digest, the digest, or the upload id, depending on the endpoint.
    argument: str = ""


_PATTERNS: list[tuple[Endpoint, re.Pattern[str]]] = [
    (Endpoint.UPLOADS, re.compile(r"/v2/(.+)/blobs/uploads/?")),
    (Endpoint.UPLOAD, re.compile(r"/v2/(.+)/blobs/uploads/([^/]+)")),
    (Endpoint.BLOB, re.compile(r"/v2/(.+)/blobs/([^/]+)")),
    (Endpoint.MANIFEST, re.compile(r"/v2/(.+)/manifests/([^/]+)")),
    (Endpoint.TAGS, re.compile(r"/v2/(.+)/tags/list")),
    (Endpoint.REFERRERS, re.compile(r"/v2/(.+)/referrers/([^/]+)")),
]

#: The methods each endpoint answers; anything else is 405.
METHODS: dict[Endpoint, frozenset[str]] = {
    Endpoint.BASE: frozenset({"GET", "HEAD"}),
    Endpoint.CATALOG: frozenset({"GET", "HEAD"}),
    Endpoint.TAGS: frozenset({"GET", "HEAD"}),
    Endpoint.MANIFEST: frozenset({"GET", "HEAD", "PUT", "DELETE"}),
    Endpoint.BLOB: frozenset({"GET", "HEAD", "DELETE"}),
    Endpoint.UPLOADS: frozenset({"POST"}),
    Endpoint.UPLOAD: frozenset({"GET", "PATCH", "PUT", "DELETE"}),
    Endpoint.REFERRERS: frozenset({"GET", "HEAD"}),
}


def match(path: str) -> Route | None:
    """The route of ``path`` (without prefix or query), or None when there is none."""
    if path in ("/v2/", "/v2"):
        return Route(Endpoint.BASE)
    if path == "/v2/_catalog":
        return Route(Endpoint.CATALOG)
    if not path.startswith("/v2/"):
        return None
    for endpoint, pattern in _PATTERNS:
        found = pattern.fullmatch(path)
        if found is not None:
            groups = found.groups()
            return Route(endpoint, groups[0], groups[1] if len(groups) > 1 else "")
    return None
