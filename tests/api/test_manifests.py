"""``GET``/``HEAD``/``PUT``/``DELETE /v2/<name>/manifests/<reference>`` (end-3, end-7, end-9).

A manifest is stored as the exact bytes pushed and served with the media type
it was pushed as. A PUT is refused unless everything it references is already
in the repository. The reference is a tag or a digest; a digest must be the
body's. A manifest DELETE by digest takes its tags with it; a DELETE by tag
removes only the tag.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from tests.api.conftest import (
    EMPTY_CONFIG,
    Blob,
    Image,
    MakeRegistry,
    Registry,
    assert_error,
    chunked,
    digest_of,
    encode,
    image_index,
    image_manifest,
    random_blob,
    random_config,
)

from cargohold.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
)

LIMIT = 4 * 1024 * 1024


def padded_manifest(config: Blob, size: int) -> bytes:
    """A valid OCI manifest of exactly ``size`` bytes (an annotation holds the padding)."""
    base = image_manifest(config, [], annotations={"pad": ""})
    padding = size - len(base)
    assert padding >= 0
    payload = image_manifest(config, [], annotations={"pad": "x" * padding})
    assert len(payload) == size
    return payload


async def get_manifest(
    registry: Registry, name: str, reference: str, method: str = "GET", **headers: str
) -> tuple[int, Any, bytes]:
    response = await registry.request(method, f"/v2/{name}/manifests/{reference}", headers=headers)
    return response.status, response.headers, await response.read()


async def assert_served(registry: Registry, name: str, reference: str, image: Image) -> None:
    """GET and HEAD by ``reference`` serve ``image`` exactly as pushed."""
    for method in ("GET", "HEAD"):
        status, headers, body = await get_manifest(registry, name, reference, method)
        assert status == 200, body
        assert headers["Content-Type"] == image.media_type
        assert headers["Docker-Content-Digest"] == image.digest
        assert headers["ETag"] == f'"{image.digest}"'
        assert headers["Content-Length"] == str(image.size)
        assert body == (image.payload if method == "GET" else b"")


async def assert_manifest_unknown(registry: Registry, name: str, reference: str) -> None:
    response = await registry.request("GET", f"/v2/{name}/manifests/{reference}")
    await assert_error(response, 404, "MANIFEST_UNKNOWN")
    response = await registry.request("HEAD", f"/v2/{name}/manifests/{reference}")
    await assert_error(response, 404, "MANIFEST_UNKNOWN", head=True)


# -- put and get ------------------------------------------------------------------------------


async def test_put_by_tag(registry: Registry) -> None:
    config = await registry.push_blob("repo", random_config())
    layer = await registry.push_blob("repo")
    payload = image_manifest(config, [layer])
    image = Image(payload, OCI_MANIFEST)
    response = await registry.request(
        "PUT", "/v2/repo/manifests/v1", data=payload, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status == 201
    assert registry.local(response.headers["Location"]) == f"/v2/repo/manifests/{image.digest}"
    assert response.headers["Docker-Content-Digest"] == image.digest
    assert response.headers["Content-Length"] == "0"
    assert "OCI-Subject" not in response.headers
    await assert_served(registry, "repo", "v1", image)
    await assert_served(registry, "repo", image.digest, image)
    assert await registry.tags("repo") == ["v1"]


async def test_put_by_digest(registry: Registry) -> None:
    config = await registry.push_blob("repo", random_config())
    image = Image(image_manifest(config, []), OCI_MANIFEST)
    response = await registry.request(
        "PUT",
        f"/v2/repo/manifests/{image.digest}",
        data=image.payload,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert response.status == 201
    assert registry.local(response.headers["Location"]) == f"/v2/repo/manifests/{image.digest}"
    assert response.headers["Docker-Content-Digest"] == image.digest
    await assert_served(registry, "repo", image.digest, image)
    # No tag was made: the repository exists with an empty tag list.
    assert await registry.tags("repo") == []


async def test_put_by_sha512_digest(registry: Registry) -> None:
    config = await registry.push_blob("repo", random_config())
    payload = image_manifest(config, [])
    digest = digest_of(payload, "sha512")
    response = await registry.request(
        "PUT", f"/v2/repo/manifests/{digest}", data=payload, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status == 201, await response.text()
    assert response.headers["Docker-Content-Digest"] == digest
    status, headers, body = await get_manifest(registry, "repo", digest)
    assert status == 200
    assert headers["Docker-Content-Digest"] == digest
    assert body == payload


async def test_docker_schema2_manifest_and_list(registry: Registry) -> None:
    config = await registry.push_blob("repo", Blob(b'{"architecture":"arm64"}', DOCKER_CONFIG))
    layer = await registry.push_blob("repo", Blob(random_blob().data, DOCKER_LAYER))
    payload = encode(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        }
    )
    image = Image(payload, DOCKER_MANIFEST)
    await registry.put_manifest("repo", "v2", payload, DOCKER_MANIFEST)
    await assert_served(registry, "repo", "v2", image)
    listing = encode(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST,
            "manifests": [
                {
                    "mediaType": DOCKER_MANIFEST,
                    "digest": image.digest,
                    "size": image.size,
                    "platform": {"architecture": "arm64", "os": "linux"},
                }
            ],
        }
    )
    await registry.put_manifest("repo", "list", listing, DOCKER_MANIFEST_LIST)
    await assert_served(registry, "repo", "list", Image(listing, DOCKER_MANIFEST_LIST))


async def test_oci_index(registry: Registry) -> None:
    amd = await registry.push_image("repo")
    arm = await registry.push_image("repo")
    index = await registry.push_index("repo", [amd, arm], "multi")
    await assert_served(registry, "repo", "multi", index)


async def test_content_type_may_be_generic_when_the_body_names_its_type(
    registry: Registry,
) -> None:
    config = await registry.push_blob("repo", random_config())
    image = Image(image_manifest(config, []), OCI_MANIFEST)
    for content_type in (None, "application/json", "application/x-www-form-urlencoded"):
        headers = {} if content_type is None else {"Content-Type": content_type}
        response = await registry.request(
            "PUT", "/v2/repo/manifests/latest", data=image.payload, headers=headers
        )
        assert response.status == 201, await response.text()
        # Served as the type the body declares, not as what the client happened to send.
        await assert_served(registry, "repo", "latest", image)


async def test_put_chunked(registry: Registry) -> None:
    config = await registry.push_blob("repo", random_config())
    image = Image(image_manifest(config, []), OCI_MANIFEST)
    response = await registry.request(
        "PUT",
        "/v2/repo/manifests/v1",
        data=chunked(image.payload, 50),
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert response.status == 201
    await assert_served(registry, "repo", "v1", image)


async def test_accept_header_does_not_change_what_is_served(registry: Registry) -> None:
    image = await registry.push_image("repo", "v1")
    status, headers, body = await get_manifest(
        registry, "repo", "v1", Accept="application/vnd.docker.distribution.manifest.v1+json"
    )
    assert status == 200
    assert headers["Content-Type"] == OCI_MANIFEST
    assert body == image.payload


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("by", ["tag", "digest"])
@pytest.mark.parametrize("etag", ['"{digest}"', 'W/"{digest}"', '"x", "{digest}"', "*"])
async def test_if_none_match_is_304(registry: Registry, method: str, by: str, etag: str) -> None:
    image = await registry.push_image("repo", "v1")
    reference = "v1" if by == "tag" else image.digest
    status, headers, body = await get_manifest(
        registry, "repo", reference, method, **{"If-None-Match": etag.format(digest=image.digest)}
    )
    assert status == 304
    assert headers["ETag"] == f'"{image.digest}"'
    assert headers["Docker-Content-Digest"] == image.digest
    assert body == b""
    status, _, body = await get_manifest(
        registry, "repo", reference, method, **{"If-None-Match": '"sha256:other"'}
    )
    assert status == 200


async def test_moving_a_tag(registry: Registry) -> None:
    first = await registry.push_image("repo", "latest")
    second = await registry.push_image("repo", "latest")
    await assert_served(registry, "repo", "latest", second)
    await assert_served(registry, "repo", first.digest, first)
    assert await registry.tags("repo") == ["latest"]


async def test_put_same_manifest_again(registry: Registry) -> None:
    image = await registry.push_image("repo", "v1")
    response = await registry.put_manifest("repo", "v1", image.payload)
    assert response.headers["Docker-Content-Digest"] == image.digest
    await assert_served(registry, "repo", "v1", image)


async def test_several_tags_at_once(registry: Registry) -> None:
    image = await registry.push_image("repo")
    response = await registry.request(
        "PUT",
        f"/v2/repo/manifests/{image.digest}?tag=a&tag=b",
        data=image.payload,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert response.status == 201
    assert response.headers["Docker-Content-Digest"] == image.digest
    assert registry.local(response.headers["Location"]) == f"/v2/repo/manifests/{image.digest}"
    assert await registry.tags("repo") == ["a", "b"]
    await assert_served(registry, "repo", "a", image)
    await assert_served(registry, "repo", "b", image)


async def test_tag_parameters_with_a_tag_reference_are_refused(registry: Registry) -> None:
    image = await registry.push_image("repo")
    response = await registry.request(
        "PUT",
        "/v2/repo/manifests/v1?tag=a",
        data=image.payload,
        headers={"Content-Type": OCI_MANIFEST},
    )
    await assert_error(response, 400, "TAG_INVALID")
    assert await registry.tags("repo") == []


async def test_subject_is_acknowledged_with_oci_subject(registry: Registry) -> None:
    subject = await registry.push_image("repo", "v1")
    await registry.push_blob("repo", EMPTY_CONFIG)
    payload = image_manifest(
        EMPTY_CONFIG,
        [],
        artifactType="application/vnd.example.sbom",
        subject={"mediaType": OCI_MANIFEST, "digest": subject.digest, "size": subject.size},
    )
    response = await registry.put_manifest("repo", digest_of(payload), payload)
    assert response.headers["OCI-Subject"] == subject.digest


async def test_subject_need_not_exist(registry: Registry) -> None:
    # The spec lets a referrer arrive before its subject.
    await registry.push_blob("repo", EMPTY_CONFIG)
    missing = digest_of(b"not pushed yet")
    payload = image_manifest(
        EMPTY_CONFIG,
        [],
        artifactType="application/vnd.example.sig",
        subject={"mediaType": OCI_MANIFEST, "digest": missing, "size": 10},
    )
    response = await registry.put_manifest("repo", digest_of(payload), payload)
    assert response.headers["OCI-Subject"] == missing


# -- get what is not there --------------------------------------------------------------------


async def test_unknown_tag_and_digest(registry: Registry) -> None:
    image = await registry.push_image("repo", "v1")
    await assert_manifest_unknown(registry, "repo", "v2")
    await assert_manifest_unknown(registry, "repo", digest_of(b"nothing"))
    # A manifest is visible only in the repository it was pushed to.
    await assert_manifest_unknown(registry, "other", "v1")
    await assert_manifest_unknown(registry, "other", image.digest)


async def test_unknown_tag_names_it_in_detail(registry: Registry) -> None:
    await registry.push_image("repo", "v1")
    response = await registry.request("GET", "/v2/repo/manifests/v2")
    error = await assert_error(response, 404, "MANIFEST_UNKNOWN")
    assert "v2" in json.dumps(error)


# -- put refused ----------------------------------------------------------------------------


async def test_digest_reference_not_matching_the_body(registry: Registry) -> None:
    config = await registry.push_blob("repo", random_config())
    payload = image_manifest(config, [])
    wrong = digest_of(payload + b" ")
    response = await registry.request(
        "PUT", f"/v2/repo/manifests/{wrong}", data=payload, headers={"Content-Type": OCI_MANIFEST}
    )
    await assert_error(response, 400, "DIGEST_INVALID")
    await assert_manifest_unknown(registry, "repo", wrong)
    await assert_manifest_unknown(registry, "repo", digest_of(payload))


@pytest.mark.parametrize("size", [LIMIT, LIMIT + 1, 5 * 1024 * 1024])
@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
async def test_manifest_size_limit(registry: Registry, size: int, transfer: str) -> None:
    config = await registry.push_blob("repo", random_config())
    payload = padded_manifest(config, size)
    # BytesIO: aiohttp warns about large raw bytes bodies, and still sends a Content-Length.
    data = io.BytesIO(payload) if transfer == "content-length" else chunked(payload, 256 * 1024)
    response = await registry.request(
        "PUT", "/v2/repo/manifests/big", data=data, headers={"Content-Type": OCI_MANIFEST}
    )
    if size <= LIMIT:
        assert response.status == 201, await response.text()
        status, _, body = await get_manifest(registry, "repo", "big")
        assert status == 200
        assert body == payload
        return
    # 413, with the specification's error body all the same.
    await assert_error(response, 413, "MANIFEST_INVALID")
    await assert_manifest_unknown(registry, "repo", "big")


async def test_missing_blobs_are_each_named(registry: Registry) -> None:
    config = random_config()
    present = await registry.push_blob("repo")
    missing = random_blob()
    also_missing = random_blob()
    payload = image_manifest(config, [present, missing, also_missing])
    response = await registry.request(
        "PUT", "/v2/repo/manifests/v1", data=payload, headers={"Content-Type": OCI_MANIFEST}
    )
    error = await assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    named = json.dumps(error["detail"])
    for blob in (config, missing, also_missing):
        assert blob.digest in named
    assert present.digest not in named
    await assert_manifest_unknown(registry, "repo", "v1")


async def test_blobs_of_another_repository_do_not_count(registry: Registry) -> None:
    config = await registry.push_blob("other", random_config())
    payload = image_manifest(config, [])
    response = await registry.request(
        "PUT", "/v2/repo/manifests/v1", data=payload, headers={"Content-Type": OCI_MANIFEST}
    )
    error = await assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert config.digest in json.dumps(error["detail"])


async def test_index_with_a_missing_child(registry: Registry) -> None:
    present = await registry.push_image("repo")
    absent = digest_of(b"no such manifest")
    payload = image_index([(present.digest, present.size), (absent, 321)])
    response = await registry.request(
        "PUT", "/v2/repo/manifests/multi", data=payload, headers={"Content-Type": OCI_INDEX}
    )
    error = await assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    named = json.dumps(error["detail"])
    assert absent in named
    assert present.digest not in named


def invalid_manifests(config: Blob) -> dict[str, tuple[bytes, str | None]]:
    """Bodies and Content-Types that are no acceptable manifest."""
    good = image_manifest(config, [])
    body = json.loads(good)
    return {
        "not-json": (b"{not json", OCI_MANIFEST),
        "empty": (b"", OCI_MANIFEST),
        "array": (b"[]", OCI_MANIFEST),
        "not-utf8": (b'{"schemaVersion": 2, "x": "\xff"}', OCI_MANIFEST),
        "unknown-type": (good, "application/vnd.example.unknown+json"),
        "type-mismatch": (good, OCI_INDEX),
        "body-type-mismatch": (encode({**body, "mediaType": OCI_INDEX}), OCI_MANIFEST),
        "no-config": (encode({k: v for k, v in body.items() if k != "config"}), OCI_MANIFEST),
        "schema-version": (encode({**body, "schemaVersion": 3}), OCI_MANIFEST),
        "bad-layer-digest": (
            encode({**body, "layers": [{**config.descriptor(), "digest": "sha256:zz"}]}),
            OCI_MANIFEST,
        ),
        "generic-without-type": (encode({"schemaVersion": 2}), "application/json"),
    }


CASES = list(invalid_manifests(Blob(b"{}")))


@pytest.mark.parametrize("case", CASES)
async def test_invalid_manifest(registry: Registry, case: str) -> None:
    config = await registry.push_blob("repo", random_config())
    payload, content_type = invalid_manifests(config)[case]
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = await registry.request("PUT", "/v2/repo/manifests/v1", data=payload, headers=headers)
    await assert_error(response, 400, "MANIFEST_INVALID")
    await assert_manifest_unknown(registry, "repo", "v1")


# -- delete -----------------------------------------------------------------------------------


async def test_delete_by_digest_takes_the_tags_with_it(registry: Registry) -> None:
    image = await registry.push_image("repo", "v1")
    await registry.put_manifest("repo", "v2", image.payload)
    other = await registry.push_image("repo", "other")
    response = await registry.request("DELETE", f"/v2/repo/manifests/{image.digest}")
    assert response.status == 202
    assert await response.read() == b""
    await assert_manifest_unknown(registry, "repo", image.digest)
    await assert_manifest_unknown(registry, "repo", "v1")
    await assert_manifest_unknown(registry, "repo", "v2")
    assert await registry.tags("repo") == ["other"]
    await assert_served(registry, "repo", "other", other)
    # The layers were not deleted with the manifest.
    assert image.layers
    for layer in image.layers:
        response = await registry.request("GET", f"/v2/repo/blobs/{layer.digest}")
        assert response.status == 200
    response = await registry.request("DELETE", f"/v2/repo/manifests/{image.digest}")
    await assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_delete_by_tag_keeps_the_manifest(registry: Registry) -> None:
    image = await registry.push_image("repo", "v1")
    await registry.put_manifest("repo", "v2", image.payload)
    response = await registry.request("DELETE", "/v2/repo/manifests/v1")
    assert response.status == 202
    await assert_manifest_unknown(registry, "repo", "v1")
    await assert_served(registry, "repo", image.digest, image)
    await assert_served(registry, "repo", "v2", image)
    assert await registry.tags("repo") == ["v2"]
    response = await registry.request("DELETE", "/v2/repo/manifests/v1")
    await assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_delete_the_last_tag_leaves_an_empty_list(registry: Registry) -> None:
    await registry.push_image("repo", "v1")
    assert (await registry.request("DELETE", "/v2/repo/manifests/v1")).status == 202
    response = await registry.request("GET", "/v2/repo/tags/list")
    assert response.status == 200
    assert await response.json() == {"name": "repo", "tags": []}


async def test_delete_unknown(registry: Registry) -> None:
    await registry.push_image("repo", "v1")
    for reference in ("nope", digest_of(b"nope")):
        response = await registry.request("DELETE", f"/v2/repo/manifests/{reference}")
        await assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_deleted_manifest_can_be_pushed_again(registry: Registry) -> None:
    image = await registry.push_image("repo", "v1")
    assert (await registry.request("DELETE", f"/v2/repo/manifests/{image.digest}")).status == 202
    await registry.put_manifest("repo", "v1", image.payload)
    await assert_served(registry, "repo", "v1", image)


async def test_delete_when_deletes_are_disabled(make_registry: MakeRegistry) -> None:
    registry = await make_registry({"storage": {"delete": {"enabled": False}}})
    image = await registry.push_image("repo", "v1")
    for reference in (image.digest, "v1"):
        response = await registry.request("DELETE", f"/v2/repo/manifests/{reference}")
        await assert_error(response, 405, "UNSUPPORTED")
    await assert_served(registry, "repo", "v1", image)


# -- validation.manifests.indexes and validation.disabled ------------------------------------


async def put_index_with_missing_children(
    registry: Registry, missing: list[int]
) -> tuple[int, str]:
    """PUT an index of three children (arch0..arch2) where those at ``missing`` are absent."""
    children = []
    for i in range(3):
        if i in missing:
            children.append((digest_of(f"absent {i}".encode()), 100 + i))
        else:
            image = await registry.push_image("repo")
            children.append((image.digest, image.size))
    response = await registry.request(
        "PUT",
        "/v2/repo/manifests/multi",
        data=image_index(children),
        headers={"Content-Type": OCI_INDEX},
    )
    return response.status, await response.text()


ARCH0 = {"architecture": "arch0", "os": "linux"}


@pytest.mark.parametrize(
    ("indexes", "missing", "status"),
    [
        ({}, [1], 400),  # all: the default
        ({"platforms": "all"}, [2], 400),
        ({"platforms": "none"}, [0, 1, 2], 201),
        (
            {"platforms": "list", "platformlist": [{"architecture": "arch0", "os": "linux"}]},
            [1, 2],
            201,
        ),
        (
            {"platforms": "list", "platformlist": [{"architecture": "arch0", "os": "linux"}]},
            [0],
            400,
        ),
        ({"platforms": "list", "platformlist": []}, [2], 400),  # an empty list: every platform
    ],
)
async def test_indexes_setting_says_which_children_must_be_present(
    make_registry: MakeRegistry, indexes: dict[str, Any], missing: list[int], status: int
) -> None:
    registry = await make_registry({"validation": {"manifests": {"indexes": indexes}}})
    got, body = await put_index_with_missing_children(registry, missing)
    assert got == status, body
    if status == 400:
        assert "MANIFEST_BLOB_UNKNOWN" in body


async def test_with_validation_disabled_children_and_urls_are_not_checked(
    make_registry: MakeRegistry,
) -> None:
    registry = await make_registry(
        {"validation": {"disabled": True, "manifests": {"urls": {"allow": ["^https://ok/"]}}}}
    )
    assert (await put_index_with_missing_children(registry, [0, 1, 2]))[0] == 201
    config = await registry.push_blob("repo", random_config())
    foreign = Blob(b"elsewhere", "application/vnd.oci.image.layer.nondistributable.v1.tar")
    payload = encode(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [foreign.descriptor(urls=["https://not-ok/x"])],
        }
    )
    response = await registry.request(
        "PUT", "/v2/repo/manifests/foreign", data=payload, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.status == 201, await response.text()
