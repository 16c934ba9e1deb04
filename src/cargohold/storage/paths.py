"""The storage layout: the only place that knows where anything lives.

The layout is CNCF Distribution's, byte for byte, so either registry can serve
the other's storage::

    /docker/registry/v2/
      blobs/<alg>/<hex[0:2]>/<hex>/data
      blobs/<alg>/<hex[0:2]>/<hex>/collecting                       (cargohold's, see gc.py)
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
        _proxy/<manifests|blobs>/<alg>/<hex>/used                     (cargohold's own)
        _pulled/<alg>/<hex>                  (cargohold's own: a manifest's last pull, its mtime)
    /scheduler-state.json                     (Distribution's proxy schedule, read on adoption)
    /cargohold/gc/touched/<alg>/<xx>/<hex>    (cargohold's: when a blob was last reused)
    /cargohold/gc/lease                       (cargohold's: the one collection under way)
    /cargohold/gc/lease-aside-<token>         (cargohold's: a free lease being taken over)
    /cargohold/gc/last.json                   (cargohold's: the last collection's report)
    /cargohold/live/<process>                 (cargohold's: the registries writing here)

The referrers index and a mirror's record of when cached content was last
used (``_proxy``) are cargohold's additions. Distribution's catalog skips any
folder of a repository whose name starts with ``_``, and its garbage collector
walks only ``_manifests`` and ``_layers``, so a Go registry reading the same
root ignores it.

Every location is a small spec value; ``path_for`` is the one function that
turns a spec into a driver path. Names, tags and digests must be validated
before they get here (``reference.py``, ``digest.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cargohold.digest import Digest

ROOT = "/docker/registry/v2"
BLOBS = f"{ROOT}/blobs"
REPOSITORIES = f"{ROOT}/repositories"

#: The folders whose presence makes a directory a repository.
REPOSITORY_MARKERS = frozenset({"_manifests", "_layers", "_uploads"})

_ALGORITHM_SEPARATORS = str.maketrans({"+": "/", ".": "/", ";": "/"})
#: The folder of each algorithm seen so far (there are a handful).
_ALGORITHM_DIRS: dict[str, str] = {}


def _algorithm_dir(algorithm: str) -> str:
    """The algorithm as a folder: split at ``+``, ``.`` and ``;`` as Distribution does."""
    folder = _ALGORITHM_DIRS.get(algorithm)
    if folder is None:
        folder = algorithm.translate(_ALGORITHM_SEPARATORS)
        if len(_ALGORITHM_DIRS) < 64:  # digests are validated: only a few algorithms exist
            _ALGORITHM_DIRS[algorithm] = folder
    return folder


def _digest_parts(digest: Digest) -> str:
    """``<alg>/<hex>``."""
    algorithm, _, encoded = digest.partition(":")
    return f"{_algorithm_dir(algorithm)}/{encoded}"


# -- the specs ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegistryRoot:
    """Everything a registry keeps lives below this."""


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


@dataclass(frozen=True, slots=True)
class CacheUseDir:
    """A mirrored repository's records of use of its cached ``kind`` (manifests or blobs)."""

    name: str
    kind: str


@dataclass(frozen=True, slots=True)
class CacheUse:
    """When cached ``digest`` of ``kind`` in mirrored repository ``name`` was last used."""

    name: str
    kind: str
    digest: Digest


@dataclass(frozen=True, slots=True)
class SchedulerState:
    """Distribution's proxy schedule (``scheduler-state.json``, at the driver's root)."""


@dataclass(frozen=True, slots=True)
class BlobHidden:
    """Blob ``digest``'s content, moved aside by a collection while it decides (``gc.py``)."""

    digest: Digest


@dataclass(frozen=True, slots=True)
class PullsDir:
    """The records of when repository ``name``'s manifests were last pulled (``pulls.py``)."""

    name: str


@dataclass(frozen=True, slots=True)
class ManifestPulled:
    """When manifest ``digest`` of repository ``name`` was last pulled: the file's mtime."""

    name: str
    digest: Digest


@dataclass(frozen=True, slots=True)
class BlobTouched:
    """When blob ``digest`` was last found reused (a HEAD, a mount, a push of it again)."""

    digest: Digest


