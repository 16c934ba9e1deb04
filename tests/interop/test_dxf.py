"""python-dxf uses cargohold as a blob store: blobs, aliases (tags), mounts, deletes."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import cast

import pytest
import requests
from dxf import DXF, DXFBase
from dxf.exceptions import DXFMountFailed

from tests.interop.conftest import Server
from tests.support.accesslog import requests as logged_requests
from tests.support.images import sha256


def dxf(server: Server, repository: str) -> DXF:
    return DXF(server.url.removeprefix("http://"), repository, insecure=True)


def pull(client: DXF, digest: str) -> bytes:
    # python-dxf checks the digest of what it streams and raises on a mismatch.
    return b"".join(cast(Iterable[bytes], client.pull_blob(digest, chunk_size=64 * 1024)))


def push(client: DXF, data: bytes) -> str:
    """A blob pushed from bytes: one PUT with a Content-Length (not chunked)."""
    # python-dxf annotates ``data`` as an iterable of chunks; requests sends bytes whole.
    return client.push_blob(data=cast(Iterable[bytes], data), digest=sha256(data))


def chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def assert_status(error: pytest.ExceptionInfo[requests.HTTPError], status: int) -> None:
    assert error.value.response is not None
    assert error.value.response.status_code == status


def test_blobs_pushed_from_bytes_a_file_and_an_iterator_come_back(
    registry: Server, tmp_path: os.PathLike[str]
) -> None:
    client = dxf(registry, "dxf/blobs")
    small, large, from_file = os.urandom(1000), os.urandom(3 * 1024 * 1024 + 5), os.urandom(70_000)
    path = os.path.join(tmp_path, "blob")
    with open(path, "wb") as f:
        f.write(from_file)

    assert push(client, small) == sha256(small)
    # An iterator goes out with Transfer-Encoding: chunked, in one PUT.
    assert client.push_blob(data=chunks(large, 100_000), digest=sha256(large)) == sha256(large)
    assert client.push_blob(path) == sha256(from_file)
    # Pushing again finds the blob with HEAD and uploads nothing.
    assert client.push_blob(path) == sha256(from_file)

    for data in (small, large, from_file):
        assert pull(client, sha256(data)) == data
        assert client.blob_size(sha256(data)) == len(data)
    stream, size = cast(tuple[Iterable[bytes], int], client.pull_blob(sha256(large), size=True))
    assert size == len(large)
    assert b"".join(stream) == large
    puts = [r for r in logged_requests(registry.log) if r.method == "PUT"]
    assert [r.param("digest") for r in puts] == [sha256(small), sha256(large), sha256(from_file)]
    assert {r.status for r in puts} == {201}


def test_a_wrong_digest_is_refused_and_nothing_is_stored(registry: Server) -> None:
    client = dxf(registry, "dxf/wrong")
    data = os.urandom(4096)
    with pytest.raises(requests.HTTPError) as error:
        client.push_blob(data=chunks(data, 1000), digest=sha256(b"something else"))
    assert_status(error, 400)
    with pytest.raises(requests.HTTPError) as error:
        client.blob_size(sha256(data))
    assert_status(error, 404)


def test_aliases_are_set_listed_read_and_deleted(registry: Server) -> None:
    client = dxf(registry, "dxf/aliases")
    blobs = [os.urandom(size) for size in (512, 2048, 300_000)]
    digests = [push(client, blob) for blob in blobs]

    client.set_alias("all", *digests)
    client.set_alias("first-two", *digests[:2])
    client.set_alias("again", *digests)

    assert client.get_alias("all") == digests
    assert client.get_alias("first-two", sizes=True) == [(digests[0], 512), (digests[1], 2048)]
    assert client.get_digest("first-two") == digests[0]  # dxf uses the first blob as config
    assert sorted(client.list_aliases()) == ["again", "all", "first-two"]
    # Paginated with Link headers, one tag per page.
    assert list(client.list_aliases(batch_size=1, iterate=True)) == ["again", "all", "first-two"]

    assert client.del_alias("first-two") == digests[:2]
    with pytest.raises(requests.HTTPError) as error:
        client.get_alias("first-two")
    assert_status(error, 404)
    # "all" and "again" name the same manifest: deleting it by digest removes both.
    assert client.del_alias("all") == digests
    assert client.list_aliases() == []
    for blob, digest in zip(blobs, digests, strict=True):
        assert pull(client, digest) == blob  # deleting aliases keeps the blobs

    repositories = DXFBase(registry.url.removeprefix("http://"), insecure=True).list_repos()
    assert repositories == ["dxf/aliases"]


def test_a_blob_is_mounted_from_another_repository_then_deleted_from_one(
    registry: Server,
) -> None:
    origin, other = dxf(registry, "dxf/origin"), dxf(registry, "dxf/other")
    data = os.urandom(200_000)
    digest = push(origin, data)
    with pytest.raises(requests.HTTPError) as error:
        other.blob_size(digest)
    assert_status(error, 404)  # knowing a digest does not give access to it

    assert other.mount_blob("dxf/origin", digest) == digest
    assert pull(other, digest) == data
    catalog = DXFBase(registry.url.removeprefix("http://"), insecure=True)
    assert list(catalog.list_repos(batch_size=1, iterate=True)) == ["dxf/origin", "dxf/other"]
    with pytest.raises(DXFMountFailed):
        other.mount_blob("dxf/origin", sha256(b"never pushed"))

    other.del_blob(digest)
    with pytest.raises(requests.HTTPError) as error:
        other.blob_size(digest)
    assert_status(error, 404)
    with pytest.raises(requests.HTTPError) as error:
        other.del_blob(digest)
    assert_status(error, 404)
    # The content stays, linked from the repository it was pushed to.
    assert pull(origin, digest) == data
    blob = registry.root / "docker/registry/v2/blobs/sha256" / digest[7:9] / digest[7:] / "data"
    assert blob.read_bytes() == data
