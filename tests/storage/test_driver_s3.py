"""The S3 driver against a real S3 server (SeaweedFS, one per session)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cargohold.config import S3Parameters
from cargohold.errors import PathNotFound, StorageUnavailable
from cargohold.storage.driver import create_driver, s3, s3objects
from cargohold.storage.driver.s3 import S3Driver
from tests.s3.operations import record_operations
from tests.storage.driver_suite import (
    DriverSuite,
    MiB,
    put_many,
    random_bytes,
    random_path,
    walk_paths,
)
from tests.support.seaweed import SeaweedS3
from tests.support.servers import free_port


@pytest.fixture
async def driver(s3_parameters: dict[str, Any]) -> AsyncIterator[S3Driver]:
    """A driver under a root of its own on the session's SeaweedFS."""
    driver = S3Driver(**s3_parameters)
    yield driver
    await driver.close()


class TestS3Driver(DriverSuite):
    """The conformance suite, on the ``driver`` fixture above."""


def stored_keys(server: SeaweedS3, prefix: str) -> list[str]:
    client = server.client()
    try:
        listing = client.list_objects_v2(Bucket=server.bucket, Prefix=prefix)
        return [obj["Key"] for obj in listing.get("Contents", [])]
    finally:
        client.close()


def uploads_in_progress(server: SeaweedS3, prefix: str) -> list[str]:
    client = server.client()
    try:
        listing = client.list_multipart_uploads(Bucket=server.bucket, Prefix=prefix)
        return [upload["Key"] for upload in listing.get("Uploads", [])]
    finally:
        client.close()


async def digest_of(driver: S3Driver, path: str) -> str:
    digest = hashlib.sha256()
    async for chunk in await driver.reader(path):
        digest.update(chunk)
    return digest.hexdigest()


# -- where things are stored ---------------------------------------------------------------


async def test_paths_are_keys_under_the_root_directory(
    seaweedfs: SeaweedS3, s3_parameters: dict[str, Any]
) -> None:
    root = s3_parameters["rootdirectory"].strip("/")
    driver = S3Driver(**{**s3_parameters, "rootdirectory": f"/{root}/"})
    await driver.put_content("/docker/registry/v2/file", b"content")
    assert stored_keys(seaweedfs, root) == [f"{root}/docker/registry/v2/file"]
    assert await driver.list("/") == ["/docker"]
    await driver.close()


async def test_an_empty_root_directory_puts_paths_at_the_top_of_the_bucket(
    seaweedfs: SeaweedS3,
) -> None:
    bucket = f"t-{secrets.token_hex(6)}"
    client = seaweedfs.client()
    client.create_bucket(Bucket=bucket)
    driver = S3Driver(**seaweedfs.parameters(bucket=bucket, rootdirectory=""))
    try:
        await driver.put_content("/a/b", b"x")
        assert client.get_object(Bucket=bucket, Key="a/b")["Body"].read() == b"x"
        assert await driver.list("/") == ["/a"]
        assert await walk_paths(driver, "/") == ["/a", "/a/b"]
    finally:
        await driver.close()
        client.delete_object(Bucket=bucket, Key="a/b")
        client.delete_bucket(Bucket=bucket)
        client.close()


async def test_pending_writes_are_hidden_objects_beside_the_file(
    seaweedfs: SeaweedS3, driver: S3Driver, s3_parameters: dict[str, Any]
) -> None:
    root = s3_parameters["rootdirectory"].strip("/")
    async with await driver.writer("/uploads/u/data") as writer:
        await writer.write(b"pending bytes")
    assert stored_keys(seaweedfs, root) == [f"{root}/uploads/u/.~data.pending"]
    assert await driver.list("/uploads/u") == []
    assert await walk_paths(driver, "/uploads") == ["/uploads/u"]
    async with await driver.writer("/uploads/u/data", append=True) as writer:
        await writer.commit()
    assert stored_keys(seaweedfs, root) == [f"{root}/uploads/u/data"], "no bookkeeping is left"