@dataclass(frozen=True, slots=True)
class GcLease:
    """Held by the one garbage collection under way."""


@dataclass(frozen=True, slots=True)
class GcLeaseAside:
    """The lease moved aside (under a random ``token``) to take it over from a holder gone."""

    token: str


@dataclass(frozen=True, slots=True)
class GcLastReport:
    """What the last garbage collection did."""


@dataclass(frozen=True, slots=True)
class LiveRegistriesDir:
    """One file per registry process writing to this storage."""


@dataclass(frozen=True, slots=True)
class LiveRegistry:
    """Registry process ``token``'s proof of life: when it last said it writes here."""

    token: str


PathSpec = (
    RegistryRoot
    | BlobsRoot
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
    | CacheUseDir
    | CacheUse
    | SchedulerState
    | BlobHidden
    | BlobTouched
    | PullsDir
    | ManifestPulled
    | GcLease
    | GcLeaseAside
    | GcLastReport
    | LiveRegistriesDir
    | LiveRegistry
)


def path_for(spec: PathSpec) -> str:
    """The driver path of ``spec``."""
    build = _LAYOUT.get(type(spec))
    if build is None:
        raise TypeError(f"not a path spec: {spec!r}")
    return build(spec)


def _repository(name: str) -> str:
    return f"{REPOSITORIES}/{name}"


def _revision_dir(spec: ManifestRevisionDir | ManifestRevisionLink) -> str:
    return f"{_repository(spec.name)}/_manifests/revisions/{_digest_parts(spec.digest)}"


def _signatures_dir(spec: ManifestSignaturesDir | ManifestSignatureLink) -> str:
    revision = ManifestRevisionDir(spec.name, spec.revision)
    return f"{_revision_dir(revision)}/signatures"


def _tag_dir(spec: TagDir | TagCurrentLink | TagIndexDir | TagIndexLink) -> str:
    return f"{_repository(spec.name)}/_manifests/tags/{spec.tag}"


def _upload_dir(spec: UploadDir | UploadData | UploadStartedAt | UploadHashState) -> str:
    return f"{_repository(spec.name)}/_uploads/{spec.upload_id}"


def _referrers_dir(spec: ReferrersDir | ReferrerDescriptor) -> str:
    return f"{_repository(spec.name)}/_referrers/{_digest_parts(spec.subject)}"


# A table by spec type rather than a chain of matches: the hottest reads build two
# or three paths each, and a lookup costs the same for every spec.
_LAYOUT: dict[type, Callable[[Any], str]] = {
    BlobData: lambda s: f"{_blob_dir(s.digest)}/data",
    BlobDir: lambda s: _blob_dir(s.digest),
    RegistryRoot: lambda s: ROOT,
    BlobsRoot: lambda s: BLOBS,
    RepositoriesRoot: lambda s: REPOSITORIES,
    RepositoryDir: lambda s: _repository(s.name),
    LayersDir: lambda s: f"{_repository(s.name)}/_layers",
    LayerLink: lambda s: f"{REPOSITORIES}/{s.name}/_layers/{_digest_parts(s.digest)}/link",
    ManifestRevisionsDir: lambda s: f"{_repository(s.name)}/_manifests/revisions",
    ManifestRevisionDir: _revision_dir,
    ManifestRevisionLink: lambda s: (
        f"{REPOSITORIES}/{s.name}/_manifests/revisions/{_digest_parts(s.digest)}/link"
    ),
    ManifestSignaturesDir: _signatures_dir,
    ManifestSignatureLink: lambda s: f"{_signatures_dir(s)}/{_digest_parts(s.signature)}/link",
    TagsDir: lambda s: f"{_repository(s.name)}/_manifests/tags",
    TagDir: _tag_dir,
    TagCurrentLink: lambda s: f"{REPOSITORIES}/{s.name}/_manifests/tags/{s.tag}/current/link",
    TagIndexDir: lambda s: f"{_tag_dir(s)}/index",
    TagIndexLink: lambda s: f"{_tag_dir(s)}/index/{_digest_parts(s.digest)}/link",
    UploadsDir: lambda s: f"{_repository(s.name)}/_uploads",
    UploadDir: _upload_dir,
    UploadData: lambda s: f"{_upload_dir(s)}/data",
    UploadStartedAt: lambda s: f"{_upload_dir(s)}/startedat",
    UploadHashState: lambda s: (
        f"{_upload_dir(s)}/hashstates/{_algorithm_dir(s.algorithm)}/{s.offset}"
    ),
    ReferrersDir: _referrers_dir,
    ReferrerDescriptor: lambda s: f"{_referrers_dir(s)}/{_digest_parts(s.referrer)}/descriptor",
    CacheUseDir: lambda s: f"{_repository(s.name)}/_proxy/{s.kind}",
    SchedulerState: lambda s: "/scheduler-state.json",
    BlobHidden: lambda s: f"{_blob_dir(s.digest)}/collecting",
    BlobTouched: lambda s: f"/cargohold/gc/touched/{_blob_dir(s.digest)[len(BLOBS) + 1 :]}",
    GcLease: lambda s: "/cargohold/gc/lease",
    GcLeaseAside: lambda s: f"/cargohold/gc/lease-aside-{s.token}",
    GcLastReport: lambda s: "/cargohold/gc/last.json",
    LiveRegistriesDir: lambda s: "/cargohold/live",
    LiveRegistry: lambda s: f"/cargohold/live/{s.token}",
    CacheUse: lambda s: f"{_repository(s.name)}/_proxy/{s.kind}/{_digest_parts(s.digest)}/used",
    PullsDir: lambda s: f"{_repository(s.name)}/_pulled",
    ManifestPulled: lambda s: f"{_repository(s.name)}/_pulled/{_digest_parts(s.digest)}",
}


