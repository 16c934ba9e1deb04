"""oras-py pushes artifacts, and artifacts about artifacts, and reads the referrers API."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import oras.oci
import oras.provider

from tests.interop.conftest import Server
from tests.support.accesslog import requests
from tests.support.images import OCI_INDEX, OCI_MANIFEST, sha256

EMPTY = "application/vnd.oci.empty.v1+json"
SBOM = "application/vnd.example.sbom.v1+json"
SIGNATURE = "application/vnd.example.signature.v1"
CONFIG = "application/vnd.example.artifact.config.v1+json"


def client(server: Server) -> oras.provider.Registry:
    return oras.provider.Registry(server.url.removeprefix("http://"), insecure=True)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def manifest_of(registry: oras.provider.Registry, reference: str) -> tuple[bytes, str]:
    """The manifest's bytes as served, and the digest the registry gives it."""
    name, _, ref = reference.rpartition("@") if "@" in reference else reference.rpartition(":")
    url = f"{registry.prefix}://{registry.hostname}/v2/{name}/manifests/{ref}"
    response = registry.do_request(url, "GET", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
    assert response.status_code == 200, response.text
    assert response.headers["Docker-Content-Digest"] == sha256(response.content)
    return response.content, response.headers["Docker-Content-Digest"]


def referrers(
    registry: oras.provider.Registry, name: str, digest: str, artifact_type: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    url = f"{registry.prefix}://{registry.hostname}/v2/{name}/referrers/{digest}"
    if artifact_type is not None:
        url += f"?artifactType={artifact_type}"
    response = registry.do_request(url, "GET")
    assert response.status_code == 200, response.text
    return response.json(), dict(response.headers)


def push_artifact(
    registry: oras.provider.Registry,
    target: str,
    artifact_type: str,
    files: dict[str, bytes],
    directory: Path,
    subject: dict[str, Any] | None = None,
) -> str:
    """Push a manifest with ``artifactType`` and an empty config, as oras 1.1 does.

    oras-py's ``push`` has no ``artifactType`` (it can only set the config's media
    type), so this goes through its lower-level calls: ``upload_blob`` for the
    files and the empty config, ``upload_manifest`` for the manifest.
    """
    container = registry.get_container(target)
    layers = []
    for name, data in files.items():
        path = write(directory / name, data)
        layer = oras.oci.NewLayer(str(path), media_type="application/octet-stream")
        layer["annotations"] = {"org.opencontainers.image.title": name}
        registry._check_200_response(registry.upload_blob(str(path), container, layer))
        layers.append(layer)
    empty = write(directory / "empty.json", b"{}")
    config = {"mediaType": EMPTY, "digest": sha256(b"{}"), "size": 2}
    registry._check_200_response(registry.upload_blob(str(empty), container, config))
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config,
        "layers": layers,
        "annotations": {"org.example.kind": artifact_type},
    }
    if subject is not None:
        manifest["subject"] = subject
    response = registry.upload_manifest(manifest, container)
    assert response.status_code == 201, response.text
    if subject is not None:
        # The registry says it indexed the subject: no fallback tag is needed.
        assert response.headers["OCI-Subject"] == subject["digest"]
    digest: str = response.headers["Docker-Content-Digest"]
    return digest


def test_an_artifact_comes_back_file_for_file(registry: Server, tmp_path: Path) -> None:
    oras_client = client(registry)
    files = {
        "notes.txt": b"hello from oras-py\n",
        "data.bin": os.urandom(1536 * 1024 + 17),  # several PATCHes with Content-Range
    }
    paths = [str(write(tmp_path / "push" / name, data)) for name, data in files.items()]
    config = write(tmp_path / "config.json", b'{"purpose": "interop"}')
    target = f"{oras_client.hostname}/artifacts/bundle:v1"

    response = oras_client.push(
        target,
        files=paths,
        manifest_config=f"{config}:{CONFIG}",
        manifest_annotations={"org.example.test": "oras"},
        disable_path_validation=True,
        do_chunked=True,
        chunk_size=512 * 1024,
        quiet=True,
    )
    assert response.status_code == 201
    patches = [r for r in requests(registry.log) if r.method == "PATCH"]
    assert len(patches) == 4 + 1  # data.bin in 512 KiB chunks, notes.txt in one
    assert {r.status for r in patches} == {202}

    pulled = oras_client.pull(target, outdir=str(tmp_path / "pull"))
    assert sorted(Path(p).name for p in pulled) == sorted(files)
    for path in pulled:
        assert Path(path).read_bytes() == files[Path(path).name]
    payload, digest = manifest_of(oras_client, "artifacts/bundle:v1")
    assert digest == response.headers["Docker-Content-Digest"]
    manifest = json.loads(payload)
    assert manifest["config"] == {
        "mediaType": CONFIG,
        "digest": sha256(config.read_bytes()),
        "size": len(config.read_bytes()),
    }
    assert [layer["digest"] for layer in manifest["layers"]] == [
        sha256(data) for data in files.values()
    ]
    assert manifest["annotations"] == {"org.example.test": "oras"}


def test_referrers_list_the_artifacts_whose_subject_is_a_manifest(
    registry: Server, tmp_path: Path
) -> None:
    oras_client = client(registry)
    host, name = oras_client.hostname, "artifacts/app"
    image = write(tmp_path / "app" / "app.tar", os.urandom(64 * 1024))
    oras_client.push(
        f"{host}/{name}:v1", files=[str(image)], disable_path_validation=True, quiet=True
    )
    payload, subject_digest = manifest_of(oras_client, f"{name}:v1")
    subject = {"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": len(payload)}

    # One referrer with artifactType, pushed through oras-py's lower-level calls...
    signature = push_artifact(
        oras_client,
        f"{host}/{name}:signature",
        SIGNATURE,
        {"signature.sig": b"signed: " + hashlib.sha256(payload).digest()},
        tmp_path / "signature",
        subject,
    )
    # ... and one whose type is its config's media type, through oras-py's push(subject=).
    sbom_config = write(tmp_path / "sbom-config.json", b'{"format": "spdx"}')
    sbom_file = write(tmp_path / "sbom" / "sbom.spdx.json", b'{"packages": []}')
    response = oras_client.push(
        f"{host}/{name}:sbom",
        files=[str(sbom_file)],
        manifest_config=f"{sbom_config}:{SBOM}",
        subject=oras.oci.Subject(**subject),
        disable_path_validation=True,
        quiet=True,
    )
    assert response.headers["OCI-Subject"] == subject_digest
    sbom = response.headers["Docker-Content-Digest"]

    index, headers = referrers(oras_client, name, subject_digest)
    assert headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in headers
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    listed = {d["digest"]: d for d in index["manifests"]}
    assert set(listed) == {signature, sbom}
    for digest, artifact_type in ((signature, SIGNATURE), (sbom, SBOM)):
        served, _ = manifest_of(oras_client, f"{name}@{digest}")
        assert listed[digest]["mediaType"] == OCI_MANIFEST
        assert listed[digest]["size"] == len(served)
        assert listed[digest]["artifactType"] == artifact_type
    assert listed[signature]["annotations"] == {"org.example.kind": SIGNATURE}

    filtered, headers = referrers(oras_client, name, subject_digest, SIGNATURE)
    assert headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in filtered["manifests"]] == [signature]
    none, _ = referrers(oras_client, name, subject_digest, "application/vnd.example.none")
    assert none["manifests"] == []
    unreferenced, _ = referrers(oras_client, name, signature)
    assert unreferenced["manifests"] == []

    pulled = oras_client.pull(f"{host}/{name}@{signature}", outdir=str(tmp_path / "pull"))
    assert [Path(p).read_bytes() for p in pulled] == [
        b"signed: " + hashlib.sha256(payload).digest()
    ]
