"""Crash campaigns: a registry killed over and over while clients write (``make crash``).

``cargohold serve --workers 2`` runs in a process group of its own, with deletes
enabled and collection while serving every second. Clients, each in a repository
of its own, push blobs (monolithic, and in chunks, some left open), push
manifests by tag, move tags, delete manifests, leave blobs unreferenced and read
back; after a random moment the whole group gets SIGKILL. The ledger holds only
what the registry acknowledged (201, 202, 204); a request the kill cut is
uncertain: it may or may not have happened, and the next start looks which (a
manifest by digest, then each tag), within what the cut request allowed. After
each restart:

- the server answers ``GET /v2/``, timed from its spawn (the campaign holds every
  start to ``START_LIMIT``, the issue's 1 s, once all else has passed; ``make
  test`` only times them);
- every acknowledged manifest and tag not deleted since is there, with its digest
  and bytes; every acknowledged delete stayed done;
- every acknowledged blob a present manifest references, or younger than the
  grace period, is served whole; any other is whole or gone (collected);
- an upload whose chunks were acknowledged goes on from where they end (or from
  within the chunk the kill cut) and ends with the blob's digest;
- every blob file in storage hashes to its digest (the filesystem tree, or the
  bucket's listing), the ones a collection left aside included.

At the end, a start with upload purging at a 1 s age leaves no upload behind: no
``_uploads`` folder, nor an S3 key or multipart upload below one. The figures are
printed (run with ``-s``). ``make crash`` runs ``CRASH_KILLS`` kills (200 by
default) on each storage: the filesystem, and S3 (SeaweedFS) with the descriptor
cache in Redis; ``make test`` runs a few, so that this code is run.

The grace period is far longer than a round (a start, the checks, at most
``RUN[1]`` s of writes): a blob pushed in a round is young when the next start
checks it. Collection may take an older unreferenced one, never one a present
manifest references (``deleteuntagged`` is off: a manifest goes only by a
delete), so that is all the checks demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import yaml
from multidict import CIMultiDictProxy
from yarl import URL

from tests.support.redis import RedisServer
from tests.support.seaweed import SeaweedS3
from tests.support.servers import cargohold_argv, free_port
from tests.support.waiting import until

#: Kills per storage in the campaign (``make crash``).
KILLS = int(os.environ.get("CRASH_KILLS", "200"))
#: Kills per storage in ``make test``: enough to run every step (each start takes seconds).
QUICK_KILLS = 2
#: How soon after its spawn a registry must answer ``GET /v2/`` (issue #22: 1 s).
START_LIMIT = float(os.environ.get("CRASH_START_LIMIT", "1.0"))
#: How long a start may take at all before the campaign gives up on it.
START_TIMEOUT = 60.0
#: How long the clients write before the kill: uniform within these bounds (seconds).
RUN = (0.1, 1.5)
#: The same in ``make test``, long enough for a few writes to land even on a busy machine.
QUICK_RUN = (0.5, 2.0)
#: ``storage.maintenance.gc.graceperiod`` and the upload-purge age while the clients write.
GRACE = 20.0
#: Storage times are whole seconds on S3, and a collection reads its own clock.
MARGIN = 3.0
CLIENTS = 3
TAGS = ("latest", "stable", "v1", "v2", "v3")
#: The operations of a client, by weight.
KINDS = {"image": 30, "tag_move": 15, "delete": 10, "read": 25, "orphan": 10, "open_upload": 10}
#: Older blobs and manifests checked again after each start, besides the new ones.
SAMPLE = 25
#: The purge age of the last start, which must leave no upload behind.
PURGE_AGE = 1.0
PURGE_WITHIN = 30.0
#: A line of figures every this many kills.
PROGRESS = 25

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCTET_STREAM = "application/octet-stream"
BLOB_FILE = re.compile(r"blobs/sha256/[0-9a-f]{2}/([0-9a-f]{64})/(data|collecting)$")
ACKNOWLEDGED = (201, 202, 204)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# -- the ledger ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    data: bytes
    #: When its first byte was sent: storage holds nothing of it older.
    since: float

    @property
    def digest(self) -> str:
        return sha256(self.data)


PRESENT, ABSENT, UNSURE = "present", "absent", "unsure"


@dataclass
class Manifest:
    payload: bytes
    blobs: tuple[str, ...]
    #: PRESENT (a PUT acknowledged), ABSENT (a delete acknowledged, or a cut PUT that did not
    #: land), UNSURE (a PUT or a delete the kill cut: the next start looks).
    state: str

    @property
    def digest(self) -> str:
        return sha256(self.payload)


@dataclass
class OpenUpload:
    """A chunked upload with ``acked`` bytes acknowledged, ``sent`` perhaps received."""

    #: Its last ``Location``'s path and query: the server's address changes with each start.
    location: str
    blob: Blob
    acked: int
    sent: int


@dataclass
class Repository:
    name: str
    blobs: dict[str, Blob] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    #: What each tag may point at (None: nothing); one possibility once it is sure.
    tags: dict[str, set[str | None]] = field(default_factory=dict)
    uploads: list[OpenUpload] = field(default_factory=list)
    #: Blobs and manifests acknowledged since the last start's checks.
    fresh_blobs: set[str] = field(default_factory=set)
    fresh_manifests: set[str] = field(default_factory=set)

    def present(self) -> list[Manifest]:
        return [m for m in self.manifests.values() if m.state == PRESENT]

    def sure_tags(self) -> dict[str, str | None]:
        return {tag: next(iter(ps)) for tag, ps in self.tags.items() if len(ps) == 1}

    def referenced(self) -> set[str]:
        return {digest for m in self.present() for digest in m.blobs}

    def acknowledge_blob(self, blob: Blob) -> None:
        self.blobs[blob.digest] = blob
        self.fresh_blobs.add(blob.digest)


class Cut(Exception):
    """A request got no answer: the kill cut it."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


