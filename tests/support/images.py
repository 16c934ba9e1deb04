"""Container images for interop tests, built from random bytes with Debian's ``umoci``.

An image lives in an OCI image layout (a folder with ``oci-layout``,
``index.json`` and ``blobs/``); several images can share one layout under
different tags. ``build_image`` makes one image of N layers, each a tar of one
file of random bytes, so no two runs push the same content. ``build_index``
adds a multi-platform image index over images already in the layout: umoci
cannot make one, so it writes the index blob and its ``index.json`` entry itself.

``image_tree`` and ``dir_tree`` read back what a client wrote (an OCI layout,
or skopeo's ``dir:`` format) as ``{digest: sha256 of the stored bytes}``: two
images are byte-for-byte equal when their trees are equal, and a tree is sound
when every key equals its value.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
_INDEXES = frozenset({OCI_INDEX, DOCKER_LIST})
_REF_NAME = "org.opencontainers.image.ref.name"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def umoci(*args: str) -> None:
    if shutil.which("umoci") is None:
        pytest.fail("umoci is not installed (Debian package umoci)")
    result = subprocess.run(["umoci", *args], capture_output=True, timeout=120)
    if result.returncode != 0:
        pytest.fail(f"umoci {' '.join(args)} failed:\n{result.stderr.decode(errors='replace')}")


# -- building ------------------------------------------------------------------------------


def build_image(
    layout: Path,
    tag: str,
    layer_sizes: Sequence[int] = (64 * 1024, 300 * 1024, 1024 * 1024),
    *,
    architecture: str = "amd64",
) -> dict[str, Any]:
    """An image with one layer of random bytes per size, tagged ``tag``; its descriptor."""
    if not (layout / "oci-layout").exists():
        umoci("init", "--layout", str(layout))
    image = f"{layout}:{tag}"
    umoci("new", "--image", image)
    bundle = layout.parent / f".bundle-{tag}"
    for number, size in enumerate(layer_sizes):
        # A fresh unpack per layer: repack diffs against the unpacked image,
        # so repacking one bundle twice would fold everything into one layer.
        umoci("unpack", "--rootless", "--image", image, str(bundle))
        (bundle / "rootfs" / f"layer-{number}.bin").write_bytes(os.urandom(size))
        umoci("repack", "--image", image, str(bundle))
        shutil.rmtree(bundle)
    umoci("config", "--image", image, "--architecture", architecture, "--os", "linux")
    umoci("gc", "--layout", str(layout))
    return descriptor_of(layout, tag)


def build_index(layout: Path, tag: str, children: Sequence[str]) -> dict[str, Any]:
    """A multi-platform OCI image index over the images tagged ``children``; its descriptor."""
    manifests = []
    for child in children:
        descriptor = descriptor_of(layout, child)
        manifest = json.loads(read_blob(layout, descriptor["digest"]))
        config = json.loads(read_blob(layout, manifest["config"]["digest"]))
        manifests.append(
            {
                "mediaType": descriptor["mediaType"],
                "digest": descriptor["digest"],
                "size": descriptor["size"],
                "platform": {"architecture": config["architecture"], "os": config["os"]},
            }
        )
    payload = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, indent=2
    ).encode()
    digest = sha256(payload)
    (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).write_bytes(payload)
    descriptor = {
        "mediaType": OCI_INDEX,
        "digest": digest,
        "size": len(payload),
        "annotations": {_REF_NAME: tag},
    }
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text())
    index["manifests"] = [d for d in index["manifests"] if _ref_name(d) != tag] + [descriptor]
    index_path.write_text(json.dumps(index))
    return descriptor


# -- reading back --------------------------------------------------------------------------


def _ref_name(descriptor: dict[str, Any]) -> str | None:
    name: str | None = (descriptor.get("annotations") or {}).get(_REF_NAME)
    return name


def descriptor_of(layout: Path, tag: str) -> dict[str, Any]:
    """The descriptor ``index.json`` of an OCI layout holds for ``tag``."""
    index = json.loads((layout / "index.json").read_text())
    found = [d for d in index["manifests"] if _ref_name(d) == tag]
    assert len(found) == 1, f"{layout} has {len(found)} entries for {tag!r}"
    return dict(found[0])


def read_blob(layout: Path, digest: str) -> bytes:
    algorithm, _, hex_ = digest.partition(":")
    return (layout / "blobs" / algorithm / hex_).read_bytes()


def _walk(
    read: Callable[[str], bytes], digest: str, media_type: str | None, tree: dict[str, str]
) -> dict[str, str]:
    data = read(digest)
    tree[digest] = sha256(data)
    manifest = json.loads(data)
    media_type = manifest.get("mediaType", media_type)
    if media_type in _INDEXES:
        for child in manifest["manifests"]:
            _walk(read, child["digest"], child.get("mediaType"), tree)
        return tree
    for blob in [manifest["config"], *manifest["layers"]]:
        tree[blob["digest"]] = sha256(read(blob["digest"]))
    return tree


def image_tree(layout: Path, tag: str) -> dict[str, str]:
    """``{digest: sha256 of the stored bytes}`` for everything the image ``tag`` references."""
    descriptor = descriptor_of(layout, tag)
    return _walk(lambda d: read_blob(layout, d), descriptor["digest"], descriptor["mediaType"], {})


def dir_tree(directory: Path) -> dict[str, str]:
    """The same for an image skopeo wrote in its ``dir:`` format.

    ``manifest.json`` is the top manifest; blobs are files named by their hex
    digest; with ``--all``, each instance's manifest is ``<hex>.manifest.json``.
    """
    top = (directory / "manifest.json").read_bytes()

    def read(digest: str) -> bytes:
        hex_ = digest.partition(":")[2]
        if digest == sha256(top):
            return top
        instance = directory / f"{hex_}.manifest.json"
        return instance.read_bytes() if instance.exists() else (directory / hex_).read_bytes()

    return _walk(read, sha256(top), None, {})


def assert_sound(tree: dict[str, str]) -> None:
    """Every blob's bytes hash to the digest it is stored under."""
    damaged = {digest: actual for digest, actual in tree.items() if digest != actual}
    assert not damaged, f"content does not match its digest: {damaged}"


