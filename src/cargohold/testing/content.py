"""Real content to seed a registry with: images, multi-platform indexes, artifacts.

Each helper pushes through ``cargohold.client`` (so it works on any registry,
a Go registry included) and returns the descriptor of what it pushed. Images
are what docker, podman and skopeo pull: layers are gzip'd tar archives with
one file each, the config names their ``diff_ids``, and everything is
deterministic for the same arguments (a tar's times are 0), so a test can
compare digests run after run.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Mapping, Sequence
from typing import Any

from cargohold.client.registry import RemoteRegistry
from cargohold.descriptor import Descriptor
from cargohold.digest import Digest
from cargohold.manifest.mediatypes import (
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)

__all__ = ["layer", "push_artifact", "push_image", "push_index"]

#: The title annotation oras gives each file of an artifact.
TITLE = "org.opencontainers.image.title"


def layer(name: str, data: bytes) -> tuple[bytes, bytes]:
    """A layer holding one file ``name`` with ``data``: (the gzip'd tar, the tar)."""
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        archive.addfile(info, io.BytesIO(data))
    tar = plain.getvalue()
    return gzip.compress(tar, mtime=0), tar


def _platform(text: str) -> dict[str, str]:
    """``os/arch[/variant]`` as an OCI platform object."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform {text!r} is not os/arch[/variant]")
    platform = {"os": parts[0], "architecture": parts[1]}
    if len(parts) == 3:
        platform["variant"] = parts[2]
    return platform


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


async def _put_manifest(
    client: RemoteRegistry, name: str, tag: str | None, payload: bytes, media_type: str
) -> Descriptor:
    stored = await client.repository(name).manifests.put(payload, media_type, [tag] if tag else ())
    return Descriptor(media_type, stored.digest, len(payload))


async def push_image(
    client: RemoteRegistry,
    name: str,
    tag: str | None = None,
    *,
    layers: int | Sequence[bytes] = 1,
    platform: str = "linux/amd64",
    config: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Descriptor:
    """An OCI image in ``name`` (tagged ``tag``, else by digest): ``layers`` layers (a count,
    or the content of each layer's one file), for ``platform``; ``config`` is laid over the
    image config's ``config`` (``Env``, ``Entrypoint``, ``Labels``...)."""
    contents = (
        [b"layer %d of %s\n" % (i, name.encode()) for i in range(layers)]
        if isinstance(layers, int)
        else list(layers)
    )
    repository = client.repository(name)
    descriptors, diff_ids = [], []
    for i, data in enumerate(contents):
        gzipped, tar = layer(f"file{i}", data)
        descriptors.append(await repository.blobs.put(gzipped, OCI_LAYER_GZIP))
        diff_ids.append(f"sha256:{hashlib.sha256(tar).hexdigest()}")
    image_config = {
        **_platform(platform),
        "config": dict(config or {}),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"cargohold.testing layer {i}"} for i in range(len(contents))],
    }
    config_descriptor = await repository.blobs.put(_json(image_config), OCI_CONFIG)
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {**config_descriptor.to_json(), "mediaType": OCI_CONFIG},
        "layers": [{**d.to_json(), "mediaType": OCI_LAYER_GZIP} for d in descriptors],
    }
    if annotations:
        body["annotations"] = dict(annotations)
    return await _put_manifest(client, name, tag, _json(body), OCI_MANIFEST)


async def push_index(
    client: RemoteRegistry,
    name: str,
    tag: str | None = None,
    *,
    platforms: Sequence[str] = ("linux/amd64", "linux/arm64"),
    layers: int = 1,
) -> Descriptor:
    """A multi-platform image: one image per platform (by digest), and an OCI index of them."""
    if not platforms:
        raise ValueError("platforms: give at least one")
    children = []
    for platform in platforms:
        child = await push_image(
            client,
            name,
            layers=[b"%s layer %d\n" % (platform.encode(), i) for i in range(layers)],
            platform=platform,
        )
        children.append({**child.to_json(), "platform": _platform(platform)})
    body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
    return await _put_manifest(client, name, tag, _json(body), OCI_INDEX)


async def push_artifact(
    client: RemoteRegistry,
    name: str,
    tag: str | None = None,
    *,
    artifact_type: str,
    files: Mapping[str, bytes] | None = None,
    subject: Descriptor | None = None,
    annotations: Mapping[str, str] | None = None,
    media_type: str = "application/octet-stream",
) -> Descriptor:
    """An OCI 1.1 artifact, as oras pushes one: an image manifest with ``artifactType``, the
    empty config, one layer per file (its name in the title annotation), and a ``subject``
    when it refers to another manifest (a signature, an SBOM)."""
    repository = client.repository(name)
    empty = await repository.blobs.put(b"{}", OCI_EMPTY)
    layers = []
    for file_name, data in (files or {}).items():
        blob = await repository.blobs.put(data, media_type)
        titled = {TITLE: file_name}
        layers.append({**blob.to_json(), "mediaType": media_type, "annotations": titled})
    if not layers:
        layers.append({**empty.to_json(), "mediaType": OCI_EMPTY})
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {**empty.to_json(), "mediaType": OCI_EMPTY},
        "layers": layers,
    }
    if subject is not None:
        body["subject"] = {
            "mediaType": subject.media_type,
            "digest": str(Digest.parse(subject.digest)),
            "size": subject.size,
        }
    if annotations:
        body["annotations"] = dict(annotations)
    return await _put_manifest(client, name, tag, _json(body), OCI_MANIFEST)
