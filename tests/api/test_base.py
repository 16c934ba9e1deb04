"""``GET /v2/``, the headers every reply carries, and how paths find their endpoint.

Repository names contain slashes and may end in a word the API uses itself
(``blobs``, ``manifests``, ``tags``, ``uploads``), so routing must take the
longest name that leaves a well-formed endpoint behind it.
"""

from __future__ import annotations

import json

import pytest
from tests.api.conftest import (
    API_VERSION,
    Registry,
    assert_common_headers,
    assert_error,
    digest_of,
    random_blob,
)

from cargohold.manifest import OCI_MANIFEST


async def test_base_answers_an_empty_json_object(registry: Registry) -> None:
    response = await registry.request("GET", "/v2/")
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert await response.read() == b"{}"
    assert response.headers["Content-Length"] == "2"
    assert_common_headers(response.headers)


async def test_base_without_trailing_slash(registry: Registry) -> None:
    response = await registry.request("GET", "/v2")
    assert response.status == 200
    assert json.loads(await response.read()) == {}


async def test_base_head(registry: Registry) -> None:
    response = await registry.request("HEAD", "/v2/")
    assert response.status == 200
    assert await response.read() == b""
    assert_common_headers(response.headers)


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v2/missing/blobs/" + digest_of(b"nothing"), 404, "BLOB_UNKNOWN"),
        ("GET", "/v2/missing/manifests/latest", 404, "MANIFEST_UNKNOWN"),
        ("GET", "/v2/missing/tags/list", 404, "NAME_UNKNOWN"),
        ("GET", "/v2/Upper/tags/list", 400, "NAME_INVALID"),
        ("PUT", "/v2/", 405, "UNSUPPORTED"),
        ("GET", "/v2/a/blobs/uploads/nope", 404, "BLOB_UPLOAD_UNKNOWN"),
        ("GET", "/v2/a/tags/list?n=x", 400, "PAGINATION_NUMBER_INVALID"),
    ],
)
async def test_error_replies_carry_the_common_headers(
    registry: Registry, method: str, path: str, status: int, code: str
) -> None:
    response = await registry.request(method, path)
    await assert_error(response, status, code)
    assert_common_headers(response.headers)


@pytest.mark.parametrize("path", ["/", "/v1/", "/v2/_catalog/x", "/v3/", "/v2/a/unknown/x"])
async def test_unknown_paths_are_404_with_the_common_headers(registry: Registry, path: str) -> None:
    response = await registry.request("GET", path)
    assert response.status == 404
    assert_common_headers(response.headers)


async def test_success_replies_carry_the_common_headers(registry: Registry) -> None:
    blob = await registry.push_blob("a")
    replies = [
        await registry.request("GET", f"/v2/a/blobs/{blob.digest}"),
        await registry.request("HEAD", f"/v2/a/blobs/{blob.digest}"),
        await registry.request("POST", "/v2/a/blobs/uploads/"),
        await registry.request("GET", "/v2/_catalog"),
        await registry.request("GET", "/v2/a/tags/list"),
        await registry.request("GET", f"/v2/a/referrers/{blob.digest}"),
    ]
    for response in replies:
        assert response.status < 300
        assert_common_headers(response.headers)


# -- names with several components, and names that end in an API word ------------------------

NAMES = [
    "a/b/c",
    "a" * 255,  # the longest name
    "/".join(["b" * 50] * 4 + ["c" * 51]),  # 255 characters in five components
    "x/blobs",
    "x/blobs/uploads",
    "x/manifests",
    "x/tags",
    "x/tags/list",
    "x/uploads",
    "x/referrers",
    "blobs/manifests/tags/uploads",
    "manifests/blobs/uploads/blobs/uploads",
]


@pytest.mark.parametrize("name", NAMES, ids=[name[:40] for name in NAMES])
async def test_names_route_to_their_own_repository(registry: Registry, name: str) -> None:
    # A chunked upload: POST, PATCH, GET status, PUT, each on the name's own upload URL.
    blob = random_blob(3000)
    location = await registry.start_upload(name)
    assert location.startswith(f"/v2/{name}/blobs/uploads/")
    response = await registry.request("PATCH", location, data=blob.data)
    assert response.status == 202, await response.text()
    location = registry.local(response.headers["Location"])
    response = await registry.request("GET", location)
    assert response.status == 204
    assert response.headers["Range"] == f"0-{blob.size - 1}"
    response = await registry.request("PUT", location, params={"digest": blob.digest})
    assert response.status == 201, await response.text()
    assert registry.local(response.headers["Location"]) == f"/v2/{name}/blobs/{blob.digest}"

    image = await registry.push_image(name, "v1")
    response = await registry.request("GET", f"/v2/{name}/blobs/{blob.digest}")
    assert response.status == 200
    assert await response.read() == blob.data
    response = await registry.request("GET", f"/v2/{name}/manifests/v1")
    assert response.status == 200
    assert response.headers["Content-Type"] == OCI_MANIFEST
    assert await response.read() == image.payload
    response = await registry.request("GET", f"/v2/{name}/tags/list")
    assert response.status == 200
    assert await response.json() == {"name": name, "tags": ["v1"]}
    response = await registry.request("GET", f"/v2/{name}/referrers/{image.digest}")
    assert response.status == 200

    # Nothing leaked into the repositories whose names are a prefix of this one.
    if "/" in name:
        parent = name.rsplit("/", 1)[0]
        response = await registry.request("GET", f"/v2/{parent}/blobs/{blob.digest}")
        await assert_error(response, 404, "BLOB_UNKNOWN")
    catalog = await (await registry.request("GET", "/v2/_catalog")).json()
    assert catalog == {"repositories": [name]}


async def test_api_words_as_references_and_digests_stay_arguments(registry: Registry) -> None:
    # "/v2/a/manifests/uploads" is the tag "uploads" of "a", not an upload endpoint.
    image = await registry.push_image("a", "uploads")
    await registry.put_manifest("a", "blobs", image.payload)
    await registry.put_manifest("a", "list", image.payload)
    assert await registry.tags("a") == ["blobs", "list", "uploads"]
    for tag in ("uploads", "blobs", "list"):
        response = await registry.request("GET", f"/v2/a/manifests/{tag}")
        assert response.status == 200
        assert response.headers["Docker-Content-Digest"] == image.digest


async def test_api_version_header_is_sent_once(registry: Registry) -> None:
    response = await registry.request("GET", "/v2/")
    assert response.headers.getall(API_VERSION[0]) == [API_VERSION[1]]
