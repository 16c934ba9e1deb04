"""A disk that fills up: pushes that do not fit are refused, and nothing else suffers.

Filesystem storage on a small tmpfs the test mounts (the tests run as root).
A write that meets a full disk answers ``503 UNAVAILABLE`` naming the cause,
with ``Retry-After``; nothing of it becomes visible; what was stored before
still reads back to its digest; pulls go on; and once space is freed, pushes
work again without a restart. The cause is logged once per minute, not once
per request.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from cargohold.testing import serve
from cargohold.testing.server import Registry

MiB = 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the tests run as root): {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """A file taking every byte left on ``disk``."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (64 * 1024, 1024, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                continue  # full for writes of this size: try smaller ones
    finally:
        os.close(fd)
    return filler


def absolute(registry: Registry, location: str) -> str:
    return location if location.startswith("http") else registry.url + location


def body(data: bytes) -> io.BytesIO:
    # A file-like body: aiohttp warns about large bytes, which it would write at once.
    return io.BytesIO(data)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def push_blob(
    session: aiohttp.ClientSession, registry: Registry, name: str, data: bytes
) -> tuple[int, dict[str, object], dict[str, str]]:
    """A monolithic push (POST, then PUT with the body): the last answer's status, body, headers."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with session.post(f"{registry.url}/v2/{name}/blobs/uploads/") as started:
        if started.status != 202:
            return started.status, await started.json(), dict(started.headers)
        location = started.headers["Location"]
    url = absolute(registry, location)
    async with session.put(url, params={"digest": digest}, data=body(data)) as done:
        answer = await done.json() if done.content_type == "application/json" else {}
        return done.status, answer, dict(done.headers)


async def put_manifest(
    session: aiohttp.ClientSession, registry: Registry, name: str, tag: str, payload: bytes
) -> int:
    headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    url = f"{registry.url}/v2/{name}/manifests/{tag}"
    async with session.put(url, data=payload, headers=headers) as reply:
        return reply.status


def stored_blobs(disk: Path) -> dict[str, str]:
    """Every blob file under the root: its digest as named, and the digest of its content."""
    found = {}
    for data in (disk / "root").glob("docker/registry/v2/blobs/sha256/*/*/data"):
        found["sha256:" + data.parent.name] = (
            "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()
        )
    return found


async def test_a_push_that_does_not_fit_is_refused_and_nothing_of_it_is_kept(
    small_disk: Path, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cargohold")
    async with serve(root=small_disk / "root") as registry:
        image = registry.push_image("team/app", "before")
        async with session.get(f"{registry.url}/v2/team/app/manifests/before") as reply:
            manifest = await reply.read()
        before = stored_blobs(small_disk)

        big = os.urandom(6 * MiB)  # more than the whole disk
        for _ in range(5):
            status, answer, headers = await push_blob(session, registry, "team/app", big)
            assert status == 503
            assert answer["errors"][0]["code"] == "UNAVAILABLE"  # type: ignore[index]
            assert "full" in answer["errors"][0]["message"]  # type: ignore[index]
            assert headers["Retry-After"] == "60"
        digest = "sha256:" + hashlib.sha256(big).hexdigest()
        async with session.head(f"{registry.url}/v2/team/app/blobs/{digest}") as reply:
            assert reply.status == 404
        # Nothing of the refused blob is anywhere, and everything else reads back to its digest.
        assert stored_blobs(small_disk) == before
        assert all(named == content for named, content in before.items())
        # Pulls go on.
        async with session.get(f"{registry.url}/v2/team/app/manifests/{image.digest}") as reply:
            assert reply.status == 200
            assert await reply.read() == manifest

    told = [r for r in caplog.records if "storage is full" in r.getMessage()]
    assert len(told) == 1  # five refusals, one line: the rest are counted in the next one


async def test_a_manifest_that_does_not_fit_leaves_no_tag_and_pushes_work_once_space_is_freed(
    small_disk: Path, session: aiohttp.ClientSession
) -> None:
    async with serve(root=small_disk / "root") as registry:
        registry.push_image("team/app", "before")
        async with session.get(f"{registry.url}/v2/team/app/manifests/before") as reply:
            payload = await reply.read()
        # The same content under a new annotation: a new manifest, its blobs all present.
        changed = payload.replace(
            b'"schemaVersion":2', b'"annotations":{"n":"1"},"schemaVersion":2'
        )
        assert changed != payload
        filler = fill(small_disk)

        assert await put_manifest(session, registry, "team/app", "after", changed) == 503
        digest = "sha256:" + hashlib.sha256(changed).hexdigest()
        async with session.get(f"{registry.url}/v2/team/app/manifests/{digest}") as reply:
            assert reply.status == 404
        async with session.get(f"{registry.url}/v2/team/app/tags/list") as reply:
            assert (await reply.json())["tags"] == ["before"]
        status, _, _ = await push_blob(session, registry, "team/app", os.urandom(256 * 1024))
        assert status == 503
        # Reads while full.
        async with session.get(f"{registry.url}/v2/team/app/manifests/before") as reply:
            assert reply.status == 200

        filler.unlink()  # an operator frees some space: no restart needed
        assert await put_manifest(session, registry, "team/app", "after", changed) == 201
        status, _, _ = await push_blob(session, registry, "team/app", os.urandom(256 * 1024))
        assert status == 201
        async with session.get(f"{registry.url}/v2/team/app/tags/list") as reply:
            assert (await reply.json())["tags"] == ["after", "before"]


async def test_a_chunk_that_does_not_fit_leaves_an_upload_that_finishes_from_where_it_says(
    small_disk: Path, session: aiohttp.ClientSession
) -> None:
    async with serve(root=small_disk / "root") as registry:
        async with session.post(f"{registry.url}/v2/team/app/blobs/uploads/") as started:
            location = absolute(registry, started.headers["Location"])
        first = os.urandom(512 * 1024)
        headers = {
            "Content-Range": f"0-{len(first) - 1}",
            "Content-Type": "application/octet-stream",
        }
        async with session.patch(location, data=body(first), headers=headers) as reply:
            assert reply.status == 202
            location = absolute(registry, reply.headers["Location"])
        too_much = os.urandom(6 * MiB)
        headers = {
            "Content-Range": f"{len(first)}-{len(first) + len(too_much) - 1}",
            "Content-Type": "application/octet-stream",
        }
        async with session.patch(location, data=body(too_much), headers=headers) as reply:
            assert reply.status == 503
        async with session.get(location) as reply:
            assert reply.status == 204
            end = int(reply.headers["Range"].split("-")[1]) + 1
            location = absolute(registry, reply.headers["Location"])
        # Some of the refused chunk may have been taken (whole writes), never a piece of one:
        # what the registry says it holds is exactly the start of what was sent, so the
        # upload finishes from there.
        assert end >= len(first)
        data = (first + too_much)[:end]
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        async with session.put(location, params={"digest": digest}) as reply:
            assert reply.status == 201
        async with session.get(f"{registry.url}/v2/team/app/blobs/{digest}") as reply:
            assert await reply.read() == data
