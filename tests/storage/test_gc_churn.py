"""Garbage collection while serving survives a minute of continuous pushes.

A registry collects every second with a short grace period
(``storage.maintenance.gc``) while pushers run a random mix for ``DURATION``
seconds: new images, images reusing layers found with a HEAD (the upload is
skipped on a 200, as skopeo does: the race online collection must survive),
cross-repository mounts, tag moves, deletes of manifests by digest, and blobs
nothing ever references. While they run, nothing the registry confirmed may
fail later: a manifest whose blobs were all just uploaded, mounted or found
with a HEAD must be accepted (201), a tagged manifest deleted (202). Afterwards:

- every tag the pushers' model holds is still there and nothing else is, and
  each is fully pullable: the manifest and every blob it names, digest and
  size checked;
- once a pass has started more than the grace period after the last push,
  storage holds exactly the content those tags need: the unreferenced blobs,
  the untagged manifests and whatever only they referenced are gone (looked
  at in storage itself: the filesystem tree, or the S3 listing), and so are
  the repositories' links to them;
- the saved report (``load_report``) and the log show the deletions.

A failure tells, for every digest it names, what the pushers and the passes
did to it and when (``history``). The figures (pushes by kind, passes, their
durations, deletions) are printed: run with ``-s`` to see them.

The registry is served in process with the listener ``cargohold serve`` runs
(``tests/support/inprocess.py``); its background maintenance (reuse records,
the collection loop) runs from the application's cleanup context. It runs on
the filesystem and on S3 (the session's SeaweedFS).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from multidict import CIMultiDictProxy
from yarl import URL

from cargohold.api.app import API_KEY, create_app
from cargohold.config import parse_config
from cargohold.digest import Digest
from cargohold.errors import PathNotFound
from cargohold.storage.gc import load_report
from cargohold.storage.paths import BlobData, path_for
from cargohold.storage.registry import StorageRegistry
from tests.support.inprocess import Client, serve
from tests.support.seaweed import SeaweedS3

pytestmark = [pytest.mark.slow, pytest.mark.campaign]  # minutes: make campaigns runs it

#: How long the pushers run on each storage (seconds). S3 is shorter, with fewer pushers: on
#: SeaweedFS a pass under load takes 10-40 s (its requests go one at a time), and the last
#: one must start after the grace period and finish too (the S3 test takes 65-95 s).
DURATION = {"filesystem": 60.0, "s3": 35.0}
#: ``storage.maintenance.gc.graceperiod``, and the upload-purge age (it may not exceed it).
GRACE = 5.0
#: ``storage.maintenance.gc.interval``.
GC_INTERVAL = 1.0
#: Concurrent pushers, by storage; each owns its repositories (tags and deletes happen only
#: there), and reads, mounts from and reuses the others'.
PUSHERS = {"filesystem": 4, "s3": 2}
REPOSITORIES_PER_PUSHER = 2
#: Tags per repository: new images land on these, so tags move all the time.
TAGS = ("latest", "stable", "v1", "v2", "v3")
#: The mix of operations, by weight.
KINDS = {"new": 25, "shared": 25, "mount": 15, "tag_move": 15, "delete": 10, "orphan": 10}
#: How long after the grace period the last pass may take to start and finish (a deadline).
SETTLE = 90.0

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCTET_STREAM = {"Content-Type": "application/octet-stream"}

HEX = "[0-9a-f]{64}"
BLOB_DATA = re.compile(rf"blobs/sha256/[0-9a-f]{{2}}/({HEX})/data")
#: Content a pass moved aside while it decided (``gc.py``): none once a pass has ended.
BLOB_HIDDEN = re.compile(rf"blobs/sha256/[0-9a-f]{{2}}/({HEX})/collecting")
REVISION_LINK = re.compile(rf"repositories/(.+)/_manifests/revisions/sha256/({HEX})/link")
LAYER_LINK = re.compile(rf"repositories/(.+)/_layers/sha256/({HEX})/link")


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- content and the pushers' model -------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str = OCI_LAYER

    @property
    def digest(self) -> str:
        return sha256(self.data)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


@dataclass(frozen=True)
class Image:
    """A manifest as pushed, with its config first and then its layers."""

    payload: bytes
    blobs: tuple[Blob, ...]

    @property
    def digest(self) -> str:
        return sha256(self.payload)

    @classmethod
    def of(cls, config: Blob, layers: list[Blob]) -> Image:
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [layer.descriptor() for layer in layers],
        }
        return cls(json.dumps(body, indent=2).encode(), (config, *layers))


def new_layer(rng: random.Random) -> Blob:
    size = rng.choice((rng.randint(100, 4096), rng.randint(4096, 64 * 1024)))
    return Blob(os.urandom(size))


def new_config() -> Blob:
    return Blob(json.dumps({"os": "linux", "nonce": os.urandom(8).hex()}).encode(), OCI_CONFIG)


@dataclass
class Repository:
    name: str
    #: What each tag points at, as the pushers made it.
    tags: dict[str, str] = field(default_factory=dict)
    #: Every manifest acknowledged here with a 201.
    manifests: dict[str, Image] = field(default_factory=dict)
    #: Every layer ever pushed or mounted here: what a later image may reuse.
    layers: list[Blob] = field(default_factory=list)

    def tagged(self) -> set[str]:
        return set(self.tags.values())


@dataclass(frozen=True)
class Orphan:
    repository: str
    blob: Blob


# -- the run ------------------------------------------------------------------------------


class Churn:
    """Pushers on one registry, counting what they did and noting what went wrong."""

    def __init__(self, client: Client, seed: int, pushers: int) -> None:
        self.client = client
        self.seed = seed
        self.pushers = pushers
        names = [f"churn/p{p}-r{r}" for p in range(pushers) for r in range(REPOSITORIES_PER_PUSHER)]
        self.repositories = {name: Repository(name) for name in names}
        #: Every acknowledged manifest, in order: (repository, image).
        self.acknowledged: list[tuple[str, Image]] = []
        self.orphans: list[Orphan] = []
        self.counts: Counter[str] = Counter()
        #: What the registry did that it must not do, in words.
        self.violations: list[str] = []
        self.rng = random.Random(seed)
        #: Every manifest PUT and DELETE: (time, method, repository, reference, digest, status).
        self.trace: list[tuple[float, str, str, str, str, int]] = []

    async def call(
        self, method: str, target: str | URL, **kwargs: Any
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        url = target if isinstance(target, URL) else self.client.make_url(target)
        async with self.client.session.request(method, url, **kwargs) as response:
            return response.status, response.headers, await response.read()

    # -- the pieces of a push -------------------------------------------------------------

    async def upload(self, name: str, blob: Blob, what: str) -> bool:
        """A monolithic upload (POST with ``?digest=``)."""
        status, _, body = await self.call(
            "POST",
            f"/v2/{name}/blobs/uploads/",
            params={"digest": blob.digest},
            data=blob.data,
            headers=OCTET_STREAM,
        )
        self.counts["blob_uploads"] += 1
        if status != 201:
            self.violations.append(f"{what}: upload of {blob.digest} to {name}: {status} {body!r}")
            return False
        return True

    async def found(self, name: str, blob: Blob) -> bool:
        """HEAD the blob, as skopeo does before it uploads one."""
        status, headers, _ = await self.call("HEAD", f"/v2/{name}/blobs/{blob.digest}")
        self.counts["blob_heads"] += 1
        if status == 200 and int(headers["Content-Length"]) != len(blob.data):
            self.violations.append(f"HEAD {name} {blob.digest}: size {headers['Content-Length']}")
        if status not in (200, 404):
            self.violations.append(f"HEAD {name} {blob.digest}: {status}")
        return status == 200

    async def mount(self, name: str, source: str, blob: Blob) -> bool:
        """Mount from ``source``; when it cannot be, finish the upload it started instead."""
        status, headers, body = await self.call(
            "POST", f"/v2/{name}/blobs/uploads/", params={"mount": blob.digest, "from": source}
        )
        if status == 201:
            self.counts["mounts_done"] += 1
            return True
        if status != 202:
            self.violations.append(f"mount of {blob.digest} from {source}: {status} {body!r}")
            return False
        self.counts["mounts_refused"] += 1  # the source lost it (deleted, or collected)
        closing = URL(headers["Location"]).update_query(digest=blob.digest)
        status, _, body = await self.call("PUT", closing, data=blob.data, headers=OCTET_STREAM)
        self.counts["blob_uploads"] += 1
        if status != 201:
            self.violations.append(f"upload after a refused mount to {name}: {status} {body!r}")
            return False
        return True

    async def put_manifest(self, name: str, reference: str, image: Image) -> tuple[int, bytes]:
        status, headers, body = await self.call(
            "PUT",
            f"/v2/{name}/manifests/{reference}",
            data=image.payload,
            headers={"Content-Type": OCI_MANIFEST},
        )
        self.counts["manifest_puts"] += 1
        self.trace.append((time.time(), "PUT", name, reference, image.digest, status))
        if status == 201:
            if headers.get("Docker-Content-Digest") != image.digest:
                self.violations.append(f"PUT {name}:{reference}: digest {headers!r}")
            repository = self.repositories[name]
            repository.manifests[image.digest] = image
            if reference in TAGS:
                repository.tags[reference] = image.digest
            self.acknowledged.append((name, image))
        return status, body

    async def push_confirmed(self, name: str, image: Image, what: str) -> None:
        """PUT a manifest whose every blob was just uploaded, mounted or found: it must land."""
        status, body = await self.put_manifest(name, random_tag(self.rng), image)
        if status != 201:
            self.violations.append(
                f"{what}: PUT manifest {image.digest} in {name} after every blob was "
                f"confirmed: {status} {body[:300]!r}"
            )

    # -- the operations ---------------------------------------------------------------------

    async def new(self, repository: Repository) -> None:
        """A new image: a fresh config and fresh layers."""
        layers = [new_layer(self.rng) for _ in range(self.rng.randint(1, 3))]
        image = Image.of(new_config(), layers)
        for blob in image.blobs:
            if not await self.upload(repository.name, blob, "new image"):
                return
        repository.layers += layers
        await self.push_confirmed(repository.name, image, "new image")

    async def shared(self, repository: Repository) -> None:
        """An image with layers of earlier ones: HEAD each, upload only what is missing."""
        if not repository.layers:
            return await self.new(repository)
        reused = self.rng.sample(repository.layers, min(len(repository.layers), 2))
        layers = [*reused, *(new_layer(self.rng) for _ in range(self.rng.randint(0, 1)))]
        image = Image.of(new_config(), layers)
        for blob in image.blobs:
            if blob in reused and await self.found(repository.name, blob):
                self.counts["head_hits_skipped"] += 1
                continue
            if blob in reused:
                self.counts["head_misses_uploaded"] += 1
            if not await self.upload(repository.name, blob, "shared image"):
                return
        repository.layers += [layer for layer in layers if layer not in reused]
        await self.push_confirmed(repository.name, image, "shared image (HEAD-then-skip)")

    async def mount_image(self, repository: Repository) -> None:
        """Copy an image from another repository: HEAD, then mount (or upload) each blob."""
        others = [(n, i) for n, i in self.acknowledged[-60:] if n != repository.name]
        if not others:
            return await self.new(repository)
        source, image = self.rng.choice(others)
        for blob in image.blobs:
            if await self.found(repository.name, blob):
                self.counts["head_hits_skipped"] += 1
                continue
            if not await self.mount(repository.name, source, blob):
                return
        repository.layers += list(image.blobs[1:])
        await self.push_confirmed(repository.name, image, f"image mounted from {source}")

    async def tag_move(self, repository: Repository) -> None:
        """PUT a manifest already pushed here under a tag that points elsewhere."""
        if not repository.tags:
            return await self.new(repository)
        tag = self.rng.choice(sorted(repository.tags))
        current = repository.tags[tag]
        tagged = sorted(repository.tagged() - {current})
        untagged = sorted(set(repository.manifests) - repository.tagged())
        if tagged and (not untagged or self.rng.random() < 0.75):
            digest, live = self.rng.choice(tagged), True
        elif untagged:
            digest, live = self.rng.choice(untagged), False
        else:
            return await self.new(repository)
        status, body = await self.put_manifest(repository.name, tag, repository.manifests[digest])
        if status == 201:
            self.counts["tag_moves_to_" + ("tagged" if live else "untagged")] += 1
        elif not live and status == 400 and b"MANIFEST_BLOB_UNKNOWN" in body:
            # An untagged manifest older than the grace period may have lost its blobs.
            self.counts["tag_moves_refused_collected"] += 1
        else:
            self.violations.append(
                f"tag move {repository.name}:{tag} -> {digest} (tagged: {live}): "
                f"{status} {body[:300]!r}"
            )

    async def delete(self, repository: Repository) -> None:
        """Delete a tagged manifest by digest: its tags go with it."""
        if not repository.tags:
            return await self.new(repository)
        digest = self.rng.choice(sorted(repository.tagged()))
        status, _, body = await self.call("DELETE", f"/v2/{repository.name}/manifests/{digest}")
        self.trace.append((time.time(), "DELETE", repository.name, digest, digest, status))
        if status != 202:
            self.violations.append(f"DELETE tagged {repository.name}@{digest}: {status} {body!r}")
            return
        self.counts["manifest_deletes"] += 1
        repository.tags = {t: d for t, d in repository.tags.items() if d != digest}

    async def orphan(self, repository: Repository) -> None:
        """A blob nothing will ever reference: something for the collection to take."""
        blob = new_layer(self.rng)
        if await self.upload(repository.name, blob, "orphan"):
            self.orphans.append(Orphan(repository.name, blob))

    # -- driving them -----------------------------------------------------------------------

    async def pusher(self, number: int, until: float) -> None:
        operations: dict[str, Callable[[Repository], Awaitable[None]]] = {
            "new": self.new,
            "shared": self.shared,
            "mount": self.mount_image,
            "tag_move": self.tag_move,
            "delete": self.delete,
            "orphan": self.orphan,
        }
        own = [r for n, r in self.repositories.items() if n.startswith(f"churn/p{number}-")]
        kinds, weights = list(KINDS), list(KINDS.values())
        while time.monotonic() < until:
            kind = self.rng.choices(kinds, weights)[0]
            self.counts["op_" + kind] += 1
            await operations[kind](self.rng.choice(own))

    async def run(self, duration: float) -> None:
        until = time.monotonic() + duration
        await asyncio.gather(*(self.pusher(number, until) for number in range(self.pushers)))

    # -- checking what is left --------------------------------------------------------------

    async def pull_everything(self) -> list[str]:
        """Every tag is what the pushers left, and pulls: manifest and blobs, digests checked."""
        problems = []
        for name, repository in self.repositories.items():
            status, _, body = await self.call("GET", f"/v2/{name}/tags/list")
            listed = set((json.loads(body).get("tags") or []) if status == 200 else [])
            if status not in (200, 404) or listed != set(repository.tags):
                problems.append(
                    f"{name}: tags {sorted(listed)} ({status}), expected {sorted(repository.tags)}"
                )
            for tag in sorted(listed):
                problems += await self.pull(name, tag, repository.tags.get(tag))
        return problems

    async def pull(self, name: str, tag: str, expected: str | None) -> list[str]:
        status, headers, payload = await self.call(
            "GET", f"/v2/{name}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}
        )
        where = f"{name}:{tag}"
        if status != 200:
            return [f"GET manifest {where}: {status} {payload[:300]!r}"]
        problems = []
        digest = sha256(payload)
        if headers.get("Docker-Content-Digest") != digest or digest != expected:
            problems.append(
                f"{where}: digest {digest} (header {headers.get('Docker-Content-Digest')}), "
                f"expected {expected}"
            )
        body = json.loads(payload)
        for descriptor in [body["config"], *body["layers"]]:
            status, _, data = await self.call("GET", f"/v2/{name}/blobs/{descriptor['digest']}")
            self.counts["blob_pulls"] += 1
            if status != 200:
                problems.append(f"{where}: GET blob {descriptor['digest']}: {status} {data!r}")
            elif sha256(data) != descriptor["digest"] or len(data) != descriptor["size"]:
                problems.append(f"{where}: blob {descriptor['digest']} came back as {sha256(data)}")
        return problems

    def needed(self) -> dict[str, set[str]]:
        """Each repository's tagged manifests, and every blob the tags need, by digest."""
        blobs: set[str] = set()
        manifests: dict[str, set[str]] = {}
        for name, repository in self.repositories.items():
            manifests[name] = repository.tagged()
            for digest in manifests[name]:
                image = repository.manifests[digest]
                blobs |= {digest, *(b.digest for b in image.blobs)}
        return {"blobs": blobs, **manifests}


