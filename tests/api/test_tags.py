"""``GET /v2/<name>/tags/list[?n=&last=]`` (end-8a/b).

Tags come in lexical order. ``n`` limits a page; a ``Link`` header (RFC 5988)
names the next page while there is one; ``last`` is exclusive. A repository
that exists without tags lists ``[]``, never ``null``; one that does not exist
is ``NAME_UNKNOWN``.
"""

from __future__ import annotations

import re

import pytest
from tests.api.conftest import MakeRegistry, Registry, assert_error

TAGS = ["1.0", "A", "latest", "v1", "v10", "v2", "z_last"]  # already in lexical (byte) order
LINK = re.compile(r'<([^>]+)>; rel="next"')


@pytest.fixture
async def tagged(registry: Registry) -> Registry:
    image = await registry.push_image("repo")
    for tag in reversed(TAGS):
        await registry.put_manifest("repo", tag, image.payload)
    return registry


async def get_tags(registry: Registry, path: str) -> tuple[list[str], str | None]:
    """One page: its tags and the path of its next page, if any."""
    response = await registry.request("GET", path)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/json"
    body = await response.json()
    assert set(body) == {"name", "tags"}
    assert body["name"] == "repo"
    link = response.headers.get("Link")
    if link is None:
        return body["tags"], None
    match = LINK.fullmatch(link)
    assert match is not None, link
    return body["tags"], registry.local(match.group(1))


async def test_all_tags_in_lexical_order(tagged: Registry) -> None:
    assert await get_tags(tagged, "/v2/repo/tags/list") == (TAGS, None)


async def test_head_tags(tagged: Registry) -> None:
    response = await tagged.request("HEAD", "/v2/repo/tags/list")
    assert response.status == 200
    assert await response.read() == b""


@pytest.mark.parametrize("n", [1, 2, 3, 6])
async def test_pages_follow_the_link_header(tagged: Registry, n: int) -> None:
    path: str | None = f"/v2/repo/tags/list?n={n}"
    seen: list[str] = []
    pages = 0
    while path is not None:
        tags, path = await get_tags(tagged, path)
        assert 0 < len(tags) <= n
        if path is not None:
            assert len(tags) == n
            assert path == f"/v2/repo/tags/list?n={n}&last={tags[-1]}"
        seen += tags
        pages += 1
    assert seen == TAGS
    assert pages == -(-len(TAGS) // n)


async def test_first_page(tagged: Registry) -> None:
    tags, link = await get_tags(tagged, "/v2/repo/tags/list?n=2")
    assert tags == ["1.0", "A"]
    assert link == "/v2/repo/tags/list?n=2&last=A"


async def test_last_is_exclusive(tagged: Registry) -> None:
    assert await get_tags(tagged, "/v2/repo/tags/list?last=v1") == (["v10", "v2", "z_last"], None)
    assert await get_tags(tagged, "/v2/repo/tags/list?n=1&last=v1") == (
        ["v10"],
        "/v2/repo/tags/list?n=1&last=v10",
    )


async def test_last_need_not_be_a_tag(tagged: Registry) -> None:
    assert await get_tags(tagged, "/v2/repo/tags/list?last=m") == (
        ["v1", "v10", "v2", "z_last"],
        None,
    )
    assert await get_tags(tagged, "/v2/repo/tags/list?last=zzz") == ([], None)


@pytest.mark.parametrize("n", [len(TAGS), len(TAGS) + 1, 1000])
async def test_n_at_or_over_the_count_has_no_link(tagged: Registry, n: int) -> None:
    assert await get_tags(tagged, f"/v2/repo/tags/list?n={n}") == (TAGS, None)


async def test_n_zero_is_an_empty_page(tagged: Registry) -> None:
    # No Link either: a next page of n=0 would never end.
    assert await get_tags(tagged, "/v2/repo/tags/list?n=0") == ([], None)


async def test_empty_n_is_no_limit(tagged: Registry) -> None:
    assert await get_tags(tagged, "/v2/repo/tags/list?n=") == (TAGS, None)


async def test_repository_without_tags_lists_an_empty_array(registry: Registry) -> None:
    await registry.push_blob("repo")
    response = await registry.request("GET", "/v2/repo/tags/list")
    assert response.status == 200
    assert await response.read() == b'{"name": "repo", "tags": []}'


async def test_repository_with_untagged_manifest_lists_an_empty_array(registry: Registry) -> None:
    await registry.push_image("repo")
    assert await get_tags(registry, "/v2/repo/tags/list") == ([], None)


async def test_unknown_repository(registry: Registry) -> None:
    await registry.push_image("other", "v1")
    await registry.push_image("deep/down/child", "v1")
    # "deep" and "deep/down" are folders on the way to a repository, not repositories.
    for name in ("repo", "other/repo", "othe", "deep", "deep/down"):
        response = await registry.request("GET", f"/v2/{name}/tags/list")
        error = await assert_error(response, 404, "NAME_UNKNOWN")
        assert error["detail"] == {"name": name}


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", "0x10", "9999999999", " 1"])
async def test_invalid_n(tagged: Registry, n: str) -> None:
    response = await tagged.request("GET", "/v2/repo/tags/list", params={"n": n})
    await assert_error(response, 400, "PAGINATION_NUMBER_INVALID")


async def test_nested_repository_tags(registry: Registry) -> None:
    await registry.push_image("a/b/c", "v1")
    await registry.push_image("a/b", "v2")
    response = await registry.request("GET", "/v2/a/b/c/tags/list")
    assert await response.json() == {"name": "a/b/c", "tags": ["v1"]}
    response = await registry.request("GET", "/v2/a/b/tags/list")
    assert await response.json() == {"name": "a/b", "tags": ["v2"]}


async def test_maxtags_caps_a_page_asked_for_with_n(make_registry: MakeRegistry) -> None:
    """Distribution 3's ``tags.maxtags``: ``n`` above it gets it, and a Link to go on."""
    registry = await make_registry({"tags": {"maxtags": 3}})
    image = await registry.push_image("repo")
    for tag in TAGS:
        await registry.put_manifest("repo", tag, image.payload)
    assert await get_tags(registry, "/v2/repo/tags/list?n=100") == (
        TAGS[:3],
        "/v2/repo/tags/list?n=3&last=latest",
    )
    assert await get_tags(registry, "/v2/repo/tags/list?n=2") == (
        TAGS[:2],
        "/v2/repo/tags/list?n=2&last=A",
    )
    assert await get_tags(registry, "/v2/repo/tags/list") == (TAGS, None), "no n: every tag"
