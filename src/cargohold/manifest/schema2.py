"""The Docker image manifest v2 schema 2 and the Docker manifest list.

Unlike the OCI types, Distribution requires the body's ``mediaType`` and requires it to be
exactly the format's type. Neither format has ``subject``, ``artifactType`` or manifest
``annotations``; such fields in a body are ignored, as Go's decoder ignores them, so a Docker
manifest is never a referrer.

A foreign layer (``application/vnd.docker.image.rootfs.foreign.diff.tar.gzip``) is fetched by
clients from its ``urls``: the registry does not require the blob, the layer must name at
least one URL, and the URL policy vets them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

from cargohold.descriptor import Descriptor
from cargohold.errors import ManifestInvalid
from cargohold.manifest.base import (
    ImageManifestBase,
    IndexBase,
    check_absent,
    check_media_type,
    check_schema_version,
    parse_children,
    parse_descriptor,
    parse_descriptors,
)
from cargohold.manifest.mediatypes import (
    DOCKER_FOREIGN_LAYER,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
)

__all__ = ["DockerManifest", "ManifestList"]


class DockerManifest(ImageManifestBase):
    """``application/vnd.docker.distribution.manifest.v2+json``."""

    __slots__ = ()

    media_types = (DOCKER_MANIFEST,)

    @classmethod
    def from_body(cls, payload: bytes, body: dict[str, Any], media_type: str) -> Self:
        check_schema_version(body, 2)
        check_media_type(body, media_type, required=True)
        check_absent(body, ("manifests",), "an image manifest")
        config = body.get("config")
        if config is None:
            raise ManifestInvalid("config: required")
        layers = parse_descriptors(body, "layers")
        for i, layer in enumerate(layers):
            if layer.media_type == DOCKER_FOREIGN_LAYER and not layer.urls:
                raise ManifestInvalid(f"layers[{i}]: a foreign layer must have urls")
        return cls(media_type, payload, parse_descriptor(config, "config"), layers)

    def _is_foreign(self, layer: Descriptor) -> bool:
        return layer.media_type == DOCKER_FOREIGN_LAYER

    def _url_bearers(self) -> Iterable[tuple[str, Descriptor]]:
        for i, layer in enumerate(self.layers):
            if layer.media_type == DOCKER_FOREIGN_LAYER:
                yield f"layers[{i}]", layer


class ManifestList(IndexBase):
    """``application/vnd.docker.distribution.manifest.list.v2+json``."""

    __slots__ = ()

    media_types = (DOCKER_MANIFEST_LIST,)

    @classmethod
    def from_body(cls, payload: bytes, body: dict[str, Any], media_type: str) -> Self:
        check_schema_version(body, 2)
        check_media_type(body, media_type, required=True)
        check_absent(body, ("config", "layers"), "a manifest list")
        return cls(media_type, payload, parse_children(body))