async def test_deleted_directories_leave_no_trace_in_listings(driver: S3Driver) -> None:
    # SeaweedFS keeps real directories; the driver removes emptied ones.
    base = random_path(1)
    await driver.put_content(f"{base}/gone/deeper/file", b"x")
    await driver.put_content(f"{base}/kept", b"x")
    await driver.delete(f"{base}/gone")
    assert await driver.list(base) == [f"{base}/kept"]
    assert await walk_paths(driver, base) == [f"{base}/kept"]


async def test_delete_aborts_uploads_in_progress_below_the_path(
    seaweedfs: SeaweedS3, driver: S3Driver, s3_parameters: dict[str, Any]
) -> None:
    root = s3_parameters["rootdirectory"].strip("/")
    async with await driver.writer("/uploads/u/data") as writer:
        await writer.write(random_bytes(6 * MiB))  # one part: a multipart upload
    await driver.put_content("/uploads/u/startedat", b"t")
    assert uploads_in_progress(seaweedfs, root) == [f"{root}/uploads/u/data"]
    await driver.delete("/uploads/u")
    assert uploads_in_progress(seaweedfs, root) == []
    assert stored_keys(seaweedfs, root) == []


async def test_delete_files_sends_a_delete_objects_per_five_hundred_files(
    seaweedfs: SeaweedS3, driver: S3Driver, s3_parameters: dict[str, Any]
) -> None:
    root = s3_parameters["rootdirectory"].strip("/")
    doomed = [f"/blobs/{i % 100:02}/{i}/data" for i in range(2500)]
    await put_many(driver, [*doomed, "/blobs/00/0/kept"])
    async with await driver.writer(doomed[1], append=True) as writer:
        await writer.write(b"pending")
    deletes = driver.batch_deletes
    calls = await record_operations(driver)
    await deletes.delete_files(doomed)
    # Each file's key and its pending object's: 5000 keys, a thousand a request;
    # ``delete`` would send four requests a file.
    assert calls == ["DeleteObjects"] * 5
    assert stored_keys(seaweedfs, root) == [f"{root}/blobs/00/0/kept"], "no pending object left"


async def test_delete_files_sends_a_few_requests_at_once(
    driver: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3, "LIST_MAX", 4)  # two files a request: 20 files, 10 requests
    paths = [f"/f{i}" for i in range(20)]
    running, most = 0, 0
    send = driver._delete_keys

    async def counted(path: str, keys: list[str]) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)  # long enough for the others to start, if they may
        await send(path, keys)
        running -= 1

    monkeypatch.setattr(driver, "_delete_keys", counted)
    await driver.batch_deletes.delete_files(paths)
    assert most == s3.DELETE_CONCURRENCY


# -- appending across processes ------------------------------------------------------------


async def test_chunks_of_one_upload_alternate_between_two_processes(
    seaweedfs: SeaweedS3, s3_parameters: dict[str, Any]
) -> None:
    # Two drivers share nothing but the server, like two registry processes.
    drivers = S3Driver(**s3_parameters), S3Driver(**s3_parameters)
    root = s3_parameters["rootdirectory"].strip("/")
    path = "/repositories/r/_uploads/u/data"
    sizes = [1, MiB, 5 * MiB, 7 * MiB, 1, 5 * MiB, MiB, 7 * MiB]
    sent, written = hashlib.sha256(), 0
    for i, size in enumerate(sizes):
        writer = await drivers[i % 2].writer(path, append=i > 0)
        assert writer.size == written, f"chunk {i}: the writer resumes what was sent"
        chunk = random_bytes(size)
        await writer.write(chunk)
        await writer.close()
        sent.update(chunk)
        written += size
        with pytest.raises(PathNotFound):
            await drivers[0].stat(path)
    assert uploads_in_progress(seaweedfs, root), "the large parts wait in a multipart upload"
    writer = await drivers[0].writer(path, append=True)
    assert writer.size == written
    await writer.commit()
    await writer.close()
    assert (await drivers[1].stat(path)).size == written
    assert await digest_of(drivers[1], path) == sent.hexdigest()
    assert stored_keys(seaweedfs, root) == [f"{root}{path}"]
    assert uploads_in_progress(seaweedfs, root) == []
    for driver in drivers:
        await driver.close()


