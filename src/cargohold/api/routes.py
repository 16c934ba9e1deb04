"""Which endpoint a request path names.

Repository names contain slashes, and may end in ``blobs``, ``manifests``,
``tags`` or ``uploads``, so each pattern anchors on the end of the path and
takes the longest name that leaves a well-formed tail. The path is matched as
sent (percent-encoded), so ``%2e%2e`` or ``%2f`` can never become ``..`` or
``/`` inside a name; the name grammar then refuses the ``%``.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple


class Endpoint(Enum):
    BASE = "base"
    CATALOG = "catalog"
    TAGS = "tags"
    MANIFEST = "manifest"
    BLOB = "blob"
    UPLOADS = "uploads"
    UPLOAD = "upload"
    REFERRERS = "referrers"

    # Enum hashes a member by its name, in Python; members are singletons, so identity
    # will do, in C: endpoints key the dictionaries every request looks up.
    __hash__ = object.__hash__


class Route(NamedTuple):
    # A named tuple rather than a frozen dataclass: one is made per request, at a fifth of the cost.
    endpoint: Endpoint
    name: str = ""
    #: The tag or digest, the digest, or the upload id, depending on the endpoint.
    argument: str = ""


#: Each endpoint's path, its variable parts in braces (a span's ``http.route``).
TEMPLATES: dict[Endpoint, str] = {
    Endpoint.BASE: "/v2/",
    Endpoint.CATALOG: "/v2/_catalog",
    Endpoint.TAGS: "/v2/{name}/tags/list",
    Endpoint.MANIFEST: "/v2/{name}/manifests/{reference}",
    Endpoint.BLOB: "/v2/{name}/blobs/{digest}",
    Endpoint.UPLOADS: "/v2/{name}/blobs/uploads/",
    Endpoint.UPLOAD: "/v2/{name}/blobs/uploads/{uuid}",
    Endpoint.REFERRERS: "/v2/{name}/referrers/{digest}",
}

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
    """The route of ``path`` (without prefix or query), or None when there is none.

    The patterns, tried in this order, with ``<name>`` one or more characters
    (slashes too, the longest that fits) and ``<arg>`` one or more but no slash::

        /v2/<name>/blobs/uploads[/]        UPLOADS
        /v2/<name>/blobs/uploads/<arg>     UPLOAD
        /v2/<name>/blobs/<arg>             BLOB
        /v2/<name>/manifests/<arg>         MANIFEST
        /v2/<name>/tags/list               TAGS
        /v2/<name>/referrers/<arg>         REFERRERS

    Matched by suffix rather than by regular expressions (``tests/api/test_routes.py``
    holds those and checks the two agree): it is on every request's path.
    """
    if path in ("/v2/", "/v2"):
        return Route(Endpoint.BASE)
    if path == "/v2/_catalog":
        return Route(Endpoint.CATALOG)
    if not path.startswith("/v2/"):
        return None
    rest = path[4:]
    head, _, tail = rest.rpartition("/")
    for suffix in ("/blobs/uploads/", "/blobs/uploads"):
        if rest.endswith(suffix) and _is_name(rest[: -len(suffix)]):
            return Route(Endpoint.UPLOADS, rest[: -len(suffix)])
    if tail:
        for suffix, endpoint in _TAILED:
            if head.endswith(suffix) and _is_name(head[: -len(suffix)]):
                return Route(endpoint, head[: -len(suffix)], tail)
    if rest.endswith("/tags/list") and _is_name(rest[: -len("/tags/list")]):
        return Route(Endpoint.TAGS, rest[: -len("/tags/list")])
    return None


def _is_name(text: str) -> bool:
    # What the patterns' <name> stands for: any characters but a line feed, at least one.
    return bool(text) and "\n" not in text


#: Endpoints whose last path component is their argument, by what comes before it.
_TAILED = (
    ("/blobs/uploads", Endpoint.UPLOAD),
    ("/blobs", Endpoint.BLOB),
    ("/manifests", Endpoint.MANIFEST),
    ("/referrers", Endpoint.REFERRERS),
)
