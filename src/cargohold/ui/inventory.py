"""What the pages show, worked out on the server from the registry's own content.

A browser-only UI asks ``/v2/`` once per tag and per manifest to learn sizes
and platforms; here one page is one request. Everything is read through the
domain API (``cargohold.registry``), so it works on any storage and through a
mirror, and what a summary says of a manifest depends only on its content:
summaries are kept, by repository and digest, in a bounded cache.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cargohold.descriptor import Descriptor
from cargohold.digest import Digest
from cargohold.errors import BlobUnknown, ManifestInvalid, ManifestUnknown, RegistryError
from cargohold.manifest import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_MANIFEST,
)
from cargohold.registry import Namespace, Repository
from cargohold.ui.natural import natural_key

__all__ = [
    "Damaged",
    "Details",
    "Inventory",
    "Summary",
    "TagRow",
]

#: The largest image config read to show its settings and history.
CONFIG_LIMIT = 4 * 1024 * 1024
#: Summaries kept (each a few hundred bytes).
CACHED = 4096
#: Manifests summed for a repository's storage; past this it is not worked out.
STORAGE_LIMIT = 1000
#: Reads in flight for one page.
READS = 16

_INDEXES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
_IMAGES = (OCI_MANIFEST, DOCKER_MANIFEST)
_IMAGE_CONFIGS = (OCI_CONFIG, DOCKER_CONFIG)


class Damaged(Exception):
    """A stored manifest or config that cannot be read as what it claims to be."""


@dataclass(frozen=True, slots=True)
class Summary:
    """One manifest at a glance (a row of the tags table)."""

    digest: Digest
    media_type: str
    #: ``image``, ``index`` or ``artifact``.
    kind: str
    #: The manifest's bytes and everything it references, each blob once.
    size: int
    platforms: tuple[str, ...] = ()
    created: str | None = None
    artifact_type: str | None = None
    #: The blobs and child manifests it references, with their sizes.
    parts: Mapping[Digest, int] = field(default_factory=dict)
    #: What could not be read, when something could not.
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class TagRow:
    tag: str
    summary: Summary | None
    referrers: int = 0
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class Layer:
    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Child:
    """A manifest an index lists."""

    media_type: str
    digest: Digest
    size: int
    platform: str
    present: bool


@dataclass(frozen=True, slots=True)
class Step:
    """A build step of an image's history."""

    created: str
    created_by: str
    empty_layer: bool
    comment: str


@dataclass(slots=True)
class Details:
    """A manifest in full, for its own page."""

    digest: Digest
    media_type: str
    size: int
    kind: str
    payload: str
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    config: Layer | None = None
    layers: list[Layer] = field(default_factory=list)
    children: list[Child] = field(default_factory=list)
    subject: Digest | None = None
    referrers: list[Descriptor] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    #: From the image config: ``os/arch``, environment, entrypoint, command, labels...
    platform: str = ""
    created: str | None = None
    settings: list[tuple[str, str]] = field(default_factory=list)
    environment: list[str] = field(default_factory=list)
    labels: Mapping[str, str] = field(default_factory=dict)
    history: list[Step] = field(default_factory=list)
    total: int = 0
    #: Whatever could not be read, as sentences.
    problems: list[str] = field(default_factory=list)


