"""Paginated listings through the client, on cargohold and on Distribution 2.8.2.

The two differ: cargohold pages tags with ``n`` and an exclusive ``last`` and
links the next page; Distribution 2.8.2 ignores ``n`` and ``last`` for tags
and sends them all, unsorted, in one page. The client sorts each page and
drops entries not after ``last``, so the results agree; the requests differ,
which the tests say explicitly.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from cargohold.client import RemoteRegistry
from cargohold.client.listing import next_link
from cargohold.manifest import OCI_MANIFEST
from cargohold.registry import Repository
from tests.client.conftest import unique_name

IMPLEMENTATIONS = ["cargohold", "distribution"]


@pytest.fixture(params=IMPLEMENTATIONS)
def implementation(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def remote(
    implementation: str, request: pytest.FixtureRequest
) -> AsyncIterator[RemoteRegistry]:
    url = request.getfixturevalue(f"{implementation}_url")
    async with RemoteRegistry(url) as registry:
        yield registry


async def tagged(repository: Repository, *tags: str) -> None:
    config = await repository.blobs.put(b'{"architecture": "amd64", "os": "linux"}')
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {**config.to_json(), "mediaType": "application/vnd.oci.image.config.v1+json"},
        "layers": [],
    }
    await repository.manifests.put(json.dumps(body).encode(), OCI_MANIFEST, tags)


async def test_tag_pages_follow_links_and_last_is_exclusive(
    remote: RemoteRegistry, implementation: str
) -> None:
    repository = remote.repository(unique_name("listing"))
    await tagged(repository, "d", "b", "e", "a", "c")
    tags = repository.tags
    assert await tags.page() == ["a", "b", "c", "d", "e"]
    assert await tags.page(n=2) == ["a", "b"]
    assert await tags.page(last="b") == ["c", "d", "e"]
    assert await tags.page(n=2, last="b") == ["c", "d"]
    before = remote.transport.requests_sent
    assert await tags.page(last="b", page_size=1) == ["c", "d", "e"]
    requests = remote.transport.requests_sent - before
    if implementation == "cargohold":
        # A page per tag, each linking the next; the last links nowhere.
        assert requests == 3
    else:
        # Distribution 2.8.2 ignores n and last and sends every tag in one page.
        assert requests == 1


async def test_catalog_pages_follow_links(remote: RemoteRegistry) -> None:
    prefix = unique_name("listing")
    names = [f"{prefix}/{leaf}" for leaf in ("x", "y", "z")]
    for name in names:
        await tagged(remote.repository(name), "t")
    assert await remote.catalog(n=3, last=prefix, page_size=1) == names
    assert await remote.catalog(n=2, last=names[0], page_size=1) == names[1:]


def test_next_links_are_found_relative_or_absolute() -> None:
    assert next_link(['</v2/_catalog?last=b&n=1>; rel="next"']) == "/v2/_catalog?last=b&n=1"
    assert next_link(["<http://h/v2/a/tags/list?n=1&last=x>; rel=next"]) == (
        "http://h/v2/a/tags/list?n=1&last=x"
    )
    assert next_link(['<http://h/x>; rel="prev"']) is None
    assert next_link([]) is None
