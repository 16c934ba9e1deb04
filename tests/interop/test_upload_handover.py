"""An upload started by one registry is continued and finished by the other, on one root.

During a rolling migration, or in a fleet of both, a client's next request for
an upload may reach the other program. With the same storage and the same
``http.secret`` either one continues what the other started: cargohold
writes an open upload where Distribution does (``_uploads/<id>/data``, with
``startedat`` beside it), appends to it in place, and signs the ``_state`` of
its upload URLs as Distribution does. The file is never copied on the way:
its inode is the same from the first chunk to the last.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.distribution import distribution
from tests.support.http import location, request, with_query
from tests.support.servers import cargohold

SECRET = "shared between the two registries"
NAME = "handover/app"


@dataclass
class Pair:
    cargohold: str
    go: str
    root: Path


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("handover") / "root"
    root.mkdir()
    with ExitStack() as stack:
        ours = stack.enter_context(cargohold(root, env={"REGISTRY_HTTP_SECRET": SECRET}))
        go = stack.enter_context(distribution(root, secret=SECRET))
        yield Pair(ours, go, root)


def moved(url: str, to: str) -> str:
    """The same path and query (the ``_state`` included) on the other registry."""
    parts = urlsplit(url)
    return f"{to}{parts.path}?{parts.query}" if parts.query else f"{to}{parts.path}"


def data_file(root: Path, upload_url: str) -> Path:
    upload_id = urlsplit(upload_url).path.rstrip("/").rpartition("/")[2]
    return root / "docker/registry/v2/repositories" / NAME / "_uploads" / upload_id / "data"


def patch(url: str, chunk: bytes) -> str:
    reply = request("PATCH", url, body=chunk, headers={"Content-Type": "application/octet-stream"})
    assert reply.status == 202, reply.body
    return location(reply, url.split("/v2/")[0])


@pytest.mark.parametrize("first", ["go", "cargohold"])
def test_an_upload_changes_hands_halfway(pair: Pair, first: str) -> None:
    start, finish = (pair.go, pair.cargohold) if first == "go" else (pair.cargohold, pair.go)
    chunks = [os.urandom(300 * 1024 + 3), os.urandom(1024 * 1024), os.urandom(77)]
    blob = b"".join(chunks)
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()

    started = request("POST", f"{start}/v2/{NAME}/blobs/uploads/")
    assert started.status == 202
    url = location(started, start)
    url = patch(url, chunks[0])
    data = data_file(pair.root, url)
    assert data.read_bytes() == chunks[0], "the open upload is where Distribution keeps it"
    assert (data.parent / "startedat").is_file()
    inode = data.stat().st_ino

    url = patch(moved(url, finish), chunks[1])  # the other registry continues it
    assert data.stat().st_ino == inode, "continued in place: nothing was copied"
    url = patch(url, chunks[2])
    finished = request("PUT", with_query(url, f"digest={digest}"))
    assert finished.status == 201, finished.body
    assert not data.parent.exists(), "a finished upload's folder is removed"

    for server in (pair.cargohold, pair.go):
        pulled = request("GET", f"{server}/v2/{NAME}/blobs/{digest}")
        assert (pulled.status, pulled.body) == (200, blob)
