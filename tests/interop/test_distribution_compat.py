"""Storage compatibility with CNCF Distribution (Debian's ``docker-registry``), both ways.

Each registry serves a root the other one filled, and skopeo pulls every image
back byte for byte; the listings agree. The strongest check comes last: for the
same pushes, cargohold writes exactly the files the Go registry writes, with
the same bytes (upload folders aside, which both remove when an upload ends).
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.interop.conftest import SourceImages
from tests.support import skopeo
from tests.support.distribution import distribution
from tests.support.http import location, request, with_query
from tests.support.images import (
    assert_sound,
    descriptor_of,
    dir_tree,
    image_tree,
    read_blob,
    sha256,
)
from tests.support.servers import cargohold
from tests.support.skopeo import docker

pytestmark = pytest.mark.slow

Serve = Callable[[Path], AbstractContextManager[str]]

OCI, DOCKER, MULTI = "compat/oci", "compat/docker", "compat/multi"


def serve_cargohold(root: Path) -> AbstractContextManager[str]:
    return cargohold(root, env={"REGISTRY_STORAGE_DELETE_ENABLED": "true"})


@pytest.fixture(scope="module")
def v2s2(images: SourceImages, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The amd64 image converted to Docker schema2 by skopeo, as it pushes it (``dir:``)."""
    directory = tmp_path_factory.mktemp("v2s2") / "image"
    skopeo.copy(images.oci(images.amd64), f"dir:{directory}", "--format", "v2s2")
    return directory


def push_all(url: str, images: SourceImages) -> None:
    skopeo.copy(images.oci(images.amd64), docker(url, f"{OCI}:1.0"))
    skopeo.copy(images.oci(images.amd64), docker(url, f"{OCI}:latest"))
    skopeo.copy(images.oci(images.amd64), docker(url, f"{DOCKER}:1.0"), "--format", "v2s2")
    skopeo.copy(images.oci(images.multi), docker(url, f"{MULTI}:1.0"), "--all")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def sorted_tags(url: str, name: str) -> dict[str, Any]:
    # Distribution 2.8 lists tags in directory order; cargohold sorts them (the
    # OCI specification wants lexical order), so compare the sets.
    found = get_json(f"{url}/v2/{name}/tags/list")
    return {**found, "tags": sorted(found["tags"])}


def listings(url: str) -> dict[str, Any]:
    found = {"_catalog": get_json(f"{url}/v2/_catalog")}
    for name in (OCI, DOCKER, MULTI):
        found[name] = sorted_tags(url, name)
    return found


def pull_all_and_compare(url: str, images: SourceImages, v2s2: Path, scratch: Path) -> None:
    scratch.mkdir()
    skopeo.copy(docker(url, f"{OCI}:latest"), f"oci:{scratch / 'oci'}:back")
    pulled = image_tree(scratch / "oci", "back")
    assert_sound(pulled)
    assert pulled == image_tree(images.layout, images.amd64)

    skopeo.copy(docker(url, f"{DOCKER}:1.0"), f"dir:{scratch / 'docker'}")
    pulled = dir_tree(scratch / "docker")
    assert_sound(pulled)
    assert pulled == dir_tree(v2s2)

    skopeo.copy(docker(url, f"{MULTI}:1.0"), f"oci:{scratch / 'multi'}:back", "--all")
    pulled = image_tree(scratch / "multi", "back")
    assert_sound(pulled)
    assert pulled == image_tree(images.layout, images.multi)
    index = descriptor_of(images.layout, images.multi)["digest"]
    assert skopeo.inspect_raw(docker(url, f"{MULTI}:1.0")) == read_blob(images.layout, index)


def storage_dirs(root: Path) -> set[str]:
    return {
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.is_dir() and "_uploads" not in path.parent.parts
    }