class Inventory:
    """The registry's content, shaped for pages."""

    def __init__(self, registry: Namespace) -> None:
        self.registry = registry
        self._summaries: OrderedDict[tuple[str, Digest], Summary] = OrderedDict()

    # -- the catalog -------------------------------------------------------------------

    async def repositories(self, search: str = "") -> list[str]:
        """Every repository name containing ``search`` (case-insensitive), in lexical order."""
        names = await self.registry.catalog()
        wanted = search.strip().lower()
        return [name for name in names if wanted in name] if wanted else names

    async def tag_counts(self, names: Sequence[str]) -> dict[str, int | None]:
        """How many tags each repository has (None where it cannot be told)."""
        reading = asyncio.Semaphore(READS)

        async def count(name: str) -> int | None:
            async with reading:
                try:
                    return len(await self.registry.repository(name).tags.all())
                except RegistryError:
                    return None

        counts = await asyncio.gather(*(count(name) for name in names))
        return dict(zip(names, counts, strict=True))

    # -- a repository ------------------------------------------------------------------

    async def tags(self, name: str) -> list[str]:
        """The repository's tags in natural order; ``NameUnknown`` if it has never been pushed."""
        tags = await self.registry.repository(name).tags.all()
        return sorted(tags, key=natural_key)

    async def rows(self, name: str, tags: Sequence[str]) -> list[TagRow]:
        """A row for each of ``tags``: what it points at, summarized, and its referrers."""
        repo = self.registry.repository(name)
        reading = asyncio.Semaphore(READS)

        async def row(tag: str) -> TagRow:
            async with reading:
                try:
                    digest = await repo.tags.get(tag)
                except RegistryError as exc:
                    return TagRow(tag, None, problem=_sentence(exc))
                summary = await self.summary(repo, digest)
                referrers = await _referrers(repo, digest)
                return TagRow(tag, summary, len(referrers))

        return list(await asyncio.gather(*(row(tag) for tag in tags)))

    async def storage(self, name: str, tags: Sequence[str]) -> int | None:
        """Bytes of everything the tags keep, each blob once; None when too many to add up."""
        repo = self.registry.repository(name)
        digests = set(await _digests(repo, tags))
        if len(digests) > STORAGE_LIMIT:
            return None
        summaries = await asyncio.gather(*(self.summary(repo, d) for d in digests))
        parts: dict[Digest, int] = {}
        for summary in summaries:
            parts.update(summary.parts)
            parts[summary.digest] = summary.size - sum(summary.parts.values())
        return sum(parts.values())

    async def summary(self, repo: Repository, digest: Digest) -> Summary:
        key = (repo.name, digest)
        cached = self._summaries.get(key)
        if cached is not None:
            self._summaries.move_to_end(key)
            return cached
        made = await self._summarize(repo, digest)
        if made.problem is None:  # a problem may be passing (storage down): look again later
            self._summaries[key] = made
            if len(self._summaries) > CACHED:
                self._summaries.popitem(last=False)
        return made

    async def _summarize(self, repo: Repository, digest: Digest, depth: int = 0) -> Summary:
        try:
            stored = await repo.manifests.get(digest)
        except RegistryError as exc:
            return Summary(digest, "", "missing", 0, problem=_sentence(exc))
        own = len(stored.payload)
        try:
            body = _object(stored.payload)
        except Damaged as exc:
            return Summary(digest, stored.media_type, "damaged", own, problem=str(exc))
        artifact_type = _text(body.get("artifactType"))
        if stored.media_type in _INDEXES:
            return await self._summarize_index(repo, digest, stored.media_type, own, body, depth)
        try:
            config = _descriptor(body.get("config"), "config")
            layers = [_descriptor(layer, "layer") for layer in _list(body.get("layers"))]
        except Damaged as exc:
            return Summary(digest, stored.media_type, "damaged", own, problem=str(exc))
        parts = {config.digest: config.size} if config is not None else {}
        for layer in layers:
            if layer is not None:
                parts[layer.digest] = layer.size
        kind, platform, created = "image", "", None
        if config is None or config.media_type not in _IMAGE_CONFIGS:
            kind = "artifact"
            artifact_type = artifact_type or (config.media_type if config is not None else None)
        else:
            settings = await _config(repo, config)
            platform, created = _platform(settings), _text(settings.get("created"))
        return Summary(
            digest,
            stored.media_type,
            kind,
            own + sum(parts.values()),
            (platform,) if platform else (),
            created,
            artifact_type,
            parts,
        )

    async def _summarize_index(
        self,
        repo: Repository,
        digest: Digest,
        media_type: str,
        own: int,
        body: dict[str, Any],
        depth: int,
    ) -> Summary:
        try:
            children = [_descriptor(c, "manifest") for c in _list(body.get("manifests"))]
        except Damaged as exc:
            return Summary(digest, media_type, "damaged", own, problem=str(exc))
        parts: dict[Digest, int] = {}
        platforms: list[str] = []
        created: str | None = None
        for child in children:
            if child is None:
                continue
            parts[child.digest] = child.size
            if child.platform:
                platforms.append(_platform(child.platform))
            if depth < 2:  # an index of indexes of indexes is left at that
                inner = await self._summarize(repo, child.digest, depth + 1)
                parts.update(inner.parts)
                if inner.created and (created is None or inner.created > created):
                    created = inner.created
        return Summary(
            digest,
            media_type,
            "index",
            own + sum(parts.values()),
            tuple(p for p in platforms if p),
            created,
            _text(body.get("artifactType")),
            parts,
        )

    # -- a manifest --------------------------------------------------------------------

    async def details(self, name: str, digest: Digest) -> Details:
        """Everything about one manifest; ``ManifestUnknown`` if the repository lacks it."""
        repo = self.registry.repository(name)
        try:
            stored = await repo.manifests.get(digest)
        except ManifestInvalid as exc:
            # Stored, but not readable as a manifest: the page says so, and still offers
            # what can be done about it (its tags, a delete).
            damaged = Details(digest, "", 0, "damaged", "")
            damaged.problems.append(f"This manifest is damaged: {_sentence(exc)}")
            damaged.tags = sorted(await _tags_of(repo, digest), key=natural_key)
            return damaged
        payload = stored.payload
        details = Details(
            digest,
            stored.media_type,
            len(payload),
            "image",
            payload.decode("utf-8", "replace"),
        )
        details.tags, details.referrers = await asyncio.gather(
            _tags_of(repo, digest), _referrers(repo, digest)
        )
        details.tags.sort(key=natural_key)
        try:
            body = _object(payload)
            details.annotations = _strings(body.get("annotations"))
            details.artifact_type = _text(body.get("artifactType"))
            subject = _descriptor(body.get("subject"), "subject")
            details.subject = subject.digest if subject is not None else None
            if stored.media_type in _INDEXES:
                details.kind = "index"
                await self._index_details(repo, body, details)
            else:
                await self._image_details(repo, body, details)
        except Damaged as exc:
            details.problems.append(str(exc))
        summary = await self.summary(repo, digest)
        details.total = summary.size
        return details

    async def _index_details(self, repo: Repository, body: dict[str, Any], into: Details) -> None:
        for raw in _list(body.get("manifests")):
            child = _descriptor(raw, "manifest")
            if child is None:
                continue
            platform = _platform(child.platform) if child.platform else ""
            into.children.append(
                Child(
                    child.media_type,
                    child.digest,
                    child.size,
                    platform,
                    await repo.manifests.exists(child.digest),
                )
            )

    async def _image_details(self, repo: Repository, body: dict[str, Any], into: Details) -> None:
        config = _descriptor(body.get("config"), "config")
        into.layers = [
            Layer(d.media_type, d.digest, d.size, d.annotations or {})
            for d in (_descriptor(raw, "layer") for raw in _list(body.get("layers")))
            if d is not None
        ]
        if config is None:
            return
        into.config = Layer(config.media_type, config.digest, config.size, {})
        if config.media_type not in _IMAGE_CONFIGS:
            into.kind = "artifact"
            into.artifact_type = into.artifact_type or config.media_type
            return
        try:
            settings = await _config(repo, config, strict=True)
        except Damaged as exc:
            into.problems.append(str(exc))
            return
        into.platform = _platform(settings)
        into.created = _text(settings.get("created"))
        inner = settings.get("config")
        inner = inner if isinstance(inner, dict) else {}
        into.environment = [e for e in _list(inner.get("Env")) if isinstance(e, str)]
        into.labels = _strings(inner.get("Labels"))
        for key, label in (
            ("Entrypoint", "Entrypoint"),
            ("Cmd", "Command"),
            ("WorkingDir", "Working directory"),
            ("User", "User"),
            ("ExposedPorts", "Exposed ports"),
            ("StopSignal", "Stop signal"),
        ):
            value = inner.get(key)
            if value:
                into.settings.append((label, _shown(value)))
        for step in _list(settings.get("history")):
            if isinstance(step, dict):
                into.history.append(
                    Step(
                        _text(step.get("created")) or "",
                        _text(step.get("created_by")) or "",
                        bool(step.get("empty_layer")),
                        _text(step.get("comment")) or "",
                    )
                )


