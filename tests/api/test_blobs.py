"""``GET``/``HEAD``/``DELETE /v2/<name>/blobs/<digest>`` (end-2, end-10).

A blob is served with its size, type, digest and an ETag; byte ranges are
served as RFC 9110 says (206 with ``Content-Range``, 416 with ``bytes */size``
when unsatisfiable). A blob is visible only in the repositories it is linked
into. Large blobs take a different path (sendfile on a local disk, streaming
otherwise) than small ones, so both sizes are checked.
"""

from __future__ import annotations

import pytest
from tests.api.conftest import (
    Blob,
    MakeRegistry,
    Registry,
    assert_error,
    digest_of,
    random_blob,
)

SMALL = 1000
#: Over the api's inline limit (256 KiB): served by sendfile or by streaming.
LARGE = 300 * 1024 + 17


@pytest.fixture(params=[SMALL, LARGE], ids=["small", "large"])
async def blob(request: pytest.FixtureRequest, registry: Registry) -> Blob:
    return await registry.push_blob("repo", random_blob(request.param))


def assert_blob_headers(response_headers: object, blob: Blob, length: int) -> None:
    headers = response_headers  # a CIMultiDictProxy
    assert headers["Content-Length"] == str(length)  # type: ignore[index]
    assert headers["Content-Type"] == "application/octet-stream"  # type: ignore[index]
    assert headers["Docker-Content-Digest"] == blob.digest  # type: ignore[index]
    assert headers["ETag"] == f'"{blob.digest}"'  # type: ignore[index]
    assert headers["Accept-Ranges"] == "bytes"  # type: ignore[index]


async def test_get_blob(registry: Registry, blob: Blob) -> None:
    response = await registry.request("GET", f"/v2/repo/blobs/{blob.digest}")
    assert response.status == 200
    assert_blob_headers(response.headers, blob, blob.size)
    assert await response.read() == blob.data


async def test_head_blob(registry: Registry, blob: Blob) -> None:
    response = await registry.request("HEAD", f"/v2/repo/blobs/{blob.digest}")
    assert response.status == 200
    assert_blob_headers(response.headers, blob, blob.size)
    assert await response.read() == b""


async def test_sha512_blob(registry: Registry) -> None:
    blob = Blob(b"sha512 content" * 100, algorithm="sha512")
    await registry.push_blob("repo", blob)
    response = await registry.request("GET", f"/v2/repo/blobs/{blob.digest}")
    assert response.status == 200
    assert response.headers["Docker-Content-Digest"] == blob.digest
    assert await response.read() == blob.data


async def test_zero_length_blob(registry: Registry) -> None:
    blob = await registry.push_blob("repo", Blob(b""))
    response = await registry.request("GET", f"/v2/repo/blobs/{blob.digest}")
    assert response.status == 200
    assert response.headers["Content-Length"] == "0"
    assert await response.read() == b""
    response = await registry.request("HEAD", f"/v2/repo/blobs/{blob.digest}")
    assert response.status == 200
    assert response.headers["Content-Length"] == "0"


# -- ranges ---------------------------------------------------------------------------------


def satisfiable_ranges(size: int) -> list[tuple[str, int, int]]:
    """``(Range header, first byte, last byte)`` for a blob of ``size`` bytes."""
    return [
        ("bytes=0-0", 0, 0),
        ("bytes=10-99", 10, 99),
        (f"bytes=0-{size - 1}", 0, size - 1),
        (f"bytes={size - 1}-{size - 1}", size - 1, size - 1),
        ("bytes=100-", 100, size - 1),
        ("bytes=-1", size - 1, size - 1),
        ("bytes=-300", size - 300, size - 1),
        # Past the end is cut at the end (RFC 9110 14.1.1), likewise a suffix longer than the blob.
        (f"bytes=5-{size + 1000}", 5, size - 1),
        (f"bytes=-{size + 1000}", 0, size - 1),
    ]