def storage_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root``, by relative path, except the transient upload folders."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "_uploads" not in path.parts and path.name != "startedat"
    }


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        pytest.param(distribution, serve_cargohold, id="distribution-wrote-cargohold-serves"),
        pytest.param(serve_cargohold, distribution, id="cargohold-wrote-distribution-serves"),
    ],
)
def test_one_registry_serves_what_the_other_stored(
    writer: Serve, reader: Serve, images: SourceImages, v2s2: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    with writer(root) as url:
        push_all(url, images)
        expected_listings = listings(url)
    written = storage_files(root)

    with reader(root) as url:
        pull_all_and_compare(url, images, v2s2, tmp_path / "pulled")
        assert listings(url) == expected_listings
        assert sorted(skopeo.inspect(docker(url, f"{OCI}:1.0"))["RepoTags"]) == ["1.0", "latest"]
    assert storage_files(root) == written  # serving pulls changed nothing on disk

    assert expected_listings["_catalog"] == {"repositories": [DOCKER, MULTI, OCI]}
    assert expected_listings[OCI] == {"name": OCI, "tags": ["1.0", "latest"]}


@pytest.mark.parametrize(
    ("writer", "reader"),
    [
        pytest.param(distribution, serve_cargohold, id="distribution-then-cargohold"),
        pytest.param(serve_cargohold, distribution, id="cargohold-then-distribution"),
    ],
)
def test_each_registry_adds_to_and_deletes_from_a_root_the_other_filled(
    writer: Serve, reader: Serve, images: SourceImages, v2s2: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    with writer(root) as url:
        skopeo.copy(images.oci(images.amd64), docker(url, f"{OCI}:1.0"))
        skopeo.copy(images.oci(images.arm64), docker(url, f"{OCI}:arm"))
    with reader(root) as url:
        # New tags and repositories next to the other registry's, mounting its blobs.
        skopeo.copy(docker(url, f"{OCI}:1.0"), docker(url, f"{OCI}:latest"))
        skopeo.copy(images.oci(images.amd64), docker(url, f"{DOCKER}:1.0"), "--format", "v2s2")
        skopeo.copy(images.oci(images.multi), docker(url, f"{MULTI}:1.0"), "--all")
        skopeo.delete(docker(url, f"{OCI}:arm"))
    with writer(root) as url:
        with pytest.raises(skopeo.SkopeoError, match="manifest unknown"):
            skopeo.inspect(docker(url, f"{OCI}:arm"))
        pull_all_and_compare(url, images, v2s2, tmp_path / "pulled")
        assert sorted_tags(url, OCI) == {"name": OCI, "tags": ["1.0", "latest"]}


def test_cargohold_writes_the_very_files_distribution_writes(
    images: SourceImages, tmp_path: Path
) -> None:
    roots = {"distribution": tmp_path / "distribution", "cargohold": tmp_path / "cargohold"}
    with distribution(roots["distribution"]) as url:
        push_all(url, images)
    with serve_cargohold(roots["cargohold"]) as url:
        push_all(url, images)

    go, ours = (storage_files(roots[name]) for name in ("distribution", "cargohold"))
    assert sorted(set(go) - set(ours)) == []  # what cargohold failed to write
    assert sorted(set(ours) - set(go)) == []  # what cargohold wrote that Distribution would not
    differing = [path for path in go if go[path] != ours[path]]
    assert differing == []
    assert storage_dirs(roots["cargohold"]) == storage_dirs(roots["distribution"])
    links = [path for path in go if path.endswith("/link")]
    assert len(links) > 20
    assert all(len(go[path]) == 71 for path in links)  # "sha256:<64 hex>", no newline


def test_an_upload_started_on_distribution_finishes_on_cargohold(tmp_path: Path) -> None:
    root, data = tmp_path / "root", os.urandom(3_000_000)
    with distribution(root) as url:
        started = request("POST", f"{url}/v2/compat/upload/blobs/uploads/")
        patched = request("PATCH", location(started, url), data[:1_000_000])
        assert patched.status == 202
        # Go's Location carries its signed _state; cargohold keeps the state in storage.
        upload = urlsplit(location(patched, url))
    upload_id = upload.path.rpartition("/")[2]
    folder = root / "docker/registry/v2/repositories/compat/upload/_uploads" / upload_id
    assert (folder / "hashstates/sha256/1000000").is_file()

    with serve_cargohold(root) as url:
        resumed = f"{url}{upload.path}?{upload.query}"
        status = request("GET", resumed)
        assert (status.status, status.headers["Range"]) == (204, "0-999999")
        patched = request("PATCH", resumed, data[1_000_000:])
        assert (patched.status, patched.headers["Range"]) == (202, "0-2999999")
        digest = sha256(data)
        assert request("PUT", with_query(location(patched, url), f"digest={digest}")).status == 201
    assert not folder.exists()  # the finished upload's folder is gone, Go's files with it

    with distribution(root) as url:
        assert request("GET", f"{url}/v2/compat/upload/blobs/{digest}").body == data
