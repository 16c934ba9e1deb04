"""OCI image layouts as a Repository: read what umoci wrote, write what skopeo would read."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from cargohold.client.copy import copy_image
from cargohold.client.ocilayout import REF_NAME, OciLayout
from cargohold.digest import Digest, digest_of
from cargohold.errors import (
    BlobUnknown,
    DigestInvalid,
    ManifestUnknown,
    NameUnknown,
    OperationUnsupported,
    SizeInvalid,
)
from cargohold.manifest import OCI_INDEX, OCI_MANIFEST
from tests.client.conftest import SourceImages
from tests.support.images import descriptor_of, image_tree, layers_of, read_blob


async def test_a_umoci_layout_reads_as_a_repository(images: SourceImages) -> None:
    layout = OciLayout(images.layout)
    assert await layout.tags.all() == ["amd64", "arm64", "multi"]
    digest = await layout.tags.get("amd64")
    assert digest == descriptor_of(images.layout, "amd64")["digest"]
    manifest = await layout.manifests.get(digest)
    assert manifest.media_type == OCI_MANIFEST
    assert manifest.payload == read_blob(images.layout, digest)
    assert (await layout.manifests.get(await layout.tags.get("multi"))).media_type == OCI_INDEX
    layer = Digest(layers_of(images.layout, "amd64")[1])
    content = read_blob(images.layout, layer)
    assert (await layout.blobs.stat(layer)).size == len(content)
    assert await layout.blobs.get(layer) == content
    part = b"".join([chunk async for chunk in await layout.blobs.open(layer, 10, 1000)])
    assert part == content[10:1010]
    assert await layout.tags.lookup(digest) == ["amd64"]


async def test_a_missing_layout_is_name_unknown(tmp_path: Path) -> None:
    with pytest.raises(NameUnknown):
        await OciLayout(tmp_path / "nothing").tags.all()


async def test_a_copy_between_layouts_is_byte_for_byte(
    images: SourceImages, tmp_path: Path
) -> None:
    target = OciLayout(tmp_path / "copy")
    result = await copy_image(OciLayout(images.layout), "multi", target, "m", all_platforms=True)
    assert result.digest == descriptor_of(images.layout, "multi")["digest"]
    assert image_tree(tmp_path / "copy", "m") == image_tree(images.layout, "multi")
    assert json.loads((tmp_path / "copy" / "oci-layout").read_text()) == {
        "imageLayoutVersion": "1.0.0"
    }
    # Nothing hidden is left behind: no uploads, no temporary files.
    leftovers = [
        name for _, _, files in os.walk(tmp_path / "copy") for name in files if name.startswith(".")
    ]
    assert leftovers == []


async def test_copying_by_digest_adds_an_untagged_entry(
    images: SourceImages, tmp_path: Path
) -> None:
    digest = descriptor_of(images.layout, "arm64")["digest"]
    target = OciLayout(tmp_path / "by-digest")
    await copy_image(OciLayout(images.layout), digest, target)
    (entry,) = json.loads((tmp_path / "by-digest" / "index.json").read_text())["manifests"]
    assert entry["digest"] == digest
    assert "annotations" not in entry
    assert target.only_entry() == digest
    assert await target.tags.all() == []


async def test_a_tag_moves_and_untag_removes_only_the_entry(
    images: SourceImages, tmp_path: Path
) -> None:
    shutil.copytree(images.layout, tmp_path / "l")
    layout = OciLayout(tmp_path / "l")
    arm64 = await layout.tags.get("arm64")
    await layout.tags.tag("amd64", arm64)
    assert await layout.tags.get("amd64") == arm64
    names = [
        e["annotations"][REF_NAME]
        for e in json.loads((tmp_path / "l" / "index.json").read_text())["manifests"]
    ]
    assert sorted(names) == ["amd64", "arm64", "multi"]
    await layout.tags.untag("amd64")
    assert await layout.manifests.exists(arm64)
    with pytest.raises(ManifestUnknown):
        await layout.tags.untag("amd64")


async def test_an_upload_is_verified_before_it_appears(tmp_path: Path) -> None:
    layout = OciLayout(tmp_path / "l")
    upload = await layout.blobs.create_upload()
    await upload.write(b"some ")
    await upload.close()
    resumed = await layout.blobs.resume_upload(upload.id)
    assert resumed.size == 5
    await resumed.write(b"content")
    with pytest.raises(DigestInvalid):
        await resumed.commit(digest_of(b"other content"))
    with pytest.raises(BlobUnknown):
        await layout.blobs.stat(digest_of(b"some content"))
    assert os.listdir(tmp_path / "l" / "blobs") == []

    upload = await layout.blobs.create_upload()
    await upload.write(b"sized")
    with pytest.raises(SizeInvalid):
        await upload.commit(digest_of(b"sized"), 6)
    upload = await layout.blobs.create_upload()
    await upload.write(b"good")
    assert (await upload.commit(digest_of(b"good"), 4)).size == 4
    assert await layout.blobs.get(digest_of(b"good")) == b"good"


async def test_a_damaged_blob_is_never_read_whole(images: SourceImages, tmp_path: Path) -> None:
    shutil.copytree(images.layout, tmp_path / "l")
    layer = Digest(layers_of(tmp_path / "l", "amd64")[2])
    path = tmp_path / "l" / "blobs" / "sha256" / layer.encoded
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    layout = OciLayout(tmp_path / "l")
    with pytest.raises(DigestInvalid):
        await layout.blobs.get(layer)

    async def read_all() -> int:
        return sum([len(chunk) async for chunk in await layout.blobs.open(layer)])

    with pytest.raises(DigestInvalid):
        await read_all()


async def test_a_layout_cannot_mount(tmp_path: Path) -> None:
    with pytest.raises(OperationUnsupported):
        await OciLayout(tmp_path).blobs.mount("elsewhere", digest_of(b""))