@pytest.mark.parametrize("case", range(9))
async def test_range(registry: Registry, blob: Blob, case: int) -> None:
    header, first, last = satisfiable_ranges(blob.size)[case]
    response = await registry.request(
        "GET", f"/v2/repo/blobs/{blob.digest}", headers={"Range": header}
    )
    assert response.status == 206, header
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{blob.size}"
    assert_blob_headers(response.headers, blob, last - first + 1)
    assert await response.read() == blob.data[first : last + 1]


async def test_range_unit_is_case_insensitive(registry: Registry, blob: Blob) -> None:
    response = await registry.request(
        "GET", f"/v2/repo/blobs/{blob.digest}", headers={"Range": "Bytes=2-5"}
    )
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes 2-5/{blob.size}"
    assert await response.read() == blob.data[2:6]


async def test_range_on_head(registry: Registry, blob: Blob) -> None:
    response = await registry.request(
        "HEAD", f"/v2/repo/blobs/{blob.digest}", headers={"Range": "bytes=10-19"}
    )
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes 10-19/{blob.size}"
    assert response.headers["Content-Length"] == "10"
    assert await response.read() == b""


@pytest.mark.parametrize("where", ["at-end", "past-end", "suffix-zero"])
async def test_unsatisfiable_range_is_416(registry: Registry, blob: Blob, where: str) -> None:
    header = {
        "at-end": f"bytes={blob.size}-",
        "past-end": f"bytes={blob.size + 10}-{blob.size + 20}",
        "suffix-zero": "bytes=-0",
    }[where]
    response = await registry.request(
        "GET", f"/v2/repo/blobs/{blob.digest}", headers={"Range": header}
    )
    # The body is an error document and Content-Length says exactly its length
    # (Distribution's headers contradict its body here).
    await assert_error(response, 416, "RANGE_INVALID")
    assert response.headers["Content-Range"] == f"bytes */{blob.size}"


async def test_any_range_of_an_empty_blob_is_416(registry: Registry) -> None:
    blob = await registry.push_blob("repo", Blob(b""))
    response = await registry.request(
        "GET", f"/v2/repo/blobs/{blob.digest}", headers={"Range": "bytes=0-0"}
    )
    await assert_error(response, 416, "RANGE_INVALID")
    assert response.headers["Content-Range"] == "bytes */0"


async def test_several_ranges_are_answered_with_the_whole_blob(
    registry: Registry, blob: Blob
) -> None:
    # RFC 9110 lets a server ignore a multi-range request and send the whole content.
    response = await registry.request(
        "GET", f"/v2/repo/blobs/{blob.digest}", headers={"Range": "bytes=0-1,5-9"}
    )
    assert response.status == 200
    assert "Content-Range" not in response.headers
    assert await response.read() == blob.data


async def test_unknown_range_unit_is_ignored(registry: Registry, blob: Blob) -> None:
    # RFC 9110 14.2: a Range with a unit the server does not understand MUST be ignored.
    response = await registry.request(
        "GET", f"/v2/repo/blobs/{blob.digest}", headers={"Range": "items=0-5"}
    )
    assert response.status == 200
    assert await response.read() == blob.data


# -- conditional requests ---------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize(
    "tag", ["{digest}", '"{digest}"', '"other", "{digest}"', "*", 'W/"{digest}"']
)
async def test_if_none_match_is_304(registry: Registry, blob: Blob, method: str, tag: str) -> None:
    response = await registry.request(
        method,
        f"/v2/repo/blobs/{blob.digest}",
        headers={"If-None-Match": tag.format(digest=blob.digest)},
    )
    assert response.status == 304
    assert response.headers["ETag"] == f'"{blob.digest}"'
    assert response.headers["Docker-Content-Digest"] == blob.digest
    assert await response.read() == b""


