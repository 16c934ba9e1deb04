"""Registries sharing one Redis for the cache tests: their config, and pushes over plain HTTP.

Each registry is a real ``cargohold serve`` process; what they share is the
filesystem root and the Redis database, as several hosts behind one load
balancer would (docs/ARCHITECTURE.md, invariant 5).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import yaml

from tests.support.http import Reply, request

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def write_config(
    path: Path, redis_port: int, redis_db: int = 0, *, collected: bool = False
) -> Path:
    """A config.yml with deletes enabled and the Redis blob descriptor cache.

    The listen address and the storage root come from the environment (see
    ``tests.support.servers.cargohold``), so every registry can share this file.
    ``collected``: the storage is collected while serving (``gc --online``), with a
    grace period of a second; the registries themselves never start a pass.
    """
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": "/unused"},
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "redis"},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "redis": {"addr": f"127.0.0.1:{redis_port}", "db": redis_db},
    }
    if collected:
        config["storage"]["maintenance"]["gc"] = {
            "enabled": True,
            "interval": "24h",
            "graceperiod": "1s",
        }
    path.write_text(yaml.safe_dump(config))
    return path


def random_bytes(size: int = 1024) -> bytes:
    return os.urandom(size)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_blob(url: str, name: str, data: bytes) -> str:
    """A monolithic upload (POST with ``?digest=``); the blob's digest."""
    digest = digest_of(data)
    reply = request(
        "POST",
        f"{url}/v2/{name}/blobs/uploads/?digest={digest}",
        data,
        {"Content-Type": "application/octet-stream"},
    )
    assert reply.status == 201, reply
    return digest


def manifest_of(config: bytes, layers: list[bytes]) -> bytes:
    def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
        return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, config),
            "layers": [descriptor(OCI_LAYER, layer) for layer in layers],
        }
    ).encode()


def index_of(manifests: list[bytes]) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": digest_of(m), "size": len(m)}
                for m in manifests
            ],
        }
    ).encode()


def put_manifest(url: str, name: str, reference: str, payload: bytes, media_type: str) -> Reply:
    return request(
        "PUT", f"{url}/v2/{name}/manifests/{reference}", payload, {"Content-Type": media_type}
    )


def push_image(url: str, name: str, tag: str) -> tuple[bytes, list[bytes], bytes]:
    """A config, one layer and a manifest tagged ``tag``: (config, layers, manifest)."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()})
    layers = [random_bytes(2048)]
    push_blob(url, name, config.encode())
    for layer in layers:
        push_blob(url, name, layer)
    manifest = manifest_of(config.encode(), layers)
    reply = put_manifest(url, name, tag, manifest, OCI_MANIFEST)
    assert reply.status == 201, reply
    return config.encode(), layers, manifest


def error_code(reply: Reply) -> str:
    """The first error code of an error reply's body."""
    return str(json.loads(reply.body)["errors"][0]["code"])