CUT_BY_KILL = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)


class Ledger:
    """What the registry acknowledged, what the kills left uncertain, what went wrong."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.repositories = [Repository(f"crash/client-{n}") for n in range(CLIENTS)]
        self.acknowledged: Counter[str] = Counter()
        self.uncertain: Counter[str] = Counter()
        self.checked: Counter[str] = Counter()
        #: Answers the registry must not have given, in words.
        self.violations: list[str] = []

    def wrong(self, what: str) -> None:
        self.violations.append(what)


# -- a client's operations -------------------------------------------------------------------


class Client:
    """One repository's writer during a round: sequential requests until the kill cuts one."""

    def __init__(self, session: aiohttp.ClientSession, base: URL, ledger: Ledger) -> None:
        self.session = session
        self.base = base
        self.ledger = ledger
        self.rng = ledger.rng
        #: Set just before the kill: a request cut earlier is a registry's fault.
        self.killing = False

    def url(self, path: str) -> URL:
        return self.base.with_path(path)

    def here(self, location: str) -> URL:
        """An upload's ``Location`` (its path and query) on this server."""
        return URL(str(self.base) + URL(location, encoded=True).raw_path_qs, encoded=True)

    async def call(self, method: str, url: URL, **kwargs: Any) -> Answer:
        try:
            async with self.session.request(method, url, **kwargs) as response:
                return Answer(response.status, response.headers, await response.read())
        except CUT_BY_KILL as exc:
            if not self.killing:
                self.ledger.wrong(f"{method} {url.path}: no answer while serving: {exc!r}")
            raise Cut(repr(exc)) from exc

    def expect(self, answer: Answer, status: int, what: str) -> bool:
        if answer.status != status:
            self.ledger.wrong(f"{what}: {answer.status} {answer.body[:300]!r}")
        return answer.status == status

    async def run(self, repository: Repository) -> None:
        operations: dict[str, Callable[[Repository], Awaitable[None]]] = {
            "image": self.image,
            "tag_move": self.tag_move,
            "delete": self.delete,
            "read": self.read,
            "orphan": self.orphan,
            "open_upload": self.open_upload,
        }
        kinds, weights = list(KINDS), list(KINDS.values())
        try:
            while True:
                await operations[self.rng.choices(kinds, weights)[0]](repository)
        except Cut:
            return

    # -- blobs ----------------------------------------------------------------------------

    async def push_blob(self, repository: Repository, data: bytes) -> Blob | None:
        """Monolithic or in chunks, at random; the blob once acknowledged."""
        if len(data) > 4096 and self.rng.random() < 0.5:
            return await self.push_chunked(repository, data)
        blob = Blob(data, time.time())
        try:
            answer = await self.call(
                "POST",
                self.url(f"/v2/{repository.name}/blobs/uploads/").with_query(digest=blob.digest),
                data=data,
                headers={"Content-Type": OCTET_STREAM},
            )
        except Cut:
            self.ledger.uncertain["blob_monolithic"] += 1
            raise
        if not self.expect(answer, 201, f"monolithic upload of {blob.digest}"):
            return None
        self.ledger.acknowledged["blob_monolithic"] += 1
        repository.acknowledge_blob(blob)
        return blob

    async def start_upload(self, repository: Repository, data: bytes) -> OpenUpload | None:
        blob = Blob(data, time.time())
        try:
            answer = await self.call("POST", self.url(f"/v2/{repository.name}/blobs/uploads/"))
        except Cut:
            self.ledger.uncertain["upload_start"] += 1
            raise
        if not self.expect(answer, 202, "upload start"):
            return None
        self.ledger.acknowledged["upload_start"] += 1
        return OpenUpload(answer.headers["Location"], blob, 0, 0)

    async def patch(self, repository: Repository, upload: OpenUpload, end: int) -> bool:
        """Send ``upload``'s bytes up to ``end``; a cut PATCH leaves the upload open."""
        chunk = upload.blob.data[upload.acked : end]
        upload.sent = end
        try:
            answer = await self.call(
                "PATCH",
                self.here(upload.location),
                data=chunk,
                headers={
                    "Content-Type": OCTET_STREAM,
                    "Content-Range": f"{upload.acked}-{end - 1}",
                },
            )
        except Cut:
            self.ledger.uncertain["upload_chunk"] += 1
            if upload.acked > 0:
                repository.uploads.append(upload)
            raise
        if not self.expect(answer, 202, f"PATCH {upload.acked}-{end - 1}"):
            return False
        if answer.headers.get("Range") != f"0-{end - 1}":
            self.ledger.wrong(f"PATCH to {end}: Range {answer.headers.get('Range')}")
        self.ledger.acknowledged["upload_chunk"] += 1
        upload.acked = end
        upload.location = answer.headers["Location"]
        return True

    async def finish(self, repository: Repository, upload: OpenUpload, what: str) -> bool:
        blob = upload.blob
        try:
            answer = await self.call(
                "PUT",
                self.here(upload.location).update_query(digest=blob.digest),
                headers={"Content-Type": OCTET_STREAM},
            )
        except Cut:
            self.ledger.uncertain[what] += 1
            raise
        if not self.expect(answer, 201, f"{what}: PUT closing the upload of {blob.digest}"):
            return False
        if answer.headers.get("Docker-Content-Digest") != blob.digest:
            self.ledger.wrong(f"{what}: digest {answer.headers.get('Docker-Content-Digest')}")
        self.ledger.acknowledged[what] += 1
        repository.acknowledge_blob(blob)
        return True

    def cuts(self, size: int) -> list[int]:
        pieces = self.rng.randint(2, 4)
        return sorted({*self.rng.sample(range(1, size), pieces - 1), size})

    async def push_chunked(self, repository: Repository, data: bytes) -> Blob | None:
        upload = await self.start_upload(repository, data)
        if upload is None:
            return None
        for end in self.cuts(len(data)):
            if not await self.patch(repository, upload, end):
                return None
        if not await self.finish(repository, upload, "blob_chunked"):
            return None
        return upload.blob

    async def open_upload(self, repository: Repository) -> None:
        """Send part of a blob in chunks and leave it: the next start goes on with it."""
        if len(repository.uploads) >= 2:
            return await self.read(repository)
        data = os.urandom(self.rng.randint(8 * 1024, 96 * 1024))
        upload = await self.start_upload(repository, data)
        if upload is None:
            return
        for end in self.cuts(len(data))[:-1]:
            if not await self.patch(repository, upload, end):
                return
        repository.uploads.append(upload)

    async def orphan(self, repository: Repository) -> None:
        """A blob no manifest will reference: collection takes it once older than the grace."""
        await self.push_blob(repository, self.layer())

    def layer(self) -> bytes:
        small, large = self.rng.randint(64, 4096), self.rng.randint(4097, 64 * 1024)
        return os.urandom(self.rng.choice((small, large)))

    # -- manifests and tags -----------------------------------------------------------------

    async def image(self, repository: Repository) -> None:
        """Fresh blobs, then a manifest naming them pushed by tag."""
        config = json.dumps({"os": "linux", "nonce": os.urandom(8).hex()}).encode()
        blobs = []
        for data in (config, *(self.layer() for _ in range(self.rng.randint(1, 3)))):
            blob = await self.push_blob(repository, data)
            if blob is None:
                return
            blobs.append(blob)
        payload = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": descriptor(blobs[0], OCI_CONFIG),
                "layers": [descriptor(b, OCI_LAYER) for b in blobs[1:]],
            }
        ).encode()
        manifest = Manifest(payload, tuple(b.digest for b in blobs), UNSURE)
        await self.put_manifest(repository, manifest, self.rng.choice(TAGS), "manifest_put")

    async def put_manifest(
        self, repository: Repository, manifest: Manifest, tag: str, what: str
    ) -> None:
        try:
            answer = await self.call(
                "PUT",
                self.url(f"/v2/{repository.name}/manifests/{tag}"),
                data=manifest.payload,
                headers={"Content-Type": OCI_MANIFEST},
            )
        except Cut:
            self.ledger.uncertain[what] += 1
            if manifest.state != PRESENT:
                manifest.state = UNSURE
            repository.manifests[manifest.digest] = manifest
            repository.tags.setdefault(tag, {None}).add(manifest.digest)
            raise
        if not self.expect(answer, 201, f"{what} {repository.name}:{tag} {manifest.digest}"):
            return
        if answer.headers.get("Docker-Content-Digest") != manifest.digest:
            self.ledger.wrong(f"{what}: digest {answer.headers.get('Docker-Content-Digest')}")
        self.ledger.acknowledged[what] += 1
        manifest.state = PRESENT
        repository.manifests[manifest.digest] = manifest
        repository.fresh_manifests.add(manifest.digest)
        repository.tags[tag] = {manifest.digest}

    async def tag_move(self, repository: Repository) -> None:
        """Point a tag at a manifest pushed before (present, so every blob of it is kept)."""
        present = repository.present()
        if not present:
            return await self.image(repository)
        manifest = self.rng.choice(present)
        await self.put_manifest(repository, manifest, self.rng.choice(TAGS), "tag_move")

    async def delete(self, repository: Repository) -> None:
        present = repository.present()
        if not present:
            return await self.image(repository)
        manifest = self.rng.choice(present)
        try:
            answer = await self.call(
                "DELETE", self.url(f"/v2/{repository.name}/manifests/{manifest.digest}")
            )
        except Cut:
            self.ledger.uncertain["manifest_delete"] += 1
            manifest.state = UNSURE
            for possible in repository.tags.values():
                if manifest.digest in possible:
                    possible.add(None)
            raise
        if not self.expect(answer, 202, f"DELETE {repository.name}@{manifest.digest}"):
            return
        self.ledger.acknowledged["manifest_delete"] += 1
        manifest.state = ABSENT
        for possible in repository.tags.values():
            if manifest.digest in possible:
                possible.discard(manifest.digest)
                possible.add(None)

    async def read(self, repository: Repository) -> None:
        """Read back a tag the ledger is sure of, or a blob a present manifest references."""
        tags = {t: d for t, d in repository.sure_tags().items() if d is not None}
        referenced = sorted(repository.referenced())
        if tags and (not referenced or self.rng.random() < 0.5):
            tag = self.rng.choice(sorted(tags))
            answer = await self.read_manifest(repository, tag)
            if self.expect(answer, 200, f"GET {repository.name}:{tag}"):
                check_manifest(self.ledger, answer, repository.manifests[tags[tag]], tag)
        elif referenced:
            blob = repository.blobs[self.rng.choice(referenced)]
            answer = await self.call("GET", self.url(f"/v2/{repository.name}/blobs/{blob.digest}"))
            if self.expect(answer, 200, f"GET blob {blob.digest}") and answer.body != blob.data:
                self.ledger.wrong(f"GET blob {blob.digest}: {len(answer.body)} other bytes")
        self.ledger.acknowledged["read"] += 1

    async def read_manifest(self, repository: Repository, reference: str) -> Answer:
        return await self.call(
            "GET",
            self.url(f"/v2/{repository.name}/manifests/{reference}"),
            headers={"Accept": OCI_MANIFEST},
        )