def random_tag(rng: random.Random) -> str:
    return rng.choice(TAGS)


# -- the storage, looked at directly --------------------------------------------------------


class StorageView:
    """The paths under ``docker/registry/v2`` that storage holds, read without the registry."""

    async def paths(self) -> set[str]:
        raise NotImplementedError


class FilesystemView(StorageView):
    def __init__(self, root: Path) -> None:
        self.root = root / "docker" / "registry" / "v2"

    async def paths(self) -> set[str]:
        return {
            str(Path(folder, file).relative_to(self.root))
            for folder, _, files in os.walk(self.root)
            for file in files
        }


class S3View(StorageView):
    def __init__(self, server: SeaweedS3, rootdirectory: str) -> None:
        self.server = server
        self.prefix = f"{rootdirectory.strip('/')}/docker/registry/v2/"

    def _list(self) -> set[str]:
        client = self.server.client()
        try:
            paginator = client.get_paginator("list_objects_v2")
            return {
                item["Key"][len(self.prefix) :]
                for page in paginator.paginate(Bucket=self.server.bucket, Prefix=self.prefix)
                for item in page.get("Contents", [])
            }
        finally:
            client.close()

    async def paths(self) -> set[str]:
        return await asyncio.to_thread(self._list)


def matching(pattern: re.Pattern[str], paths: set[str]) -> set[tuple[str, ...]]:
    return {m.groups() for p in paths if (m := pattern.fullmatch(p)) is not None}


