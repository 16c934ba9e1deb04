"""The router finds the endpoint the distribution specification's path patterns name.

The patterns are written here as regular expressions, in the order they are
tried; ``routes.match`` matches by suffix instead (it runs on every request)
and must agree with them on every path, however odd.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from cargohold.api.routes import Endpoint, Route, match

PATTERNS: list[tuple[Endpoint, re.Pattern[str]]] = [
    (Endpoint.UPLOADS, re.compile(r"/v2/(.+)/blobs/uploads/?")),
    (Endpoint.UPLOAD, re.compile(r"/v2/(.+)/blobs/uploads/([^/]+)")),
    (Endpoint.BLOB, re.compile(r"/v2/(.+)/blobs/([^/]+)")),
    (Endpoint.MANIFEST, re.compile(r"/v2/(.+)/manifests/([^/]+)")),
    (Endpoint.TAGS, re.compile(r"/v2/(.+)/tags/list")),
    (Endpoint.REFERRERS, re.compile(r"/v2/(.+)/referrers/([^/]+)")),
]


def by_patterns(path: str) -> Route | None:
    if path in ("/v2/", "/v2"):
        return Route(Endpoint.BASE)
    if path == "/v2/_catalog":
        return Route(Endpoint.CATALOG)
    if not path.startswith("/v2/"):
        return None
    for endpoint, pattern in PATTERNS:
        found = pattern.fullmatch(path)
        if found is not None:
            groups = found.groups()
            return Route(endpoint, groups[0], groups[1] if len(groups) > 1 else "")
    return None


WORDS = ["a", "b/c", "blobs", "uploads", "manifests", "tags", "list", "referrers", "_catalog"]
ODD = ["v2", "sha256:ab", "", "\n", "x\ny", "%2f", ".."]
PIECES = st.sampled_from([*WORDS, *ODD])


@settings(max_examples=1000)
@given(st.lists(PIECES, max_size=7), st.booleans())
def test_every_path_gets_the_route_its_pattern_gives(pieces: list[str], slash: bool) -> None:
    path = "/v2/" + "/".join(pieces) + ("/" if slash else "")
    assert match(path) == by_patterns(path)


def test_the_endpoints_of_the_specification() -> None:
    digest = "sha256:" + "a" * 64
    assert match("/v2/") == Route(Endpoint.BASE)
    assert match("/v2/_catalog") == Route(Endpoint.CATALOG)
    assert match("/v2/a/b/blobs/uploads/") == Route(Endpoint.UPLOADS, "a/b")
    assert match("/v2/a/blobs/uploads/id-1") == Route(Endpoint.UPLOAD, "a", "id-1")
    assert match(f"/v2/blobs/blobs/{digest}") == Route(Endpoint.BLOB, "blobs", digest)
    assert match("/v2/a/manifests/latest") == Route(Endpoint.MANIFEST, "a", "latest")
    assert match("/v2/tags/list/tags/list") == Route(Endpoint.TAGS, "tags/list")
    assert match(f"/v2/a/referrers/{digest}") == Route(Endpoint.REFERRERS, "a", digest)
    assert match("/v2/a/blobs/") is None
    assert match("/v2//blobs/x") is None
    assert match("/v3/a/tags/list") is None