async def test_a_process_dying_after_sending_a_part_leaves_no_duplicate_bytes(
    driver: S3Driver,
) -> None:
    path = random_path()
    first, head, tail = random_bytes(6 * MiB), random_bytes(3 * MiB), random_bytes(3 * MiB)
    async with await driver.writer(path) as writer:
        await writer.write(first)  # one part in a multipart upload
    async with await driver.writer(path, append=True) as writer:
        await writer.write(head)  # the pending object: less than a part
    dying = await driver.writer(path, append=True)
    await dying.write(tail)
    # Head and tail go out as the next part, then the process dies before it
    # rewrites the pending object, which still holds the head.
    await dying._upload_part()  # type: ignore[attr-defined]
    resumed = await driver.writer(path, append=True)
    assert resumed.size == len(first) + len(head) + len(tail)
    await resumed.commit()
    assert await driver.get_content(path) == first + head + tail


async def test_a_process_dying_before_saving_a_new_upload_resumes_what_was_saved(
    seaweedfs: SeaweedS3, driver: S3Driver, s3_parameters: dict[str, Any]
) -> None:
    path, head, tail = random_path(), random_bytes(3 * MiB), random_bytes(3 * MiB)
    async with await driver.writer(path) as writer:
        await writer.write(head)
    dying = await driver.writer(path, append=True)
    await dying.write(tail)
    await dying._upload_part()  # type: ignore[attr-defined]  # starts an upload, then dies
    resumed = await driver.writer(path, append=True)
    assert resumed.size == len(head), "the saved state is a prefix of what was sent"
    await resumed.commit()
    assert await driver.get_content(path) == head
    root = s3_parameters["rootdirectory"].strip("/")
    assert uploads_in_progress(seaweedfs, root) == [], "commit aborts the orphaned upload"


async def test_a_large_commit_completes_the_upload_without_sending_the_bytes_again(
    driver: S3Driver,
) -> None:
    path, piece = random_path(), random_bytes(MiB)
    async with await driver.writer(path) as writer:
        for _ in range(23):
            await writer.write(piece)
    resumed = await driver.writer(path, append=True)
    calls = await record_operations(driver)
    await resumed.commit()
    assert "CompleteMultipartUpload" in calls
    assert calls.count("UploadPart") == 1, "only the last, short part is sent"
    assert not {"PutObject", "GetObject", "CopyObject", "UploadPartCopy"} & set(calls)
    assert (await driver.stat(path)).size == 23 * MiB


async def test_the_written_size_of_an_upload_in_parts_takes_one_head(driver: S3Driver) -> None:
    path, piece = random_path(), random_bytes(MiB)
    async with await driver.writer(path) as writer:
        for _ in range(11):  # a 10 MiB part, and 1 MiB in the pending object
            await writer.write(piece)
    with pytest.raises(PathNotFound):
        await driver.stat(path)  # nothing is committed
    calls = await record_operations(driver)
    assert await driver.written_size(path) == 11 * MiB
    assert calls == ["HeadObject"], "neither the pending bytes nor the parts are read"
    resumed = await driver.writer(path, append=True)
    assert resumed.size == 11 * MiB
    await resumed.close()


async def test_appending_to_large_committed_content_copies_it_server_side(
    driver: S3Driver,
) -> None:
    path, committed = random_path(), random_bytes(6 * MiB + 1)
    await driver.put_content(path, committed)
    async with await driver.writer(path, append=True) as writer:
        assert writer.size == len(committed)
        calls = await record_operations(driver)
        await writer.write(b"appended")
        await writer.commit()
    assert "UploadPartCopy" in calls
    assert "GetObject" not in calls, "the committed content is never downloaded"
    assert await driver.get_content(path) == committed + b"appended"