def descriptor(blob: Blob, media_type: str) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": blob.digest, "size": len(blob.data)}


def check_manifest(ledger: Ledger, answer: Answer, manifest: Manifest, reference: str) -> None:
    if answer.headers.get("Docker-Content-Digest") != manifest.digest:
        ledger.wrong(f"GET {reference}: digest {answer.headers.get('Docker-Content-Digest')}")
    elif answer.body != manifest.payload:
        ledger.wrong(f"GET {reference}: other bytes than {manifest.digest}")


# -- storage, as the campaign looks at it directly ------------------------------------------


class Storage(Protocol):
    name: str

    def section(self) -> dict[str, Any]:
        """The config document's ``storage`` driver section, and ``redis`` when it has one."""

    def blob_files(self) -> dict[str, tuple[str, object]]:
        """Every blob file (``data``, or set aside by a collection): key -> (digest, version)."""

    def content(self, key: str) -> bytes: ...

    def uploads(self) -> list[str]:
        """Every upload folder (or key below one, or multipart upload) in storage."""


class Filesystem:
    name = "filesystem"

    def __init__(self, root: Path) -> None:
        self.root = root

    def section(self) -> dict[str, Any]:
        return {"storage": {"filesystem": {"rootdirectory": str(self.root)}}}

    def blob_files(self) -> dict[str, tuple[str, object]]:
        found: dict[str, tuple[str, object]] = {}
        blobs = self.root / "docker/registry/v2/blobs"
        for directory, _, files in os.walk(blobs):
            for name in files:
                path = os.path.join(directory, name)
                if (match := BLOB_FILE.search(path)) is not None:
                    info = os.stat(path)
                    found[path] = ("sha256:" + match[1], (info.st_size, info.st_mtime_ns))
        return found

    def content(self, key: str) -> bytes:
        return Path(key).read_bytes()

    def uploads(self) -> list[str]:
        return [str(p) for p in self.root.glob("docker/registry/v2/repositories/**/_uploads/*")]


