from __future__ import annotations

import hashlib
from typing import Any

import pytest

from cargohold.errors import ManifestInvalid
from cargohold.manifest import (
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_NONDISTRIBUTABLE_GZIP,
    OCI_MANIFEST,
    ImageIndex,
    ImageManifest,
    parse_manifest,
)
from tests.manifest.builders import (
    descriptor,
    encode,
    fake_digest,
    oci_index,
    oci_manifest,
    without,
)

ARTIFACT = "application/vnd.example.sbom.v1"


def parse(body: dict[str, Any], media_type: str = OCI_MANIFEST) -> Any:
    return parse_manifest(encode(body), media_type)


# --- image manifest ----------------------------------------------------------------------


def test_image_manifest_reports_its_parts() -> None:
    payload = encode(oci_manifest(annotations={"org.opencontainers.image.title": "x"}))

    manifest = parse_manifest(payload, OCI_MANIFEST)

    assert isinstance(manifest, ImageManifest)
    assert manifest.media_type == OCI_MANIFEST
    assert manifest.payload is payload
    assert manifest.digest() == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert [d.digest for d in manifest.blobs()] == [
        fake_digest("config"),
        fake_digest("layer0"),
        fake_digest("layer1"),
        fake_digest("layer2"),
    ]
    assert manifest.blobs()[0].media_type == OCI_CONFIG
    assert manifest.manifests() == []
    assert manifest.foreign_layers() == []
    assert manifest.subject is None
    assert manifest.annotations == {"org.opencontainers.image.title": "x"}


def test_artifact_type_falls_back_to_the_config_media_type() -> None:
    assert parse(oci_manifest()).artifact_type == OCI_CONFIG


def test_artifact_type_prefers_the_manifests_own() -> None:
    body = oci_manifest(config=descriptor(OCI_EMPTY, "{}", 2), artifactType=ARTIFACT)
    assert parse(body).artifact_type == ARTIFACT


def test_oci_11_artifact_with_subject_and_no_layers() -> None:
    subject = descriptor(OCI_MANIFEST, "subject", 512)
    body = oci_manifest(
        config=descriptor(OCI_EMPTY, "{}", 2), layers=[], subject=subject, artifactType=ARTIFACT
    )

    manifest = parse(body)

    assert manifest.subject is not None
    assert manifest.subject.digest == fake_digest("subject")
    assert manifest.subject.media_type == OCI_MANIFEST
    assert manifest.subject.size == 512
    assert [d.media_type for d in manifest.blobs()] == [OCI_EMPTY]
    assert manifest.artifact_type == ARTIFACT


def test_missing_or_null_layers_read_as_none() -> None:
    assert [d.media_type for d in parse(without(oci_manifest(), "layers")).blobs()] == [OCI_CONFIG]
    assert [d.media_type for d in parse(oci_manifest(layers=None)).blobs()] == [OCI_CONFIG]


def test_mediatype_may_be_absent_from_the_body() -> None:
    assert isinstance(parse(without(oci_manifest(), "mediaType")), ImageManifest)


def test_references_leave_out_the_subject() -> None:
    body = oci_manifest(subject=descriptor(OCI_MANIFEST, "subject"))
    refs = {d.digest for d in parse(body).references()}
    assert fake_digest("subject") not in refs
    assert fake_digest("config") in refs
    assert fake_digest("layer2") in refs


def test_a_blob_named_twice_is_checked_once() -> None:
    layer = descriptor(OCI_LAYER, "same")
    manifest = parse(oci_manifest(layers=[layer, layer]))
    assert [d.digest for d in manifest.blobs()] == [fake_digest("config"), fake_digest("same")]


def test_nondistributable_layer_with_urls_is_foreign() -> None:
    foreign = descriptor(OCI_LAYER_NONDISTRIBUTABLE_GZIP, "win", urls=["https://x.example/l"])
    local = descriptor(OCI_LAYER_NONDISTRIBUTABLE_GZIP, "local")

    manifest = parse(oci_manifest(layers=[foreign, local]))

    assert [d.digest for d in manifest.foreign_layers()] == [fake_digest("win")]
    assert fake_digest("win") not in {d.digest for d in manifest.blobs()}
    # Without urls there is nowhere else to get it: the registry must have it.
    assert fake_digest("local") in {d.digest for d in manifest.blobs()}
    assert fake_digest("win") in {d.digest for d in manifest.references()}


