"""The ``limits`` section: each bound is met at its value and refused one past it.

A request past a bound gets a 4xx naming it, and nothing is written: no
manifest, no tag, no upload data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from tests.api.conftest import (
    MakeRegistry,
    Registry,
    assert_error,
    digest_of,
    image_manifest,
    random_blob,
    random_config,
)
from tests.support.waiting import until

from cargohold.manifest.base import nesting_depth
from cargohold.manifest.mediatypes import OCI_MANIFEST


async def _pushable(registry: Registry, name: str = "repo", **fields: Any) -> bytes:
    """An image manifest whose blobs are pushed to ``name``, with ``fields`` added to it."""
    config = await registry.push_blob(name, random_config())
    layer = await registry.push_blob(name, random_blob())
    return image_manifest(config, [layer], **fields)


def _padded(payload: bytes, size: int) -> bytes:
    """``payload`` grown to exactly ``size`` bytes by an annotation of the right length."""
    body = json.loads(payload)
    body["annotations"] = {"pad": ""}
    short = size - len(json.dumps(body).encode())
    body["annotations"]["pad"] = "x" * short
    grown = json.dumps(body).encode()
    assert len(grown) == size
    return grown


async def _manifest_absent(registry: Registry, payload: bytes) -> None:
    response = await registry.request("GET", f"/v2/repo/manifests/{digest_of(payload)}")
    await assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_a_manifest_of_manifestsize_is_taken_and_one_byte_more_is_refused(
    make_registry: MakeRegistry,
) -> None:
    registry = await make_registry({"limits": {"manifestsize": 2048}})
    payload = await _pushable(registry)
    at_bound, past = _padded(payload, 2048), _padded(payload, 2049)

    await registry.put_manifest("repo", "fits", at_bound)
    response = await registry.request(
        "PUT", "/v2/repo/manifests/big", data=past, headers={"Content-Type": OCI_MANIFEST}
    )
    error = await assert_error(response, 413, "MANIFEST_INVALID")
    assert "2048" in error["message"]
    await _manifest_absent(registry, past)
    assert await registry.tags("repo") == ["fits"]


async def test_json_nested_to_jsondepth_is_taken_and_one_level_more_is_refused(
    make_registry: MakeRegistry,
) -> None:
    registry = await make_registry({"limits": {"jsondepth": 6}})
    # The manifest object itself is one level: an extension field nests the rest.
    at_bound = await _pushable(registry, **{"x-nested": [[[[[]]]]]})
    past = await _pushable(registry, **{"x-nested": [[[[[[]]]]]]})
    assert (nesting_depth(at_bound), nesting_depth(past)) == (6, 7)

    await registry.put_manifest("repo", "fits", at_bound)
    response = await registry.request(
        "PUT", "/v2/repo/manifests/deep", data=past, headers={"Content-Type": OCI_MANIFEST}
    )
    error = await assert_error(response, 400, "MANIFEST_INVALID")
    assert "at most 6" in error["message"]
    await _manifest_absent(registry, past)
    assert await registry.tags("repo") == ["fits"]


def test_brackets_inside_strings_do_not_nest() -> None:
    assert nesting_depth(b'{"a": "[[[{{{", "b": ["\\"]]]"]}') == 2
    assert nesting_depth(b"[" * 50 + b"]" * 50) == 50


async def test_tagsperpush_tags_in_one_put_are_taken_and_one_more_is_refused(
    make_registry: MakeRegistry,
) -> None:
    registry = await make_registry({"limits": {"tagsperpush": 3}})
    payload = await _pushable(registry)
    digest = digest_of(payload)
    path = f"/v2/repo/manifests/{digest}"
    headers = {"Content-Type": OCI_MANIFEST}

    four = [("tag", name) for name in ("a", "b", "c", "d")]
    response = await registry.request("PUT", path, params=four, data=payload, headers=headers)
    error = await assert_error(response, 400, "TAG_INVALID")
    assert "at most 3" in error["message"]
    await _manifest_absent(registry, payload)

    response = await registry.request("PUT", path, params=four[:3], data=payload, headers=headers)
    assert response.status == 201, await response.text()
    assert sorted(await registry.tags("repo")) == ["a", "b", "c"]


class _Stalled:
    """Upload bodies that send a first chunk, then wait until released."""

    def __init__(self) -> None:
        self.sent = 0
        self.release = asyncio.Event()

    async def body(self) -> AsyncIterator[bytes]:
        yield b"x" * 1024
        self.sent += 1
        await self.release.wait()
        yield b"y" * 1024


async def test_uploadsperclient_uploads_run_at_once_and_one_more_waits_its_turn(
    make_registry: MakeRegistry,
) -> None:
    registry = await make_registry({"limits": {"uploadsperclient": 2}})
    locations = [await registry.start_upload("repo") for _ in range(3)]
    stalled = _Stalled()

    async def patch(location: str) -> int:
        response = await registry.request("PATCH", location, data=stalled.body())
        await response.read()
        return response.status

    running = [asyncio.create_task(patch(location)) for location in locations[:2]]
    try:
        await until(lambda: stalled.sent == 2, what="both bodies streaming: their slots held")
        response = await registry.request("PATCH", locations[2], data=b"z" * 1024)
        error = await assert_error(response, 429, "TOOMANYREQUESTS")
        assert response.headers["Retry-After"] == "1"
        assert "at most 2" in error["message"]
    finally:
        stalled.release.set()
    assert await asyncio.gather(*running) == [202, 202]

    status = await registry.request("GET", locations[2])
    assert (status.status, status.headers["Range"]) == (204, "0-0"), "nothing was written"
    response = await registry.request("PATCH", locations[2], data=b"z" * 1024)
    assert response.status == 202, "the slots are free again"
    assert response.headers["Range"] == "0-1023"


async def test_uploadsperclient_zero_bounds_nothing(make_registry: MakeRegistry) -> None:
    registry = await make_registry({"limits": {"uploadsperclient": 0}})
    locations = [await registry.start_upload("repo") for _ in range(3)]
    stalled = _Stalled()

    async def patch(location: str) -> int:
        response = await registry.request("PATCH", location, data=stalled.body())
        await response.read()
        return response.status

    running = [asyncio.create_task(patch(location)) for location in locations]
    await until(lambda: stalled.sent == 3, what="all three bodies streaming at once")
    stalled.release.set()
    assert await asyncio.gather(*running) == [202, 202, 202]


async def test_catalog_n_at_maxentries_and_past_it_gets_a_page_of_maxentries(
    make_registry: MakeRegistry,
) -> None:
    """As Distribution: ``n`` past ``catalog.maxentries`` is cut to it, with a Link to go on."""
    registry = await make_registry({"catalog": {"maxentries": 3}})
    for name in ("a", "b", "c", "d"):
        await registry.put_manifest(name, "v1", await _pushable(registry, name))
    for n in (3, 4):
        response = await registry.request("GET", f"/v2/_catalog?n={n}")
        assert response.status == 200
        assert await response.json() == {"repositories": ["a", "b", "c"]}
        assert response.headers["Link"].endswith('/v2/_catalog?n=3&last=c>; rel="next"')
