"""What every manifest format reports, and the JSON checks the formats share.

A :class:`Manifest` is a parsed, validated manifest. It never touches storage: it tells the
storage layer what to check (:meth:`Manifest.blobs`, :meth:`Manifest.manifests`,
:meth:`Manifest.foreign_layers`, :meth:`Manifest.check_urls`), what to store
(:attr:`Manifest.payload`) and what to keep alive (:meth:`Manifest.references`).
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Final, Self

from cargohold.descriptor import Descriptor
from cargohold.digest import DEFAULT_ALGORITHM, Digest, digest_of
from cargohold.errors import ManifestInvalid
from cargohold.manifest.urls import URLPolicy

__all__ = ["Manifest", "check_nesting", "load_object", "nesting_depth"]

#: Go's int64 bounds every size Distribution can hold; a larger one is refused, not wrapped.
MAX_SIZE: Final = 2**63 - 1

NO_ANNOTATIONS: Final[Mapping[str, str]] = MappingProxyType({})


def quote(text: str) -> str:
    # Messages go back to clients and into logs: never echo an unbounded input.
    return repr(text[:80]) + ("..." if len(text) > 80 else "")


class _DuplicateKey(ValueError):
    pass


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers that disagree on which duplicate wins (first or last) would see two
    # different manifests under one digest; refusing duplicates removes the ambiguity.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(f"duplicate key {quote(key)}")
            seen.add(key)
    return obj


def _no_constants(name: str) -> Any:
    # NaN and Infinity are not JSON; Python accepts them unless told not to.
    raise ValueError(f"{name} is not a JSON value")


_DECODER: Final = json.JSONDecoder(object_pairs_hook=_unique_object, parse_constant=_no_constants)


def load_object(payload: bytes) -> dict[str, Any]:
    """Decode a manifest body: strict UTF-8 JSON holding one object, with no duplicate keys."""
    if not payload:
        raise ManifestInvalid("manifest is empty")
    try:
        body = _DECODER.decode(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestInvalid("manifest is not UTF-8") from exc
    except _DuplicateKey as exc:
        raise ManifestInvalid(f"manifest has a {exc}") from exc
    except ValueError as exc:
        raise ManifestInvalid(f"manifest is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise ManifestInvalid("manifest is nested too deeply") from exc
    if not isinstance(body, dict):
        raise ManifestInvalid("manifest is not a JSON object")
    return body


#: A JSON string (escapes included) or one bracket: what ``nesting_depth`` looks at.
_NESTING = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def nesting_depth(payload: bytes) -> int:
    """How deeply ``payload``'s JSON nests arrays and objects (brackets inside strings aside).

    Read before the payload is parsed, so that a limit below the parser's own can be
    held to. Unless the payload has more brackets than the depth asked about, the
    answer is bounded by their count, found at C speed: a real manifest has a few.
    """
    depth = deepest = 0
    for match in _NESTING.finditer(payload):
        token = match[0]
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def check_nesting(payload: bytes, limit: int) -> None:
    """Refuse a manifest that nests deeper than ``limit`` (``limits.jsondepth``)."""
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return  # it cannot nest deeper than it has brackets
    depth = nesting_depth(payload)
    if depth > limit:
        raise ManifestInvalid(f"manifest nests {depth} deep; at most {limit} is allowed")


# --- field checks shared by the formats --------------------------------------------------


def check_schema_version(body: Mapping[str, Any], expected: int) -> None:
    version = body.get("schemaVersion")
    if version is None:
        raise ManifestInvalid("schemaVersion: required")
    # bool is an int in Python, and 2.0 compares equal to 2: neither is a schema version.
    if type(version) is not int:
        raise ManifestInvalid("schemaVersion: not an integer")
    if version != expected:
        raise ManifestInvalid(f"schemaVersion: must be {expected}, not {version}")


def check_media_type(body: Mapping[str, Any], declared: str, *, required: bool) -> None:
    """The body's ``mediaType``, when there is one, must be the type the manifest was sent as."""
    value = body.get("mediaType")
    if value is not None and not isinstance(value, str):
        raise ManifestInvalid("mediaType: not a string")
    if not value:
        # Go cannot tell an empty string from a missing one, so neither can we.
        if required:
            raise ManifestInvalid(f"mediaType: required in a {declared} manifest")
        return
    if value != declared:
        raise ManifestInvalid(
            f"mediaType: {quote(value)} does not match the declared type {quote(declared)}"
        )


