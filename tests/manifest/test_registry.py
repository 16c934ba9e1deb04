"""Choosing the format: by content type on PUT, from the body when that says nothing, and
from stored bytes on GET (``media_type_of``)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

import cargohold.manifest as manifest_module
from cargohold.errors import ManifestInvalid
from cargohold.manifest import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    GENERIC_CONTENT_TYPES,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    SCHEMA1,
    SCHEMA1_SIGNED,
    DockerManifest,
    ImageIndex,
    ImageManifest,
    Manifest,
    ManifestList,
    SignedManifest,
    media_type_of,
    parse_manifest,
)
from cargohold.manifest.schema1 import sign
from tests.manifest.builders import (
    docker_list,
    docker_manifest,
    encode,
    oci_index,
    oci_manifest,
    without,
)

SCHEMA1_BODY = {
    "schemaVersion": 1,
    "name": "a/b",
    "tag": "t",
    "architecture": "amd64",
    "fsLayers": [],
    "history": [],
}


@pytest.fixture(scope="module")
def schema1_signed() -> bytes:
    return sign(SCHEMA1_BODY, ec.generate_private_key(ec.SECP256R1()))


def test_every_public_name_exists() -> None:
    for name in manifest_module.__all__:
        assert hasattr(manifest_module, name), name


def test_registry_covers_the_six_manifest_types() -> None:
    assert {
        OCI_MANIFEST,
        OCI_INDEX,
        DOCKER_MANIFEST,
        DOCKER_MANIFEST_LIST,
        SCHEMA1_SIGNED,
        SCHEMA1,
    } == MANIFEST_MEDIA_TYPES


@pytest.mark.parametrize(
    ("content_type", "body", "kind"),
    [
        (OCI_MANIFEST, oci_manifest(), ImageManifest),
        (OCI_INDEX, oci_index(), ImageIndex),
        (DOCKER_MANIFEST, docker_manifest(), DockerManifest),
        (DOCKER_MANIFEST_LIST, docker_list(), ManifestList),
        (f"{OCI_MANIFEST}; charset=utf-8", oci_manifest(), ImageManifest),
        (OCI_INDEX.upper(), oci_index(), ImageIndex),
    ],
)
def test_content_type_picks_the_parser(
    content_type: str, body: dict[str, Any], kind: type[Manifest]
) -> None:
    manifest = parse_manifest(encode(body), content_type)
    assert type(manifest) is kind
    assert manifest.media_type == body["mediaType"]


@pytest.mark.parametrize(
    "content_type",
    [
        "application/vnd.oci.artifact.manifest.v1+json",
        "text/html",
        "application/vnd.docker.distribution.manifest.v3+json",
    ],
)
def test_unknown_specific_content_type_is_refused(content_type: str) -> None:
    with pytest.raises(ManifestInvalid, match="unsupported manifest media type"):
        parse_manifest(encode(oci_manifest()), content_type)


def test_content_type_and_body_must_agree() -> None:
    with pytest.raises(ManifestInvalid, match="does not match the declared type"):
        parse_manifest(encode(docker_manifest()), OCI_MANIFEST)
    with pytest.raises(ManifestInvalid, match="does not match the declared type"):
        parse_manifest(encode(oci_manifest()), DOCKER_MANIFEST)


@pytest.mark.parametrize("content_type", [*sorted(GENERIC_CONTENT_TYPES), None, "Application/JSON"])
@pytest.mark.parametrize(
    ("body", "kind", "media_type"),
    [
        (oci_manifest(), ImageManifest, OCI_MANIFEST),
        (without(oci_manifest(), "mediaType"), ImageManifest, OCI_MANIFEST),
        (oci_index(), ImageIndex, OCI_INDEX),
        (without(oci_index(), "mediaType"), ImageIndex, OCI_INDEX),
        (docker_manifest(), DockerManifest, DOCKER_MANIFEST),
        (docker_list(), ManifestList, DOCKER_MANIFEST_LIST),
    ],
)
def test_generic_content_type_reads_the_type_from_the_body(
    content_type: str | None, body: dict[str, Any], kind: type[Manifest], media_type: str
) -> None:
    manifest = parse_manifest(encode(body), content_type)
    assert type(manifest) is kind
    assert manifest.media_type == media_type


def test_schema1_is_detected_from_the_body(schema1_signed: bytes) -> None:
    manifest = parse_manifest(schema1_signed, None)
    assert isinstance(manifest, SignedManifest)
    assert manifest.media_type == SCHEMA1_SIGNED


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"schemaVersion": 2}, "cannot tell"),
        ({"schemaVersion": 2, "layers": []}, "cannot tell"),
        (oci_manifest(mediaType="application/vnd.example+json"), "mediaType: unsupported"),
        (oci_manifest(mediaType=["x"]), "mediaType: not a string"),
    ],
)
def test_body_that_names_no_known_type_is_refused(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestInvalid, match=message):
        parse_manifest(encode(body), "application/octet-stream")


def test_detection_still_validates_the_body() -> None:
    with pytest.raises(ManifestInvalid, match=r"layers\[0\]: invalid digest"):
        parse_manifest(encode(oci_manifest(layers=[{"digest": "x", "size": 1}])), None)


def test_body_that_is_not_an_object_is_refused_before_detection() -> None:
    with pytest.raises(ManifestInvalid, match="not a JSON object"):
        parse_manifest(b"[]", None)


# --- media_type_of -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (oci_manifest(), OCI_MANIFEST),
        (oci_index(), OCI_INDEX),
        (docker_manifest(), DOCKER_MANIFEST),
        (docker_list(), DOCKER_MANIFEST_LIST),
        (without(oci_manifest(), "mediaType"), OCI_MANIFEST),
        (without(oci_index(), "mediaType"), OCI_INDEX),
        (SCHEMA1_BODY, SCHEMA1_SIGNED),
    ],
)
@pytest.mark.parametrize("indent", [None, 3])
def test_media_type_of_stored_manifests(
    body: dict[str, Any], expected: str, indent: int | None
) -> None:
    assert media_type_of(encode(body, indent)) == expected


def test_media_type_after_a_nested_object_is_still_found() -> None:
    body = {"config": oci_manifest()["config"], **oci_manifest()}
    body["mediaType"] = OCI_MANIFEST
    reordered = {k: body[k] for k in ("config", "layers", "schemaVersion", "mediaType")}
    assert media_type_of(encode(reordered)) == OCI_MANIFEST


def test_media_type_of_is_not_fooled_by_a_key_inside_a_string() -> None:
    # The first '"mediaType"' in the bytes opens neither a key nor the top-level member.
    payload = (
        b'{"x\\"mediaType": "application/vnd.oci.image.manifest.v1+json", "schemaVersion": 2,'
        b' "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}'
    )
    assert media_type_of(payload) == OCI_INDEX


def test_media_type_of_signed_schema1(schema1_signed: bytes) -> None:
    assert media_type_of(schema1_signed) == SCHEMA1_SIGNED


def test_media_type_of_corrupt_content_is_invalid() -> None:
    with pytest.raises(ManifestInvalid):
        media_type_of(b"\x00garbage")


_text = st.one_of(
    st.text(alphabet=st.sampled_from('ab{}[],:"\\ mediaTypeé'), max_size=12),
    st.sampled_from(["mediaType", '"mediaType": "a/b"', '{"mediaType":"a/b",', 'x\\"mediaType']),
)
_member = st.sampled_from(["schemaVersion", "mediaType", "config", "manifests", "annotations"])


@st.composite
def stored_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Manifest-shaped objects with members in any order and awkward annotation text."""
    keys = draw(st.lists(_member, unique=True))
    values: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": draw(st.sampled_from([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST])),
        "config": {"mediaType": draw(st.sampled_from([OCI_INDEX, "x/y"])), "size": 1},
        "manifests": [{"mediaType": OCI_MANIFEST, "annotations": {"mediaType": "z"}}],
        "annotations": draw(st.dictionaries(_text, _text, max_size=3)),
    }
    return {key: values[key] for key in keys}


@given(
    body=stored_bodies(),
    indent=st.sampled_from([None, 0, 2, "\t"]),
    separators=st.sampled_from([(",", ":"), (", ", ": "), (" ,", " : ")]),
)
def test_fast_path_agrees_with_decoding(
    body: dict[str, Any], indent: int | str | None, separators: tuple[str, str]
) -> None:
    payload = json.dumps(body, indent=indent, separators=separators, ensure_ascii=False).encode()
    expected = body.get("mediaType", OCI_INDEX if "manifests" in body else OCI_MANIFEST)
    assert media_type_of(payload) == expected
