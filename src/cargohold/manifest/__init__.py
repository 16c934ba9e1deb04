"""Manifests: one module per format, chosen by media type.

::

    ocischema  ImageManifest   application/vnd.oci.image.manifest.v1+json
               ImageIndex      application/vnd.oci.image.index.v1+json
    schema2    DockerManifest  application/vnd.docker.distribution.manifest.v2+json
               ManifestList    application/vnd.docker.distribution.manifest.list.v2+json
    schema1    SignedManifest  application/vnd.docker.distribution.manifest.v1+prettyjws
                               (and ...v1+json)

:func:`parse_manifest` validates a pushed manifest; :func:`media_type_of` tells what a stored
one is served as. Parsing is pure: the storage layer checks that what
:meth:`Manifest.blobs` and :meth:`Manifest.manifests` list is present, vets
:meth:`Manifest.foreign_layers` with :meth:`Manifest.check_urls` instead, stores
:attr:`Manifest.payload`, and keeps :meth:`Manifest.references` alive.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from cargohold.errors import ManifestInvalid
from cargohold.manifest.base import Manifest, load_object, quote
from cargohold.manifest.mediatypes import (
    DOCKER_CONFIG,
    DOCKER_FOREIGN_LAYER,
    DOCKER_LAYER,
    DOCKER_LAYER_UNCOMPRESSED,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_PLUGIN_CONFIG,
    GENERIC_CONTENT_TYPES,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_NONDISTRIBUTABLE,
    OCI_LAYER_NONDISTRIBUTABLE_GZIP,
    OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
    SCHEMA1,
    SCHEMA1_LAYER,
    SCHEMA1_SIGNED,
)
from cargohold.manifest.ocischema import ImageIndex, ImageManifest
from cargohold.manifest.schema2 import DockerManifest, ManifestList
from cargohold.manifest.urls import URLPolicy

if TYPE_CHECKING:
    from cargohold.manifest.schema1 import SignedManifest

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_LAYER",
    "DOCKER_LAYER_UNCOMPRESSED",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "DOCKER_PLUGIN_CONFIG",
    "GENERIC_CONTENT_TYPES",
    "MANIFEST_MEDIA_TYPES",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_NONDISTRIBUTABLE",
    "OCI_LAYER_NONDISTRIBUTABLE_GZIP",
    "OCI_LAYER_NONDISTRIBUTABLE_ZSTD",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "SCHEMA1",
    "SCHEMA1_LAYER",
    "SCHEMA1_SIGNED",
    "DockerManifest",
    "ImageIndex",
    "ImageManifest",
    "Manifest",
    "ManifestList",
    "SignedManifest",
    "URLPolicy",
    "media_type_of",
    "parse_manifest",
]

Parser = Callable[[bytes, dict[str, Any], str], Manifest]


def _schema1(payload: bytes, body: dict[str, Any], media_type: str) -> Manifest:
    # Imported on first use: its signatures need ``cryptography``, whose memory a
    # registry that never meets a schema1 manifest should not pay in every worker.
    from cargohold.manifest.schema1 import SignedManifest

    return SignedManifest.from_body(payload, body, media_type)


#: The registry: each manifest media type and the parser for it.
_PARSERS: Final[Mapping[str, Parser]] = MappingProxyType(
    {
        **{
            media_type: cls.from_body
            for cls in (ImageManifest, ImageIndex, DockerManifest, ManifestList)
            for media_type in cls.media_types
        },
        SCHEMA1_SIGNED: _schema1,
        SCHEMA1: _schema1,
    }
)


def __getattr__(name: str) -> Any:
    if name == "SignedManifest":
        from cargohold.manifest.schema1 import SignedManifest

        return SignedManifest
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Every manifest media type cargohold accepts on PUT.
MANIFEST_MEDIA_TYPES: Final = frozenset(_PARSERS)


def _normalise(content_type: str | None) -> str:
    # Parameters (charset=...) do not change the type; media types are case-insensitive.
    return (content_type or "").partition(";")[0].strip().lower()


def parse_manifest(payload: bytes, content_type: str | None) -> Manifest:
    """Parse and validate a pushed manifest.

    A specific ``content_type`` picks the parser (an unknown one is ManifestInvalid); a
    missing or generic one (``application/json``, ``application/octet-stream``, ...) lets
    the body tell: its ``mediaType``, else ``schemaVersion`` 1 or ``signatures`` for
    schema1, else ``manifests`` for an OCI index, else ``config`` for an OCI manifest.
    """
    media_type = _normalise(content_type)
    body = load_object(payload)
    if media_type in GENERIC_CONTENT_TYPES:
        media_type = _detect(body)
    parser = _PARSERS.get(media_type)
    if parser is None:
        raise ManifestInvalid(f"unsupported manifest media type {quote(media_type)}")
    return parser(payload, body, media_type)


def _detect(body: Mapping[str, Any]) -> str:
    declared = body.get("mediaType")
    if declared:
        if not isinstance(declared, str):
            raise ManifestInvalid("mediaType: not a string")
        if declared not in _PARSERS:
            raise ManifestInvalid(f"mediaType: unsupported manifest media type {quote(declared)}")
        return declared
    if body.get("schemaVersion") == 1 or "signatures" in body or "fsLayers" in body:
        return SCHEMA1_SIGNED
    if body.get("manifests") is not None:
        return OCI_INDEX
    if body.get("config") is not None:
        return OCI_MANIFEST
    raise ManifestInvalid("cannot tell the manifest's type: no mediaType, config or manifests")


# The fast path of media_type_of: a top-level "mediaType" member with a plain string value.
_MEDIA_TYPE_KEY: Final = b'"mediaType"'
_MEDIA_TYPE_VALUE: Final = re.compile(rb'\s*:\s*"([!#-\[\]-~]{1,255})"')
_SCHEMA1_START: Final = re.compile(rb'\s*\{\s*"schemaVersion"\s*:\s*1\s*[,}]')


def media_type_of(payload: bytes) -> str:
    """The media type a stored manifest is served as.

    For content that was validated when it was pushed (by cargohold or by Distribution):
    the body's ``mediaType``; schema1 for ``schemaVersion`` 1; otherwise, as Distribution
    2.8 decides on GET, an OCI index when it has ``manifests``, else an OCI manifest.
    Most manifests name their type before any nested object, which is answered from the
    bytes without decoding the JSON.
    """
    at = payload.find(_MEDIA_TYPE_KEY)
    if at > 0:
        head = payload[:at]
        # With exactly one "{" and no "[" or "}" before it, the member is at the top level;
        # a "{" or "," just before its quote means that quote opens a key, not a string.
        if (
            head.count(b"{") == 1
            and b"[" not in head
            and b"}" not in head
            and head.rstrip()[-1:] in (b"{", b",")
        ):
            match = _MEDIA_TYPE_VALUE.match(payload, at + len(_MEDIA_TYPE_KEY))
            if match is not None:
                return match.group(1).decode("ascii")
    if _SCHEMA1_START.match(payload):
        return SCHEMA1_SIGNED
    body = load_object(payload)
    declared = body.get("mediaType")
    if declared and isinstance(declared, str):
        return declared
    if body.get("schemaVersion") == 1:
        return SCHEMA1_SIGNED
    return OCI_INDEX if body.get("manifests") is not None else OCI_MANIFEST
