"""The registry root ``--gc`` collects: Distribution's filesystem layout, written directly.

Pushing 100k blobs through the API would take far longer than collecting them,
and both collectors only ever read files, so the root is written as a registry
would have left it. Every location comes from ``cargohold.storage.paths`` (the
one place that knows the layout); Distribution reading the same root is the
check that it is Distribution's layout.

For ``blobs`` blobs (deterministic: a fixed seed):

- ``blobs // 10`` OCI image manifests, stored as blobs, each with its own config
  (small JSON) and layers: one of ``SHARED_LAYERS`` layers that every repository
  uses, one its repository's manifests share, and about six of its own. Every
  blob is a few hundred unique bytes.
- ``manifests // 10`` repositories (at least 2), ``team<NN>/app<NNNN>``.
- Garbage: a fifth of the blobs are referenced by nothing (each linked in one
  repository's ``_layers``, as a push whose manifest never came leaves it); a
  third of each repository's manifests are untagged, half pushed by digest,
  half an earlier target of ``latest`` still in its index (the tag moved). Every
  tenth repository also holds, untagged, a tagged manifest of the repository
  before it (a promotion copy): ``--delete-untagged`` removes that revision but
  must keep its blobs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import random
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from bench.client import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST
from cargohold.digest import Digest
from cargohold.storage.paths import (
    BlobData,
    LayerLink,
    ManifestRevisionLink,
    PathSpec,
    TagCurrentLink,
    TagIndexLink,
    link_content,
    path_for,
)

SEED = 20240611
#: Layers every repository's manifests use (a base image's).
SHARED_LAYERS = 8
#: Untagged is every manifest whose place in its repository is 1 modulo this.
UNTAGGED_EVERY = 3
#: Below this the proportions above leave nothing to share or to collect.
MIN_BLOBS = 1000
#: The counts of ``Content.summary`` that are one file each.
_FILES = ("blobs", "revisions", "tags", "tag_index_entries", "layer_links")


@dataclass
class Repository:
    name: str
    #: Blobs linked in ``_layers``: what was pushed to it (configs, layers, orphans).
    layers: set[Digest] = field(default_factory=set)
    revisions: set[Digest] = field(default_factory=set)
    #: Each tag's current manifest.
    tags: dict[str, Digest] = field(default_factory=dict)
    #: Each tag's index: every manifest it ever pointed at, the current one included.
    history: dict[str, set[Digest]] = field(default_factory=dict)

    def tag(self, tag: str, digest: Digest) -> None:
        self.tags[tag] = digest
        self.history.setdefault(tag, set()).add(digest)


@dataclass
class Content:
    """Every blob of the root and every repository, and what each manifest references."""

    blobs: dict[Digest, bytes] = field(default_factory=dict)
    #: Each manifest's config and layers.
    references: dict[Digest, list[Digest]] = field(default_factory=dict)
    repositories: list[Repository] = field(default_factory=list)
    orphans: int = 0

    def add(self, data: bytes) -> Digest:
        digest = Digest("sha256:" + hashlib.sha256(data).hexdigest())
        self.blobs[digest] = data
        return digest

    @property
    def revisions(self) -> int:
        return sum(len(repo.revisions) for repo in self.repositories)

    def kept(self, delete_untagged: bool) -> Remains:
        """What a correct collection leaves: the revisions that stay and the blobs they need."""
        left = Remains()
        for repo in self.repositories:
            tagged = set(repo.tags.values())
            for digest in repo.revisions:
                if delete_untagged and digest not in tagged:
                    continue
                left.revisions.add((repo.name, digest))
                left.blobs.add(digest)
                left.blobs.update(self.references[digest])
        return left

    def summary(self) -> dict[str, int]:
        untagged = self.revisions - len(self.kept(True).revisions)
        found = {
            "blobs": len(self.blobs),
            "bytes": sum(len(data) for data in self.blobs.values()),
            "manifests": len(self.references),
            "revisions": self.revisions,
            "untagged_revisions": untagged,
            "repositories": len(self.repositories),
            "tags": sum(len(repo.tags) for repo in self.repositories),
            "tag_index_entries": sum(
                len(digests) for repo in self.repositories for digests in repo.history.values()
            ),
            "layer_links": sum(len(repo.layers) for repo in self.repositories),
            "unreferenced_blobs": self.orphans,
        }
        found["files"] = sum(found[key] for key in _FILES)
        return found


@dataclass
class Remains:
    """What a root holds after a collection, among the locations ``Content`` wrote."""

    blobs: set[Digest] = field(default_factory=set)
    revisions: set[tuple[str, Digest]] = field(default_factory=set)
    tag_index: set[tuple[str, str, Digest]] = field(default_factory=set)
    layer_links: int = 0


def generate(blobs: int, seed: int = SEED) -> Content:
    """The content of a root of exactly ``blobs`` blobs (see the module's docstring)."""
    if blobs < MIN_BLOBS:
        raise ValueError(f"a gc root needs at least {MIN_BLOBS} blobs, not {blobs}")
    rng = random.Random(seed)
    content = Content()
    manifests = blobs // 10
    orphans = blobs // 5
    layers = blobs - 2 * manifests - orphans  # each manifest also has its own config
    repositories = max(2, manifests // 10)

    def blob(kind: str, index: int) -> Digest:
        # The header makes every blob unique; the random tail gives it a realistic size.
        return content.add(f"{kind} {index}\n".encode() + rng.randbytes(rng.randint(200, 700)))

    shared = [blob("shared", i) for i in range(SHARED_LAYERS)]
    content.repositories = [Repository(f"team{r % 10:02d}/app{r:04d}") for r in range(repositories)]
    bases = [blob("base", r) for r in range(repositories)]
    own = layers - SHARED_LAYERS - repositories
    for index in range(manifests):
        r = index % repositories
        repo = content.repositories[r]
        mine = [blob("layer", j) for j in range(index, own, manifests)]
        references = [shared[r % SHARED_LAYERS], bases[r], *mine]
        config, manifest = _image(content, index, references)
        repo.layers.update([config, *references])
        repo.revisions.add(manifest)
        content.references[manifest] = [config, *references]
        place = index // repositories
        if place % UNTAGGED_EVERY != 1:
            repo.tag(f"v{place}", manifest)
            repo.tag("latest", manifest)  # manifests come in order: the last tagged stays
        elif place % (2 * UNTAGGED_EVERY) == 1:
            repo.history.setdefault("latest", set()).add(manifest)  # latest moved on since
    for r in range(1, repositories, 10):
        _promote(content, content.repositories[r - 1], content.repositories[r])
    for index in range(orphans):
        content.repositories[index % repositories].layers.add(blob("orphan", index))
    content.orphans = orphans
    assert len(content.blobs) == blobs
    return content


def _image(content: Content, index: int, layers: list[Digest]) -> tuple[Digest, Digest]:
    """A config and an OCI image manifest over ``layers``; their digests."""
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"bench.gc.image": str(index)}},
        "rootfs": {"type": "layers", "diff_ids": layers},
    }
    config_bytes = json.dumps(config, separators=(",", ":")).encode()
    config_digest = content.add(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
        "layers": [
            {"mediaType": OCI_LAYER, "digest": d, "size": len(content.blobs[d])} for d in layers
        ],
    }
    return config_digest, content.add(json.dumps(manifest, indent=3).encode())


