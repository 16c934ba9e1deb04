"""Seeding helpers push real content: what skopeo pulls and checks, as a client sees it.

- ``push_image``: an OCI image whose layers are gzip'd tars and whose config
  names their ``diff_ids`` and the platform; skopeo copies it to an OCI
  layout, verifying every digest on the way.
- ``push_index``: one image per platform and an index of them; ``skopeo copy
  --all`` takes every one.
- ``push_artifact``: an OCI 1.1 artifact (``artifactType``, the empty config,
  one titled layer per file) that the referrers API lists for its subject.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

from cargohold.testing import serve
from tests.support.skopeo import skopeo
from tests.testing.test_serve import fetch


def layout_blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / digest.replace(":", "/")).read_bytes()


def copied(registry_host: str, reference: str, layout: Path, *more: str) -> dict[str, Any]:
    """``skopeo copy`` of ``reference`` to an OCI layout; the layout's index.json."""
    skopeo(
        "copy",
        "--src-tls-verify=false",
        *more,
        f"docker://{registry_host}/{reference}",
        f"oci:{layout}:pulled",
    )
    index: dict[str, Any] = json.loads((layout / "index.json").read_text())
    return index


def test_an_image_is_what_skopeo_pulls(tmp_path: Path) -> None:
    with serve() as registry:
        pushed = registry.push_image(
            "team/app",
            "v1",
            layers=[b"hello\n", b"world\n"],
            platform="linux/arm64/v8",
            config={"Env": ["A=1"]},
        )
        index = copied(registry.host, "team/app:v1", tmp_path / "oci")
    (entry,) = index["manifests"]
    assert (entry["digest"], entry["size"]) == (pushed.digest, pushed.size)
    manifest = json.loads(layout_blob(tmp_path / "oci", pushed.digest))
    config = json.loads(layout_blob(tmp_path / "oci", manifest["config"]["digest"]))
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")
    assert config["config"] == {"Env": ["A=1"]}
    files = []
    for layer, diff_id in zip(manifest["layers"], config["rootfs"]["diff_ids"], strict=True):
        tar = gzip.decompress(layout_blob(tmp_path / "oci", layer["digest"]))
        assert f"sha256:{hashlib.sha256(tar).hexdigest()}" == diff_id
        with tarfile.open(fileobj=io.BytesIO(tar)) as archive:
            (member,) = archive.getmembers()
            extracted = archive.extractfile(member)
            assert extracted is not None
            files.append(extracted.read())
    assert files == [b"hello\n", b"world\n"]


def test_the_same_arguments_push_the_same_digest() -> None:
    with serve() as one, serve() as two:
        assert one.push_image("a", "t", layers=2) == two.push_image("a", "t", layers=2)


def test_an_index_has_an_image_per_platform(tmp_path: Path) -> None:
    with serve() as registry:
        pushed = registry.push_index(
            "team/multi", "latest", platforms=["linux/amd64", "linux/s390x"]
        )
        raw = json.loads(
            skopeo(
                "inspect",
                "--raw",
                "--tls-verify=false",
                f"docker://{registry.host}/team/multi:latest",
            )
        )
        copied(registry.host, "team/multi:latest", tmp_path / "oci", "--all")
    assert raw["mediaType"] == pushed.media_type == "application/vnd.oci.image.index.v1+json"
    platforms = [(m["platform"]["os"], m["platform"]["architecture"]) for m in raw["manifests"]]
    assert platforms == [("linux", "amd64"), ("linux", "s390x")]
    for child in raw["manifests"]:
        manifest = json.loads(layout_blob(tmp_path / "oci", child["digest"]))
        config = json.loads(layout_blob(tmp_path / "oci", manifest["config"]["digest"]))
        assert config["architecture"] == child["platform"]["architecture"]


def test_an_artifact_refers_to_its_subject() -> None:
    with serve() as registry:
        image = registry.push_image("team/app", "v1")
        signature = registry.push_artifact(
            "team/app",
            artifact_type="application/vnd.example.signature",
            files={"signature.json": b'{"signed": true}'},
            subject=image,
        )
        status, _, body = fetch(registry, "GET", f"/v2/team/app/referrers/{image.digest}")
        raw = json.loads(
            skopeo(
                "inspect",
                "--raw",
                "--tls-verify=false",
                f"docker://{registry.host}/team/app@{signature.digest}",
            )
        )
    assert status == 200
    (listed,) = json.loads(body)["manifests"]
    assert (listed["digest"], listed["artifactType"]) == (
        signature.digest,
        "application/vnd.example.signature",
    )
    assert raw["subject"]["digest"] == image.digest
    assert raw["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    (layer,) = raw["layers"]
    assert layer["annotations"] == {"org.opencontainers.image.title": "signature.json"}


def test_oras_pulls_an_artifact_the_helper_pushes(tmp_path: Path) -> None:
    import oras.client

    with serve() as registry:
        registry.push_artifact(
            "team/files",
            "v1",
            artifact_type="application/vnd.example.bundle",
            files={"a.txt": b"alpha\n", "b.bin": bytes(range(256))},
        )
        client = oras.client.OrasClient(hostname=registry.host, insecure=True)
        pulled = client.pull(target=f"{registry.host}/team/files:v1", outdir=str(tmp_path))
        manifest = client.get_manifest(f"{registry.host}/team/files:v1")
    assert {Path(p).name: Path(p).read_bytes() for p in pulled} == {
        "a.txt": b"alpha\n",
        "b.bin": bytes(range(256)),
    }
    assert manifest["artifactType"] == "application/vnd.example.bundle"