async def test_if_none_match_other_etag_is_200(registry: Registry, blob: Blob) -> None:
    response = await registry.request(
        "GET",
        f"/v2/repo/blobs/{blob.digest}",
        headers={"If-None-Match": f'"{digest_of(b"other")}"'},
    )
    assert response.status == 200
    assert await response.read() == blob.data


# -- unknown blobs, and repositories as boundaries -------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_unknown_blob_is_404(registry: Registry, method: str) -> None:
    digest = digest_of(b"never pushed")
    response = await registry.request(method, f"/v2/repo/blobs/{digest}")
    error = await assert_error(response, 404, "BLOB_UNKNOWN", head=method == "HEAD")
    if method == "GET":
        assert error["detail"] == {"digest": digest}


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["inline", "file-or-stream"])
async def test_blob_of_one_repository_is_unknown_in_another(
    make_registry: MakeRegistry, size: int
) -> None:
    """Knowing a digest is not enough: every way of serving checks the repository's link.

    Small blobs are read inline, large ones leave by sendfile (filesystem) or as a
    stream (memory), each answered by the fast path or by aiohttp; a link removed
    by a delete hides the blob as surely as one never written.
    """
    registry = await make_registry()
    blob = await registry.push_blob("a", random_blob(size))
    await registry.push_blob("b")  # b exists, but does not hold this blob
    await registry.push_blob("gone", blob)
    assert (await registry.request("DELETE", f"/v2/gone/blobs/{blob.digest}")).status == 202
    for repository in ("b", "c", "a/a", "gone"):
        target = f"/v2/{repository}/blobs/{blob.digest}"
        for headers in ({}, {"Range": "bytes=0-9"}):
            status, body = await registry.request_anew("GET", target, headers=headers)
            assert status == 404, (repository, headers)
            assert b"BLOB_UNKNOWN" in body
            assert await registry.request_anew("HEAD", target, headers=headers) == (404, b"")
    assert await registry.request_anew("GET", f"/v2/a/blobs/{blob.digest}") == (200, blob.data)


# -- delete -------------------------------------------------------------------------------------


async def test_delete_blob(registry: Registry) -> None:
    blob = await registry.push_blob("a")
    await registry.push_blob("b", blob)
    response = await registry.request("DELETE", f"/v2/a/blobs/{blob.digest}")
    assert response.status == 202
    assert response.headers["Docker-Content-Digest"] == blob.digest
    assert await response.read() == b""
    response = await registry.request("GET", f"/v2/a/blobs/{blob.digest}")
    await assert_error(response, 404, "BLOB_UNKNOWN")
    response = await registry.request("DELETE", f"/v2/a/blobs/{blob.digest}")
    await assert_error(response, 404, "BLOB_UNKNOWN")
    # Only the link of "a" went: "b" still serves the content.
    response = await registry.request("GET", f"/v2/b/blobs/{blob.digest}")
    assert response.status == 200
    assert await response.read() == blob.data


async def test_delete_unknown_blob_is_404(registry: Registry) -> None:
    response = await registry.request("DELETE", f"/v2/a/blobs/{digest_of(b'x')}")
    await assert_error(response, 404, "BLOB_UNKNOWN")


async def test_delete_blob_when_deletes_are_disabled(make_registry: MakeRegistry) -> None:
    registry = await make_registry({"storage": {"delete": {"enabled": False}}})
    blob = await registry.push_blob("a")
    response = await registry.request("DELETE", f"/v2/a/blobs/{blob.digest}")
    await assert_error(response, 405, "UNSUPPORTED")
    response = await registry.request("GET", f"/v2/a/blobs/{blob.digest}")
    assert response.status == 200
    assert await response.read() == blob.data


async def test_deleted_blob_can_be_pushed_again(registry: Registry) -> None:
    blob = await registry.push_blob("a")
    assert (await registry.request("DELETE", f"/v2/a/blobs/{blob.digest}")).status == 202
    await registry.push_blob("a", blob)
    response = await registry.request("GET", f"/v2/a/blobs/{blob.digest}")
    assert await response.read() == blob.data
