"""``GET /v2/<name>/referrers/<digest>[?artifactType=]`` (end-12a/b).

The answer is always an OCI image index listing the descriptors of the
manifests whose ``subject`` is the digest: an unknown subject has an empty
list, never a 404. ``artifactType`` filters, and the reply then says so with
``OCI-Filters-Applied``.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.api.conftest import (
    EMPTY_CONFIG,
    Image,
    Registry,
    assert_error,
    digest_of,
    encode,
    image_manifest,
    random_config,
)

from cargohold.manifest import OCI_INDEX, OCI_MANIFEST

SBOM = "application/vnd.example.sbom.v1+json"
SIGNATURE = "application/vnd.example.signature.v1+json"


def subject_of(image: Image) -> dict[str, Any]:
    return {"mediaType": image.media_type, "digest": image.digest, "size": image.size}


async def push_referrer(
    registry: Registry,
    name: str,
    subject: Image,
    artifact_type: str | None,
    annotations: dict[str, str] | None = None,
) -> Image:
    """An OCI 1.1 artifact: the empty config, no layers, a subject."""
    await registry.push_blob(name, EMPTY_CONFIG)
    fields: dict[str, Any] = {"subject": subject_of(subject)}
    if artifact_type is not None:
        fields["artifactType"] = artifact_type
    if annotations is not None:
        fields["annotations"] = annotations
    payload = image_manifest(EMPTY_CONFIG, [], **fields)
    image = Image(payload, OCI_MANIFEST)
    response = await registry.put_manifest(name, image.digest, payload)
    assert response.headers["OCI-Subject"] == subject.digest
    return image


def descriptor(
    image: Image, artifact_type: str, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "mediaType": image.media_type,
        "digest": image.digest,
        "size": image.size,
        "artifactType": artifact_type,
    }
    if annotations:
        found["annotations"] = annotations
    return found


async def get_referrers(
    registry: Registry, name: str, digest: str, artifact_type: str | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """The listed descriptors, sorted by digest, and whether the reply says it filtered."""
    params = None if artifact_type is None else {"artifactType": artifact_type}
    response = await registry.request("GET", f"/v2/{name}/referrers/{digest}", params=params)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == OCI_INDEX
    body = json.loads(await response.read())
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == OCI_INDEX
    assert set(body) == {"schemaVersion", "mediaType", "manifests"}
    filtered = response.headers.get("OCI-Filters-Applied")
    assert filtered in (None, "artifactType")
    manifests: list[dict[str, Any]] = body["manifests"]
    return sorted(manifests, key=lambda d: d["digest"]), filtered is not None


def by_digest(*descriptors: dict[str, Any]) -> list[dict[str, Any]]:
    return sorted(descriptors, key=lambda d: d["digest"])


async def test_referrers_are_listed_with_their_descriptors(registry: Registry) -> None:
    subject = await registry.push_image("repo", "v1")
    sbom = await push_referrer(registry, "repo", subject, SBOM, {"org.example.kind": "spdx"})
    signature = await push_referrer(registry, "repo", subject, SIGNATURE)
    await push_referrer(registry, "repo", sbom, SIGNATURE)  # refers to the sbom, not the image
    assert await get_referrers(registry, "repo", subject.digest) == (
        by_digest(
            descriptor(sbom, SBOM, {"org.example.kind": "spdx"}), descriptor(signature, SIGNATURE)
        ),
        False,
    )


async def test_head_referrers(registry: Registry) -> None:
    subject = await registry.push_image("repo", "v1")
    response = await registry.request("HEAD", f"/v2/repo/referrers/{subject.digest}")
    assert response.status == 200
    assert response.headers["Content-Type"] == OCI_INDEX


async def test_artifact_type_defaults_to_the_config_media_type(registry: Registry) -> None:
    subject = await registry.push_image("repo", "v1")
    config = await registry.push_blob("repo", random_config())
    payload = image_manifest(config, [], subject=subject_of(subject))
    image = Image(payload, OCI_MANIFEST)
    await registry.put_manifest("repo", image.digest, payload)
    assert await get_referrers(registry, "repo", subject.digest) == (
        [descriptor(image, config.media_type)],
        False,
    )


async def test_an_index_can_be_a_referrer(registry: Registry) -> None:
    subject = await registry.push_image("repo", "v1")
    child = await registry.push_image("repo")
    payload = encode(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "artifactType": SBOM,
            "manifests": [subject_of(child)],
            "subject": subject_of(subject),
        }
    )
    index = Image(payload, OCI_INDEX)
    await registry.put_manifest("repo", index.digest, payload, OCI_INDEX)
    assert await get_referrers(registry, "repo", subject.digest) == (
        [descriptor(index, SBOM)],
        False,
    )


async def test_filter_by_artifact_type(registry: Registry) -> None:
    subject = await registry.push_image("repo", "v1")
    sbom = await push_referrer(registry, "repo", subject, SBOM)
    await push_referrer(registry, "repo", subject, SIGNATURE)
    assert await get_referrers(registry, "repo", subject.digest, SBOM) == (
        [descriptor(sbom, SBOM)],
        True,
    )
    assert await get_referrers(registry, "repo", subject.digest, "application/none") == ([], True)


async def test_subject_without_referrers_is_an_empty_index(registry: Registry) -> None:
    subject = await registry.push_image("repo", "v1")
    assert await get_referrers(registry, "repo", subject.digest) == ([], False)
    # Neither the subject nor the repository need exist.
    assert await get_referrers(registry, "repo", digest_of(b"unknown")) == ([], False)
    assert await get_referrers(registry, "nosuchrepo", subject.digest) == ([], False)


async def test_referrer_pushed_before_its_subject(registry: Registry) -> None:
    future = Image(b"not pushed", OCI_MANIFEST)
    referrer = await push_referrer(registry, "repo", future, SBOM)
    assert await get_referrers(registry, "repo", future.digest) == (
        [descriptor(referrer, SBOM)],
        False,
    )


async def test_deleted_referrer_disappears(registry: Registry) -> None:
    subject = await registry.push_image("repo", "v1")
    sbom = await push_referrer(registry, "repo", subject, SBOM)
    signature = await push_referrer(registry, "repo", subject, SIGNATURE)
    response = await registry.request("DELETE", f"/v2/repo/manifests/{sbom.digest}")
    assert response.status == 202
    assert await get_referrers(registry, "repo", subject.digest) == (
        [descriptor(signature, SIGNATURE)],
        False,
    )


async def test_referrers_stay_in_their_repository(registry: Registry) -> None:
    subject = await registry.push_image("repo", "v1")
    await registry.push_image("other", "v1")
    await push_referrer(registry, "repo", subject, SBOM)
    assert await get_referrers(registry, "other", subject.digest) == ([], False)


@pytest.mark.parametrize(
    "digest",
    ["sha256:abc", "md5:" + "0" * 32, "sha256:" + "g" * 64, "notadigest", "SHA256:" + "0" * 64],
)
async def test_invalid_digest_is_400(registry: Registry, digest: str) -> None:
    response = await registry.request("GET", f"/v2/repo/referrers/{digest}")
    await assert_error(response, 400, "DIGEST_INVALID")
