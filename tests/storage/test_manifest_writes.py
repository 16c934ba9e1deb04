"""How a manifest put writes: in crash-safe stages, concurrent within a stage on object
stores, one batch on a local disk; and what it reads first, at once where it can."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cargohold.descriptor import Descriptor
from cargohold.digest import Digest, digest_of
from cargohold.errors import ManifestBlobUnknown, PathNotFound
from cargohold.manifest import OCI_MANIFEST
from cargohold.storage.driver.base import StorageDriver
from cargohold.storage.driver.filesystem import FilesystemDriver
from cargohold.storage.driver.inmemory import InMemoryDriver
from cargohold.storage.paths import (
    BlobData,
    BlobTouched,
    LayerLink,
    ManifestRevisionLink,
    ReferrerDescriptor,
    TagCurrentLink,
    TagIndexLink,
    path_for,
)
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from tests.storage.images import image_manifest, subject_json

_T = TypeVar("_T")


class _RoundTrips(InMemoryDriver):
    """An in-memory driver whose every write takes a while, as a request to S3 does, and
    which notes what was written before each write began and which writes overlapped."""

    def __init__(self) -> None:
        super().__init__()
        self.done: list[str] = []
        self.before: dict[str, set[str]] = {}
        self.in_flight: set[str] = set()
        self.overlapped: set[frozenset[str]] = set()

    async def _put_content(self, path: str, content: bytes) -> None:
        self.before[path] = set(self.done)
        self.overlapped.update(frozenset({path, other}) for other in self.in_flight)
        self.in_flight.add(path)
        await asyncio.sleep(0.01)
        await super()._put_content(path, content)
        self.in_flight.discard(path)
        self.done.append(path)


async def test_writes_go_in_stages_each_after_what_it_names() -> None:
    driver = _RoundTrips()
    repo = StorageRegistry(driver).repository("a")
    subject = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST)
    payload = await image_manifest(repo, subject=subject_json(subject.payload))
    digest = digest_of(payload)
    driver.done.clear()

    await repo.manifests.put(payload, OCI_MANIFEST, ["v1", "v2"])

    data = path_for(BlobData(digest))
    revision = path_for(ManifestRevisionLink("a", digest))
    histories = [path_for(TagIndexLink("a", tag, digest)) for tag in ("v1", "v2")]
    currents = [path_for(TagCurrentLink("a", tag)) for tag in ("v1", "v2")]
    referrer = path_for(ReferrerDescriptor("a", subject.digest, digest))
    named = [revision, *histories, referrer]
    assert sorted(driver.done) == sorted([data, *named, *currents]), "every file once"
    for path in [*named, *currents]:
        assert data in driver.before[path], f"{path} written before the content"
    for path in currents:
        assert set(named) <= driver.before[path], f"{path} moved before what it needs"
    assert frozenset({revision, histories[0]}) in driver.overlapped, "one stage at once"
    assert frozenset({currents[0], currents[1]}) in driver.overlapped


async def test_content_already_stored_is_not_written_again() -> None:
    driver = _RoundTrips()
    repo = StorageRegistry(driver).repository("a")
    payload = await image_manifest(repo)
    stored = await repo.manifests.put(payload, OCI_MANIFEST)
    driver.done.clear()
    await repo.manifests.put(payload, OCI_MANIFEST, ["again"])
    revision = path_for(ManifestRevisionLink("a", stored.digest))
    history = path_for(TagIndexLink("a", "again", stored.digest))
    current = path_for(TagCurrentLink("a", "again"))
    assert sorted(driver.done) == sorted([revision, history, current]), "no content written"
    assert driver.done[-1] == current


class _Trips(Executor):
    """Counts the calls a driver makes on its threads."""

    def __init__(self) -> None:
        self.calls = 0
        self._threads = ThreadPoolExecutor(2)

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        self.calls += 1
        return self._threads.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._threads.shutdown(wait, cancel_futures=cancel_futures)


async def test_a_local_disk_writes_every_stage_in_one_trip_to_a_thread(tmp_path: Path) -> None:
    trips = _Trips()
    driver = FilesystemDriver(str(tmp_path))
    registry = StorageRegistry(driver, threads=trips)
    repo = registry.repository("a")
    payload = await image_manifest(repo)
    trips.calls = 0
    stored = await repo.manifests.put(payload, OCI_MANIFEST, ["v1", "v2"])
    assert trips.calls == 1, "one trip: the intent log's sync (or every file's and folder's fsync)"
    assert await repo.tags.get("v2") == stored.digest
    assert [p.name for p in tmp_path.rglob(".~*.tmp")] == [], "no temporary file left"
    await driver.close()
    trips.shutdown()


async def test_a_failed_batch_on_a_local_disk_leaves_no_file_of_a_later_stage(
    tmp_path: Path,
) -> None:
    driver = FilesystemDriver(str(tmp_path))
    await driver.put_content("/blocked", b"a file where a folder is needed")
    with pytest.raises(PathNotFound, match="a parent is a file"):
        await driver.put_stages([[("/first/data", b"x")], [("/blocked/link", b"y")]])
    assert not (tmp_path / "blocked").is_dir()
    assert [p.name for p in tmp_path.rglob(".~*.tmp")] == [], "no temporary file left"
    await driver.close()


def test_a_forked_worker_names_its_temporary_files_apart_from_its_parent() -> None:
    from cargohold.storage.driver.fileio import temp_name

    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first name, then gone without running anything of pytest's
        os.write(writing, temp_name("/a/link").encode())
        os._exit(0)
    os.close(writing)
    child = os.read(reading, 200).decode()
    os.close(reading)
    os.waitpid(pid, 0)
    ours = temp_name("/a/link")
    assert child.startswith("/a/.~link.")
    assert child[: -len(".tmp") - 1] != ours[: -len(".tmp") - 1], "a token of its own"


class _ObjectStore(InMemoryDriver):
    """An in-memory driver with no immediate reads, as an object store has none."""

    @property
    def immediate(self) -> None:
        return None


@pytest.mark.parametrize("collecting", [False, True])
@pytest.mark.parametrize("kind", ["filesystem", "object store"])
async def test_references_are_found_as_storage_has_them(
    tmp_path: Path, collecting: bool, kind: str
) -> None:
    """Read at once (a local disk), or link and blob at once (an object store), references
    are found as ``stat`` finds them, and finds due are written down first."""
    driver = FilesystemDriver(str(tmp_path)) if kind == "filesystem" else _ObjectStore()
    options = RegistryOptions(reuse_interval=3600.0 if collecting else None)
    repo = StorageRegistry(driver, options=options).repository("a")
    config, layer, dangling, elsewhere = [await repo.blobs.put(c) for c in _contents()]
    await driver.delete(path_for(BlobData(dangling.digest)).rpartition("/")[0])
    # A link naming other content: the blob is served as that content, as Distribution does.
    await driver.put_content(path_for(LayerLink("a", _missing())), str(elsewhere.digest).encode())

    def manifest(*layers: Descriptor | Digest) -> bytes:
        return _manifest(config, layers)

    ok = await repo.manifests.put(manifest(layer, _missing()), OCI_MANIFEST, ["ok"])
    assert await repo.tags.get("ok") == ok.digest
    for wrong in (dangling, _unlinked()):
        with pytest.raises(ManifestBlobUnknown) as caught:
            await repo.manifests.put(manifest(layer, wrong), OCI_MANIFEST)
        digest = wrong if isinstance(wrong, str) else wrong.digest
        assert caught.value.digests == [digest]
    touched = path_for(BlobTouched(layer.digest))
    assert await _exists(driver, touched) == collecting, "a find due is written down first"
    await driver.close()


async def _exists(driver: StorageDriver, path: str) -> bool:
    try:
        await driver.stat(path)
    except PathNotFound:
        return False
    return True


def _contents() -> list[bytes]:
    return [b'{"os": "linux"}', b"layer", b"collected", b"other content"]


def _missing() -> Digest:
    return digest_of(b"never pushed as itself")


def _unlinked() -> Digest:
    return digest_of(b"never pushed at all")


def _manifest(config: Descriptor, layers: tuple[Descriptor | Digest, ...]) -> bytes:
    def entry(layer: Descriptor | Digest) -> dict[str, Any]:
        if isinstance(layer, Descriptor):
            return {"mediaType": "application/octet-stream", "digest": layer.digest, "size": 5}
        return {"mediaType": "application/octet-stream", "digest": layer, "size": 13}

    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/json", "digest": config.digest, "size": 15},
            "layers": [entry(layer) for layer in layers],
        }
    ).encode()