def check_absent(body: Mapping[str, Any], keys: Iterable[str], kind: str) -> None:
    """Refuse the fields of another kind of manifest, so that one body cannot be read as two."""
    for key in keys:
        if body.get(key) is not None:
            raise ManifestInvalid(f"{key}: not allowed in {kind}")


def parse_descriptor(value: object, where: str) -> Descriptor:
    descriptor = Descriptor.from_json(value, where)
    if descriptor.size > MAX_SIZE:
        raise ManifestInvalid(f"{where}: size is out of range")
    return descriptor


def parse_descriptors(body: Mapping[str, Any], key: str) -> list[Descriptor]:
    """A list of descriptors; missing or null reads as empty, as Go's decoder does."""
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestInvalid(f"{key}: not a list")
    return [parse_descriptor(item, f"{key}[{i}]") for i, item in enumerate(value)]


def parse_subject(body: Mapping[str, Any]) -> Descriptor | None:
    value = body.get("subject")
    return None if value is None else parse_descriptor(value, "subject")


def parse_artifact_type(body: Mapping[str, Any]) -> str | None:
    value = body.get("artifactType")
    if value is None:
        return None
    if not isinstance(value, str):
        raise ManifestInvalid("artifactType: not a string")
    return value or None


def parse_annotations(body: Mapping[str, Any]) -> Mapping[str, str]:
    value = body.get("annotations")
    if value is None:
        return NO_ANNOTATIONS
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        # Keys of a decoded JSON object are always strings; only the values can be wrong.
        raise ManifestInvalid("annotations: not a map of strings")
    return value


def unique(descriptors: Iterable[Descriptor]) -> list[Descriptor]:
    """The first descriptor of each digest, in order: one presence check per blob."""
    seen: set[str] = set()
    out = []
    for descriptor in descriptors:
        if descriptor.digest not in seen:
            seen.add(descriptor.digest)
            out.append(descriptor)
    return out


# --- the base class ----------------------------------------------------------------------


class Manifest(ABC):
    """A parsed and validated manifest of any format.

    ``payload`` holds the exact bytes the storage layer stores as the revision blob; the
    manifest's digest is computed over them (:meth:`digest`). For every format but schema1
    they are the pushed bytes, served unchanged on GET.
    """

    __slots__ = ("annotations", "media_type", "payload", "subject")

    #: The media types this class parses (the first is the one it is served as).
    media_types: ClassVar[tuple[str, ...]] = ()

    media_type: str
    payload: bytes
    subject: Descriptor | None
    annotations: Mapping[str, str]

    def __init__(
        self,
        media_type: str,
        payload: bytes,
        *,
        subject: Descriptor | None = None,
        annotations: Mapping[str, str] = NO_ANNOTATIONS,
    ) -> None:
        self.media_type = media_type
        self.payload = payload
        self.subject = subject
        self.annotations = annotations

    @classmethod
    def parse(cls, payload: bytes, media_type: str | None = None) -> Self:
        """Parse ``payload`` as this format; ``media_type`` defaults to the format's own."""
        return cls.from_body(payload, load_object(payload), media_type or cls.media_types[0])

    @classmethod
    @abstractmethod
    def from_body(cls, payload: bytes, body: dict[str, Any], media_type: str) -> Self:
        """Validate an already decoded ``body`` (``payload`` decoded) sent as ``media_type``."""

    @property
    def artifact_type(self) -> str | None:
        """The type the referrers API reports for this manifest, if it has one."""
        return None

    def blobs(self) -> list[Descriptor]:
        """Blobs that must be present in the repository (config and layers), one per digest."""
        return []

    def foreign_layers(self) -> list[Descriptor]:
        """Layers served from their ``urls``: not required in the repository.

        The storage layer skips their presence check; :meth:`check_urls` vets the URLs.
        """
        return []

    def manifests(self) -> list[Descriptor]:
        """Child manifests (of an index or list) that must be present in the repository."""
        return []

    def references(self) -> list[Descriptor]:
        """Everything this manifest keeps alive for garbage collection.

        The ``subject`` is not among them: a referrer does not keep its subject alive.
        """
        return [*self.blobs(), *self.foreign_layers(), *self.manifests()]

    def check_urls(self, policy: URLPolicy) -> None:
        """Raise ManifestInvalid naming the first layer URL ``policy`` refuses."""
        for where, descriptor in self._url_bearers():
            for i, url in enumerate(descriptor.urls):
                reason = policy.refusal(url)
                if reason is not None:
                    raise ManifestInvalid(f"{where}.urls[{i}]: {reason}: {quote(url)}")

    def _url_bearers(self) -> Iterable[tuple[str, Descriptor]]:
        """The descriptors whose ``urls`` the URL policy applies to, with their field path."""
        return ()

    def digest(self, algorithm: str = DEFAULT_ALGORITHM) -> Digest:
        """The manifest's digest: the digest of :attr:`payload`."""
        return digest_of(self.payload, algorithm)

    def descriptor(self, algorithm: str = DEFAULT_ALGORITHM) -> Descriptor:
        """A descriptor of this manifest, as an index or the referrers API lists it."""
        return Descriptor(
            self.media_type,
            self.digest(algorithm),
            len(self.payload),
            annotations=self.annotations or None,
            artifact_type=self.artifact_type,
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.media_type} {len(self.payload)} bytes>"


