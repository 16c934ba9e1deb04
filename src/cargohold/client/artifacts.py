"""Files as an OCI artifact, as oras pushes and pulls them.

An artifact is an OCI image manifest whose ``artifactType`` says what it is,
whose config is the empty descriptor (``{}``, ``application/vnd.oci.empty.v1+json``),
and whose layers are the files, each named by its
``org.opencontainers.image.title`` annotation. oras (Go and oras-py) reads
what ``push_files`` writes, and ``pull_files`` what they write.

Files stream both ways: each is read once to hash it and once to upload it,
and a pulled file appears only once its digest is verified.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cargohold.client.registry import RemoteRepository
from cargohold.descriptor import Descriptor
from cargohold.digest import Digest
from cargohold.errors import ManifestInvalid, ReferenceInvalid
from cargohold.manifest.mediatypes import OCI_EMPTY, OCI_MANIFEST

__all__ = ["ArtifactFile", "pull_files", "push_files"]

#: The annotation naming a layer's file.
TITLE = "org.opencontainers.image.title"
#: oras's default media type for a file.
FILE_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
#: The artifact type when none is given, as oras pushes it.
DEFAULT_ARTIFACT_TYPE = "application/vnd.unknown.artifact.v1"
#: Bytes read at a time.
PIECE = 1 << 20


@dataclass(frozen=True)
class ArtifactFile:
    """A file to push: where it is, and the media type its layer gets."""

    path: Path
    media_type: str = FILE_MEDIA_TYPE

    @classmethod
    def parse(cls, text: str) -> ArtifactFile:
        """``PATH`` or ``PATH:MEDIA/TYPE`` (oras's syntax); ``ValueError`` when it is no file."""
        path, colon, media_type = text.rpartition(":")
        if not colon or "/" not in media_type:
            path, media_type = text, FILE_MEDIA_TYPE
        found = Path(path)
        if not found.is_file():
            raise ValueError(f"{path}: not a file")
        return cls(found, media_type)


def _hash(path: Path) -> tuple[Digest, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as source:
        while piece := source.read(PIECE):
            digest.update(piece)
            size += len(piece)
    return Digest.trusted(f"sha256:{digest.hexdigest()}"), size


async def _push_file(repository: RemoteRepository, file: ArtifactFile) -> Descriptor:
    digest, size = _hash(file.path)

    async def source(offset: int) -> AsyncIterator[bytes]:
        return _pieces(file.path, offset)

    await repository.blobs.upload(digest, size, source)
    return Descriptor(file.media_type, digest, size, annotations={TITLE: file.path.name})


async def _pieces(path: Path, offset: int) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        source.seek(offset)
        while piece := source.read(PIECE):
            yield piece


async def push_files(
    repository: RemoteRepository,
    files: Sequence[ArtifactFile],
    *,
    tag: str | None = None,
    artifact_type: str = DEFAULT_ARTIFACT_TYPE,
    annotations: Mapping[str, str] | None = None,
    subject: Descriptor | None = None,
) -> Descriptor:
    """Push ``files`` as one artifact (tagged ``tag``, else by digest); its descriptor."""
    names = [f.path.name for f in files]
    if len(set(names)) != len(names):
        raise ReferenceInvalid("two files have the same name: an artifact names each once")
    layers = [await _push_file(repository, file) for file in files]
    empty = await repository.blobs.put(b"{}", OCI_EMPTY)
    body: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": Descriptor(OCI_EMPTY, empty.digest, empty.size).to_json(),
        "layers": [d.to_json() for d in layers]
        or [Descriptor(OCI_EMPTY, empty.digest, empty.size).to_json()],
    }
    if subject is not None:
        body["subject"] = Descriptor(subject.media_type, subject.digest, subject.size).to_json()
    if annotations:
        body["annotations"] = dict(annotations)
    payload = json.dumps(body, separators=(",", ":")).encode()
    stored = await repository.manifests.put(payload, OCI_MANIFEST, [tag] if tag else ())
    return Descriptor(OCI_MANIFEST, stored.digest, len(payload), artifact_type=artifact_type)


def _safe_name(title: str) -> str:
    """A title as a file name in the output folder: never a path out of it."""
    if not title or title in (".", "..") or "/" in title or "\\" in title or "\0" in title:
        raise ManifestInvalid(f"layer title {title!r} is not a plain file name")
    return title


async def pull_files(repository: RemoteRepository, payload: bytes, directory: Path) -> list[Path]:
    """Write each titled layer of the artifact manifest ``payload`` into ``directory`` (as
    oras does: untitled layers are left); the files written."""
    try:
        body = json.loads(payload)
        layers = body["layers"]
        found = [Descriptor.from_json(layer, f"layers[{i}]") for i, layer in enumerate(layers)]
    except (ValueError, KeyError, TypeError) as exc:
        raise ManifestInvalid(f"not an artifact manifest: {exc}") from None
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for descriptor in found:
        title = (descriptor.annotations or {}).get(TITLE)
        if title is None:
            continue
        target = directory / _safe_name(title)
        await repository.blobs.download(descriptor.digest, target)
        written.append(target)
    return written