class S3:
    name = "s3"

    def __init__(self, server: SeaweedS3, redis: RedisServer, root: str) -> None:
        self.server = server
        self.redis = redis
        self.prefix = root.strip("/") + "/docker/registry/v2/"
        self.parameters = server.parameters(rootdirectory=root)
        self.client = server.client()

    def section(self) -> dict[str, Any]:
        return {
            "storage": {
                "s3": self.parameters,
                "redirect": {"disable": True},
                "cache": {"blobdescriptor": "redis"},
            },
            "redis": {"addr": f"{self.redis.host}:{self.redis.port}"},
        }

    def keys(self, below: str) -> Iterator[dict[str, Any]]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.server.bucket, Prefix=self.prefix + below
        )
        for page in pages:
            yield from page.get("Contents", [])

    def blob_files(self) -> dict[str, tuple[str, object]]:
        return {
            obj["Key"]: ("sha256:" + match[1], obj["ETag"])
            for obj in self.keys("blobs/")
            if (match := BLOB_FILE.search(obj["Key"])) is not None
        }

    def content(self, key: str) -> bytes:
        body = self.client.get_object(Bucket=self.server.bucket, Key=key)["Body"]
        try:
            return bytes(body.read())
        finally:
            body.close()

    def uploads(self) -> list[str]:
        keys = [obj["Key"] for obj in self.keys("repositories/") if "/_uploads/" in obj["Key"]]
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.server.bucket, Prefix=self.prefix
        )
        multipart = [f"multipart {u['Key']}" for page in pages for u in page.get("Uploads", [])]
        return keys + multipart