def _promote(content: Content, source: Repository, target: Repository) -> None:
    """``target`` holds, untagged, a manifest tagged in ``source``, with its blobs linked."""
    digest = source.tags["v0"]
    target.revisions.add(digest)
    target.layers.update(content.references[digest])


def _locations(content: Content) -> Iterable[tuple[PathSpec, bytes]]:
    for digest, data in content.blobs.items():
        yield BlobData(digest), data
    for repo in content.repositories:
        for digest in repo.layers:
            yield LayerLink(repo.name, digest), link_content(digest)
        for digest in repo.revisions:
            yield ManifestRevisionLink(repo.name, digest), link_content(digest)
        for tag, digest in repo.tags.items():
            yield TagCurrentLink(repo.name, tag), link_content(digest)
        for tag, digests in repo.history.items():
            for digest in digests:
                yield TagIndexLink(repo.name, tag, digest), link_content(digest)


def local(root: Path, spec: PathSpec) -> str:
    """Where ``spec`` lives under the filesystem root ``root``."""
    return str(root) + path_for(spec)


def write(root: Path, content: Content) -> int:
    """Write every file of ``content`` under ``root``; how many."""
    return write_files(root, _locations(content))


def write_files(root: Path, files: Iterable[tuple[PathSpec, bytes]], threads: int = 1) -> int:
    """Write each ``(location, bytes)`` of ``files`` under ``root``; how many.

    With ``threads`` the files go in batches to that many threads: on a disk most of
    the time is the kernel's (a new file or folder costs ~0.3 ms here), which they
    overlap; on tmpfs they gain little (the GIL).
    """
    if threads <= 1:
        return _write_batch(root, files)
    count = 0
    remaining = iter(files)
    batches = iter(lambda: list(itertools.islice(remaining, _BATCH)), [])
    with ThreadPoolExecutor(threads) as pool:
        pending: set[Future[int]] = set()
        for batch in batches:
            if len(pending) >= 2 * threads:  # hold only a few batches in memory
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                count += sum(future.result() for future in done)
            pending.add(pool.submit(_write_batch, root, batch))
        count += sum(future.result() for future in pending)
    return count


#: Files per batch a thread writes.
_BATCH = 2000


def _write_batch(root: Path, files: Iterable[tuple[PathSpec, bytes]]) -> int:
    made: set[str] = set()
    count = 0
    for spec, data in files:
        path = local(root, spec)
        parent = os.path.dirname(path)
        if parent not in made:
            os.makedirs(parent, exist_ok=True)
            made.add(parent)
        with open(path, "wb") as file:
            file.write(data)
        count += 1
    return count


def remains(root: Path, content: Content) -> Remains:
    """Which of the files ``content`` wrote are still under ``root``."""
    exists = os.path.exists
    left = Remains()
    left.blobs = {d for d in content.blobs if exists(local(root, BlobData(d)))}
    for repo in content.repositories:
        name = repo.name
        left.revisions.update(
            (name, d) for d in repo.revisions if exists(local(root, ManifestRevisionLink(name, d)))
        )
        left.tag_index.update(
            (name, tag, d)
            for tag, digests in repo.history.items()
            for d in digests
            if exists(local(root, TagIndexLink(name, tag, d)))
        )
        left.layer_links += sum(exists(local(root, LayerLink(name, d))) for d in repo.layers)
    return left
