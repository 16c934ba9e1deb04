"""A stateful fuzzer of the HTTP API: random sequences of operations, checked against a model.

A hypothesis ``RuleBasedStateMachine`` drives a real registry (``cargohold.testing.serve``)
over plain HTTP/1.1 with random sequences of valid and invalid operations: uploads in
chunks, in and out of order, finished with the right digest or a wrong one, cancelled;
monolithic pushes; mounts from repositories that have the blob and from ones that do not;
image manifests, indexes and artifacts with a ``subject``, pushed by tag, by digest and by
digest with ``?tag=``, referencing blobs the repository has or lacks; tag moves, deletes of
tags, manifests and blobs; blob reads with ranges; tag lists, the catalog and referrers,
page by page; requests the specification refuses; and the same request sent twice at once
from two connections.

Each example works in repositories of its own (``<prefix>/a``, ``<prefix>/a/b``, ...) on a
server shared by every example, and keeps a model of what the registry must hold: per
repository, its blobs (digest to bytes), manifests (digest to bytes, media type, subject),
tags (tag to digest) and the uploads under way (bytes received so far). Every answer is
checked against the model: its status, its error code, its headers, its bytes. No answer
may be a 5xx. When an example ends, everything the model holds is read back.

``make test`` runs a bounded number of examples on the filesystem with the fast path on.
``make fuzz`` runs a campaign of at least ``FUZZ_REQUESTS`` requests (100k by default) over
several configurations (filesystem and in-memory storage, fast path on and off, with and
without the descriptor cache), a fresh server per batch, and prints its figures.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import json
import os
import random
import re
import sys
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    precondition,
    rule,
    run_state_machine_as_test,
)

from cargohold.manifest import OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST
from cargohold.manifest.mediatypes import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST
from cargohold.testing import serve

#: The repositories of an example, below its prefix: nested names, and names whose
#: separators sort on either side of "/" ("-" and "." before it, "_" after).
REPOSITORIES = ("a", "a/b", "a-b", "a.b", "a_b", "b")
#: Tags an example uses: few, so that tags move; cases and punctuation that sort apart.
TAGS = ("latest", "v1", "v1.0", "v1-rc", "V1", "_x", "1", "t" * 128)
#: Tags the reference grammar refuses.
BAD_TAGS = (".hidden", "-dash", "t" * 129)
#: Algorithms content is addressed by; sha512 less often.
ALGORITHMS = ("sha256", "sha256", "sha256", "sha512")
SBOM = "application/vnd.example.sbom.v1+json"
SIGNATURE = "application/vnd.example.signature.v1+json"
ARTIFACT_TYPES = (SBOM, SIGNATURE)
CONFIG_TYPES = (OCI_CONFIG, OCI_EMPTY, "application/vnd.example.config.v1+json")
#: ``tags.maxtags`` and ``catalog.maxentries`` of the registry under test: small, so that
#: the caps they put on a page are met.
MAX_TAGS = 5
MAX_ENTRIES = 6
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
OCTET_STREAM = "application/octet-stream"
#: Above what the fast path and aiohttp read inline (256 KiB), and above one read of a
#: request body (1 MiB).
LARGE_SIZES = (256 * 1024 + 1, 1024 * 1024 + 4097)

#: Requests of a ``make fuzz`` campaign, at least.
FUZZ_REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "100000"))

_LINK = re.compile(r'<([^>]*)>;\s*rel="next"')


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


# -- the client ---------------------------------------------------------------------------


@dataclass
class Figures:
    """What a run did: requests by status, examples and steps."""

    requests: int = 0
    server_errors: int = 0
    examples: int = 0
    steps: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    #: Answers by method, endpoint and status: what the run actually exercised.
    answers: Counter[tuple[str, str, int]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, method: str, target: str, status: int) -> None:
        with self._lock:
            self.requests += 1
            self.statuses[status] += 1
            self.answers[method, endpoint_of(target), status] += 1
            if status >= 500:
                self.server_errors += 1


def endpoint_of(target: str) -> str:
    path = urlsplit(target).path
    if path == "/v2/_catalog":
        return "catalog"
    for part in ("/blobs/uploads", "/blobs/", "/manifests/", "/tags/list", "/referrers/"):
        if part in path:
            return part.strip("/")
    return path


@dataclass(frozen=True)
class Reply:
    method: str
    target: str
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def __str__(self) -> str:
        return f"{self.method} {self.target} -> {self.status} {self.body[:400]!r}"

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def json(self) -> Any:
        return json.loads(self.body)

    def local(self, name: str) -> str:
        """The path and query of the absolute URL in header ``name`` (Location, Link)."""
        value = self.header(name)
        assert value is not None, f"{self}: no {name}"
        return _path_and_query(value)


def _path_and_query(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


class Client:
    """HTTP/1.1 to the registry, one kept-alive connection per thread; counts every answer.

    Every answer must carry the API version header, and none may be a 5xx.
    """

    def __init__(self, host: str, figures: Figures) -> None:
        self._host = host
        self._figures = figures
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []

    def _connection(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = http.client.HTTPConnection(self._host, timeout=60)
            self._local.connection = connection
            self._connections.append(connection)
        return connection

    def request(
        self,
        method: str,
        target: str,
        body: bytes | Iterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        connection = self._connection()
        try:
            connection.request(method, target, body=body, headers=dict(headers or {}))
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            raise
        self._figures.count(method, target, response.status)
        reply = Reply(method, target, response.status, response.headers, data)
        assert reply.status < 500, f"a server error: {reply}"
        assert reply.header(API_VERSION[0]) == API_VERSION[1], f"{reply}: {reply.headers}"
        return reply

    def close(self) -> None:
        for connection in self._connections:
            connection.close()


def expect(reply: Reply, status: int) -> Reply:
    assert reply.status == status, f"expected {status}: {reply}"
    return reply


def expect_error(reply: Reply, status: int, code: str) -> None:
    """The specification's error reply: ``{"errors": [{"code", "message", ...}]}`` as JSON."""
    expect(reply, status)
    assert reply.header("Content-Type") == "application/json", str(reply)
    if reply.method == "HEAD":
        assert reply.body == b"", str(reply)
        return
    errors = reply.json()["errors"]
    assert [error["code"] for error in errors] == [code], str(reply)


# -- the model ----------------------------------------------------------------------------


@dataclass
class Upload:
    repository: str
    id: str
    #: The path and query of the upload's ``Location``: where the next request goes.
    path: str
    data: bytearray = field(default_factory=bytearray)

    @property
    def range(self) -> str:
        return f"0-{max(len(self.data) - 1, 0)}"


@dataclass(frozen=True)
class Manifest:
    payload: bytes
    media_type: str
    #: What must be in the repository for a push to be accepted: blobs and child manifests.
    blobs: frozenset[str] = frozenset()
    children: frozenset[str] = frozenset()
    subject: str | None = None
    #: What the referrers API lists it as (artifactType, else an image's config type).
    artifact_type: str | None = None
    annotations: tuple[tuple[str, str], ...] = ()

    @property
    def digest(self) -> str:
        return digest_of(self.payload)

    def descriptor(self) -> dict[str, Any]:
        """The manifest's descriptor as an index names it and the referrers API lists it."""
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.payload),
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out