# -- server-side copies --------------------------------------------------------------------


async def test_move_above_the_threshold_copies_in_parts_server_side(
    s3_parameters: dict[str, Any],
) -> None:
    driver = S3Driver(
        **s3_parameters,
        multipartcopythresholdsize=5 * MiB,
        multipartcopychunksize=5 * MiB,
        multipartcopymaxconcurrency=2,
    )
    source, dest, content = random_path(), random_path(), random_bytes(12 * MiB + 3)
    await driver.put_content(source, content)
    calls = await record_operations(driver)
    await driver.move(source, dest)
    # 5 MiB, then 7 MiB + 3: a remainder under 5 MiB joins the part before it.
    assert calls.count("UploadPartCopy") == 2
    assert not {"GetObject", "PutObject", "UploadPart", "CopyObject"} & set(calls)
    assert await driver.get_content(dest) == content
    with pytest.raises(PathNotFound):
        await driver.stat(source)
    await driver.close()


async def test_move_at_or_below_the_threshold_is_one_copy(driver: S3Driver) -> None:
    source, dest = random_path(), random_path()
    await driver.put_content(source, b"small")
    calls = await record_operations(driver)
    await driver.move(source, dest)
    assert "CopyObject" in calls
    assert "UploadPartCopy" not in calls
    assert await driver.get_content(dest) == b"small"


async def test_move_onto_itself_keeps_the_file(driver: S3Driver) -> None:
    path = random_path()
    await driver.put_content(path, b"stay")
    await driver.move(path, path)
    assert await driver.get_content(path) == b"stay"


# -- listings ------------------------------------------------------------------------------


async def test_walk_lists_only_the_directories_it_enters(driver: S3Driver) -> None:
    base = random_path(1)
    for name in ["a/1", "a/deep/2", "b/3", "c"]:
        await driver.put_content(f"{base}/{name}", b"x")
    calls = await record_operations(driver)
    seen = [info.path async for info in driver.walk(base, descend=lambda info: False)]
    assert seen == [f"{base}/a", f"{base}/b", f"{base}/c"]
    assert calls == ["ListObjectsV2"], "one delimiter listing of one level"
    calls.clear()
    seen = [info.path async for info in driver.walk(base, lambda i: i.path.endswith("/a"))]
    assert seen == [f"{base}/a", f"{base}/a/1", f"{base}/a/deep", f"{base}/b", f"{base}/c"]
    assert calls == ["ListObjectsV2", "ListObjectsV2"]


async def test_listings_are_in_name_order_not_key_order(driver: S3Driver) -> None:
    # As keys "foo-bar/" sorts before "foo/"; as names "foo" comes first.
    base = random_path(1)
    for name in ["foo-bar/x", "foo/x", "foo.txt", "foo0"]:
        await driver.put_content(f"{base}/{name}", b"x")
    expected = [f"{base}/{n}" for n in ["foo", "foo-bar", "foo.txt", "foo0"]]
    assert await driver.list(base) == expected
    assert [p for p in await walk_paths(driver, base) if not p.endswith("/x")] == expected


async def test_listings_and_deletes_go_page_by_page(
    driver: S3Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3, "LIST_MAX", 4)  # S3 pages a thousand keys; four show it sooner
    base = random_path(1)
    names = [f"f{i:02}" for i in range(10)] + ["d"]
    for name in names:
        await driver.put_content(f"{base}/{name}" + ("/file" if name == "d" else ""), b"x")
    calls = await record_operations(driver)
    assert await driver.list(base) == [f"{base}/{name}" for name in sorted(names)]
    assert calls.count("ListObjectsV2") == 3
    calls.clear()
    await driver.delete(base)
    assert calls.count("DeleteObjects") == 4, "11 files and 2 directory markers, 4 at a time"
    with pytest.raises(PathNotFound):
        await driver.list(base)