def _blob_dir(digest: Digest) -> str:
    algorithm, _, encoded = digest.partition(":")
    return f"{BLOBS}/{_algorithm_dir(algorithm)}/{encoded[:2]}/{encoded}"


def repository_name(path: str) -> str:
    """The repository name of a path below ``REPOSITORIES`` (its ``_``-folder stripped)."""
    relative = path[len(REPOSITORIES) + 1 :]
    parts = relative.split("/")
    for i, part in enumerate(parts):
        if part.startswith("_"):
            return "/".join(parts[:i])
    return relative


def digest_text(algorithm_folder: str, encoded: str) -> str:
    """The digest a folder named ``encoded`` under ``algorithm_folder`` stands for, as
    unchecked text: blobs (``<alg>/<xx>/<hex>``), revisions and layer links
    (``<alg>/<hex>``). Listing folders by the hundred thousand, a caller compares this
    text with the digests it knows and checks (``Digest.parse``) only those it keeps."""
    return f"{algorithm_folder}:{encoded}"


def digest_from_path(path: str) -> Digest:
    """The digest named by a blob or link location (``.../<alg>/[<xx>/]<hex>[/data|/link]``).

    Raises ``DigestInvalid`` for anything else, such as a stray file met during a walk.
    """
    parts = path.split("/")
    if parts[-1] in ("data", "link", "used"):
        parts.pop()
    encoded = parts[-1]
    algorithm = parts[-3] if len(parts) > 3 and parts[-2] == encoded[:2] else parts[-2]
    return Digest.parse(f"{algorithm}:{encoded}")


# -- file contents ----------------------------------------------------------------------


#: No link file of a supported digest is longer than this (sha512: 135 bytes).
LINK_LIMIT = 256


def link_content(digest: Digest) -> bytes:
    """What a ``link`` file holds: the digest, no newline."""
    return digest.encode()


def parse_link(content: bytes) -> Digest:
    """The digest a ``link`` file names; ``DigestInvalid`` when it is damaged.

    Whitespace around it is tolerated, as Distribution tolerates it.
    """
    return Digest.parse(content.decode("ascii", "replace").strip())


def startedat_content(when: datetime) -> bytes:
    """What a ``startedat`` file holds: an RFC 3339 UTC time to the second, no newline."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ").encode()


def parse_startedat(content: bytes) -> datetime:
    """The time in a ``startedat`` file, also as Go writes it with fractions or offsets."""
    text = content.decode("ascii", "replace").strip()
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
