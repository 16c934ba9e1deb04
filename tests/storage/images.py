"""Build manifests whose blobs really are in a repository."""

from __future__ import annotations

import json
import secrets
from typing import Any

from cargohold.descriptor import Descriptor
from cargohold.digest import digest_of
from cargohold.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from cargohold.storage.registry import StorageRepository


def descriptor_json(media_type: str, content: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": str(digest_of(content)), "size": len(content)}


async def put_blobs(repo: StorageRepository, *contents: bytes) -> list[Descriptor]:
    return [await repo.blobs.put(content) for content in contents]


async def image_manifest(
    repo: StorageRepository, layers: int = 2, *, docker: bool = False, **fields: Any
) -> bytes:
    """An image manifest (OCI, or Docker schema2) whose config and layers are pushed."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": secrets.token_hex(8)})
    layer_contents = [secrets.token_bytes(1000 + i) for i in range(layers)]
    await put_blobs(repo, config.encode(), *layer_contents)
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": descriptor_json(DOCKER_CONFIG if docker else OCI_CONFIG, config.encode()),
        "layers": [
            descriptor_json(DOCKER_LAYER if docker else OCI_LAYER_GZIP, c) for c in layer_contents
        ],
    }
    body.update(fields)
    return json.dumps(body, indent=2).encode()


def index_manifest(*children: bytes, **fields: Any) -> bytes:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor_json(OCI_MANIFEST, child) for child in children],
    }
    body.update(fields)
    return json.dumps(body).encode()


def subject_json(manifest: bytes, media_type: str = OCI_MANIFEST) -> dict[str, Any]:
    return descriptor_json(media_type, manifest)
