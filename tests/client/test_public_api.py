"""The client's public names: what ``cargohold.client`` exports, and that each is real."""

from __future__ import annotations

import cargohold.client
from cargohold.client import OciLayout, RemoteRegistry, RemoteRepository
from cargohold.registry import BlobStore, ManifestService, Namespace, Repository, TagService

PUBLIC = {
    "BlobProgress",
    "CopyResult",
    "Credentials",
    "OciLayout",
    "Platform",
    "Progress",
    "RemoteRegistry",
    "RemoteRepository",
    "RetryPolicy",
    "copy_image",
    "copy_manifest",
}


def test_the_public_names_are_exactly_these() -> None:
    assert set(cargohold.client.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(cargohold.client, name) is not None


def test_the_client_implements_the_domain_protocols() -> None:
    # Assignments checked by mypy --strict (tests are type-checked too): the seams hold.
    registry = RemoteRegistry("127.0.0.1:1")
    namespace: Namespace = registry
    repository: Repository = registry.repository("a/b")
    layout: Repository = OciLayout("/nonexistent")
    blobs: BlobStore = repository.blobs
    manifests: ManifestService = layout.manifests
    tags: TagService = repository.tags
    assert isinstance(repository, RemoteRepository)
    assert len({id(x) for x in (namespace, blobs, manifests, tags)}) == 4
    assert layout.name == "/nonexistent"
