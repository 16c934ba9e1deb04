"""Descriptors: what the OCI image specification calls a typed, sized pointer to content."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cargohold.digest import Digest
from cargohold.errors import DigestInvalid, ManifestInvalid

#: What a blob is served as when nothing more specific is known.
OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A pointer to content: its media type, digest and size, and optional extras."""

    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] | None = None
    artifact_type: str | None = None
    platform: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The descriptor as the OCI image specification spells it in JSON."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.platform:
            out["platform"] = dict(self.platform)
        return out

    @classmethod
    def from_json(cls, value: object, where: str = "descriptor") -> Descriptor:
        """Parse a descriptor object; anything malformed is ``ManifestInvalid`` naming ``where``."""
        if not isinstance(value, dict):
            raise ManifestInvalid(f"{where}: not an object")
        media_type = value.get("mediaType", "")
        size = value.get("size")
        urls = value.get("urls") or []
        annotations = value.get("annotations")
        artifact_type = value.get("artifactType")
        platform = value.get("platform")
        if not isinstance(media_type, str):
            raise ManifestInvalid(f"{where}: mediaType is not a string")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestInvalid(f"{where}: size is not a non-negative integer")
        if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
            raise ManifestInvalid(f"{where}: urls is not a list of strings")
        if annotations is not None and not _is_string_map(annotations):
            raise ManifestInvalid(f"{where}: annotations is not a map of strings")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise ManifestInvalid(f"{where}: artifactType is not a string")
        if platform is not None and not isinstance(platform, dict):
            raise ManifestInvalid(f"{where}: platform is not an object")
        try:
            digest = Digest.parse(value.get("digest", ""))
        except (DigestInvalid, TypeError) as exc:
            raise ManifestInvalid(f"{where}: invalid digest") from exc
        return cls(media_type, digest, size, tuple(urls), annotations, artifact_type, platform)


def _is_string_map(value: object) -> bool:
    return isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    )