class ImageManifestBase(Manifest):
    """A config and a list of layers: the OCI image manifest and Docker schema2 share this."""

    __slots__ = ("_artifact_type", "config", "layers")

    config: Descriptor
    layers: list[Descriptor]

    def __init__(
        self,
        media_type: str,
        payload: bytes,
        config: Descriptor,
        layers: list[Descriptor],
        *,
        subject: Descriptor | None = None,
        artifact_type: str | None = None,
        annotations: Mapping[str, str] = NO_ANNOTATIONS,
    ) -> None:
        super().__init__(media_type, payload, subject=subject, annotations=annotations)
        self.config = config
        self.layers = layers
        self._artifact_type = artifact_type

    @property
    def artifact_type(self) -> str | None:
        """``artifactType`` when set, else the config's media type (the referrers API rule)."""
        return self._artifact_type or self.config.media_type or None

    @abstractmethod
    def _is_foreign(self, layer: Descriptor) -> bool:
        """Whether the layer is served from its ``urls`` rather than by the registry."""

    def blobs(self) -> list[Descriptor]:
        return unique([self.config, *(d for d in self.layers if not self._is_foreign(d))])

    def foreign_layers(self) -> list[Descriptor]:
        return [d for d in self.layers if self._is_foreign(d)]


class IndexBase(Manifest):
    """A list of child manifests: the OCI image index and the Docker manifest list share this."""

    __slots__ = ("_artifact_type", "children")

    children: list[Descriptor]

    def __init__(
        self,
        media_type: str,
        payload: bytes,
        children: list[Descriptor],
        *,
        subject: Descriptor | None = None,
        artifact_type: str | None = None,
        annotations: Mapping[str, str] = NO_ANNOTATIONS,
    ) -> None:
        super().__init__(media_type, payload, subject=subject, annotations=annotations)
        self.children = children
        self._artifact_type = artifact_type

    @property
    def artifact_type(self) -> str | None:
        return self._artifact_type

    def manifests(self) -> list[Descriptor]:
        return unique(self.children)


_PLATFORM_STRINGS: Final = ("architecture", "os", "os.version", "variant")
_PLATFORM_LISTS: Final = ("os.features", "features")


def parse_children(body: Mapping[str, Any]) -> list[Descriptor]:
    """The ``manifests`` of an index or list, with their optional ``platform`` checked."""
    children = parse_descriptors(body, "manifests")
    for i, child in enumerate(children):
        platform = child.platform
        if platform is None:
            continue
        for key in _PLATFORM_STRINGS:
            if key in platform and not isinstance(platform[key], str):
                raise ManifestInvalid(f"manifests[{i}].platform.{key}: not a string")
        for key in _PLATFORM_LISTS:
            value = platform.get(key)
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(v, str) for v in value)
            ):
                raise ManifestInvalid(f"manifests[{i}].platform.{key}: not a list of strings")
    return children
