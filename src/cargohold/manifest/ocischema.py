"""The OCI image manifest and the OCI image index (image-spec v1.1).

Both may omit ``mediaType`` in the body (the image-spec only says SHOULD); when present it
must equal the type the manifest was sent as. An image manifest with an empty ``layers`` list
is an OCI 1.1 artifact. ``subject`` makes the manifest a referrer of another one.

Layers of the non-distributable types that carry ``urls`` are fetched by clients from those
URLs, so, as in Distribution, the registry does not require them; every OCI layer's ``urls``
are vetted by the URL policy all the same.
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
    parse_annotations,
    parse_artifact_type,
    parse_children,
    parse_descriptor,
    parse_descriptors,
    parse_subject,
)
from cargohold.manifest.mediatypes import (
    OCI_INDEX,
    OCI_LAYER_TYPES,
    OCI_MANIFEST,
    OCI_NONDISTRIBUTABLE_TYPES,
)

__all__ = ["ImageIndex", "ImageManifest"]


class ImageManifest(ImageManifestBase):
    """``application/vnd.oci.image.manifest.v1+json``."""

    __slots__ = ()

    media_types = (OCI_MANIFEST,)

    @classmethod
    def from_body(cls, payload: bytes, body: dict[str, Any], media_type: str) -> Self:
        check_schema_version(body, 2)
        check_media_type(body, media_type, required=False)
        check_absent(body, ("manifests",), "an image manifest")
        config = body.get("config")
        if config is None:
            raise ManifestInvalid("config: required")
        return cls(
            media_type,
            payload,
            parse_descriptor(config, "config"),
            parse_descriptors(body, "layers"),
            subject=parse_subject(body),
            artifact_type=parse_artifact_type(body),
            annotations=parse_annotations(body),
        )

    def _is_foreign(self, layer: Descriptor) -> bool:
        return bool(layer.urls) and layer.media_type in OCI_NONDISTRIBUTABLE_TYPES

    def _url_bearers(self) -> Iterable[tuple[str, Descriptor]]:
        for i, layer in enumerate(self.layers):
            if layer.urls and layer.media_type in OCI_LAYER_TYPES:
                yield f"layers[{i}]", layer


class ImageIndex(IndexBase):
    """``application/vnd.oci.image.index.v1+json``."""

    __slots__ = ()

    media_types = (OCI_INDEX,)

    @classmethod
    def from_body(cls, payload: bytes, body: dict[str, Any], media_type: str) -> Self:
        check_schema_version(body, 2)
        check_media_type(body, media_type, required=False)
        check_absent(body, ("config", "layers"), "an image index")
        return cls(
            media_type,
            payload,
            parse_children(body),
            subject=parse_subject(body),
            artifact_type=parse_artifact_type(body),
            annotations=parse_annotations(body),
        )
