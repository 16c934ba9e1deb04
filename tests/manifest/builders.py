"""Small builders for manifest bodies: valid by default, each part overridable."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cargohold.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)


def fake_digest(seed: str) -> str:
    """A well-formed sha256 digest that names nothing in particular."""
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def descriptor(media_type: str, seed: str, size: int = 1234, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": fake_digest(seed), "size": size, **extra}


def oci_manifest(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, "config"),
        "layers": [descriptor(OCI_LAYER_GZIP, f"layer{i}") for i in range(3)],
    }
    body.update(fields)
    return body


def oci_index(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            descriptor(OCI_MANIFEST, "amd64", platform={"architecture": "amd64", "os": "linux"}),
            descriptor(OCI_MANIFEST, "arm64", platform={"architecture": "arm64", "os": "linux"}),
        ],
    }
    body.update(fields)
    return body


def docker_manifest(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(DOCKER_CONFIG, "config"),
        "layers": [descriptor(DOCKER_LAYER, f"layer{i}") for i in range(2)],
    }
    body.update(fields)
    return body


def docker_list(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            descriptor(DOCKER_MANIFEST, "amd64", platform={"architecture": "amd64", "os": "linux"})
        ],
    }
    body.update(fields)
    return body


def without(body: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in keys}


def encode(body: object, indent: int | None = 3) -> bytes:
    return json.dumps(body, indent=indent).encode()