@dataclass
class Repository:
    name: str
    #: Whether anything was ever written there: the catalog lists it, tags/list answers.
    exists: bool = False
    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def accepts(self, manifest: Manifest) -> bool:
        return manifest.blobs <= self.blobs.keys() and manifest.children <= self.manifests.keys()

    def store(self, manifest: Manifest, tags: Sequence[str]) -> None:
        self.exists = True
        self.manifests[manifest.digest] = manifest
        for tag in tags:
            self.tags[tag] = manifest.digest

    def delete_manifest(self, digest: str) -> None:
        del self.manifests[digest]
        self.tags = {tag: d for tag, d in self.tags.items() if d != digest}

    def referrers(self, subject: str, artifact_type: str | None) -> list[dict[str, Any]]:
        found = [
            m.descriptor()
            for m in self.manifests.values()
            if m.subject == subject and (artifact_type is None or m.artifact_type == artifact_type)
        ]
        return sorted(found, key=lambda d: str(d["digest"]))


def expected_page(
    items: Sequence[str], n: int | None, last: str | None
) -> tuple[list[str], str | None]:
    """One page of a listing: the sorted items after ``last`` (exclusive), at most ``n``, and
    the ``last`` of the next page's link (None: no link, when nothing more remains)."""
    after = [item for item in sorted(items) if last is None or item > last]
    if n is None or len(after) <= n:
        return after, None
    page = after[:n]
    return page, (page[-1] if page else None)


# -- strategies ---------------------------------------------------------------------------


@st.composite
def contents(draw: st.DrawFn) -> bytes:
    """Blob content: mostly a few bytes (empty too), now and then more than one read."""
    if draw(st.integers(0, 24)) == 0:
        size = draw(st.sampled_from(LARGE_SIZES))
        return random.Random(draw(st.integers(0, 3))).randbytes(size)
    return draw(st.binary(max_size=48))


def coin(data: st.DataObject, label: str) -> bool:
    return data.draw(st.booleans(), label=label)


def unknown_digest_of(salt: bytes) -> str:
    return digest_of(b"never pushed " + salt)


# -- the machine --------------------------------------------------------------------------

_EXAMPLES = iter(range(sys.maxsize))

_Rule = TypeVar("_Rule", bound=Callable[..., None])


def step(function: _Rule) -> _Rule:
    """A rule that counts in the run's figures (as ``steps``)."""

    @functools.wraps(function)
    def counted(machine: RegistryMachine, *args: Any, **kwargs: Any) -> None:
        machine.steps += 1
        function(machine, *args, **kwargs)

    return cast(_Rule, counted)


@dataclass
class Target:
    """The registry under test, shared by every example of a run."""

    client: Client
    figures: Figures
    pool: ThreadPoolExecutor

    def at_once(self, *calls: Callable[[], Reply]) -> list[Reply]:
        """Each call from a thread of its own (its own connection), released together."""
        barrier = threading.Barrier(len(calls))

        def run(call: Callable[[], Reply]) -> Reply:
            barrier.wait(timeout=30)
            return call()

        futures = [self.pool.submit(run, call) for call in calls]
        return [future.result() for future in futures]