# -- reading JSON that may be anything ----------------------------------------------------


def _object(payload: bytes) -> dict[str, Any]:
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Damaged(f"the stored manifest is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise Damaged("the stored manifest is not a JSON object")
    return body


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _strings(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _descriptor(value: object, where: str) -> Descriptor | None:
    if value is None:
        return None
    try:
        return Descriptor.from_json(value, where)
    except RegistryError as exc:
        raise Damaged(f"a damaged {where} descriptor: {exc}") from None


def _platform(value: Mapping[str, Any]) -> str:
    parts = [value.get("os"), value.get("architecture"), value.get("variant")]
    return "/".join(p for p in parts if isinstance(p, str) and p)


def _shown(value: object) -> str:
    if isinstance(value, list):
        return " ".join(json.dumps(v) if not isinstance(v, str) else v for v in value)
    if isinstance(value, dict):
        return ", ".join(str(k) for k in value)
    return str(value)


def _sentence(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


async def _config(repo: Repository, config: Descriptor, *, strict: bool = False) -> dict[str, Any]:
    """An image config's JSON; {} when it cannot be read (``Damaged`` when ``strict``)."""
    try:
        if config.size > CONFIG_LIMIT:
            raise Damaged(f"the image config is {config.size} bytes, over {CONFIG_LIMIT}: not read")
        try:
            raw = await repo.blobs.get(config.digest)
        except BlobUnknown:
            raise Damaged(f"the image config {config.digest} is not in the repository") from None
        try:
            settings = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise Damaged("the image config is not JSON") from None
        if not isinstance(settings, dict):
            raise Damaged("the image config is not a JSON object")
        return settings
    except Damaged:
        if strict:
            raise
        return {}


async def _referrers(repo: Repository, digest: Digest) -> list[Descriptor]:
    try:
        return await repo.referrers(digest)
    except RegistryError:
        return []


async def _tags_of(repo: Repository, digest: Digest) -> list[str]:
    try:
        return await repo.tags.lookup(digest)
    except (RegistryError, ManifestUnknown):
        return []


async def _digests(repo: Repository, tags: Sequence[str]) -> list[Digest]:
    reading = asyncio.Semaphore(READS)

    async def resolve(tag: str) -> Digest | None:
        async with reading:
            try:
                return await repo.tags.get(tag)
            except RegistryError:
                return None

    found = await asyncio.gather(*(resolve(tag) for tag in tags))
    return [digest for digest in found if digest is not None]