# -- redirects -----------------------------------------------------------------------------


async def test_redirect_url_is_a_presigned_url_for_the_content(
    s3_parameters: dict[str, Any],
) -> None:
    driver = S3Driver(**s3_parameters, redirectexpiry=60)
    path, content = random_path(), random_bytes(100_000)
    await driver.put_content(path, content)
    get_url = await driver.redirect_url(path)
    head_url = await driver.redirect_url(path, "HEAD")
    assert get_url is not None
    assert head_url is not None
    assert "X-Amz-Expires=60" in get_url
    async with aiohttp.ClientSession() as session:
        async with session.get(get_url) as response:
            assert response.status == 200
            assert await response.read() == content
        async with session.head(head_url) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(len(content))
    assert await driver.redirect_url(path, "PUT") is None
    await driver.close()


async def test_redirects_expire_after_twenty_minutes_by_default(driver: S3Driver) -> None:
    path = random_path()
    await driver.put_content(path, b"x")
    url = await driver.redirect_url(path)
    assert url is not None
    assert "X-Amz-Expires=1200" in url


# -- configuration and errors --------------------------------------------------------------


async def test_the_registry_builds_the_driver_from_its_configuration(
    s3_parameters: dict[str, Any],
) -> None:
    parameters = S3Parameters(**s3_parameters).model_dump()
    driver = create_driver("s3", parameters)
    assert isinstance(driver, S3Driver)
    await driver.put_content("/file", b"configured")
    assert await driver.get_content("/file") == b"configured"
    await driver.close()


async def test_check_passes_on_a_usable_bucket(driver: S3Driver) -> None:
    await driver.check()


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"secretkey": "wrong"}, "denied"),
        ({"bucket": "no-such-bucket"}, "does not exist"),
        ({"regionendpoint": "http://127.0.0.1:{closed_port}"}, "cannot reach"),
    ],
    ids=["wrong-secret", "missing-bucket", "closed-port"],
)
async def test_check_explains_in_one_line_why_storage_is_unusable(
    s3_parameters: dict[str, Any], overrides: dict[str, str], reason: str
) -> None:
    closed_port = free_port()
    overrides = {k: v.format(closed_port=closed_port) for k, v in overrides.items()}
    driver = S3Driver(**{**s3_parameters, **overrides})
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        await driver.check()
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)
    assert time.monotonic() - started < 10
    await driver.close()


