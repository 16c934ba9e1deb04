"""The copy engine: platforms, whole indexes, skipping, mounting, progress."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cargohold.client import RemoteRegistry
from cargohold.client.copy import CopyResult, Platform, copy_image
from cargohold.client.ocilayout import OciLayout
from cargohold.client.progress import BlobProgress
from cargohold.descriptor import Descriptor
from cargohold.digest import Digest
from cargohold.errors import ManifestUnknown
from tests.client.conftest import SourceImages, unique_name
from tests.support.images import descriptor_of, image_tree, layers_of, read_blob


@dataclass
class Recorded:
    descriptor: Descriptor
    advanced: int = 0
    rewinds: list[int] = field(default_factory=list)
    outcome: str | None = None

    def advance(self, amount: int) -> None:
        self.advanced += amount

    def rewind(self, completed: int) -> None:
        self.rewinds.append(completed)
        self.advanced = completed

    def finish(self, outcome: str) -> None:
        self.outcome = outcome


@dataclass
class Recorder:
    blobs: list[Recorded] = field(default_factory=list)

    def blob(self, descriptor: Descriptor) -> BlobProgress:
        self.blobs.append(Recorded(descriptor))
        return self.blobs[-1]

    def outcomes(self) -> dict[str, str | None]:
        return {str(b.descriptor.digest): b.outcome for b in self.blobs}


@pytest.fixture
async def remote(cargohold_url: str) -> AsyncIterator[RemoteRegistry]:
    async with RemoteRegistry(cargohold_url) as registry:
        yield registry


def blobs_of(layout: Path, tag: str) -> set[str]:
    manifest = json.loads(read_blob(layout, descriptor_of(layout, tag)["digest"]))
    return {manifest["config"]["digest"], *layers_of(layout, tag)}


async def test_from_an_index_the_platform_asked_for_is_copied(
    images: SourceImages, remote: RemoteRegistry
) -> None:
    source = OciLayout(images.layout)
    repository = remote.repository(unique_name("copy"))
    progress = Recorder()
    result = await copy_image(source, "multi", repository, "v1", progress=progress)
    amd64 = descriptor_of(images.layout, "amd64")["digest"]
    assert result.digest == amd64
    assert await repository.tags.get("v1") == amd64
    assert set(progress.outcomes()) == blobs_of(images.layout, "amd64")
    assert set(progress.outcomes().values()) == {"copied"}
    for recorded in progress.blobs:
        assert recorded.advanced == recorded.descriptor.size

    arm = await copy_image(source, "multi", repository, "arm", platform=Platform("linux", "arm64"))
    assert arm.digest == descriptor_of(images.layout, "arm64")["digest"]


async def test_all_copies_the_index_and_every_child(
    images: SourceImages, remote: RemoteRegistry
) -> None:
    repository = remote.repository(unique_name("copy"))
    result = await copy_image(
        OciLayout(images.layout), "multi", repository, "all", all_platforms=True
    )
    index = descriptor_of(images.layout, "multi")
    assert (result.digest, result.media_type) == (index["digest"], index["mediaType"])
    stored = await repository.manifests.get(result.digest)
    assert stored.payload == read_blob(images.layout, index["digest"])
    for tag in ("amd64", "arm64"):
        assert await repository.manifests.exists(
            Digest(descriptor_of(images.layout, tag)["digest"])
        )
    assert {str(b.descriptor.digest) for b in result.blobs} == blobs_of(
        images.layout, "amd64"
    ) | blobs_of(images.layout, "arm64")


async def test_blobs_already_there_are_skipped(
    images: SourceImages, remote: RemoteRegistry
) -> None:
    repository = remote.repository(unique_name("copy"))
    source = OciLayout(images.layout)
    first = await copy_image(source, "amd64", repository, "a")
    again = await copy_image(source, "amd64", repository, "b")
    assert {b.outcome for b in first.blobs} == {"copied"}
    assert {b.outcome for b in again.blobs} == {"exists"}
    assert again.bytes_copied == 0
    assert again.digest == first.digest


async def test_within_one_registry_blobs_are_mounted(
    images: SourceImages, remote: RemoteRegistry
) -> None:
    origin = remote.repository(unique_name("copy"))
    await copy_image(OciLayout(images.layout), "amd64", origin, "x")
    target = remote.repository(unique_name("copy"))
    result = await copy_image(origin, "x", target, "y")
    assert {b.outcome for b in result.blobs} == {"mounted"}
    assert await target.tags.get("y") == result.digest


async def test_a_registry_image_comes_back_to_a_layout_byte_for_byte(
    images: SourceImages, remote: RemoteRegistry, tmp_path: Path
) -> None:
    repository = remote.repository(unique_name("copy"))
    await copy_image(OciLayout(images.layout), "multi", repository, "m", all_platforms=True)
    back = OciLayout(tmp_path / "back")
    result: CopyResult = await copy_image(repository, "m", back, "m", all_platforms=True, jobs=1)
    assert result.digest == descriptor_of(images.layout, "multi")["digest"]
    assert image_tree(tmp_path / "back", "m") == image_tree(images.layout, "multi")


async def test_a_platform_the_index_lacks_names_those_it_has(images: SourceImages) -> None:
    with pytest.raises(ManifestUnknown, match=r"linux/s390x .*linux/amd64, linux/arm64"):
        await copy_image(
            OciLayout(images.layout),
            "multi",
            OciLayout(images.layout.parent / "never"),
            platform=Platform.parse("linux/s390x"),
        )


def test_platforms_parse_with_an_optional_variant() -> None:
    assert Platform.parse("linux/arm64/v8") == Platform("linux", "arm64", "v8")
    assert str(Platform.parse("linux/amd64")) == "linux/amd64"
    assert Platform.parse("linux/arm64").matches(
        {"os": "linux", "architecture": "arm64", "variant": "v8"}
    )
    assert not Platform.parse("linux/arm/v7").matches(
        {"os": "linux", "architecture": "arm", "variant": "v6"}
    )
    with pytest.raises(ValueError, match="os/architecture"):
        Platform.parse("linux")


async def test_the_storage_backed_registry_is_a_destination_like_any_other(
    images: SourceImages,
) -> None:
    from cargohold.storage.driver.inmemory import InMemoryDriver
    from cargohold.storage.registry import StorageRegistry

    registry = StorageRegistry(InMemoryDriver())
    try:
        repository = registry.repository("embedded/copy")
        result = await copy_image(
            OciLayout(images.layout), "multi", repository, "m", all_platforms=True
        )
        stored = await repository.manifests.get(await repository.tags.get("m"))
        assert stored.digest == result.digest == descriptor_of(images.layout, "multi")["digest"]
        for layer in layers_of(images.layout, "arm64"):
            assert await repository.blobs.get(Digest(layer)) == read_blob(images.layout, layer)
    finally:
        await registry.close()
