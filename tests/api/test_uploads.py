"""Blob uploads: ``POST``/``PATCH``/``PUT``/``GET``/``DELETE`` on ``/v2/<name>/blobs/uploads/``.

end-4a/b/c (start, monolithic, digest algorithm), end-5 (PATCH), end-6 (PUT),
end-11 (mount), end-13 (status), end-14 (cancel). Every step takes its URL from
the previous reply's ``Location``, as clients do. The last part is what real
clients were seen sending (SPEC-NOTES.md): chunked bodies, no Content-Range,
any Content-Type, the whole blob on the PUT, an empty PUT after PATCHes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import ClientResponse
from tests.api.conftest import (
    Blob,
    Registry,
    assert_error,
    chunked,
    digest_of,
    random_blob,
)
from tests.support.waiting import eventually

UUID_PATH = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def assert_upload_reply(
    registry: Registry, response: ClientResponse, status: int, name: str, received: int
) -> str:
    """The reply of POST/PATCH/GET on an upload; returns the path of its Location."""
    assert response.status == status
    location = registry.local(response.headers["Location"])
    prefix = f"/v2/{name}/blobs/uploads/"
    assert location.startswith(prefix), location
    upload_id = location[len(prefix) :].partition("?")[0]
    assert response.headers["Docker-Upload-UUID"] == upload_id
    # "0-0" also when nothing has arrived yet, as Distribution answers.
    assert response.headers["Range"] == f"0-{max(received - 1, 0)}"
    if status == 204:
        # RFC 9110 8.6: a server MUST NOT send Content-Length in a 204.
        assert "Content-Length" not in response.headers
    else:
        assert response.headers["Content-Length"] == "0"
    return location


async def assert_blob_created(
    registry: Registry, response: ClientResponse, name: str, blob: Blob
) -> None:
    """A 201 naming the blob, which is then served with exactly its bytes."""
    assert response.status == 201, await response.text()
    assert registry.local(response.headers["Location"]) == f"/v2/{name}/blobs/{blob.digest}"
    assert response.headers["Docker-Content-Digest"] == blob.digest
    assert response.headers["Content-Length"] == "0"
    got = await registry.request("GET", f"/v2/{name}/blobs/{blob.digest}")
    assert got.status == 200
    assert await got.read() == blob.data


async def assert_no_blob(registry: Registry, name: str, *digests: str) -> None:
    for digest in digests:
        response = await registry.request("GET", f"/v2/{name}/blobs/{digest}")
        await assert_error(response, 404, "BLOB_UNKNOWN")


async def status_of(registry: Registry, location: str) -> int:
    """The number of bytes an upload holds, from GET on its location."""
    response = await registry.request("GET", location)
    assert response.status == 204
    first, _, last = response.headers["Range"].partition("-")
    assert first == "0"
    # Both an empty upload and a one-byte one say "0-0"; callers know which they made.
    return int(last) + 1 if int(last) else 0


# -- start (end-4a) ---------------------------------------------------------------------------


async def test_post_starts_an_upload(registry: Registry) -> None:
    response = await registry.request("POST", "/v2/repo/blobs/uploads/")
    location = assert_upload_reply(registry, response, 202, "repo", 0)
    assert await response.read() == b""
    response = await registry.request("GET", location)
    assert_upload_reply(registry, response, 204, "repo", 0)


async def test_post_without_trailing_slash(registry: Registry) -> None:
    response = await registry.request("POST", "/v2/repo/blobs/uploads")
    assert_upload_reply(registry, response, 202, "repo", 0)


async def test_each_post_is_a_new_upload(registry: Registry) -> None:
    first = await registry.start_upload("repo")
    second = await registry.start_upload("repo")
    assert first != second


# -- monolithic (end-4b) ----------------------------------------------------------------------


async def test_post_with_digest_is_a_monolithic_upload(registry: Registry) -> None:
    blob = random_blob(5000)
    response = await registry.request(
        "POST",
        "/v2/repo/blobs/uploads/",
        params={"digest": blob.digest},
        data=blob.data,
        headers={"Content-Type": "application/octet-stream"},
    )
    await assert_blob_created(registry, response, "repo", blob)


async def test_monolithic_post_with_wrong_digest(registry: Registry) -> None:
    blob = random_blob()
    wrong = digest_of(b"something else")
    response = await registry.request(
        "POST", "/v2/repo/blobs/uploads/", params={"digest": wrong}, data=blob.data
    )
    await assert_error(response, 400, "DIGEST_INVALID")
    await assert_no_blob(registry, "repo", wrong, blob.digest)


async def test_monolithic_post_chunked(registry: Registry) -> None:
    blob = random_blob(50_000)
    response = await registry.request(
        "POST", "/v2/repo/blobs/uploads/", params={"digest": blob.digest}, data=chunked(blob.data)
    )
    await assert_blob_created(registry, response, "repo", blob)


async def test_monolithic_post_of_an_empty_blob(registry: Registry) -> None:
    blob = Blob(b"")
    response = await registry.request(
        "POST", "/v2/repo/blobs/uploads/", params={"digest": blob.digest}, data=b""
    )
    await assert_blob_created(registry, response, "repo", blob)


async def test_monolithic_post_of_content_already_stored(registry: Registry) -> None:
    blob = await registry.push_blob("a")
    response = await registry.request(
        "POST", "/v2/b/blobs/uploads/", params={"digest": blob.digest}, data=blob.data
    )
    await assert_blob_created(registry, response, "b", blob)


# -- mount (end-11) ---------------------------------------------------------------------------


async def test_mount_from_a_repository_that_has_the_blob(registry: Registry) -> None:
    blob = await registry.push_blob("source/repo")
    response = await registry.request(
        "POST",
        "/v2/target/blobs/uploads/",
        params={"mount": blob.digest, "from": "source/repo"},
    )
    await assert_blob_created(registry, response, "target", blob)


@pytest.mark.parametrize(
    "case",
    ["not-in-source", "unknown-source", "invalid-source", "dots-source", "bad-digest", "no-from"],
)
async def test_mount_that_cannot_happen_falls_back_to_an_upload(
    registry: Registry, case: str
) -> None:
    blob = await registry.push_blob("source")
    other = random_blob()
    await registry.push_blob("elsewhere", other)
    params = {
        "not-in-source": {"mount": other.digest, "from": "source"},
        "unknown-source": {"mount": blob.digest, "from": "nosuchrepo"},
        "invalid-source": {"mount": blob.digest, "from": "Source"},
        "dots-source": {"mount": blob.digest, "from": "../source"},
        "bad-digest": {"mount": "sha256:nothex", "from": "source"},
        "no-from": {"mount": blob.digest},
    }[case]
    response = await registry.request("POST", "/v2/target/blobs/uploads/", params=params)
    location = assert_upload_reply(registry, response, 202, "target", 0)
    await assert_no_blob(registry, "target", blob.digest, other.digest)
    # The fallback is a real upload that completes.
    response = await registry.request(
        "PUT", location, params={"digest": other.digest}, data=other.data
    )
    await assert_blob_created(registry, response, "target", other)


# -- chunked uploads (end-5, end-6) -----------------------------------------------------------


async def test_streamed_patch_then_empty_put(registry: Registry) -> None:
    blob = random_blob(70_000)
    location = await registry.start_upload("repo")
    response = await registry.request("PATCH", location, data=blob.data)
    location = assert_upload_reply(registry, response, 202, "repo", blob.size)
    assert await status_of(registry, location) == blob.size
    response = await registry.request("PUT", location, params={"digest": blob.digest})
    await assert_blob_created(registry, response, "repo", blob)
    # A finished upload is gone.
    response = await registry.request("GET", location)
    await assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


async def test_several_streamed_patches(registry: Registry) -> None:
    blob = random_blob(30_000)
    location = await registry.start_upload("repo")
    for start in range(0, blob.size, 10_000):
        response = await registry.request("PATCH", location, data=blob.data[start : start + 10_000])
        location = assert_upload_reply(registry, response, 202, "repo", start + 10_000)
    response = await registry.request("PUT", location, params={"digest": blob.digest})
    await assert_blob_created(registry, response, "repo", blob)


async def test_patches_with_content_range(registry: Registry) -> None:
    blob = random_blob(25_000)
    location = await registry.start_upload("repo")
    for start in range(0, blob.size, 10_000):
        chunk = blob.data[start : start + 10_000]
        end = start + len(chunk) - 1
        response = await registry.request(
            "PATCH",
            location,
            data=chunk,
            headers={"Content-Range": f"{start}-{end}", "Content-Type": "application/octet-stream"},
        )
        location = assert_upload_reply(registry, response, 202, "repo", end + 1)
    response = await registry.request("PUT", location, params={"digest": blob.digest})
    await assert_blob_created(registry, response, "repo", blob)


@pytest.mark.parametrize("offset", ["gap", "overlap", "restart"])
async def test_chunk_not_at_the_current_offset_is_416(registry: Registry, offset: str) -> None:
    blob = random_blob(3000)
    location = await registry.start_upload("repo")
    response = await registry.request(
        "PATCH", location, data=blob.data[:1000], headers={"Content-Range": "0-999"}
    )
    location = assert_upload_reply(registry, response, 202, "repo", 1000)
    start = {"gap": 1500, "overlap": 500, "restart": 0}[offset]
    response = await registry.request(
        "PATCH",
        location,
        data=blob.data[start : start + 1000],
        headers={"Content-Range": f"{start}-{start + 999}"},
    )
    await assert_error(response, 416, "RANGE_INVALID")
    # The reply says where the upload stands, so the client can resume from there.
    assert response.headers["Range"] == "0-999"
    assert registry.local(response.headers["Location"]).startswith("/v2/repo/blobs/uploads/")
    assert await status_of(registry, location) == 1000
    # Nothing was appended: the upload continues from byte 1000 and completes.
    response = await registry.request(
        "PATCH", location, data=blob.data[1000:], headers={"Content-Range": "1000-2999"}
    )
    location = assert_upload_reply(registry, response, 202, "repo", 3000)
    response = await registry.request("PUT", location, params={"digest": blob.digest})
    await assert_blob_created(registry, response, "repo", blob)


async def test_first_chunk_must_start_at_zero(registry: Registry) -> None:
    location = await registry.start_upload("repo")
    response = await registry.request(
        "PATCH", location, data=b"x" * 10, headers={"Content-Range": "10-19"}
    )
    await assert_error(response, 416, "RANGE_INVALID")
    assert response.headers["Range"] == "0-0"
    assert await status_of(registry, location) == 0


async def test_content_range_disagreeing_with_content_length_is_416(registry: Registry) -> None:
    location = await registry.start_upload("repo")
    response = await registry.request(
        "PATCH", location, data=b"x" * 10, headers={"Content-Range": "0-19"}
    )
    await assert_error(response, 416, "RANGE_INVALID")
    assert await status_of(registry, location) == 0


@pytest.mark.parametrize("size", [5, 20])
async def test_chunked_body_disagreeing_with_content_range(registry: Registry, size: int) -> None:
    # Without Content-Length the mismatch shows only once the body has arrived, when
    # part of it is appended already: the upload cannot be trusted and is discarded.
    location = await registry.start_upload("repo")
    response = await registry.request(
        "PATCH", location, data=chunked(b"x" * size, 2), headers={"Content-Range": "0-9"}
    )
    await assert_error(response, 400, "BLOB_UPLOAD_INVALID")
    response = await registry.request("GET", location)
    await assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


async def test_put_with_a_final_chunk(registry: Registry) -> None:
    blob = random_blob(20_000)
    location = await registry.start_upload("repo")
    response = await registry.request("PATCH", location, data=blob.data[:12_000])
    location = assert_upload_reply(registry, response, 202, "repo", 12_000)
    response = await registry.request(
        "PUT", location, params={"digest": blob.digest}, data=blob.data[12_000:]
    )
    await assert_blob_created(registry, response, "repo", blob)


async def test_put_with_a_final_chunk_and_content_range(registry: Registry) -> None:
    blob = random_blob(2000)
    location = await registry.start_upload("repo")
    response = await registry.request("PATCH", location, data=blob.data[:1500])
    location = registry.local(response.headers["Location"])
    response = await registry.request(
        "PUT",
        location,
        params={"digest": blob.digest},
        data=blob.data[1500:],
        headers={"Content-Range": "1500-1999"},
    )
    await assert_blob_created(registry, response, "repo", blob)


async def test_put_with_the_whole_blob_and_no_patch(registry: Registry) -> None:
    blob = random_blob(40_000)
    location = await registry.start_upload("repo")
    response = await registry.request(
        "PUT", location, params={"digest": blob.digest}, data=blob.data
    )
    await assert_blob_created(registry, response, "repo", blob)


async def test_zero_length_upload(registry: Registry) -> None:
    blob = Blob(b"")
    location = await registry.start_upload("repo")
    response = await registry.request("PUT", location, params={"digest": blob.digest})
    await assert_blob_created(registry, response, "repo", blob)


async def test_empty_patch_changes_nothing(registry: Registry) -> None:
    location = await registry.start_upload("repo")
    response = await registry.request("PATCH", location, data=b"abc")
    location = assert_upload_reply(registry, response, 202, "repo", 3)
    response = await registry.request("PATCH", location, data=b"")
    location = assert_upload_reply(registry, response, 202, "repo", 3)
    blob = Blob(b"abc")
    response = await registry.request("PUT", location, params={"digest": blob.digest})
    await assert_blob_created(registry, response, "repo", blob)


# -- finishing with the wrong digest ----------------------------------------------------------


async def test_put_with_wrong_digest_removes_the_upload(registry: Registry) -> None:
    blob = random_blob(5000)
    existing = await registry.push_blob("repo")
    location = await registry.start_upload("repo")
    response = await registry.request("PATCH", location, data=blob.data)
    location = registry.local(response.headers["Location"])
    # The digest of another blob, one the repository even has.
    response = await registry.request("PUT", location, params={"digest": existing.digest})
    error = await assert_error(response, 400, "DIGEST_INVALID")
    assert "detail" in error
    response = await registry.request("GET", location)
    await assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    await assert_no_blob(registry, "repo", blob.digest)
    response = await registry.request("GET", f"/v2/repo/blobs/{existing.digest}")
    assert await response.read() == existing.data


async def test_put_with_wrong_digest_leaves_no_upload_behind(registry: Registry) -> None:
    before = await registry.snapshot()
    location = await registry.start_upload("repo")
    response = await registry.request(
        "PUT", location, params={"digest": digest_of(b"other")}, data=b"content"
    )
    await assert_error(response, 400, "DIGEST_INVALID")
    after = await registry.snapshot()
    # Only folders may remain (the repository's _uploads, as Distribution leaves it): no file.
    assert {path for path, content in after.items() if content is not None} == {
        path for path, content in before.items() if content is not None
    }


@pytest.mark.parametrize("digest", [None, "", "sha256:abc", "md5:" + "0" * 32])
async def test_put_without_a_valid_digest_keeps_the_upload(
    registry: Registry, digest: str | None
) -> None:
    # As Distribution: "no digest? return error, but allow retry".
    blob = random_blob()
    location = await registry.start_upload("repo")
    response = await registry.request("PATCH", location, data=blob.data)
    location = registry.local(response.headers["Location"])
    params = {} if digest is None else {"digest": digest}
    response = await registry.request("PUT", location, params=params)
    await assert_error(response, 400, "DIGEST_INVALID")
    assert await status_of(registry, location) == blob.size
    response = await registry.request("PUT", location, params={"digest": blob.digest})
    await assert_blob_created(registry, response, "repo", blob)


# -- status and cancel (end-13, end-14) --------------------------------------------------------


async def test_get_upload_status(registry: Registry) -> None:
    location = await registry.start_upload("repo")
    response = await registry.request("PATCH", location, data=b"x" * 1234)
    location = registry.local(response.headers["Location"])
    response = await registry.request("GET", location)
    assert_upload_reply(registry, response, 204, "repo", 1234)
    assert await response.read() == b""


async def test_delete_cancels_the_upload(registry: Registry) -> None:
    location = await registry.start_upload("repo")
    response = await registry.request("PATCH", location, data=b"some bytes")
    location = registry.local(response.headers["Location"])
    response = await registry.request("DELETE", location)
    assert response.status == 204
    assert await response.read() == b""
    for method in ("GET", "DELETE", "PATCH", "PUT"):
        params = {"digest": digest_of(b"some bytes")} if method == "PUT" else None
        response = await registry.request(method, location, params=params)
        await assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    await assert_no_blob(registry, "repo", digest_of(b"some bytes"))


async def test_a_chunk_still_arriving_when_the_upload_is_finished_stays_out_of_the_blob(
    registry: Registry,
) -> None:
    """A PATCH whose body is slow holds the upload open while a PUT finishes it: the rest of
    that body must not reach the blob the PUT made (the stateful fuzzer found it: the bytes
    were appended to the blob's file, served afterwards under a digest they did not match)."""
    location = await registry.start_upload("repo")
    response = await registry.request("PATCH", location, data=b"content")
    location = registry.local(response.headers["Location"])
    finished = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"+"
        await finished.wait()
        yield b" and bytes after the upload was finished"

    patch = asyncio.ensure_future(registry.request("PATCH", location, data=slow_body()))
    # Its first byte in, the PATCH has the upload open, waiting for the rest of its body.
    await eventually(lambda: _holds(registry, location, 8), what="the PATCH never began")
    blob = Blob(b"content+")
    response = await registry.request("PUT", location, params={"digest": blob.digest})
    await assert_blob_created(registry, response, "repo", blob)
    finished.set()
    await assert_error(await patch, 404, "BLOB_UPLOAD_UNKNOWN")
    response = await registry.request("GET", f"/v2/repo/blobs/{blob.digest}")
    assert await response.read() == blob.data
    response = await registry.request("GET", location)
    await assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


async def _holds(registry: Registry, location: str, size: int) -> bool:
    return await status_of(registry, location) == size


@pytest.mark.parametrize("method", ["GET", "PATCH", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "upload_id", [str(uuid.uuid4()), "garbage", "0" * 36, str(uuid.uuid4()).upper()]
)
async def test_unknown_upload_is_404(registry: Registry, method: str, upload_id: str) -> None:
    params = {"digest": digest_of(b"")} if method == "PUT" else None
    response = await registry.request(
        method, f"/v2/repo/blobs/uploads/{upload_id}", params=params, data=b""
    )
    await assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


async def test_upload_of_one_repository_is_unknown_in_another(registry: Registry) -> None:
    location = await registry.start_upload("a")
    upload_id = location.rsplit("/", 1)[1].partition("?")[0]
    response = await registry.request("GET", f"/v2/b/blobs/uploads/{upload_id}")
    await assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")
    response = await registry.request("GET", location)
    assert response.status == 204


# -- digest algorithms (end-4c) ---------------------------------------------------------------


async def test_sha512_upload(registry: Registry) -> None:
    blob = Blob(random_blob(9000).data, algorithm="sha512")
    response = await registry.request(
        "POST", "/v2/repo/blobs/uploads/", params={"digest-algorithm": "sha512"}
    )
    location = assert_upload_reply(registry, response, 202, "repo", 0)
    response = await registry.request("PATCH", location, data=blob.data[:4000])
    location = assert_upload_reply(registry, response, 202, "repo", 4000)
    response = await registry.request(
        "PUT", location, params={"digest": blob.digest}, data=blob.data[4000:]
    )
    await assert_blob_created(registry, response, "repo", blob)


async def test_sha512_digest_on_a_default_upload(registry: Registry) -> None:
    # The algorithm of the final digest decides, whatever the upload was started with.
    blob = Blob(b"abc" * 1000, algorithm="sha512")
    location = await registry.start_upload("repo")
    response = await registry.request(
        "PUT", location, params={"digest": blob.digest}, data=blob.data
    )
    await assert_blob_created(registry, response, "repo", blob)


async def test_sha512_monolithic(registry: Registry) -> None:
    blob = Blob(b"monolithic sha512", algorithm="sha512")
    response = await registry.request(
        "POST", "/v2/repo/blobs/uploads/", params={"digest": blob.digest}, data=blob.data
    )
    await assert_blob_created(registry, response, "repo", blob)


@pytest.mark.parametrize("algorithm", ["md5", "SHA256", "sha-256", ""])
async def test_unsupported_digest_algorithm(registry: Registry, algorithm: str) -> None:
    before = await registry.snapshot()
    response = await registry.request(
        "POST", "/v2/repo/blobs/uploads/", params={"digest-algorithm": algorithm}
    )
    if algorithm == "":  # an empty parameter is no parameter: the default, sha256
        assert_upload_reply(registry, response, 202, "repo", 0)
        return
    await assert_error(response, 400, "DIGEST_INVALID")
    assert await registry.snapshot() == before


# -- what real clients send -------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "application/octet-stream", "application/x-www-form-urlencoded", "text/plain"],
)
async def test_any_content_type_on_patch_and_put(
    registry: Registry, content_type: str | None
) -> None:
    # curl sends application/x-www-form-urlencoded; Distribution 2.8.2 answers that with 500.
    headers = {} if content_type is None else {"Content-Type": content_type}
    blob = random_blob(3000)
    location = await registry.start_upload("repo")
    response = await registry.request("PATCH", location, data=blob.data[:1000], headers=headers)
    location = assert_upload_reply(registry, response, 202, "repo", 1000)
    response = await registry.request(
        "PUT", location, params={"digest": blob.digest}, data=blob.data[1000:], headers=headers
    )
    await assert_blob_created(registry, response, "repo", blob)


async def test_form_encoded_body_is_taken_as_bytes(registry: Registry) -> None:
    # A body that parses as a form must still be stored byte for byte.
    blob = Blob(b"a=1&b=2&c=%20")
    location = await registry.start_upload("repo")
    response = await registry.request(
        "PATCH",
        location,
        data=blob.data,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    location = registry.local(response.headers["Location"])
    response = await registry.request("PUT", location, params={"digest": blob.digest})
    await assert_blob_created(registry, response, "repo", blob)


async def test_chunked_patch_then_empty_put(registry: Registry) -> None:
    # skopeo/podman compressing on the fly: one chunked PATCH, no Content-Range.
    blob = random_blob(100_000)
    location = await registry.start_upload("repo")
    response = await registry.request("PATCH", location, data=chunked(blob.data))
    location = assert_upload_reply(registry, response, 202, "repo", blob.size)
    response = await registry.request("PUT", location, params={"digest": blob.digest}, data=b"")
    await assert_blob_created(registry, response, "repo", blob)


async def test_chunked_put_with_the_whole_blob(registry: Registry) -> None:
    # python-dxf: the whole body on the PUT, chunked, no Content-Type.
    blob = random_blob(100_000)
    location = await registry.start_upload("repo")
    response = await registry.request(
        "PUT", location, params={"digest": blob.digest}, data=chunked(blob.data)
    )
    await assert_blob_created(registry, response, "repo", blob)


async def test_chunked_patches_with_content_range(registry: Registry) -> None:
    # oras-py: several PATCHes with Content-Range; here with chunked bodies too.
    blob = random_blob(30_000)
    location = await registry.start_upload("repo")
    for start in range(0, blob.size, 10_000):
        response = await registry.request(
            "PATCH",
            location,
            data=chunked(blob.data[start : start + 10_000], 3000),
            headers={"Content-Range": f"{start}-{start + 9_999}"},
        )
        location = assert_upload_reply(registry, response, 202, "repo", start + 10_000)
    response = await registry.request("PUT", location, params={"digest": blob.digest})
    await assert_blob_created(registry, response, "repo", blob)


async def test_same_content_pushed_twice_in_one_repository(registry: Registry) -> None:
    blob = await registry.push_blob("repo")
    location = await registry.start_upload("repo")
    response = await registry.request(
        "PUT", location, params={"digest": blob.digest}, data=blob.data
    )
    await assert_blob_created(registry, response, "repo", blob)


async def test_location_is_absolute(registry: Registry) -> None:
    response = await registry.request("POST", "/v2/repo/blobs/uploads/")
    location = response.headers["Location"]
    assert location.startswith(f"http://{registry.client.host}:{registry.client.port}/v2/repo/")
