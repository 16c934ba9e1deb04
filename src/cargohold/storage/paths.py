"""The storage layout: the only place that knows where anything lives.

The layout is CNCF Distribution's, byte for byte, so either registry can serve
the other's storage::

    /docker/registry/v2/
      blobs/<alg>/<hex[0:2]>/<hex>/data
      repositories/<name>/
        _layers/<alg>/<hex>/link
        _manifests/revisions/<alg>/<hex>/link
        _manifests/revisions/<alg>/<hex>/signatures/<alg>/<hex>/link   (schema1)
        _manifests/tags/<tag>/current/link
        _manifests/tags/<tag>/index/<alg>/<hex>/link
        _uploads/<id>/data
        _uploads/<id>/startedat
        _uploads/<id>/hashstates/<alg>/<offset>
        _referrers/<alg>/<hex>/<alg>/<hex>/descriptor                (cargohold's own)

The referrers index is cargohold's addition. Distribution's catalog skips any
folder of a repository whose name starts with ``_``, and its garbage collector
walks only ``_manifests`` and ``_layers``, so a Go registry reading the same
root ignores it.

Every location is a small spec value; ``path_for`` is the one function that
turns a spec into a driver path. Names, tags and digests must be validated
before they get here (``reference.py``, ``digest.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from cargohold.digest import Digest

ROOT = "/docker/registry/v2"
BLOBS = f"{ROOT}/blobs"
REPOSITORIES = f"{ROOT}/repositories"

#: The folders whose presence makes a directory a repository.
REPOSITORY_MARKERS = frozenset({"_manifests", "_layers", "_uploads"})

_ALGORITHM_SEPARATORS = str.maketrans({"+": "/", ".": "/", ";": "/"})


def _digest_parts(digest: Digest) -> str:
    """``<alg>/<hex>``, the algorithm split at ``+``, ``.`` and ``;`` as Distribution does."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm.translate(_ALGORITHM_SEPARATORS)}/{encoded}"


# -- the specs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlobsRoot:
    """Every blob's folder lives below this."""


@dataclass(frozen=True, slots=True)
class BlobData:
    digest: Digest


@dataclass(frozen=True, slots=True)
class BlobDir:
    digest: Digest


@dataclass(frozen=True, slots=True)
class RepositoriesRoot:
    """Every repository lives below this."""


@dataclass(frozen=True, slots=True)
class RepositoryDir:
    name: str


@dataclass(frozen=True, slots=True)
class LayersDir:
    name: str


@dataclass(frozen=True, slots=True)
class LayerLink:
    name: str
    digest: Digest


@dataclass(frozen=True, slots=True)
class ManifestRevisionsDir:
    name: str


@dataclass(frozen=True, slots=True)
class ManifestRevisionDir:
    name: str
    digest: Digest


@dataclass(frozen=True, slots=True)
class ManifestRevisionLink:
    name: str
    digest: Digest


@dataclass(frozen=True, slots=True)
class ManifestSignaturesDir:
    name: str
    revision: Digest


@dataclass(frozen=True, slots=True)
class ManifestSignatureLink:
    name: str
    revision: Digest
    signature: Digest


@dataclass(frozen=True, slots=True)
class TagsDir:
    name: str


@dataclass(frozen=True, slots=True)
class TagDir:
    name: str
    tag: str


@dataclass(frozen=True, slots=True)
class TagCurrentLink:
    name: str
    tag: str


@dataclass(frozen=True, slots=True)
class TagIndexDir:
    name: str
    tag: str


@dataclass(frozen=True, slots=True)
class TagIndexLink:
    name: str
    tag: str
    digest: Digest


@dataclass(frozen=True, slots=True)
class UploadsDir:
    name: str


@dataclass(frozen=True, slots=True)
class UploadDir:
    name: str
    upload_id: str


@dataclass(frozen=True, slots=True)
class UploadData:
    name: str
    upload_id: str


@dataclass(frozen=True, slots=True)
class UploadStartedAt:
    name: str
    upload_id: str


@dataclass(frozen=True, slots=True)
class UploadHashState:
    name: str
    upload_id: str
    algorithm: str
    offset: int


@dataclass(frozen=True, slots=True)
class ReferrersDir:
    """The referrers of ``subject`` in repository ``name``."""

    name: str
    subject: Digest


@dataclass(frozen=True, slots=True)
class ReferrerDescriptor:
    """The descriptor of ``referrer``, a manifest whose ``subject`` is ``subject``."""

    name: str
    subject: Digest
    referrer: Digest


PathSpec = (
    BlobsRoot
    | BlobData
    | BlobDir
    | RepositoriesRoot
    | RepositoryDir
    | LayersDir
    | LayerLink
    | ManifestRevisionsDir
    | ManifestRevisionDir
    | ManifestRevisionLink
    | ManifestSignaturesDir
    | ManifestSignatureLink
    | TagsDir
    | TagDir
    | TagCurrentLink
    | TagIndexDir
    | TagIndexLink
    | UploadsDir
    | UploadDir
    | UploadData
    | UploadStartedAt
    | UploadHashState
    | ReferrersDir
    | ReferrerDescriptor
)