def layers_of(layout: Path, tag: str) -> list[str]:
    """The layer digests of the image ``tag`` (a single-platform image)."""
    manifest = json.loads(read_blob(layout, descriptor_of(layout, tag)["digest"]))
    return [layer["digest"] for layer in manifest["layers"]]


@dataclass(frozen=True)
class SourceImages:
    """One OCI layout holding an amd64 image, an arm64 one and an index over both."""

    layout: Path
    amd64: str = "amd64"
    arm64: str = "arm64"
    multi: str = "multi"

    def oci(self, tag: str) -> str:
        return f"oci:{self.layout}:{tag}"

    def digest(self, tag: str) -> str:
        return str(descriptor_of(self.layout, tag)["digest"])

    def blobs(self, tag: str) -> set[str]:
        """The config and layer digests of the single-platform image ``tag``."""
        manifest = json.loads(read_blob(self.layout, self.digest(tag)))
        return {blob["digest"] for blob in [manifest["config"], *manifest["layers"]]}

    def config(self, tag: str) -> str:
        manifest = json.loads(read_blob(self.layout, self.digest(tag)))
        return str(manifest["config"]["digest"])


def build_sources(layout: Path, amd64_layers: Sequence[int]) -> SourceImages:
    """The two images (amd64 with layers of ``amd64_layers`` bytes, a small arm64) and
    their index, built with umoci at ``layout``."""
    source = SourceImages(layout)
    build_image(layout, source.amd64, amd64_layers)
    build_image(layout, source.arm64, (1000, 128 * 1024), architecture="arm64")
    build_index(layout, source.multi, [source.amd64, source.arm64])
    return source
