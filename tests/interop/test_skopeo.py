"""skopeo pushes to and pulls from cargohold; every round trip is compared byte for byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.interop.conftest import Server, SourceImages
from tests.support import skopeo
from tests.support.accesslog import requests
from tests.support.images import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    assert_sound,
    descriptor_of,
    dir_tree,
    image_tree,
    layers_of,
    read_blob,
    sha256,
)
from tests.support.skopeo import docker


def test_an_oci_image_comes_back_byte_for_byte(
    registry: Server, images: SourceImages, tmp_path: Path
) -> None:
    remote = docker(registry.url, "interop/oci:1.0")
    skopeo.copy(images.oci(images.amd64), remote)
    skopeo.copy(remote, f"oci:{tmp_path / 'back'}:1.0")

    pulled = image_tree(tmp_path / "back", "1.0")
    assert_sound(pulled)
    assert pulled == image_tree(images.layout, images.amd64)
    assert len(pulled) == 5  # manifest, config, three layers
    source = descriptor_of(images.layout, images.amd64)
    assert skopeo.inspect_raw(remote) == read_blob(images.layout, source["digest"])


def test_a_docker_v2s2_image_comes_back_byte_for_byte(
    registry: Server, images: SourceImages, tmp_path: Path
) -> None:
    remote = docker(registry.url, "interop/docker:1.0")
    skopeo.copy(images.oci(images.amd64), remote, "--format", "v2s2")
    skopeo.copy(remote, f"dir:{tmp_path / 'back'}")
    # The same conversion done locally: what the registry must have been sent.
    skopeo.copy(images.oci(images.amd64), f"dir:{tmp_path / 'expected'}", "--format", "v2s2")

    pulled = dir_tree(tmp_path / "back")
    assert_sound(pulled)
    assert pulled == dir_tree(tmp_path / "expected")
    manifest = (tmp_path / "back" / "manifest.json").read_bytes()
    assert json.loads(manifest)["mediaType"] == DOCKER_MANIFEST
    assert skopeo.inspect_raw(remote) == manifest
    # Conversion rewrites the manifest only: the layers are the very same blobs.
    assert [layer["digest"] for layer in json.loads(manifest)["layers"]] == layers_of(
        images.layout, images.amd64
    )


def test_layers_compressed_on_the_fly_arrive_whole(
    registry: Server, images: SourceImages, tmp_path: Path
) -> None:
    # Recompressing to zstd, skopeo knows neither size nor digest of a layer until it has
    # sent it: one PATCH with a chunked body, then a PUT with the digest it computed.
    remote = docker(registry.url, "interop/zstd:1.0")
    skopeo.copy(images.oci(images.amd64), remote, "--dest-compress-format", "zstd")
    skopeo.copy(remote, f"oci:{tmp_path / 'back'}:1.0")

    pulled = image_tree(tmp_path / "back", "1.0")
    assert_sound(pulled)
    manifest = json.loads(
        read_blob(tmp_path / "back", descriptor_of(tmp_path / "back", "1.0")["digest"])
    )
    assert {layer["mediaType"] for layer in manifest["layers"]} == {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    }
    source = json.loads(
        read_blob(images.layout, descriptor_of(images.layout, images.amd64)["digest"])
    )
    assert manifest["config"] == source["config"]  # same uncompressed layers (diff_ids)
    assert [layer["size"] for layer in manifest["layers"]] == [
        len(read_blob(tmp_path / "back", layer["digest"])) for layer in manifest["layers"]
    ]
    uploads = [r for r in requests(registry.log) if r.method == "PUT" and "uploads" in r.path]
    assert {r.param("digest") for r in uploads} == {
        layer["digest"] for layer in [manifest["config"], *manifest["layers"]]
    }


def test_a_multi_arch_index_comes_back_byte_for_byte_with_all(
    registry: Server, images: SourceImages, tmp_path: Path
) -> None:
    remote = docker(registry.url, "interop/multi:1.0")
    skopeo.copy(images.oci(images.multi), remote, "--all")
    skopeo.copy(remote, f"oci:{tmp_path / 'back'}:1.0", "--all")

    pulled = image_tree(tmp_path / "back", "1.0")
    assert_sound(pulled)
    assert pulled == image_tree(images.layout, images.multi)
    index = descriptor_of(images.layout, images.multi)
    raw = skopeo.inspect_raw(remote)
    assert raw == read_blob(images.layout, index["digest"])
    assert json.loads(raw)["mediaType"] == OCI_INDEX
    for child in json.loads(raw)["manifests"]:
        by_digest = docker(registry.url, f"interop/multi@{child['digest']}")
        assert skopeo.inspect_raw(by_digest) == read_blob(images.layout, child["digest"])


def test_inspect_and_list_tags(registry: Server, images: SourceImages) -> None:
    for tag in ("1.0", "latest", "0.9"):
        skopeo.copy(images.oci(images.amd64), docker(registry.url, f"interop/tags:{tag}"))

    info = skopeo.inspect(docker(registry.url, "interop/tags:latest"))
    source = descriptor_of(images.layout, images.amd64)
    assert info["Digest"] == source["digest"]
    assert info["Layers"] == layers_of(images.layout, images.amd64)
    assert (info["Architecture"], info["Os"]) == ("amd64", "linux")
    assert sorted(info["RepoTags"]) == ["0.9", "1.0", "latest"]
    assert sorted(skopeo.list_tags(docker(registry.url, "interop/tags"))) == [
        "0.9",
        "1.0",
        "latest",
    ]


def test_delete_removes_the_manifest_and_every_tag_on_it(
    registry: Server, images: SourceImages
) -> None:
    for tag in ("1.0", "same"):
        skopeo.copy(images.oci(images.amd64), docker(registry.url, f"interop/gone:{tag}"))
    skopeo.copy(images.oci(images.arm64), docker(registry.url, "interop/gone:other"))

    skopeo.delete(docker(registry.url, "interop/gone:1.0"))

    for tag in ("1.0", "same"):
        with pytest.raises(skopeo.SkopeoError, match="manifest unknown"):
            skopeo.inspect(docker(registry.url, f"interop/gone:{tag}"))
    digest = descriptor_of(images.layout, images.amd64)["digest"]
    with pytest.raises(skopeo.SkopeoError, match="manifest unknown"):
        skopeo.inspect_raw(docker(registry.url, f"interop/gone@{digest}"))
    assert skopeo.list_tags(docker(registry.url, "interop/gone")) == ["other"]
    assert skopeo.inspect(docker(registry.url, "interop/gone:other"))["Architecture"] == "arm64"


def test_a_copy_between_repositories_mounts_the_layers(
    registry: Server, images: SourceImages, tmp_path: Path
) -> None:
    source, target = "interop/mount-from", "interop/mount-to"
    skopeo.copy(images.oci(images.amd64), docker(registry.url, f"{source}:1"))
    before = len(requests(registry.log))

    skopeo.copy(docker(registry.url, f"{source}:1"), docker(registry.url, f"{target}:1"))

    second_copy = requests(registry.log)[before:]
    layers = layers_of(images.layout, images.amd64)
    mounted = {
        r.param("mount")
        for r in second_copy
        if r.method == "POST" and r.param("from") == source and r.status == 201
    }
    assert mounted == set(layers)
    # No layer byte crossed the wire again: nothing but the small config was uploaded.
    uploaded = {r.param("digest") for r in second_copy if r.method == "PUT" and "uploads" in r.path}
    assert uploaded.isdisjoint(layers)
    assert len([r for r in second_copy if r.method == "PATCH"]) <= 1
    # ... and none was even read from the source.
    assert not [r for r in second_copy if r.method == "GET" and r.path.split("/")[-1] in layers]
    # The mount is a link in the target repository to the one copy of the content.
    repositories = registry.root / "docker/registry/v2/repositories"
    for layer in layers:
        link = repositories / target / "_layers/sha256" / layer.removeprefix("sha256:") / "link"
        assert link.read_bytes() == layer.encode()

    skopeo.copy(docker(registry.url, f"{target}:1"), f"oci:{tmp_path / 'back'}:1")
    assert image_tree(tmp_path / "back", "1") == image_tree(images.layout, images.amd64)
    assert (
        sha256(skopeo.inspect_raw(docker(registry.url, f"{target}:1")))
        == descriptor_of(images.layout, images.amd64)["digest"]
    )