# -- fixtures -------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    storage: dict[str, Any]
    view: StorageView


@pytest.fixture(params=["filesystem", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "filesystem":
        root = tmp_path / "root"
        return Backend(
            "filesystem", {"filesystem": {"rootdirectory": str(root)}}, FilesystemView(root)
        )
    parameters = request.getfixturevalue("s3_parameters")
    server = request.getfixturevalue("seaweedfs")
    return Backend("s3", {"s3": parameters}, S3View(server, parameters["rootdirectory"]))


def config_document(backend: Backend) -> dict[str, Any]:
    return {
        "version": "0.1",
        "http": {"addr": "127.0.0.1:5000"},
        "storage": {
            **backend.storage,
            "delete": {"enabled": True},
            "maintenance": {
                "uploadpurging": {"enabled": True, "age": f"{GRACE:g}s", "interval": "1h"},
                "gc": {
                    "enabled": True,
                    "interval": f"{GC_INTERVAL:g}s",
                    "graceperiod": f"{GRACE:g}s",
                    "dryrun": False,
                    "deleteuntagged": True,
                },
            },
        },
    }


@pytest.fixture
async def served(backend: Backend) -> AsyncIterator[Client]:
    config = parse_config(yaml.safe_dump(config_document(backend)), environ={})
    async with serve(create_app(config)) as client:
        yield client


class Reports:
    """Every saved report of a pass, read from storage as ``cargohold gc --last`` reads it."""

    def __init__(self, registry: StorageRegistry) -> None:
        self.registry = registry
        self.seen: dict[float, dict[str, Any]] = {}

    async def latest(self) -> dict[str, Any] | None:
        report = await load_report(self.registry)
        if report is not None:
            self.seen[report["started"]] = report
        return report

    async def watch(self) -> None:
        while True:
            await self.latest()
            await asyncio.sleep(0.2)


def passes_logged(records: list[logging.LogRecord]) -> dict[str, Any]:
    """What the log says the passes did."""
    gc = [r for r in records if r.name == "cargohold.gc"]
    ended = [r for r in gc if r.msg.startswith("garbage collection: ")]
    done: list[tuple[Any, ...]] = [r.args for r in ended if isinstance(r.args, tuple)]
    assert len(done) == len(ended)
    return {
        "passes": len(done),
        "ended_at": [r.created for r in ended],
        "skipped": sum(r.msg.startswith("garbage collection skipped") for r in gc),
        "failed": [r.getMessage() for r in gc if r.msg.startswith("garbage collection failed")],
        "warnings": [r.getMessage() for r in gc if r.levelno >= logging.WARNING],
        "durations": [round(args[4], 1) for args in done],
        "young": [args[5] for args in done],
        "deleted_manifests": sum(args[1] for args in done),
        "deleted_blobs": sum(args[2] for args in done),
        "blobs": {
            str(r.args[0])
            for r in gc
            if r.msg == "deleting blob %s" and isinstance(r.args, tuple) and r.args
        },
    }


def history(digests: set[str], churn: Churn, records: list[logging.LogRecord], since: float) -> str:
    """What the pushers and the collection did to ``digests``, in order: for a failure."""
    lines = [
        (at, f"client {method} {name}:{reference} {digest} -> {status}")
        for at, method, name, reference, digest, status in churn.trace
        if digest in digests
    ]
    lines += [
        (r.created, f"gc {r.getMessage()}")
        for r in records
        if r.name == "cargohold.gc"
        and (r.msg.startswith("garbage collection") or any(d in r.getMessage() for d in digests))
    ]
    told = [f"{at - since:8.3f} {line}" for at, line in sorted(lines)]
    return "\n".join(told if len(told) <= 200 else ["...", *told[-200:]])


async def blob_times(registry: StorageRegistry, digest: str, since: float) -> str:
    """When a blob's content was written and it was last found, as the collection sees them."""
    parsed = Digest.parse(digest)
    try:
        info = await registry.driver.stat(path_for(BlobData(parsed)))
        written = f"{info.modtime.timestamp() - since:.3f}"
    except PathNotFound:
        written = "absent"
    reuse = registry.blobs.reuse
    found = await reuse.last_reuse(parsed) if reuse is not None else None
    return f"written at {written}, found at {'never' if found is None else f'{found - since:.3f}'}"


# -- the test -------------------------------------------------------------------------------


async def test_online_gc_under_a_minute_of_churn(
    backend: Backend, served: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cargohold.gc")
    registry = served.app[API_KEY].registry
    assert isinstance(registry, StorageRegistry)
    seed = random.randrange(1 << 32)
    churn = Churn(served, seed, PUSHERS[backend.name])
    reports = Reports(registry)
    watching = asyncio.ensure_future(reports.watch())
    try:
        started, began = time.monotonic(), time.time()
        await churn.run(DURATION[backend.name])
        pushed_until = time.time()
        pushing = time.monotonic() - started

        # Everything the pushers left tagged pulls, now.
        pulled = await churn.pull_everything()

        # A pass that starts once the grace period has passed since the last push finds
        # everything unreferenced old enough to go (1 s for mtime granularity).
        threshold = pushed_until + GRACE + 1.0
        deadline = time.monotonic() + GRACE + SETTLE
        while (report := await reports.latest()) is None or report["started"] <= threshold:
            assert time.monotonic() < deadline, f"no pass started after the grace: {report}"
            await asyncio.sleep(0.2)
        settled = time.monotonic()
        stored = await backend.view.paths()
        pulled_again = await churn.pull_everything()
        orphan_heads = {
            orphan.blob.digest: (
                await churn.call("HEAD", f"/v2/{orphan.repository}/blobs/{orphan.blob.digest}")
            )[0]
            for orphan in churn.orphans
        }
    finally:
        watching.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watching

    logged = passes_logged(caplog.records)
    needed = churn.needed()
    blobs = {"sha256:" + hex for (hex,) in matching(BLOB_DATA, stored)}
    revisions: dict[str, set[str]] = {}
    for name, hex in matching(REVISION_LINK, stored):
        revisions.setdefault(name, set()).add("sha256:" + hex)
    layer_links = {(name, "sha256:" + hex) for name, hex in matching(LAYER_LINK, stored)}
    orphans = {orphan.blob.digest for orphan in churn.orphans}
    figures = {
        "backend": backend.name,
        "seed": seed,
        "pushing_seconds": round(pushing, 1),
        "settle_seconds": round(settled - started - pushing, 1),
        "counts": dict(sorted(churn.counts.items())),
        "acknowledged_manifests": len(churn.acknowledged),
        "tags_left": sum(len(r.tags) for r in churn.repositories.values()),
        "orphans": len(orphans),
        "gc_passes_logged": logged["passes"],
        "gc_passes_while_pushing": sum(at < pushed_until for at in logged["ended_at"]),
        "gc_passes_skipped": logged["skipped"],
        "gc_pass_seconds": logged["durations"],
        "gc_young_blobs": logged["young"],
        "gc_warnings": len(logged["warnings"]),
        "gc_reports_seen": len(reports.seen),
        "gc_deleted_manifests": logged["deleted_manifests"],
        "gc_deleted_blobs": logged["deleted_blobs"],
        "stored_blobs_after": len(blobs),
        "needed_blobs": len(needed["blobs"]),
    }
    print("\nchurn figures:", json.dumps(figures))

    def story(problems: list[str]) -> str:
        """``problems``, with the story of every digest they name and of its manifests."""
        named = set(re.findall(f"sha256:{HEX}", "\n".join(problems)))
        named |= {i.digest for _, i in churn.acknowledged if named & {b.digest for b in i.blobs}}
        return "\n".join(problems[:30]) + "\n" + history(named, churn, caplog.records, began)

    for problems in (churn.violations, pulled, pulled_again):
        assert not problems, story(problems)
    assert not logged["failed"], logged["failed"][:10]
    # Collection ran throughout, not only once the pushers stopped.
    assert sum(at < pushed_until for at in logged["ended_at"]) >= 2, figures

    # Unreferenced content older than the grace period is gone, as storage itself shows...
    assert orphans, "the pushers uploaded no unreferenced blob"
    assert {d: s for d, s in orphan_heads.items() if s != 404} == {}
    assert orphans & blobs == set()
    assert orphans <= logged["blobs"]
    left_over = [
        f"left over: {d} ({await blob_times(registry, d, began)}; last pass started at "
        f"{report['started'] - began:.3f}, pushes ended at {pushed_until - began:.3f})"
        for d in sorted(blobs - needed["blobs"])
    ]
    missing = [f"missing: {d}" for d in sorted(needed["blobs"] - blobs)]
    assert not left_over + missing, story(left_over + missing)
    for name in churn.repositories:
        extra = [f"{name}: revision {d}" for d in revisions.get(name, set()) ^ needed[name]]
        assert not extra, story(extra)
    dangling = [f"{n}: layer link to {d}" for n, d in sorted(layer_links) if d not in blobs]
    assert not dangling, story(dangling)
    hidden = [f"hidden: sha256:{hex}" for (hex,) in sorted(matching(BLOB_HIDDEN, stored))]
    assert not hidden, story(hidden)
    # ... and the saved reports say so.
    assert any(r["deleted_blobs"] > 0 for r in reports.seen.values()), reports.seen
    assert any(r["deleted_manifests"] > 0 for r in reports.seen.values()), reports.seen
    assert logged["deleted_blobs"] >= len(orphans)
