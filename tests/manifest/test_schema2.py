from __future__ import annotations

from typing import Any

import pytest

from cargohold.errors import ManifestInvalid
from cargohold.manifest import (
    DOCKER_CONFIG,
    DOCKER_FOREIGN_LAYER,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    DockerManifest,
    ManifestList,
    parse_manifest,
)
from tests.manifest.builders import (
    descriptor,
    docker_list,
    docker_manifest,
    encode,
    fake_digest,
    without,
)


def parse(body: dict[str, Any], media_type: str = DOCKER_MANIFEST) -> Any:
    return parse_manifest(encode(body), media_type)


def test_docker_manifest_reports_its_parts() -> None:
    payload = encode(docker_manifest())

    manifest = parse_manifest(payload, DOCKER_MANIFEST)

    assert isinstance(manifest, DockerManifest)
    assert manifest.media_type == DOCKER_MANIFEST
    assert manifest.payload is payload
    assert [d.digest for d in manifest.blobs()] == [
        fake_digest("config"),
        fake_digest("layer0"),
        fake_digest("layer1"),
    ]
    assert manifest.manifests() == []
    assert manifest.foreign_layers() == []
    assert manifest.artifact_type == DOCKER_CONFIG


def test_docker_manifest_has_no_subject_even_if_the_body_says_so() -> None:
    # The Docker format has no such field: Go's decoder drops it, and so do we.
    body = docker_manifest(
        subject=descriptor(OCI_MANIFEST, "subject"), annotations={"a": "b"}, artifactType="x/y"
    )

    manifest = parse(body)

    assert manifest.subject is None
    assert manifest.annotations == {}
    assert manifest.artifact_type == DOCKER_CONFIG


def test_foreign_layer_is_not_required_in_the_repository() -> None:
    foreign = descriptor(
        DOCKER_FOREIGN_LAYER, "windows", urls=["https://mcr.microsoft.com/v2/x/blobs/y"]
    )
    manifest = parse(docker_manifest(layers=[foreign, descriptor(DOCKER_LAYER, "ours")]))

    assert [d.digest for d in manifest.foreign_layers()] == [fake_digest("windows")]
    assert [d.digest for d in manifest.blobs()] == [fake_digest("config"), fake_digest("ours")]
    assert fake_digest("windows") in {d.digest for d in manifest.references()}


def test_manifest_list_reports_its_children() -> None:
    manifest_list = parse(docker_list(), DOCKER_MANIFEST_LIST)

    assert isinstance(manifest_list, ManifestList)
    assert manifest_list.media_type == DOCKER_MANIFEST_LIST
    assert [d.digest for d in manifest_list.manifests()] == [fake_digest("amd64")]
    assert manifest_list.manifests()[0].platform == {"architecture": "amd64", "os": "linux"}
    assert manifest_list.blobs() == []
    assert manifest_list.artifact_type is None
    assert manifest_list.subject is None


MALFORMED: list[tuple[str, str, dict[str, Any], str]] = [
    (
        "mediaType missing",
        DOCKER_MANIFEST,
        without(docker_manifest(), "mediaType"),
        "mediaType: required",
    ),
    (
        "mediaType of OCI",
        DOCKER_MANIFEST,
        docker_manifest(mediaType=OCI_MANIFEST),
        "does not match the declared type",
    ),
    ("schemaVersion 1", DOCKER_MANIFEST, docker_manifest(schemaVersion=1), "schemaVersion"),
    ("config missing", DOCKER_MANIFEST, without(docker_manifest(), "config"), "config: required"),
    ("config null", DOCKER_MANIFEST, docker_manifest(config=None), "config: required"),
    (
        "layer bad digest",
        DOCKER_MANIFEST,
        docker_manifest(
            layers=[descriptor(DOCKER_LAYER, "a"), {**descriptor(DOCKER_LAYER, "b"), "digest": 7}]
        ),
        "layers[1]: invalid digest",
    ),
    (
        "negative size",
        DOCKER_MANIFEST,
        docker_manifest(config=descriptor(DOCKER_CONFIG, "c", -5)),
        "config: size",
    ),
    (
        "foreign layer without urls",
        DOCKER_MANIFEST,
        docker_manifest(
            layers=[descriptor(DOCKER_LAYER, "a"), descriptor(DOCKER_FOREIGN_LAYER, "f")]
        ),
        "layers[1]: a foreign layer must have urls",
    ),
    (
        "manifests in a manifest",
        DOCKER_MANIFEST,
        docker_manifest(manifests=[]),
        "manifests: not allowed",
    ),
    (
        "list mediaType missing",
        DOCKER_MANIFEST_LIST,
        without(docker_list(), "mediaType"),
        "mediaType: required",
    ),
    (
        "list mediaType of OCI index",
        DOCKER_MANIFEST_LIST,
        docker_list(mediaType=OCI_INDEX),
        "mediaType",
    ),
    (
        "list child not a descriptor",
        DOCKER_MANIFEST_LIST,
        docker_list(manifests=["sha256:abc"]),
        "manifests[0]: not an object",
    ),
    ("list with layers", DOCKER_MANIFEST_LIST, docker_list(layers=[]), "layers: not allowed"),
    ("list schemaVersion 3", DOCKER_MANIFEST_LIST, docker_list(schemaVersion=3), "must be 2"),
]


@pytest.mark.parametrize(
    ("media_type", "body", "message"),
    [pytest.param(t, b, m, id=name) for name, t, b, m in MALFORMED],
)
def test_malformed_docker_manifest_is_invalid(
    media_type: str, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        parse(body, media_type)
    assert message in caught.value.message


def test_empty_media_type_is_missing_for_docker() -> None:
    with pytest.raises(ManifestInvalid, match="mediaType: required"):
        parse(docker_manifest(mediaType=""))