# -- the registry, killed and started again ---------------------------------------------------


def config_document(storage: Storage, *, purge_age: float) -> dict[str, Any]:
    document: dict[str, Any] = {
        "version": "0.1",
        # Info, for the collection's lines; no access log, which would be most of it.
        "log": {"level": "info", "accesslog": {"disabled": True}},
        # Upload URLs signed alike by every start: an upload goes on after a restart.
        "http": {"secret": "crash-campaign-secret"},
        **storage.section(),
    }
    document["storage"].update(
        {
            "delete": {"enabled": True},
            "maintenance": {
                "uploadpurging": {
                    "enabled": True,
                    "age": f"{purge_age}s",
                    "interval": f"{min(purge_age, 5.0)}s",
                },
                "gc": {"enabled": True, "interval": "1s", "graceperiod": f"{GRACE}s"},
            },
        }
    )
    return document


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (a zombie runs no more)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


class Registry:
    """``cargohold serve --workers 2`` on one config: started, timed, killed."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.base = URL()
        #: Seconds from each spawn to its first answer to ``GET /v2/``.
        self.starts: list[float] = []

    async def start(self, session: aiohttp.ClientSession) -> URL:
        port = free_port()
        self.base = URL(f"http://127.0.0.1:{port}")
        with open(self.log, "ab") as out:
            spawned = time.monotonic()
            self.process = subprocess.Popen(
                cargohold_argv("serve", str(self.config), "--workers", "2"),
                env={**os.environ, "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        version = self.base.with_path("/v2/")
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"cargohold exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() - spawned > START_TIMEOUT:
                pytest.fail(f"nothing answered {version} in {START_TIMEOUT} s:\n{self.tail()}")
            try:
                async with session.get(version, timeout=aiohttp.ClientTimeout(total=2)) as reply:
                    if reply.status == 200:
                        break
            except (TimeoutError, aiohttp.ClientConnectionError):
                pass
            await asyncio.sleep(0.005)
        self.starts.append(time.monotonic() - spawned)
        return self.base

    async def kill(self) -> None:
        """SIGKILL to the supervisor and every worker; back once none of them runs."""
        process = self.process
        if process is None:
            return
        self.process = None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await until(
            lambda: process.poll() is not None and not group_alive(process.pid),
            what=f"process group {process.pid} outlived SIGKILL",
        )

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


# -- the checks after a start ----------------------------------------------------------------


class Checks:
    """What a start must show of the ledger, the storage and the uploads left open."""

    def __init__(self, ledger: Ledger, storage: Storage) -> None:
        self.ledger = ledger
        self.storage = storage
        #: Blob files already hashed, with the version hashed.
        self.hashed: dict[str, object] = {}

    async def settle(self, client: Client, repository: Repository) -> None:
        """Find out what the cut requests did: each unsure manifest, then each unsure tag."""
        for manifest in repository.manifests.values():
            if manifest.state != UNSURE:
                continue
            answer = await client.read_manifest(repository, manifest.digest)
            if answer.status == 200:
                check_manifest(self.ledger, answer, manifest, manifest.digest)
                manifest.state = PRESENT
                repository.fresh_manifests.add(manifest.digest)
            elif client.expect(answer, 404, f"GET unsure {repository.name}@{manifest.digest}"):
                manifest.state = ABSENT
            self.ledger.checked["unsure_settled"] += 1
        for tag, possible in repository.tags.items():
            if len(possible) == 1:
                continue
            answer = await client.read_manifest(repository, tag)
            found = answer.headers.get("Docker-Content-Digest") if answer.status == 200 else None
            if answer.status not in (200, 404) or found not in possible:
                self.ledger.wrong(f"unsure tag {repository.name}:{tag}: {answer.status} {found}")
            elif found is not None and repository.manifests[found].state != PRESENT:
                self.ledger.wrong(f"tag {repository.name}:{tag} names {found}, which is absent")
            repository.tags[tag] = {found}
            self.ledger.checked["unsure_settled"] += 1

    async def resume(self, client: Client, repository: Repository) -> None:
        """Go on with each upload left open where the acknowledged chunks end, or a little on."""
        uploads, repository.uploads = repository.uploads, []
        for upload in uploads:
            answer = await client.call("GET", client.here(upload.location))
            if answer.status == 404 and time.time() - upload.blob.since > GRACE - MARGIN:
                continue  # purged: older than the purge age
            if not client.expect(answer, 204, f"GET upload open with {upload.acked} bytes"):
                continue
            offset = int(answer.headers["Range"].partition("-")[2]) + 1
            if not upload.acked <= offset <= upload.sent:
                self.ledger.wrong(f"upload resumed at {offset}: {upload.acked} acknowledged")
                continue
            upload.location = answer.headers["Location"]
            upload.acked = offset
            size = len(upload.blob.data)
            if offset < size and not await client.patch(repository, upload, size):
                continue
            if await client.finish(repository, upload, "upload_resumed"):
                self.ledger.checked["uploads_resumed"] += 1

    async def registry(self, client: Client, repository: Repository, everything: bool) -> None:
        """Tags, manifests and blobs as the ledger has them (new ones and a sample, or all)."""
        rng = self.ledger.rng
        for tag, digest in repository.sure_tags().items():
            answer = await client.read_manifest(repository, tag)
            if digest is None:
                client.expect(answer, 404, f"GET deleted tag {repository.name}:{tag}")
            elif client.expect(answer, 200, f"GET {repository.name}:{tag}"):
                check_manifest(self.ledger, answer, repository.manifests[digest], tag)
            self.ledger.checked["tags"] += 1
        manifests = self.pick(repository.manifests, repository.fresh_manifests, everything, rng)
        for manifest in manifests:
            answer = await client.read_manifest(repository, manifest.digest)
            if manifest.state == ABSENT:
                client.expect(answer, 404, f"GET deleted {repository.name}@{manifest.digest}")
            elif client.expect(answer, 200, f"GET {repository.name}@{manifest.digest}"):
                check_manifest(self.ledger, answer, manifest, manifest.digest)
            self.ledger.checked["manifests"] += 1
        referenced = repository.referenced()
        for blob in self.pick(repository.blobs, repository.fresh_blobs, everything, rng):
            url = client.url(f"/v2/{repository.name}/blobs/{blob.digest}")
            answer = await client.call("GET", url)
            kept = blob.digest in referenced or time.time() - blob.since < GRACE - MARGIN
            if answer.status == 200:
                if answer.body != blob.data:
                    self.ledger.wrong(f"GET blob {blob.digest}: {len(answer.body)} other bytes")
                self.ledger.checked["blobs_served"] += 1
            elif answer.status == 404 and not kept:
                self.ledger.checked["blobs_collected"] += 1
            else:
                why = "referenced" if blob.digest in referenced else "young"
                self.ledger.wrong(f"GET {why} blob {blob.digest}: {answer.status}")
        repository.fresh_blobs.clear()
        repository.fresh_manifests.clear()

    @staticmethod
    def pick(
        table: dict[str, Any], fresh: set[str], everything: bool, rng: random.Random
    ) -> list[Any]:
        if everything:
            return list(table.values())
        older = sorted(set(table) - fresh)
        chosen = sorted(fresh) + rng.sample(older, min(SAMPLE, len(older)))
        return [table[key] for key in chosen]

    async def files(self) -> None:
        """Every blob file in storage not hashed before (or changed since) hashes to its digest."""
        listed = await asyncio.to_thread(self.storage.blob_files)
        for key, (digest, version) in listed.items():
            if self.hashed.get(key) == version:
                continue
            content = await asyncio.to_thread(self.storage.content, key)
            if sha256(content) != digest:
                self.ledger.wrong(f"blob file {key}: {len(content)} bytes of {sha256(content)}")
            self.hashed[key] = version
            self.ledger.checked["blob_files_hashed"] += 1
        self.ledger.checked["blob_files_last"] = len(listed)


# -- the campaign ------------------------------------------------------------------------------


@dataclass
class Backend:
    storage: Storage
    directory: Path


@pytest.fixture(params=["filesystem", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "filesystem":
        yield Backend(Filesystem(tmp_path / "root"), tmp_path)
        return
    seaweedfs: SeaweedS3 = request.getfixturevalue("seaweedfs")
    redis: RedisServer = request.getfixturevalue("redis_db")
    storage = S3(seaweedfs, redis, request.getfixturevalue("s3_parameters")["rootdirectory"])
    yield Backend(storage, tmp_path)
    storage.client.close()


@dataclass
class Campaign:
    backend: Backend
    kills: int
    run_for: tuple[float, float] = RUN
    seed: int = field(default_factory=lambda: random.randrange(1 << 32))

    def __post_init__(self) -> None:
        self.ledger = Ledger(self.seed)
        self.checks = Checks(self.ledger, self.backend.storage)
        self.log = self.backend.directory / "cargohold.log"
        self.figures: dict[str, Any] = {}

    def write_config(self, name: str, purge_age: float) -> Path:
        path = self.backend.directory / name
        document = config_document(self.backend.storage, purge_age=purge_age)
        path.write_text(yaml.safe_dump(document))
        return path

    async def run(self) -> None:
        writing = Registry(self.write_config("config.yml", GRACE), self.log)
        started = time.monotonic()
        for kill in range(1, self.kills + 1):
            # A session per start: no connection to a killed server is ever reused.
            async with session() as http:
                base = await writing.start(http)
                await self.check(Client(http, base, self.ledger), everything=False)
                await self.round(Client(http, base, self.ledger), writing)
            await self.checks.files()
            self.fail_on_violations()
            if kill % PROGRESS == 0:
                self.progress(kill, writing.starts, time.monotonic() - started)
        left = await asyncio.to_thread(self.backend.storage.uploads)
        # The last start purges what the kills left: nothing may stay.
        purging = Registry(self.write_config("purging.yml", PURGE_AGE), self.log)
        async with session() as http:
            base = await purging.start(http)
            await self.check(Client(http, base, self.ledger), everything=True, resume=False)
            stranded = await self.purged()
            await purging.kill()
        await self.checks.files()
        starts = writing.starts + purging.starts
        self.figures = self.report(starts, time.monotonic() - started, left, stranded)
        print(f"\ncrash campaign figures: {json.dumps(self.figures)}")
        self.fail_on_violations()
        assert stranded == [], f"uploads left after purging: {stranded[:10]}"
        logged = self.log.read_text(errors="replace")
        assert "Traceback" not in logged, logged[logged.index("Traceback") :][:3000]
        assert "garbage collection failed" not in logged, self.figures

    async def round(self, client: Client, registry: Registry) -> None:
        """Clients write until a random moment; then the kill."""
        clients = [Client(client.session, client.base, self.ledger) for _ in range(CLIENTS)]
        writers = [
            asyncio.ensure_future(c.run(r))
            for c, r in zip(clients, self.ledger.repositories, strict=True)
        ]
        await asyncio.sleep(self.ledger.rng.uniform(*self.run_for))
        for each in clients:
            each.killing = True
        await registry.kill()
        await asyncio.gather(*writers)

    async def check(self, client: Client, *, everything: bool, resume: bool = True) -> None:
        for repository in self.ledger.repositories:
            await self.checks.settle(client, repository)
            if resume:
                await self.checks.resume(client, repository)
            else:
                repository.uploads.clear()
            await self.checks.registry(client, repository, everything)

    async def purged(self) -> list[str]:
        """What upload purging left in storage, once it has had ``PURGE_WITHIN`` s."""
        deadline = time.monotonic() + PURGE_WITHIN
        while left := await asyncio.to_thread(self.backend.storage.uploads):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        return left

    def progress(self, kills: int, starts: list[float], seconds: float) -> None:
        """A line of figures so far: a campaign cut short still tells how far it went."""
        figures = {
            "storage": self.backend.storage.name,
            "kills": kills,
            "seconds": round(seconds),
            "acknowledged": sum(self.ledger.acknowledged.values()),
            "uncertain": sum(self.ledger.uncertain.values()),
            "start_p50": round(statistics.median(starts), 3),
            "start_max": round(max(starts), 3),
        }
        print(f"crash campaign progress: {json.dumps(figures)}", flush=True)

    def fail_on_violations(self) -> None:
        violations = self.ledger.violations
        assert not violations, (
            f"seed {self.seed}:\n"
            + "\n".join(violations[:30])
            + "\n"
            + (self.log.read_text(errors="replace")[-3000:])
        )

    def report(
        self, starts: list[float], seconds: float, left: list[str], stranded: list[str]
    ) -> dict[str, Any]:
        ordered = sorted(starts)
        logged = self.log.read_text(errors="replace")
        passes = re.findall(r"garbage collection: deleted (\d+) manifests and (\d+) blobs", logged)
        return {
            "storage": self.backend.storage.name,
            "seed": self.seed,
            "kills": self.kills,
            "seconds": round(seconds, 1),
            "acknowledged": dict(sorted(self.ledger.acknowledged.items())),
            "uncertain": dict(sorted(self.ledger.uncertain.items())),
            "checked": dict(sorted(self.ledger.checked.items())),
            "start_seconds": {
                "n": len(ordered),
                "p50": round(statistics.median(ordered), 3),
                "p99": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
                "max": round(ordered[-1], 3),
                f"over_{START_LIMIT:g}s": sum(s > START_LIMIT for s in ordered),
            },
            "gc_passes": len(passes),
            "gc_deleted_blobs": sum(int(blobs) for _, blobs in passes),
            "uploads_left_by_kills": len(left),
            "uploads_after_purge": len(stranded),
        }


@contextlib.asynccontextmanager
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The clients' connections: a request that hangs a minute is a failure, not a cut."""
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as http:
        yield http


@pytest.mark.slow
async def test_a_few_kills(backend: Backend) -> None:
    """The campaign's code, run briefly: a few kills on each storage."""
    campaign = Campaign(backend, QUICK_KILLS, QUICK_RUN)
    await campaign.run()
    assert campaign.ledger.acknowledged["blob_monolithic"] > 0, campaign.figures
    assert campaign.ledger.checked["blob_files_hashed"] > 0, campaign.figures
    # Starts are timed, not held to START_LIMIT here: make test shares the machine.
    assert campaign.figures["start_seconds"]["n"] == QUICK_KILLS + 1


@pytest.mark.campaign
async def test_crash_campaign(backend: Backend) -> None:
    """``CRASH_KILLS`` kills; every start answers within ``START_LIMIT``."""
    campaign = Campaign(backend, KILLS)
    await campaign.run()
    assert campaign.ledger.acknowledged["manifest_put"] > 0, campaign.figures
    starts = campaign.figures["start_seconds"]
    assert starts[f"over_{START_LIMIT:g}s"] == 0, starts