class RegistryMachine(RuleBasedStateMachine):
    """Operations on one example's repositories, each checked against the model."""

    def __init__(self, target: Target) -> None:
        super().__init__()
        self.target = target
        self.http = target.client
        self.prefix = f"fz{next(_EXAMPLES):07d}"
        self.repos = {name: Repository(f"{self.prefix}/{name}") for name in REPOSITORIES}
        #: The repositories this example works in (the others stay unwritten).
        self.active: list[str] = []
        self.uploads: dict[str, Upload] = {}
        #: Uploads finished, cancelled or discarded: every request to them is a 404.
        self.gone: list[Upload] = []
        #: Content and manifests this example has made, pushed or not: what to refer to.
        self.known: list[bytes] = []
        self.made: dict[str, Manifest] = {}
        self.nonce = 0
        self.steps = 0
        target.figures.examples += 1

    @initialize(names=st.lists(st.sampled_from(REPOSITORIES), min_size=1, max_size=3, unique=True))
    def choose_repositories(self, names: list[str]) -> None:
        self.active = names

    # -- drawing ----------------------------------------------------------------------------
    # Choices are drawn from lists in an order a replay reproduces (insertion, or digests of
    # drawn content), never from upload ids or manifest digests, which differ from run to
    # run (random ids, a nonce in each manifest): hypothesis replays a failure to shrink it.

    def draw_repo(self, data: st.DataObject, label: str = "repository") -> Repository:
        return self.repos[data.draw(st.sampled_from(self.active), label=label)]

    def draw_content(self, data: st.DataObject, label: str = "content") -> bytes:
        """Content this example has seen (in some repository, or in none), or new content."""
        if self.known and coin(data, f"{label}: seen before"):
            return data.draw(st.sampled_from(self.known), label=label)
        content = data.draw(contents(), label=label)
        self.known.append(content)
        return content

    def draw_blob(self, data: st.DataObject, repo: Repository, label: str) -> tuple[str, bytes]:
        """A digest and its content: mostly one ``repo`` has, else any, by any algorithm."""
        if repo.blobs and coin(data, f"{label}: one it has"):
            digest = data.draw(st.sampled_from(sorted(repo.blobs)), label=label)
            return digest, repo.blobs[digest]
        content = self.draw_content(data, label)
        algorithm = data.draw(st.sampled_from(ALGORITHMS), label=f"{label}: algorithm")
        return digest_of(content, algorithm), content

    def draw_manifest(self, data: st.DataObject, label: str) -> Manifest:
        return self.made[data.draw(st.sampled_from(list(self.made)), label=label)]

    def draw_manifest_digest(self, data: st.DataObject, repo: Repository, label: str) -> str:
        """One of ``repo``'s manifests, one made elsewhere, or one never made."""
        where = data.draw(st.integers(0, 3), label=f"{label}: where")
        if repo.manifests and where < 2:
            return data.draw(st.sampled_from(list(repo.manifests)), label=label)
        if self.made and where < 3:
            return self.draw_manifest(data, label).digest
        return data.draw(st.builds(unknown_digest_of, st.binary(max_size=4)), label=label)

    def draw_upload(self, data: st.DataObject) -> Upload:
        return self.uploads[data.draw(st.sampled_from(list(self.uploads)), label="upload")]

    def fresh_nonce(self) -> str:
        self.nonce += 1
        return f"{self.prefix}-{self.nonce}"

    # -- building manifests -----------------------------------------------------------------

    def build_image(
        self, data: st.DataObject, repo: Repository, *, whole: bool = False
    ) -> Manifest:
        """An image manifest (OCI or Docker), or an OCI artifact with a ``subject``, of
        blobs mostly in ``repo`` (all of them with ``whole``: a push is accepted)."""

        def blob(label: str) -> tuple[str, int]:
            if whole:
                digest = data.draw(st.sampled_from(sorted(repo.blobs)), label=label)
                return digest, len(repo.blobs[digest])
            digest, content = self.draw_blob(data, repo, label)
            return digest, len(content)

        docker = data.draw(st.integers(0, 4), label="docker") == 0
        config = blob("config")
        layers = [blob(f"layer {i}") for i in range(data.draw(st.integers(0, 3), label="layers"))]
        media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        layer_type = DOCKER_LAYER if docker else OCI_LAYER_GZIP
        config_type = (
            DOCKER_CONFIG if docker else data.draw(st.sampled_from(CONFIG_TYPES), label="config")
        )
        body: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {"mediaType": config_type, "digest": config[0], "size": config[1]},
            "layers": [{"mediaType": layer_type, "digest": d, "size": n} for d, n in layers],
        }
        subject = artifact_type = None
        annotations: tuple[tuple[str, str], ...] = ()
        if docker:
            # Docker's formats have no subject, artifactType or manifest annotations.
            body["config"]["annotations"] = {"org.example.nonce": self.fresh_nonce()}
        else:
            if data.draw(st.booleans(), label="a subject"):
                subject = self.draw_manifest_digest(data, repo, "subject")
                body["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 100}
            if data.draw(st.booleans(), label="an artifactType"):
                artifact_type = data.draw(st.sampled_from(ARTIFACT_TYPES), label="artifactType")
                body["artifactType"] = artifact_type
            annotations = (("org.example.nonce", self.fresh_nonce()),)
            body["annotations"] = dict(annotations)
        return self.made_manifest(
            data,
            body,
            media_type,
            blobs=frozenset([config[0], *(d for d, _ in layers)]),
            subject=subject,
            # The referrers API's rule: artifactType, else the config's media type.
            artifact_type=artifact_type or config_type,
            annotations=annotations,
        )

    def build_index(self, data: st.DataObject, repo: Repository) -> Manifest:
        """An OCI image index of manifests made here, mostly ``repo``'s, maybe a referrer."""
        children: list[dict[str, Any]] = []
        for i in range(data.draw(st.integers(0, 3), label="children")):
            digest = self.draw_manifest_digest(data, repo, f"child {i}")
            made = self.made.get(digest)
            children.append(
                {
                    "mediaType": made.media_type if made is not None else OCI_MANIFEST,
                    "digest": digest,
                    "size": len(made.payload) if made is not None else 2,
                    "platform": {"architecture": f"arch{i}", "os": "linux"},
                }
            )
        body: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
        subject = artifact_type = None
        if data.draw(st.integers(0, 2), label="a subject") == 0:
            subject = self.draw_manifest_digest(data, repo, "subject")
            body["subject"] = {"mediaType": OCI_MANIFEST, "digest": subject, "size": 100}
            artifact_type = data.draw(st.sampled_from(ARTIFACT_TYPES), label="artifactType")
            body["artifactType"] = artifact_type
        annotations = (("org.example.nonce", self.fresh_nonce()),)
        body["annotations"] = dict(annotations)
        return self.made_manifest(
            data,
            body,
            OCI_INDEX,
            children=frozenset(str(child["digest"]) for child in children),
            subject=subject,
            artifact_type=artifact_type,  # an index has no config to stand in for it
            annotations=annotations,
        )

    def made_manifest(
        self, data: st.DataObject, body: dict[str, Any], media_type: str, **shape: Any
    ) -> Manifest:
        # Indented or not, with a newline or not: bytes a registry would change if it
        # re-serialised them. The digest is of these bytes.
        indent = data.draw(st.sampled_from([None, 2, 3]), label="indent")
        payload = json.dumps(body, indent=indent).encode() + (b"\n" if indent else b"")
        manifest = Manifest(payload, media_type, **shape)
        self.made[manifest.digest] = manifest
        return manifest

    # -- requests and their checks ----------------------------------------------------------

    def check_upload_reply(self, reply: Reply, status: int, upload: Upload) -> None:
        """POST, PATCH and GET of an upload say where it is and how much has arrived."""
        expect(reply, status)
        assert reply.local("Location") == upload.path, str(reply)
        assert reply.header("Docker-Upload-UUID") == upload.id, str(reply)
        assert reply.header("Range") == upload.range, f"{reply}: {upload.range} in the model"

    def new_upload(self, reply: Reply, repo: Repository) -> Upload:
        expect(reply, 202)
        path = reply.local("Location")
        prefix = f"/v2/{repo.name}/blobs/uploads/"
        assert path.startswith(prefix), str(reply)
        upload = Upload(repo.name, path[len(prefix) :].partition("?")[0], path)
        self.check_upload_reply(reply, 202, upload)
        self.uploads[upload.id] = upload
        return upload

    def end_upload(self, upload: Upload) -> None:
        del self.uploads[upload.id]
        self.gone.append(upload)

    def repository_of(self, upload: Upload) -> Repository:
        return self.repos[upload.repository.removeprefix(f"{self.prefix}/")]

    def check_blob_created(self, reply: Reply, repo: Repository, digest: str) -> None:
        expect(reply, 201)
        assert reply.local("Location") == f"/v2/{repo.name}/blobs/{digest}", str(reply)
        assert reply.header("Docker-Content-Digest") == digest, str(reply)

    def check_blob(self, repo: Repository, digest: str, method: str = "HEAD") -> None:
        """A GET or HEAD of a blob answers what the model holds: its bytes, or 404."""
        reply = self.http.request(method, f"/v2/{repo.name}/blobs/{digest}")
        content = repo.blobs.get(digest)
        if content is None:
            expect_error(reply, 404, "BLOB_UNKNOWN")
            return
        expect(reply, 200)
        assert reply.header("Docker-Content-Digest") == digest, str(reply)
        assert reply.header("Content-Length") == str(len(content)), str(reply)
        assert reply.header("Content-Type") == OCTET_STREAM, str(reply)
        assert reply.body == (b"" if method == "HEAD" else content), str(reply)

    def put_manifest(
        self, repo: Repository, manifest: Manifest, reference: str, tags: Sequence[str] = ()
    ) -> Reply:
        query = "&".join(f"tag={tag}" for tag in tags)
        return self.http.request(
            "PUT",
            f"/v2/{repo.name}/manifests/{reference}" + (f"?{query}" if query else ""),
            manifest.payload,
            {"Content-Type": manifest.media_type},
        )

    def check_manifest_created(self, reply: Reply, repo: Repository, manifest: Manifest) -> None:
        expect(reply, 201)
        digest = manifest.digest
        assert reply.local("Location") == f"/v2/{repo.name}/manifests/{digest}", str(reply)
        assert reply.header("Docker-Content-Digest") == digest, str(reply)
        # OCI-Subject tells the client the referrers API indexed it: no fallback tag needed.
        assert reply.header("OCI-Subject") == manifest.subject, str(reply)

    def check_manifest(self, repo: Repository, reference: str, method: str = "GET") -> None:
        """A GET or HEAD of a manifest by tag or digest answers what the model holds."""
        reply = self.http.request(method, f"/v2/{repo.name}/manifests/{reference}")
        digest = reference if ":" in reference else repo.tags.get(reference)
        manifest = repo.manifests.get(digest) if digest is not None else None
        if manifest is None:
            expect_error(reply, 404, "MANIFEST_UNKNOWN")
            return
        expect(reply, 200)
        assert reply.header("Docker-Content-Digest") == manifest.digest, str(reply)
        assert reply.header("Content-Type") == manifest.media_type, str(reply)
        assert reply.header("Content-Length") == str(len(manifest.payload)), str(reply)
        assert reply.body == (b"" if method == "HEAD" else manifest.payload), str(reply)

    def check_tags(self, repo: Repository, n: int | None = None, last: str | None = None) -> None:
        """One page of ``tags/list``: exactly the model's page, and a Link iff more remain."""
        query = "&".join(
            f"{key}={quote(value, safe='')}"
            for key, value in (("n", None if n is None else str(n)), ("last", last))
            if value is not None
        )
        target = f"/v2/{repo.name}/tags/list" + (f"?{query}" if query else "")
        reply = self.http.request("GET", target)
        if not repo.exists:
            expect_error(reply, 404, "NAME_UNKNOWN")
            return
        # tags.maxtags caps a page asked for with n; without n, every tag is listed.
        shown = None if n is None else min(n, MAX_TAGS)
        page, next_last = expected_page(list(repo.tags), shown, last)
        expect(reply, 200)
        assert reply.json() == {"name": repo.name, "tags": page}, f"{reply}: {page}"
        self.check_link(reply, f"/v2/{repo.name}/tags/list", shown, next_last)

    def check_link(self, reply: Reply, path: str, n: int | None, last: str | None) -> None:
        """A ``Link`` to the page after ``last`` of ``n`` (None: no Link at all)."""
        link = reply.header("Link")
        if last is None:
            assert link is None, str(reply)
            return
        assert link is not None, f"{reply}: no Link, and {last!r} is not the last"
        match = _LINK.fullmatch(link.strip())
        assert match is not None, link
        parts = urlsplit(match.group(1))
        assert parts.path == path, link
        assert parse_qs(parts.query) == {"n": [str(n)], "last": [last]}, link

    def walk(self, first: str) -> Iterator[Reply]:
        """The pages of a listing, following each ``Link`` as a client does."""
        target: str | None = first
        for _ in range(len(TAGS) + len(REPOSITORIES) + 2):  # more pages than there are names
            if target is None:
                return
            reply = expect(self.http.request("GET", target), 200)
            yield reply
            link = reply.header("Link")
            match = _LINK.fullmatch(link.strip()) if link is not None else None
            target = _path_and_query(match.group(1)) if match is not None else None
        raise AssertionError(f"{first}: the Links lead on and on")

    def catalog_names(self) -> list[str]:
        return sorted(repo.name for repo in self.repos.values() if repo.exists)

    def walk_catalog(self, n: int) -> None:
        """Following the catalog's Links from this example's prefix lists its repositories
        once, in order (later examples have not begun: its names come last)."""
        seen: list[str] = []
        for reply in self.walk(f"/v2/_catalog?n={n}&last={self.prefix}"):
            page = reply.json()["repositories"]
            assert len(page) <= min(n, MAX_ENTRIES), str(reply)
            seen += page
        assert seen == self.catalog_names(), f"{seen}"

    def audit(self, repo: Repository) -> None:
        """Everything the model holds of ``repo`` reads back as it holds it."""
        self.check_tags(repo)
        for tag in repo.tags:
            self.check_manifest(repo, tag, "HEAD")
        for digest in repo.manifests:
            self.check_manifest(repo, digest)
        for digest in repo.blobs:
            self.check_blob(repo, digest, "GET")
        for upload in self.uploads.values():
            if upload.repository == repo.name:
                self.check_upload_reply(self.http.request("GET", upload.path), 204, upload)

    # -- blobs and uploads ------------------------------------------------------------------

    @rule(data=st.data())
    @step
    def push_blob(self, data: st.DataObject) -> None:
        """A monolithic push: POST with the digest and the body (201), or POST then PUT; a
        digest that is not the content's is refused (400 DIGEST_INVALID) and stores nothing."""
        repo = self.draw_repo(data)
        content = self.draw_content(data)
        algorithm = data.draw(st.sampled_from(ALGORITHMS), label="algorithm")
        digest = digest_of(content, algorithm)
        how = data.draw(st.sampled_from(["post", "post then put", "wrong digest"]), label="how")
        uploads = f"/v2/{repo.name}/blobs/uploads/"
        repo.exists = True  # an upload is started before the digest is checked
        if how == "post":
            reply = self.http.request("POST", f"{uploads}?digest={digest}", content)
            self.check_blob_created(reply, repo, digest)
            repo.blobs[digest] = content
        elif how == "post then put":
            query = "" if algorithm == "sha256" else f"?digest-algorithm={algorithm}"
            upload = self.new_upload(self.http.request("POST", uploads + query), repo)
            reply = self.http.request("PUT", f"{upload.path}?digest={digest}", content)
            self.end_upload(upload)
            self.check_blob_created(reply, repo, digest)
            repo.blobs[digest] = content
        else:
            wrong = digest_of(content + b"!", algorithm)
            reply = self.http.request("POST", f"{uploads}?digest={wrong}", content)
            expect_error(reply, 400, "DIGEST_INVALID")
            self.check_blob(repo, wrong)

    @rule(data=st.data())
    @step
    def start_upload(self, data: st.DataObject) -> None:
        """POST starts an upload: 202, its Location and id, and Range 0-0."""
        repo = self.draw_repo(data)
        algorithm = data.draw(st.sampled_from(ALGORITHMS), label="algorithm")
        query = "" if algorithm == "sha256" else f"?digest-algorithm={algorithm}"
        repo.exists = True
        self.new_upload(self.http.request("POST", f"/v2/{repo.name}/blobs/uploads/{query}"), repo)

    @precondition(lambda self: self.uploads)
    @rule(data=st.data())
    @step
    def patch_upload(self, data: st.DataObject) -> None:
        """A chunk appended in order (with a Content-Range, without, or chunked) is
        acknowledged with the new Range (202); one out of order, or whose Content-Range and
        Content-Length disagree, is refused with 416 and the Range to resume from, leaving
        the upload as it was; a chunked body shorter or longer than its Content-Range
        discards the upload (400 BLOB_UPLOAD_INVALID)."""
        upload = self.draw_upload(data)
        chunk = data.draw(st.one_of(st.binary(max_size=40), contents()), label="chunk")
        how = data.draw(
            st.sampled_from(
                [
                    *("in order", "in order", "no range", "chunked"),
                    *("out of order", "wrong length", "body disagrees"),
                ]
            ),
            label="how",
        )
        offset = len(upload.data)
        if how in ("out of order", "wrong length", "body disagrees"):
            chunk = chunk or b"x"
        headers: dict[str, str] = {}
        body: bytes | Iterator[bytes] = chunk
        if how == "in order" and chunk:
            headers["Content-Range"] = f"{offset}-{offset + len(chunk) - 1}"
        elif how == "chunked":
            body = iter([chunk[: len(chunk) // 2], chunk[len(chunk) // 2 :]])
        elif how == "out of order":
            start = data.draw(st.integers(0, offset + 64).filter(lambda s: s != offset))
            headers["Content-Range"] = f"{start}-{start + len(chunk) - 1}"
        elif how in ("wrong length", "body disagrees"):
            length = data.draw(st.integers(1, len(chunk) + 64).filter(lambda n: n != len(chunk)))
            headers["Content-Range"] = f"{offset}-{offset + length - 1}"
            if how == "body disagrees":
                body = iter([chunk])  # chunked: only its end shows it is not what was announced
        reply = self.http.request("PATCH", upload.path, body, headers)
        if how in ("out of order", "wrong length"):
            expect_error(reply, 416, "RANGE_INVALID")
            assert reply.local("Location") == upload.path, str(reply)
            assert reply.header("Range") == upload.range, str(reply)
        elif how == "body disagrees":
            expect_error(reply, 400, "BLOB_UPLOAD_INVALID")
            self.end_upload(upload)
        else:
            upload.data += chunk
            self.check_upload_reply(reply, 202, upload)

    @precondition(lambda self: self.uploads)
    @rule(data=st.data())
    @step
    def finish_upload(self, data: st.DataObject) -> None:
        """PUT with the digest (and maybe a last chunk) makes the blob (201); a wrong digest
        is refused (400 DIGEST_INVALID) and ends the upload; no digest at all is refused
        before anything is read, and the upload goes on."""
        upload = self.draw_upload(data)
        repo = self.repository_of(upload)
        last = data.draw(st.binary(max_size=40), label="last chunk")
        content = bytes(upload.data) + last
        algorithm = data.draw(st.sampled_from(ALGORITHMS), label="algorithm")
        how = data.draw(st.sampled_from(["right", "right", "wrong", "none"]), label="digest")
        if how == "none":
            reply = self.http.request("PUT", upload.path, last)
            expect_error(reply, 400, "DIGEST_INVALID")
            self.check_upload_reply(self.http.request("GET", upload.path), 204, upload)
            return
        digest = digest_of(content if how == "right" else content + b"!", algorithm)
        reply = self.http.request("PUT", f"{upload.path}?digest={digest}", last)
        self.end_upload(upload)
        if how == "right":
            self.check_blob_created(reply, repo, digest)
            repo.blobs[digest] = content
            self.known.append(content)
        else:
            expect_error(reply, 400, "DIGEST_INVALID")
        self.check_blob(repo, digest)

    @precondition(lambda self: self.uploads)
    @rule(data=st.data())
    @step
    def cancel_upload(self, data: st.DataObject) -> None:
        """GET of an upload: 204 with how much has arrived. DELETE: 204, and it is gone."""
        upload = self.draw_upload(data)
        self.check_upload_reply(self.http.request("GET", upload.path), 204, upload)
        if data.draw(st.booleans(), label="cancel"):
            expect(self.http.request("DELETE", upload.path), 204)
            self.end_upload(upload)

    @rule(data=st.data())
    @step
    def mount(self, data: st.DataObject) -> None:
        """A mount from a repository that has the blob links it (201); from one that has
        not, it starts a plain upload instead (202)."""
        repo = self.draw_repo(data)
        source = self.draw_repo(data, "from")
        digest, content = self.draw_blob(data, source, "blob")
        reply = self.http.request(
            "POST", f"/v2/{repo.name}/blobs/uploads/?mount={digest}&from={source.name}"
        )
        repo.exists = True
        if digest in source.blobs:
            self.check_blob_created(reply, repo, digest)
            repo.blobs[digest] = content
        else:
            self.new_upload(reply, repo)

    @rule(data=st.data())
    @step
    def read_blob(self, data: st.DataObject) -> None:
        """GET or HEAD of a blob: its exact bytes, or 404 BLOB_UNKNOWN; a Range gets 206 and
        the bytes asked for, or 416 with ``Content-Range: bytes */size`` if unsatisfiable."""
        repo = self.draw_repo(data)
        digest, content = self.draw_blob(data, repo, "blob")
        method = data.draw(st.sampled_from(["GET", "HEAD"]), label="method")
        kind = data.draw(st.sampled_from(["whole", "span", "open", "suffix"]), label="range")
        if kind == "whole":
            self.check_blob(repo, digest, method)
            return
        size = len(content)
        start = data.draw(st.integers(0, size + 1), label="start")
        if kind == "span":
            end = data.draw(st.integers(start, start + size + 1), label="end")
            header = f"bytes={start}-{end}"
            wanted = None if start >= size else (start, min(end, size - 1))
        elif kind == "open":
            header = f"bytes={start}-"
            wanted = None if start >= size else (start, size - 1)
        else:
            header = f"bytes=-{start}"
            wanted = None if start == 0 or size == 0 else (max(size - start, 0), size - 1)
        target = f"/v2/{repo.name}/blobs/{digest}"
        reply = self.http.request(method, target, None, {"Range": header})
        if digest not in repo.blobs:
            expect_error(reply, 404, "BLOB_UNKNOWN")
        elif wanted is None:
            expect_error(reply, 416, "RANGE_INVALID")
            assert reply.header("Content-Range") == f"bytes */{size}", str(reply)
        else:
            first, final = wanted
            expect(reply, 206)
            assert reply.header("Content-Range") == f"bytes {first}-{final}/{size}", str(reply)
            assert reply.header("Content-Length") == str(final - first + 1), str(reply)
            expected = b"" if method == "HEAD" else content[first : final + 1]
            assert reply.body == expected, str(reply)

    @rule(data=st.data())
    @step
    def delete_blob(self, data: st.DataObject) -> None:
        """DELETE of a blob unlinks it from the repository (202) and leaves its manifests;
        a blob the repository has not got is 404 BLOB_UNKNOWN."""
        repo = self.draw_repo(data)
        digest, _ = self.draw_blob(data, repo, "blob")
        reply = self.http.request("DELETE", f"/v2/{repo.name}/blobs/{digest}")
        if repo.blobs.pop(digest, None) is None:
            expect_error(reply, 404, "BLOB_UNKNOWN")
        else:
            expect(reply, 202)
        self.check_blob(repo, digest)

    # -- manifests and tags -----------------------------------------------------------------

    @rule(data=st.data())
    @step
    def push_manifest(self, data: st.DataObject) -> None:
        """A manifest push by tag, by digest, or by digest with ``?tag=``: 201 when every blob
        and child it names is in the repository, else 400 MANIFEST_BLOB_UNKNOWN; a digest
        that is not the payload's is 400 DIGEST_INVALID, a malformed tag 400 TAG_INVALID.
        Pushing a manifest made earlier (here or elsewhere) by tag moves the tag."""
        repo = self.draw_repo(data)
        kind = data.draw(st.sampled_from(["made before", "image", "image", "index"]), label="kind")
        if kind == "made before" and self.made:
            manifest = self.draw_manifest(data, "manifest")
        elif kind == "index":
            manifest = self.build_index(data, repo)
        else:
            whole = bool(repo.blobs) and data.draw(st.booleans(), label="of blobs it has")
            manifest = self.build_image(data, repo, whole=whole)
        how = data.draw(
            st.sampled_from(["tag", "tag", "digest", "digest and tags", "wrong digest", "bad tag"]),
            label="by",
        )
        tags: list[str] = []
        if how == "tag":
            tags = [data.draw(st.sampled_from(TAGS), label="tag")]
            reply = self.put_manifest(repo, manifest, tags[0])
        elif how in ("digest", "digest and tags"):
            if how == "digest and tags":
                tags = data.draw(st.lists(st.sampled_from(TAGS), min_size=1, max_size=3))
            reply = self.put_manifest(repo, manifest, manifest.digest, tags)
        elif how == "wrong digest":
            reply = self.put_manifest(repo, manifest, digest_of(manifest.payload + b" "))
            expect_error(reply, 400, "DIGEST_INVALID")
            return
        else:
            bad = data.draw(st.sampled_from(BAD_TAGS), label="tag")
            expect_error(self.put_manifest(repo, manifest, bad), 400, "TAG_INVALID")
            return
        if repo.accepts(manifest):
            self.check_manifest_created(reply, repo, manifest)
            repo.store(manifest, tags)
        else:
            expect_error(reply, 400, "MANIFEST_BLOB_UNKNOWN")
        self.check_manifest(repo, manifest.digest, "HEAD")

    @rule(data=st.data())
    @step
    def get_manifest(self, data: st.DataObject) -> None:
        """GET or HEAD of a manifest by tag or digest: the bytes pushed, with their media type
        and digest, or 404 MANIFEST_UNKNOWN; ``If-None-Match`` with its digest is a 304."""
        repo = self.draw_repo(data)
        if data.draw(st.booleans(), label="by tag"):
            reference = data.draw(st.sampled_from(TAGS), label="tag")
        else:
            reference = self.draw_manifest_digest(data, repo, "digest")
        method = data.draw(st.sampled_from(["GET", "HEAD"]), label="method")
        digest = reference if ":" in reference else repo.tags.get(reference)
        if digest in repo.manifests and data.draw(st.booleans(), label="If-None-Match"):
            target = f"/v2/{repo.name}/manifests/{reference}"
            reply = self.http.request(method, target, None, {"If-None-Match": f'"{digest}"'})
            expect(reply, 304)
            assert reply.header("Docker-Content-Digest") == digest, str(reply)
            return
        self.check_manifest(repo, reference, method)

    @rule(data=st.data())
    @step
    def delete_tag(self, data: st.DataObject) -> None:
        """DELETE by tag removes the tag (202) and leaves the manifest; an unknown tag is
        404 MANIFEST_UNKNOWN."""
        repo = self.draw_repo(data)
        if repo.tags and coin(data, "one it has"):
            tag = data.draw(st.sampled_from(sorted(repo.tags)), label="tag")
        else:
            tag = data.draw(st.sampled_from(TAGS), label="tag")
        reply = self.http.request("DELETE", f"/v2/{repo.name}/manifests/{tag}")
        digest = repo.tags.pop(tag, None)
        if digest is None:
            expect_error(reply, 404, "MANIFEST_UNKNOWN")
        else:
            expect(reply, 202)
            self.check_manifest(repo, digest, "HEAD")
        self.check_manifest(repo, tag, "HEAD")

    @rule(data=st.data())
    @step
    def delete_manifest(self, data: st.DataObject) -> None:
        """DELETE by digest removes the manifest, every tag pointing at it and its entry among
        its subject's referrers (202); an unknown one is 404 MANIFEST_UNKNOWN."""
        repo = self.draw_repo(data)
        digest = self.draw_manifest_digest(data, repo, "digest")
        reply = self.http.request("DELETE", f"/v2/{repo.name}/manifests/{digest}")
        if digest in repo.manifests:
            expect(reply, 202)
            repo.delete_manifest(digest)
        else:
            expect_error(reply, 404, "MANIFEST_UNKNOWN")
        self.check_manifest(repo, digest, "HEAD")

    # -- listings ---------------------------------------------------------------------------

    @rule(
        data=st.data(),
        n=st.one_of(st.none(), st.integers(0, 7)),
        last=st.one_of(st.none(), st.sampled_from(TAGS), st.sampled_from(["", "m", "~"])),
    )
    @step
    def list_tags(self, data: st.DataObject, n: int | None, last: str | None) -> None:
        """One page of tags/list: sorted, after ``last``, at most ``n`` (capped by
        tags.maxtags), a Link to the next page when more remain; 404 NAME_UNKNOWN for a
        repository never written to. Following the Links lists every tag once, in order."""
        repo = self.draw_repo(data)
        if repo.tags and coin(data, "last: a tag it has"):
            last = data.draw(st.sampled_from(sorted(repo.tags)), label="last")
        if not repo.exists or not n or not data.draw(st.booleans(), label="walk"):
            self.check_tags(repo, n, last or None)
            return
        seen: list[str] = []
        for reply in self.walk(f"/v2/{repo.name}/tags/list?n={n}"):
            page = reply.json()["tags"]
            assert len(page) <= min(n, MAX_TAGS), str(reply)
            seen += page
        assert seen == sorted(repo.tags), f"{seen} != {sorted(repo.tags)}"

    @rule(data=st.data())
    @step
    def referrers(self, data: st.DataObject) -> None:
        """The referrers of a digest: an OCI index of the descriptors (artifactType and
        annotations included) of the manifests naming it as their subject; filtered by
        ``artifactType`` on request, which the reply then says with OCI-Filters-Applied."""
        repo = self.draw_repo(data)
        subjects = list(dict.fromkeys(m.subject for m in repo.manifests.values() if m.subject))
        if subjects and coin(data, "a subject with referrers"):
            subject = data.draw(st.sampled_from(subjects), label="subject")
        else:
            subject = self.draw_manifest_digest(data, repo, "subject")
        artifact_type = data.draw(
            st.one_of(st.none(), st.sampled_from([*ARTIFACT_TYPES, *CONFIG_TYPES])),
            label="artifactType",
        )
        query = "" if artifact_type is None else f"?artifactType={quote(artifact_type)}"
        reply = self.http.request("GET", f"/v2/{repo.name}/referrers/{subject}{query}")
        expect(reply, 200)
        assert reply.header("Content-Type") == OCI_INDEX, str(reply)
        applied = None if artifact_type is None else "artifactType"
        assert reply.header("OCI-Filters-Applied") == applied, str(reply)
        expected = repo.referrers(subject, artifact_type)
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": expected}
        assert reply.json() == body, f"{reply}: {expected}"

    @rule(data=st.data(), n=st.one_of(st.none(), st.integers(0, 7)))
    @step
    def catalog(self, data: st.DataObject, n: int | None) -> None:
        """One page of the catalog after ``last``, at most ``n`` capped by catalog.maxentries
        (without ``n``, that many), a Link when more remain; or every page, by the Links."""
        if n and data.draw(st.booleans(), label="walk"):
            self.walk_catalog(n)
            return
        last = self.prefix
        if data.draw(st.booleans(), label="last: a repository"):
            last = self.repos[data.draw(st.sampled_from(REPOSITORIES), label="last")].name
        target = f"/v2/_catalog?last={quote(last, safe='')}" + ("" if n is None else f"&n={n}")
        reply = expect(self.http.request("GET", target), 200)
        shown = MAX_ENTRIES if n is None else min(n, MAX_ENTRIES)
        page, next_last = expected_page(self.catalog_names(), shown, last)
        assert reply.json() == {"repositories": page}, f"{reply}: {page}"
        self.check_link(reply, "/v2/_catalog", shown, next_last)

    # -- requests the specification refuses -------------------------------------------------

    @rule(data=st.data())
    @step
    def refused(self, data: st.DataObject) -> None:
        """Malformed names, digests, tags, page sizes and manifests, unsupported methods and
        uploads that ended or never were get the specification's errors and change nothing."""
        repo = self.draw_repo(data)
        name = repo.name
        case = data.draw(
            st.sampled_from(
                [
                    *("upload", "upload", "name", "blob digest", "manifest digest"),
                    *("page size", "manifest json", "manifest tag", "method"),
                ]
            ),
            label="case",
        )
        method = data.draw(st.sampled_from(["GET", "HEAD"]), label="method")
        if case == "upload":
            self.unknown_upload(data)
        elif case == "name":
            target = data.draw(
                st.sampled_from(
                    [f"/v2/{self.prefix}/Upper/tags/list", f"/v2/{self.prefix}/a//b/tags/list"]
                ),
                label="target",
            )
            expect_error(self.http.request(method, target), 400, "NAME_INVALID")
        elif case == "blob digest":
            reply = self.http.request(method, f"/v2/{name}/blobs/sha256:{'z' * 64}")
            expect_error(reply, 400, "DIGEST_INVALID")
        elif case == "manifest digest":
            reply = self.http.request(method, f"/v2/{name}/manifests/sha256:abc")
            expect_error(reply, 400, "DIGEST_INVALID")
        elif case == "page size":
            n = data.draw(st.sampled_from(["-1", "x", "1.5", "9" * 12]), label="n")
            where = data.draw(st.sampled_from([f"/v2/{name}/tags/list", "/v2/_catalog"]))
            reply = self.http.request("GET", f"{where}?n={n}")
            expect_error(reply, 400, "PAGINATION_NUMBER_INVALID")
        elif case == "manifest json":
            target = f"/v2/{name}/manifests/latest"
            reply = self.http.request(
                "PUT", target, b'{"schemaVersion": 2,', {"Content-Type": OCI_MANIFEST}
            )
            expect_error(reply, 400, "MANIFEST_INVALID")
        elif case == "manifest tag":
            tag = data.draw(st.sampled_from(BAD_TAGS), label="tag")
            verb = data.draw(st.sampled_from(["GET", "HEAD", "DELETE"]), label="verb")
            expect_error(self.http.request(verb, f"/v2/{name}/manifests/{tag}"), 400, "TAG_INVALID")
        else:
            expect_error(self.http.request("POST", f"/v2/{name}/tags/list"), 405, "UNSUPPORTED")

    def unknown_upload(self, data: st.DataObject) -> None:
        """Every request to an upload that ended, or never was, is 404 BLOB_UPLOAD_UNKNOWN."""
        if self.gone and coin(data, "an upload that ended"):
            path = data.draw(st.sampled_from(self.gone), label="upload").path
        else:
            upload_id = data.draw(st.sampled_from([str(uuid.uuid4()), "not-an-upload"]))
            path = f"/v2/{self.draw_repo(data).name}/blobs/uploads/{upload_id}"
        method = data.draw(st.sampled_from(["GET", "PATCH", "PUT", "DELETE"]), label="method")
        if method == "PUT":
            path += f"?digest={digest_of(b'')}"
        body = b"" if method in ("PATCH", "PUT") else None
        expect_error(self.http.request(method, path, body), 404, "BLOB_UPLOAD_UNKNOWN")

    # -- the same request twice at once -----------------------------------------------------

    @rule(data=st.data())
    @step
    def twice_at_once(self, data: st.DataObject) -> None:
        """The same request sent twice at once, from two connections: the state afterwards
        is as if it had been sent once."""
        repo = self.draw_repo(data)
        kinds = ["blob"]
        if repo.blobs:
            kinds += ["manifest", "tag race", "delete blob"]
        if repo.manifests:
            kinds.append("delete manifest")
        if any(upload.repository == repo.name for upload in self.uploads.values()):
            kinds += ["finish upload", "chunk while finishing"]
        kind = data.draw(st.sampled_from(kinds), label="kind")
        {
            "blob": self.blob_twice,
            "manifest": self.manifest_twice,
            "tag race": self.tag_race,
            "delete blob": self.delete_blob_twice,
            "delete manifest": self.delete_manifest_twice,
            "finish upload": self.finish_twice,
            "chunk while finishing": self.chunk_while_finishing,
        }[kind](data, repo)

    def blob_twice(self, data: st.DataObject, repo: Repository) -> None:
        """The same blob pushed twice at once, or mounted twice at once: both 201."""
        source = self.draw_repo(data, "from")
        digest, content = self.draw_blob(data, source, "blob")
        repo.exists = True
        if digest in source.blobs and data.draw(st.booleans(), label="mount"):
            target = f"/v2/{repo.name}/blobs/uploads/?mount={digest}&from={source.name}"
            replies = self.target.at_once(*[lambda: self.http.request("POST", target)] * 2)
        else:
            target = f"/v2/{repo.name}/blobs/uploads/?digest={digest}"
            replies = self.target.at_once(*[lambda: self.http.request("POST", target, content)] * 2)
        for reply in replies:
            self.check_blob_created(reply, repo, digest)
        repo.blobs[digest] = content
        self.check_blob(repo, digest, "GET")

    def manifest_twice(self, data: st.DataObject, repo: Repository) -> None:
        """The same manifest pushed twice at once, by tag or digest: both 201."""
        manifest = self.build_image(data, repo, whole=True)
        tag = data.draw(st.sampled_from(TAGS), label="tag")
        reference = data.draw(st.sampled_from([tag, manifest.digest]), label="reference")
        replies = self.target.at_once(*[lambda: self.put_manifest(repo, manifest, reference)] * 2)
        for reply in replies:
            self.check_manifest_created(reply, repo, manifest)
        repo.store(manifest, [tag] if reference == tag else [])
        self.check_manifest(repo, reference)

    def tag_race(self, data: st.DataObject, repo: Repository) -> None:
        """Two manifests pushed to one tag at once: both 201, and the tag names one of them."""
        first = self.build_image(data, repo, whole=True)
        second = self.build_image(data, repo, whole=True)
        tag = data.draw(st.sampled_from(TAGS), label="tag")
        replies = self.target.at_once(
            lambda: self.put_manifest(repo, first, tag),
            lambda: self.put_manifest(repo, second, tag),
        )
        for reply, manifest in zip(replies, (first, second), strict=True):
            self.check_manifest_created(reply, repo, manifest)
        repo.store(first, [])
        repo.store(second, [])
        reply = expect(self.http.request("HEAD", f"/v2/{repo.name}/manifests/{tag}"), 200)
        assert reply.header("Docker-Content-Digest") in (first.digest, second.digest), str(reply)
        # The winner is chance: the tag goes to the first, so that what follows (and a replay
        # of it, when hypothesis shrinks a failure) does not depend on which won.
        self.check_manifest_created(self.put_manifest(repo, first, tag), repo, first)
        repo.tags[tag] = first.digest

    def delete_blob_twice(self, data: st.DataObject, repo: Repository) -> None:
        """The same blob deleted twice at once: one 202, one 404 BLOB_UNKNOWN."""
        digest = data.draw(st.sampled_from(sorted(repo.blobs)), label="digest")
        target = f"/v2/{repo.name}/blobs/{digest}"
        replies = self.target.at_once(*[lambda: self.http.request("DELETE", target)] * 2)
        self.one_done_one_unknown(replies, "BLOB_UNKNOWN")
        del repo.blobs[digest]
        self.check_blob(repo, digest)

    def delete_manifest_twice(self, data: st.DataObject, repo: Repository) -> None:
        """The same manifest deleted twice at once: one 202, one 404 MANIFEST_UNKNOWN."""
        digest = data.draw(st.sampled_from(list(repo.manifests)), label="digest")
        target = f"/v2/{repo.name}/manifests/{digest}"
        replies = self.target.at_once(*[lambda: self.http.request("DELETE", target)] * 2)
        self.one_done_one_unknown(replies, "MANIFEST_UNKNOWN")
        repo.delete_manifest(digest)
        self.check_manifest(repo, digest)

    def finish_twice(self, data: st.DataObject, repo: Repository) -> None:
        """An upload finished twice at once: one 201, one 404 BLOB_UPLOAD_UNKNOWN (the
        first ended it), and the blob is whole."""
        ours = [u.id for u in self.uploads.values() if u.repository == repo.name]
        upload = self.uploads[data.draw(st.sampled_from(ours), label="upload")]
        content = bytes(upload.data)
        digest = digest_of(content)
        target = f"{upload.path}?digest={digest}"
        replies = self.target.at_once(*[lambda: self.http.request("PUT", target, b"")] * 2)
        self.end_upload(upload)
        done, refused = sorted(replies, key=lambda reply: reply.status)
        self.check_blob_created(done, repo, digest)
        expect_error(refused, 404, "BLOB_UPLOAD_UNKNOWN")
        repo.blobs[digest] = content
        self.check_blob(repo, digest, "GET")

    def chunk_while_finishing(self, data: st.DataObject, repo: Repository) -> None:
        """A chunk sent while a PUT finishes the upload with the digest of what it holds:
        either the chunk came first (202, and the PUT's digest is wrong: 400 DIGEST_INVALID)
        or the PUT did (201, and the upload is gone: 404 BLOB_UPLOAD_UNKNOWN). Never both
        accepted, and never a blob that is not what its digest says."""
        ours = [u.id for u in self.uploads.values() if u.repository == repo.name]
        upload = self.uploads[data.draw(st.sampled_from(ours), label="upload")]
        chunk = data.draw(st.binary(min_size=1, max_size=40), label="chunk")
        content = bytes(upload.data)
        digest = digest_of(content)
        had = digest in repo.blobs
        patch, put = self.target.at_once(
            lambda: self.http.request("PATCH", upload.path, chunk),
            lambda: self.http.request("PUT", f"{upload.path}?digest={digest}", b""),
        )
        self.end_upload(upload)
        if patch.status == 202:
            expect_error(put, 400, "DIGEST_INVALID")
            self.check_blob(repo, digest, "GET")
            return
        expect_error(patch, 404, "BLOB_UPLOAD_UNKNOWN")
        self.check_blob_created(put, repo, digest)
        repo.blobs[digest] = content
        self.check_blob(repo, digest, "GET")
        if not had:
            # Which came first is chance: the blob goes again, so that the state afterwards
            # (and a replay, when hypothesis shrinks a failure) is the same either way.
            expect(self.http.request("DELETE", f"/v2/{repo.name}/blobs/{digest}"), 202)
            del repo.blobs[digest]

    @staticmethod
    def one_done_one_unknown(replies: Sequence[Reply], code: str) -> None:
        done, refused = sorted(replies, key=lambda reply: reply.status)
        expect(done, 202)
        expect_error(refused, 404, code)

    # -- every step, and the end ------------------------------------------------------------

    def teardown(self) -> None:
        self.target.figures.steps += self.steps
        if sys.exc_info()[0] is not None:
            return  # the step's failure is what to report, not what follows from it
        for name in self.active:
            self.audit(self.repos[name])
        self.walk_catalog(MAX_ENTRIES)


# -- running it ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """A configuration the machine runs against."""

    name: str
    storage: str  # "filesystem" or "inmemory"
    fast_path: bool = True
    cache: bool = True

    def config(self) -> dict[str, Any]:
        overlay: dict[str, Any] = {
            "tags": {"maxtags": MAX_TAGS},
            "catalog": {"maxentries": MAX_ENTRIES},
        }
        if self.cache:
            overlay["storage"] = {"cache": {"blobdescriptor": "inmemory"}}
        return overlay


SETUPS = (
    Setup("filesystem, fast path, cache", "filesystem"),
    Setup("in memory, fast path", "inmemory", cache=False),
    Setup("filesystem, aiohttp only", "filesystem", fast_path=False, cache=False),
    Setup("in memory, aiohttp only, cache", "inmemory", fast_path=False),
)


@contextmanager
def target_for(setup: Setup, root: Path, figures: Figures) -> Iterator[Target]:
    root.mkdir(parents=True, exist_ok=True)
    storage = root if setup.storage == "filesystem" else None
    with (
        serve(root=storage, fast_path=setup.fast_path, config=setup.config()) as registry,
        ThreadPoolExecutor(2, thread_name_prefix="fuzz") as pool,
    ):
        client = Client(registry.host, figures)
        try:
            yield Target(client, figures, pool)
        finally:
            client.close()


def run_machine(target: Target, examples: int, steps: int) -> None:
    def machine() -> RegistryMachine:
        return RegistryMachine(target)

    run_state_machine_as_test(
        # Any callable returning a machine will do (hypothesis' documentation); typed as a class.
        cast("type[RuleBasedStateMachine]", machine),
        settings=settings(
            max_examples=examples,
            stateful_step_count=steps,
            deadline=None,
            report_multiple_bugs=False,  # one, shrunk: shrinking replays over HTTP take time
            # Every step is a round trip to a server: slow by hypothesis' measure, on purpose;
            # and a few draws are filtered (a chunk's start other than the upload's offset).
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def summary(figures: Figures, seconds: float, failures: int) -> str:
    statuses = ", ".join(f"{status}: {count}" for status, count in sorted(figures.statuses.items()))
    return (
        f"stateful fuzz: {figures.requests} requests, {figures.examples} examples, "
        f"{figures.steps} steps in {seconds:.1f} s ({figures.requests / max(seconds, 1e-9):.0f} "
        f"requests/s); {figures.server_errors} x 5xx, {failures} disagreements with the model; "
        f"statuses {statuses}"
    )


def test_operations_agree_with_the_model(tmp_path: Path) -> None:
    """A bounded run for ``make test``: filesystem storage, fast path and descriptor cache."""
    figures = Figures()
    begun = time.perf_counter()
    with target_for(SETUPS[0], tmp_path / "root", figures) as target:
        run_machine(target, examples=50, steps=100)
    print(summary(figures, time.perf_counter() - begun, 0))
    for (method, endpoint, status), count in sorted(figures.answers.items()):
        print(f"  {method:6} {endpoint:14} {status}: {count}")
    assert figures.server_errors == 0


@pytest.mark.slow
@pytest.mark.campaign
def test_fuzz_campaign(tmp_path: Path) -> None:
    """``make fuzz``: batches of examples, each setup in turn on a fresh server, until at
    least ``FUZZ_REQUESTS`` requests have been answered; a batch that finds a disagreement
    reports it (hypothesis' minimal example) and the campaign goes on to the next."""
    figures = Figures()
    failures: list[str] = []
    begun = time.perf_counter()
    batch = 0
    while figures.requests < FUZZ_REQUESTS and len(failures) < 5:
        setup = SETUPS[batch % len(SETUPS)]
        with target_for(setup, tmp_path / f"batch{batch}", figures) as target:
            try:
                run_machine(target, examples=100, steps=100)
            except Exception:
                # Hypothesis' minimal example and the check it fails are in the traceback.
                failures.append(f"{setup.name}:\n{traceback.format_exc()}")
                print(failures[-1], flush=True)
        batch += 1
        progress = summary(figures, time.perf_counter() - begun, len(failures))
        print(f"batch {batch} ({setup.name}): {progress}", flush=True)
    print(summary(figures, time.perf_counter() - begun, len(failures)))
    assert not failures, "\n\n".join(failures)
    assert figures.server_errors == 0
    assert figures.requests >= FUZZ_REQUESTS