@pytest.mark.parametrize(
    "overrides",
    [{"secretkey": "wrong"}, {"bucket": "no-such-bucket"}, {"regionendpoint": "closed"}],
    ids=["wrong-secret", "missing-bucket", "closed-port"],
)
async def test_every_provider_failure_is_storage_unavailable(
    s3_parameters: dict[str, Any], overrides: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # no retries of what cannot succeed
    if overrides.get("regionendpoint") == "closed":
        overrides = {"regionendpoint": f"http://127.0.0.1:{free_port()}"}
    driver = S3Driver(**{**s3_parameters, **overrides})
    path = random_path()

    async def write() -> None:
        async with await driver.writer(path) as writer:
            await writer.write(b"x")

    attempts = [
        driver.get_content(path),
        driver.put_content(path, b"x"),
        driver.reader(path),
        write(),
        driver.stat(path),
        driver.list(path),
        driver.delete(path),
        driver.batch_deletes.delete_files([path]),
        walk_paths(driver, path),
    ]
    for attempt in attempts:
        with pytest.raises(StorageUnavailable):
            await attempt
    await driver.close()


# -- the direct path -----------------------------------------------------------------------


async def botocore_operations(driver: S3Driver) -> list[str]:
    """The operations ``driver`` sends through aiobotocore from now on."""
    calls: list[str] = []
    await driver._objects()

    def record(model: Any, **_: Any) -> None:
        calls.append(model.name)

    (await driver._s3()).meta.events.register("before-parameter-build.s3", record)
    return calls


async def test_reads_and_writes_of_objects_go_around_botocore(driver: S3Driver) -> None:
    path, content = random_path(), random_bytes(3 * MiB + 5)
    through_botocore = await botocore_operations(driver)
    sent = await record_operations(driver)
    await driver.put_content(path, content)
    assert await driver.get_content(path) == content
    assert (await driver.stat(path)).size == len(content)
    assert b"".join([chunk async for chunk in await driver.reader(path, 7)]) == content[7:]
    async with await driver.writer(path + "-upload") as writer:
        await writer.write(b"pending")
    async with await driver.writer(path + "-upload", append=True) as writer:
        await writer.write(b" and more")
        await writer.commit()
    assert await driver.get_content(path + "-upload") == b"pending and more"
    assert set(sent) >= {"PutObject", "GetObject", "HeadObject"}
    assert not {"PutObject", "GetObject", "HeadObject"} & set(through_botocore), through_botocore


@pytest.mark.parametrize(
    "root",
    [
        "/with space/and+plus",
        "/tilde~colon:semi;comma,",
        "/unicode é中文🐳",
        "/percent%41%2F&=!'()*$@",
    ],
)
async def test_keys_with_any_characters_are_signed_and_stored_as_they_are(
    seaweedfs: SeaweedS3, s3_parameters: dict[str, Any], root: str
) -> None:
    # Driver paths are [A-Za-z0-9._-]; the root directory, and so a key, may hold anything.
    root = s3_parameters["rootdirectory"] + root
    driver = S3Driver(**{**s3_parameters, "rootdirectory": root})
    content = random_bytes(100_000)
    await driver.put_content("/dir/file", content)
    assert stored_keys(seaweedfs, root.lstrip("/")) == [root.lstrip("/") + "/dir/file"]
    assert await driver.get_content("/dir/file") == content
    assert (await driver.stat("/dir/file")).size == len(content)
    assert b"".join([c async for c in await driver.reader("/dir/file", 99_000)]) == content[99_000:]
    async with await driver.writer("/dir/upload") as writer:  # the pending object: "~" in it
        await writer.write(b"resumable")
    async with await driver.writer("/dir/upload", append=True) as writer:
        assert writer.size == len(b"resumable")
        await writer.commit()
    assert await driver.list("/dir") == ["/dir/file", "/dir/upload"]
    await driver.delete("/dir")
    with pytest.raises(PathNotFound):
        await driver.get_content("/dir/file")
    await driver.close()


@pytest.fixture
def credentials_from_the_environment(
    seaweedfs: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> dict[str, Any]:
    """Driver parameters without keys; the keys are in AWS's environment variables."""
    for variable in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ROLE_ARN"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.accesskey)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secretkey)
    return seaweedfs.parameters(
        rootdirectory=f"/t-{secrets.token_hex(6)}", accesskey="", secretkey=""
    )


async def test_without_keys_the_standard_credential_chain_signs(
    credentials_from_the_environment: dict[str, Any],
) -> None:
    driver = S3Driver(**credentials_from_the_environment)
    await driver.put_content("/file", b"signed with the environment's keys")
    assert await driver.get_content("/file") == b"signed with the environment's keys"
    assert isinstance(await driver._objects(), s3objects.HTTPObjects)
    await driver.close()


async def test_credentials_are_resolved_for_each_request(
    credentials_from_the_environment: dict[str, Any], seaweedfs: SeaweedS3
) -> None:
    # What a refresh does (instance roles, assumed roles): the chain's credentials change.
    from aiobotocore.credentials import AioCredentials

    driver = S3Driver(**credentials_from_the_environment)
    await driver.put_content("/file", b"x")
    session = driver._session
    assert session is not None
    resolved = await session.get_credentials()
    session._credentials = AioCredentials(seaweedfs.accesskey, "rotated away")
    with pytest.raises(StorageUnavailable, match="SignatureDoesNotMatch"):
        await driver.get_content("/file")
    session._credentials = resolved
    assert await driver.get_content("/file") == b"x"
    await driver.close()


@pytest.mark.parametrize(
    "origin",
    [
        "http://127.0.0.1:8333",
        "https://S3.Example.COM:443",
        "http://s3.example.com:80",
        "https://s3.example.com:8443",
        "http://[::1]:9000",
        "https://[2001:db8::1]",
    ],
)
def test_the_host_header_is_botocores(origin: str) -> None:
    from botocore.auth import _host_from_url

    assert s3objects.host_header(origin) == _host_from_url(origin + "/bucket/key")


async def test_loglevel_debug_logs_every_request(
    s3_parameters: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Distribution's ``storage.s3.loglevel``: any level but ``off`` logs the SDK's requests."""
    for name in ("botocore", "aiobotocore", "cargohold.s3"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.NOTSET)
    caplog.set_level(logging.INFO)  # the root logger: what an operator's log.level gives
    caplog.handler.setLevel(logging.NOTSET)  # and the capture takes whatever reaches it
    quiet = S3Driver(**s3_parameters)
    await quiet.put_content("/quiet", b"x")
    await quiet.close()
    assert not [r for r in caplog.records if r.name.startswith(("cargohold.s3", "botocore"))]
    driver = S3Driver(**s3_parameters, loglevel="debugwithhttpbody")
    try:
        await driver.put_content("/logged", b"x")
        await driver.move("/logged", "/moved")
    finally:
        await driver.close()
    lean = [r.getMessage() for r in caplog.records if r.name == "cargohold.s3"]
    for operation in ("PutObject", "CopyObject", "DeleteObjects"):
        assert any(m.startswith(f"{operation} ") and ": 200 " in m for m in lean), lean
    # Where botocore sends them (another region, v4auth: false), botocore logs them.
    assert logging.getLogger("botocore").level == logging.DEBUG


# Everything a worker does: check the bucket, stat, read, write, list, redirect a pull,
# push in parts across two writers, move, copy in parts and delete. On a path-style server
# none of it loads botocore's client or its S3 models (a tenth of a second and twenty-odd
# MiB per process).
_NO_BOTOCORE_CLIENT = """
import asyncio, json, os, sys
import aiohttp
from cargohold.storage.driver.s3 import S3Driver, MIN_PART

LOADED = ("botocore.client", "aiobotocore.session", "botocore.loaders")

async def main() -> list[str]:
    driver = S3Driver(**json.loads(sys.argv[1]), chunksize=MIN_PART, multipartcopythresholdsize=0)
    try:
        await driver.check()
        await driver.put_content("/a/b", b"content")
        assert await driver.get_content("/a/b") == b"content"
        assert (await driver.stat("/a")).is_dir
        assert (await driver.stat("/")).is_dir
        assert await driver.list("/a") == ["/a/b"]
        url = await driver.redirect_url("/a/b")
        async with aiohttp.ClientSession() as http, http.get(url) as reply:
            assert reply.status == 200 and await reply.read() == b"content", reply.status
        content = os.urandom(MIN_PART + 7)
        writer = await driver.writer("/a/big")
        await writer.write(content[:MIN_PART + 3])
        await writer.close()
        writer = await driver.writer("/a/big", append=True)
        await writer.write(content[MIN_PART + 3:])
        await writer.commit()
        await driver.move("/a/big", "/a/moved")
        assert await driver.get_content("/a/moved") == content
        await driver.move("/a/b", "/a/c")
        await driver.delete("/a")
        assert await driver.list("/") == []
    finally:
        await driver.close()
    return [name for name in LOADED if name in sys.modules]

print(json.dumps(asyncio.run(main())))
"""


async def test_a_path_style_server_is_used_without_botocore(
    s3_parameters: dict[str, Any], tmp_path: Path
) -> None:
    environment = {**os.environ, "AWS_CONFIG_FILE": str(tmp_path / "none")}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", _NO_BOTOCORE_CLIENT, json.dumps(s3_parameters)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
