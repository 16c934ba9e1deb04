"""tags/list from kept tag lists (``storage/taglists.py``), as two workers on one root serve it.

Every repository's list is kept here (``KEEP_FROM`` 0). A tag pushed or
deleted through one registry is in the very next answer of the other, which
holds a kept list of its own; pages follow ``n`` and ``last`` over it.
"""

from __future__ import annotations

import shutil

import pytest
from tests.api.conftest import MakeRegistry, Registry
from tests.api.test_tags import get_tags

from cargohold.storage.taglists import TagLists

pytestmark = pytest.mark.parametrize("storage", ["filesystem"])


@pytest.fixture
async def workers(
    make_registry: MakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> tuple[Registry, Registry]:
    monkeypatch.setattr(TagLists, "KEEP_FROM", 0)
    return await make_registry(), await make_registry()


async def test_a_tag_written_through_one_worker_is_listed_by_the_other(
    workers: tuple[Registry, Registry],
) -> None:
    one, other = workers
    image = await one.push_image("repo", "v1")
    assert await get_tags(other, "/v2/repo/tags/list?n=10") == (["v1"], None)
    await one.put_manifest("repo", "v3", image.payload)
    assert await other.tags("repo") == ["v1", "v3"]
    await one.put_manifest("repo", "v2", image.payload)
    assert await other.tags("repo") == ["v1", "v2", "v3"]
    response = await one.request("DELETE", "/v2/repo/manifests/v1")
    assert response.status == 202
    assert await get_tags(other, "/v2/repo/tags/list?n=10") == (["v2", "v3"], None)
    assert await get_tags(one, "/v2/repo/tags/list?n=10") == (["v2", "v3"], None)


async def test_pages_of_a_kept_list(workers: tuple[Registry, Registry]) -> None:
    one, other = workers
    image = await one.push_image("repo")
    tags = [f"t{i:02d}" for i in range(25)]
    for tag in reversed(tags):
        await one.put_manifest("repo", tag, image.payload)
    assert await get_tags(other, "/v2/repo/tags/list?n=10") == (
        tags[:10],
        "/v2/repo/tags/list?n=10&last=t09",
    )
    assert await get_tags(other, "/v2/repo/tags/list?n=10&last=t19") == (tags[20:], None)
    assert await get_tags(other, "/v2/repo/tags/list?n=3&last=t05x") == (
        tags[6:9],
        "/v2/repo/tags/list?n=3&last=t08",
    )
    await one.put_manifest("repo", "t05y", image.payload)
    assert await get_tags(other, "/v2/repo/tags/list?n=3&last=t05x") == (
        ["t05y", *tags[6:8]],
        "/v2/repo/tags/list?n=3&last=t07",
    )


async def test_a_deleted_repository_is_unknown_at_once(
    workers: tuple[Registry, Registry],
) -> None:
    one, other = workers
    await one.push_image("repo", "v1")
    assert await other.tags("repo") == ["v1"]
    assert one.root is not None
    shutil.rmtree(one.root / "docker/registry/v2/repositories/repo")
    response = await other.request("GET", "/v2/repo/tags/list")
    assert response.status == 404
    assert (await response.json())["errors"][0]["code"] == "NAME_UNKNOWN"
