"""``GET /v2/_catalog[?n=&last=]``: every repository, in lexical order, paginated like tags."""

from __future__ import annotations

import re

import pytest
from tests.api.conftest import MakeRegistry, Registry, assert_error

LINK = re.compile(r'<([^>]+)>; rel="next"')
# Lexical (byte) order: "a-b" < "a/b" < "a/b/c" < "a0" < "ab", because "-" < "/" < "0" < "b".
NAMES = ["a", "a-b", "a/b", "a/b/c", "a0", "ab", "x/blobs/uploads", "z"]


async def get_catalog(registry: Registry, path: str) -> tuple[list[str], str | None]:
    response = await registry.request("GET", path)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "application/json"
    body = await response.json()
    assert set(body) == {"repositories"}
    link = response.headers.get("Link")
    if link is None:
        return body["repositories"], None
    match = LINK.fullmatch(link)
    assert match is not None, link
    return body["repositories"], registry.local(match.group(1))


@pytest.fixture
async def populated(registry: Registry) -> Registry:
    for i, name in enumerate(reversed(NAMES)):
        if i % 2:
            await registry.push_image(name, "v1")
        else:
            await registry.push_blob(name)  # a repository with a blob and nothing else
    return registry


async def test_empty_registry(registry: Registry) -> None:
    response = await registry.request("GET", "/v2/_catalog")
    assert response.status == 200
    assert await response.read() == b'{"repositories": []}'


async def test_every_repository_in_lexical_order(populated: Registry) -> None:
    assert await get_catalog(populated, "/v2/_catalog") == (NAMES, None)


@pytest.mark.parametrize("n", [1, 3, 7])
async def test_pages_follow_the_link_header(populated: Registry, n: int) -> None:
    path: str | None = f"/v2/_catalog?n={n}"
    seen: list[str] = []
    while path is not None:
        names, path = await get_catalog(populated, path)
        assert 0 < len(names) <= n
        if path is not None:
            assert len(names) == n
            assert path.startswith(f"/v2/_catalog?n={n}&last=")
        seen += names
    assert seen == NAMES


async def test_link_encodes_the_last_name(populated: Registry) -> None:
    response = await populated.request("GET", "/v2/_catalog?n=3")
    assert (await response.json())["repositories"] == ["a", "a-b", "a/b"]
    client = populated.client
    assert response.headers["Link"] == (
        f'<http://{client.host}:{client.port}/v2/_catalog?n=3&last=a%2Fb>; rel="next"'
    )


async def test_last_is_exclusive(populated: Registry) -> None:
    assert await get_catalog(populated, "/v2/_catalog?last=a/b") == (NAMES[3:], None)
    assert await get_catalog(populated, "/v2/_catalog?last=b") == (NAMES[6:], None)
    assert await get_catalog(populated, "/v2/_catalog?last=zz") == ([], None)


@pytest.mark.parametrize("n", [len(NAMES), 100])
async def test_n_at_or_over_the_count_has_no_link(populated: Registry, n: int) -> None:
    assert await get_catalog(populated, f"/v2/_catalog?n={n}") == (NAMES, None)


async def test_n_zero(populated: Registry) -> None:
    assert await get_catalog(populated, "/v2/_catalog?n=0") == ([], None)


@pytest.mark.parametrize("n", ["-1", "abc", "2.0", "99999999999"])
async def test_invalid_n(populated: Registry, n: str) -> None:
    response = await populated.request("GET", "/v2/_catalog", params={"n": n})
    await assert_error(response, 400, "PAGINATION_NUMBER_INVALID")


async def test_maxentries_caps_every_page(make_registry: MakeRegistry) -> None:
    registry = await make_registry({"catalog": {"maxentries": 2}})
    for name in ("a", "b", "c"):
        await registry.push_blob(name)
    assert await get_catalog(registry, "/v2/_catalog") == (["a", "b"], "/v2/_catalog?n=2&last=b")
    assert await get_catalog(registry, "/v2/_catalog?n=50") == (
        ["a", "b"],
        "/v2/_catalog?n=2&last=b",
    )
    assert await get_catalog(registry, "/v2/_catalog?n=2&last=b") == (["c"], None)


async def test_deleted_content_keeps_the_repository_listed(registry: Registry) -> None:
    # As Distribution: a repository is a folder; deleting its manifests does not remove it.
    image = await registry.push_image("repo", "v1")
    assert (await registry.request("DELETE", f"/v2/repo/manifests/{image.digest}")).status == 202
    assert await get_catalog(registry, "/v2/_catalog") == (["repo"], None)