def path_for(spec: PathSpec) -> str:
    """The driver path of ``spec``."""
    match spec:
        case BlobData(digest):
            return f"{_blob_dir(digest)}/data"
        case BlobDir(digest):
            return _blob_dir(digest)
        case BlobsRoot():
            return BLOBS
        case RepositoriesRoot():
            return REPOSITORIES
        case RepositoryDir(name):
            return f"{REPOSITORIES}/{name}"
        case LayersDir(name):
            return f"{REPOSITORIES}/{name}/_layers"
        case LayerLink(name, digest):
            return f"{REPOSITORIES}/{name}/_layers/{_digest_parts(digest)}/link"
        case ManifestRevisionsDir(name):
            return f"{REPOSITORIES}/{name}/_manifests/revisions"
        case ManifestRevisionDir(name, digest):
            return f"{REPOSITORIES}/{name}/_manifests/revisions/{_digest_parts(digest)}"
        case ManifestRevisionLink(name, digest):
            return f"{REPOSITORIES}/{name}/_manifests/revisions/{_digest_parts(digest)}/link"
        case ManifestSignaturesDir(name, revision):
            revision_dir = path_for(ManifestRevisionDir(name, revision))
            return f"{revision_dir}/signatures"
        case ManifestSignatureLink(name, revision, signature):
            signatures = path_for(ManifestSignaturesDir(name, revision))
            return f"{signatures}/{_digest_parts(signature)}/link"
        case TagsDir(name):
            return f"{REPOSITORIES}/{name}/_manifests/tags"
        case TagDir(name, tag):
            return f"{REPOSITORIES}/{name}/_manifests/tags/{tag}"
        case TagCurrentLink(name, tag):
            return f"{REPOSITORIES}/{name}/_manifests/tags/{tag}/current/link"
        case TagIndexDir(name, tag):
            return f"{REPOSITORIES}/{name}/_manifests/tags/{tag}/index"
        case TagIndexLink(name, tag, digest):
            return f"{REPOSITORIES}/{name}/_manifests/tags/{tag}/index/{_digest_parts(digest)}/link"
        case UploadsDir(name):
            return f"{REPOSITORIES}/{name}/_uploads"
        case UploadDir(name, upload_id):
            return f"{REPOSITORIES}/{name}/_uploads/{upload_id}"
        case UploadData(name, upload_id):
            return f"{REPOSITORIES}/{name}/_uploads/{upload_id}/data"
        case UploadStartedAt(name, upload_id):
            return f"{REPOSITORIES}/{name}/_uploads/{upload_id}/startedat"
        case UploadHashState(name, upload_id, algorithm, offset):
            algorithm_dir = algorithm.translate(_ALGORITHM_SEPARATORS)
            return f"{REPOSITORIES}/{name}/_uploads/{upload_id}/hashstates/{algorithm_dir}/{offset}"
        case ReferrersDir(name, subject):
            return f"{REPOSITORIES}/{name}/_referrers/{_digest_parts(subject)}"
        case ReferrerDescriptor(name, subject, referrer):
            referrers = path_for(ReferrersDir(name, subject))
            return f"{referrers}/{_digest_parts(referrer)}/descriptor"
    raise TypeError(f"not a path spec: {spec!r}")


def _blob_dir(digest: Digest) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"{BLOBS}/{algorithm.translate(_ALGORITHM_SEPARATORS)}/{encoded[:2]}/{encoded}"


def repository_name(path: str) -> str:
    """The repository name of a path below ``REPOSITORIES`` (its ``_``-folder stripped)."""
    relative = path[len(REPOSITORIES) + 1 :]
    parts = relative.split("/")
    for i, part in enumerate(parts):
        if part.startswith("_"):
            return "/".join(parts[:i])
    return relative


def digest_from_path(path: str) -> Digest:
    """The digest named by a blob or link location (``.../<alg>/[<xx>/]<hex>[/data|/link]``).

    Raises ``DigestInvalid`` for anything else, such as a stray file met during a walk.
    """
    parts = path.split("/")
    if parts[-1] in ("data", "link"):
        parts.pop()
    encoded = parts[-1]
    algorithm = parts[-3] if len(parts) > 3 and parts[-2] == encoded[:2] else parts[-2]
    return Digest.parse(f"{algorithm}:{encoded}")


# -- file contents ----------------------------------------------------------------------


def link_content(digest: Digest) -> bytes:
    """What a ``link`` file holds: the digest, no newline."""
    return digest.encode()


def startedat_content(when: datetime) -> bytes:
    """What a ``startedat`` file holds: an RFC 3339 UTC time to the second, no newline."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()


def parse_startedat(content: bytes) -> datetime:
    """The time in a ``startedat`` file, also as Go writes it with fractions or offsets."""
    text = content.decode("ascii", "replace").strip()
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