def test_ordinary_layer_with_urls_must_still_be_present() -> None:
    layer = descriptor(OCI_LAYER, "mirror", urls=["https://x.example/l"])
    manifest = parse(oci_manifest(layers=[layer]))
    assert fake_digest("mirror") in {d.digest for d in manifest.blobs()}
    assert manifest.foreign_layers() == []


def test_descriptor_of_the_manifest_carries_referrer_fields() -> None:
    body = oci_manifest(artifactType=ARTIFACT, annotations={"a": "b"})
    payload = encode(body)

    described = parse_manifest(payload, OCI_MANIFEST).descriptor()

    assert described.media_type == OCI_MANIFEST
    assert described.size == len(payload)
    assert described.artifact_type == ARTIFACT
    assert described.annotations == {"a": "b"}


MALFORMED_MANIFESTS: list[tuple[str, bytes, str]] = [
    ("not json", b"{not json", "not valid JSON"),
    ("empty", b"", "empty"),
    ("array", b"[]", "not a JSON object"),
    ("string", b'"manifest"', "not a JSON object"),
    ("not utf-8", b'{"schemaVersion": 2, "x": "\xff"}', "not UTF-8"),
    ("NaN", b'{"schemaVersion": NaN}', "not valid JSON"),
    ("duplicate key", b'{"schemaVersion": 2, "schemaVersion": 2}', "duplicate key"),
    ("deep nesting", b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ("schemaVersion 1", encode(oci_manifest(schemaVersion=1)), "schemaVersion: must be 2"),
    ("schemaVersion missing", encode(without(oci_manifest(), "schemaVersion")), "schemaVersion"),
    ("schemaVersion true", encode(oci_manifest(schemaVersion=True)), "schemaVersion"),
    ("schemaVersion 2.0", encode(oci_manifest(schemaVersion=2.0)), "schemaVersion"),
    ("schemaVersion string", encode(oci_manifest(schemaVersion="2")), "schemaVersion"),
    ("mediaType mismatch", encode(oci_manifest(mediaType=OCI_INDEX)), "mediaType"),
    ("mediaType number", encode(oci_manifest(mediaType=2)), "mediaType: not a string"),
    ("config missing", encode(without(oci_manifest(), "config")), "config: required"),
    ("config not object", encode(oci_manifest(config="sha256:x")), "config: not an object"),
    (
        "config bad digest",
        encode(oci_manifest(config={"mediaType": OCI_CONFIG, "digest": "md5:x", "size": 1})),
        "config: invalid digest",
    ),
    ("layers not list", encode(oci_manifest(layers={})), "layers: not a list"),
    (
        "layer bad digest",
        encode(
            oci_manifest(
                layers=[
                    descriptor(OCI_LAYER, "a"),
                    descriptor(OCI_LAYER, "b"),
                    {"mediaType": OCI_LAYER, "digest": "sha256:abc", "size": 1},
                ]
            )
        ),
        "layers[2]: invalid digest",
    ),
    (
        "layer negative size",
        encode(oci_manifest(layers=[descriptor(OCI_LAYER, "a", -1)])),
        "layers[0]: size",
    ),
    (
        "layer size a string",
        encode(oci_manifest(layers=[{**descriptor(OCI_LAYER, "a"), "size": "12"}])),
        "layers[0]: size",
    ),
    (
        "layer size beyond int64",
        encode(oci_manifest(layers=[descriptor(OCI_LAYER, "a", 2**63)])),
        "layers[0]: size is out of range",
    ),
    (
        "layer annotations not strings",
        encode(oci_manifest(layers=[descriptor(OCI_LAYER, "a", annotations={"n": 1})])),
        "layers[0]: annotations",
    ),
    (
        "layer urls not strings",
        encode(oci_manifest(layers=[descriptor(OCI_LAYER, "a", urls=[1])])),
        "layers[0]: urls",
    ),
    ("annotations not strings", encode(oci_manifest(annotations={"a": 1})), "annotations"),
    ("annotations a list", encode(oci_manifest(annotations=["a"])), "annotations"),
    ("subject not a descriptor", encode(oci_manifest(subject="sha256:x")), "subject: not an"),
    (
        "subject without digest",
        encode(oci_manifest(subject={"mediaType": OCI_MANIFEST, "size": 1})),
        "subject: invalid digest",
    ),
    ("artifactType a number", encode(oci_manifest(artifactType=1)), "artifactType"),
    (
        "manifests in an image manifest",
        encode(oci_manifest(manifests=[])),
        "manifests: not allowed",
    ),
]


@pytest.mark.parametrize(
    ("payload", "message"),
    [pytest.param(p, m, id=name) for name, p, m in MALFORMED_MANIFESTS],
)
def test_malformed_image_manifest_is_invalid(payload: bytes, message: str) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        parse_manifest(payload, OCI_MANIFEST)
    assert message in caught.value.message


# --- image index -------------------------------------------------------------------------


def test_image_index_reports_its_children() -> None:
    payload = encode(oci_index(annotations={"k": "v"}))

    index = parse_manifest(payload, OCI_INDEX)

    assert isinstance(index, ImageIndex)
    assert index.media_type == OCI_INDEX
    assert [d.digest for d in index.manifests()] == [fake_digest("amd64"), fake_digest("arm64")]
    assert index.manifests()[1].platform == {"architecture": "arm64", "os": "linux"}
    assert index.blobs() == []
    assert index.references() == index.manifests()
    assert index.artifact_type is None
    assert index.annotations == {"k": "v"}


def test_index_with_subject_and_artifact_type() -> None:
    body = oci_index(subject=descriptor(OCI_MANIFEST, "subject"), artifactType=ARTIFACT)

    index = parse(body, OCI_INDEX)

    assert index.subject is not None
    assert index.subject.digest == fake_digest("subject")
    assert index.artifact_type == ARTIFACT


def test_empty_index_is_valid() -> None:
    assert parse(oci_index(manifests=[]), OCI_INDEX).manifests() == []


MALFORMED_INDEXES: list[tuple[str, dict[str, Any], str]] = [
    ("schemaVersion 1", oci_index(schemaVersion=1), "schemaVersion"),
    ("mediaType mismatch", oci_index(mediaType=OCI_MANIFEST), "mediaType"),
    ("manifests not list", oci_index(manifests="x"), "manifests: not a list"),
    (
        "child bad digest",
        oci_index(
            manifests=[descriptor(OCI_MANIFEST, "a"), {"mediaType": OCI_MANIFEST, "size": 1}]
        ),
        "manifests[1]: invalid digest",
    ),
    (
        "platform not object",
        oci_index(manifests=[descriptor(OCI_MANIFEST, "a", platform="linux")]),
        "manifests[0]: platform",
    ),
    (
        "platform architecture not string",
        oci_index(manifests=[descriptor(OCI_MANIFEST, "a", platform={"architecture": 64})]),
        "manifests[0].platform.architecture",
    ),
    (
        "platform features not strings",
        oci_index(manifests=[descriptor(OCI_MANIFEST, "a", platform={"os.features": [1]})]),
        "manifests[0].platform.os.features",
    ),
    ("config in an index", oci_index(config=descriptor(OCI_CONFIG, "c")), "config: not allowed"),
    ("layers in an index", oci_index(layers=[]), "layers: not allowed"),
    ("subject not descriptor", oci_index(subject=[]), "subject: not an object"),
    ("annotations not strings", oci_index(annotations={"a": None}), "annotations"),
]


@pytest.mark.parametrize(
    ("body", "message"),
    [pytest.param(b, m, id=name) for name, b, m in MALFORMED_INDEXES],
)
def test_malformed_index_is_invalid(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        parse(body, OCI_INDEX)
    assert message in caught.value.message


def test_parse_classmethod_defaults_to_its_own_type() -> None:
    manifest = ImageManifest.parse(encode(oci_manifest()))
    assert manifest.media_type == OCI_MANIFEST
    with pytest.raises(ManifestInvalid, match="mediaType"):
        ImageIndex.parse(encode(oci_manifest()))


def test_empty_media_type_reads_as_absent() -> None:
    assert isinstance(parse(oci_manifest(mediaType="")), ImageManifest)
