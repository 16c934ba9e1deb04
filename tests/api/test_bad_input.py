"""Bad input is answered with the right error, never a 500, and never writes anything.

Each case runs against a registry holding an image, a blob and an upload in
progress, and compares everything in storage before and after the request
(on the filesystem: every file and folder under the root, hidden partial files
included). Paths with dot segments go out byte for byte, since aiohttp's
client would resolve them before sending.
"""

from __future__ import annotations

import io
import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from multidict import CIMultiDict
from tests.api.conftest import (
    API_VERSION,
    Image,
    Registry,
    chunked,
    digest_of,
    image_manifest,
    random_blob,
    random_config,
)

from cargohold.manifest import OCI_INDEX, OCI_MANIFEST


@dataclass
class Seeded:
    registry: Registry
    image: Image
    blob_digest: str
    upload: str  # the path of an upload in progress, holding 100 bytes


@pytest.fixture
async def seeded(registry: Registry) -> Seeded:
    image = await registry.push_image("repo", "v1")
    blob = await registry.push_blob("repo", random_blob(2000))
    upload = await registry.start_upload("repo")
    response = await registry.request("PATCH", upload, data=b"u" * 100)
    assert response.status == 202
    return Seeded(registry, image, blob.digest, registry.local(response.headers["Location"]))


@dataclass
class Reply:
    status: int
    headers: CIMultiDict[str] | Any
    body: bytes


async def send(
    registry: Registry,
    method: str,
    path: str,
    *,
    raw: bool = False,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    if raw:
        assert headers is None
        got = await registry.raw(method, path, body or b"")
        return Reply(got.status, got.headers, got.body)
    response = await registry.request(method, path, data=body, headers=headers)
    return Reply(response.status, response.headers, await response.read())


def assert_error(reply: Reply, status: int, code: str, method: str = "GET") -> None:
    assert reply.status == status, reply.body[:300]
    assert reply.headers[API_VERSION[0]] == API_VERSION[1]
    assert reply.headers["Content-Type"] == "application/json"
    if method == "HEAD":
        return
    assert int(reply.headers["Content-Length"]) == len(reply.body)
    (error,) = json.loads(reply.body)["errors"]
    assert error["code"] == code, error


async def assert_refused(
    seeded: Seeded,
    method: str,
    path: str,
    status: int,
    code: str,
    *,
    raw: bool = False,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """``method path`` is answered with ``status`` and ``code``, and storage is unchanged."""
    registry = seeded.registry
    before = await registry.snapshot()
    reply = await send(registry, method, path, raw=raw, body=body, headers=headers)
    assert_error(reply, status, code, method)
    assert await registry.snapshot() == before, f"{method} {path} wrote to storage"
    return reply


def manifest_body(seeded: Seeded) -> bytes:
    return seeded.image.payload


# -- names ------------------------------------------------------------------------------------

BAD_NAMES = [
    "Upper",
    "a/B",
    "%2e%2e",
    "a/%2e%2e/b",
    "a%2fb",
    "a%2Fb",
    "a" * 256,
    "/".join(["a" * 50] * 6),  # 305 characters in well-formed components
    "a//b",
    "a/",
    "-a",
    "a-",
    "a___b",
    "a.",
    "_a",
    "a..b",
    "%C3%A9",
    "a%20b",
]
# Dot segments: only a raw request keeps them.
RAW_NAMES = ["..", "a/../b", ".", "a/./b", "../repo"]


def name_endpoints(name: str, seeded: Seeded) -> list[tuple[str, str, bytes | None]]:
    """Every endpoint that takes a repository name, with ``name`` in it."""
    digest = seeded.image.digest
    upload_id = seeded.upload.rsplit("/", 1)[1]
    return [
        ("GET", f"/v2/{name}/tags/list", None),
        ("GET", f"/v2/{name}/manifests/v1", None),
        ("HEAD", f"/v2/{name}/manifests/{digest}", None),
        ("PUT", f"/v2/{name}/manifests/v1", manifest_body(seeded)),
        ("PUT", f"/v2/{name}/manifests/{digest}?tag=x", manifest_body(seeded)),
        ("DELETE", f"/v2/{name}/manifests/{digest}", None),
        ("GET", f"/v2/{name}/blobs/{seeded.blob_digest}", None),
        ("DELETE", f"/v2/{name}/blobs/{seeded.blob_digest}", None),
        ("POST", f"/v2/{name}/blobs/uploads/", None),
        ("POST", f"/v2/{name}/blobs/uploads/?digest={digest_of(b'x')}", b"x"),
        ("POST", f"/v2/{name}/blobs/uploads/?mount={seeded.blob_digest}&from=repo", None),
        ("GET", f"/v2/{name}/blobs/uploads/{upload_id}", None),
        ("PATCH", f"/v2/{name}/blobs/uploads/{upload_id}", b"more"),
        ("PUT", f"/v2/{name}/blobs/uploads/{upload_id}?digest={digest_of(b'x')}", b"x"),
        ("DELETE", f"/v2/{name}/blobs/uploads/{upload_id}", None),
        ("GET", f"/v2/{name}/referrers/{digest}", None),
    ]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_malformed_name(seeded: Seeded, name: str) -> None:
    for method, path, body in name_endpoints(name, seeded):
        await assert_refused(seeded, method, path, 400, "NAME_INVALID", body=body)


@pytest.mark.parametrize("name", RAW_NAMES)
async def test_dot_segments_in_name(seeded: Seeded, name: str) -> None:
    for method, path, body in name_endpoints(name, seeded):
        await assert_refused(seeded, method, path, 400, "NAME_INVALID", raw=True, body=body)


async def test_empty_name_matches_no_endpoint(seeded: Seeded) -> None:
    for method, path, _ in name_endpoints("", seeded):
        before = await seeded.registry.snapshot()
        reply = await send(seeded.registry, method, path)
        # No repository name at all: not an endpoint (Distribution's router says the same).
        assert reply.status == 404, (method, path)
        assert await seeded.registry.snapshot() == before


# -- digests ----------------------------------------------------------------------------------

BAD_DIGESTS = [
    "md5:" + "0" * 32,  # unknown algorithm
    "foo:" + "0" * 64,
    "sha256:abc",  # wrong length
    "sha256:" + "0" * 63,
    "sha256:" + "0" * 65,
    "sha512:" + "0" * 64,
    "sha256:" + "g" * 64,  # not hex
    "sha256:" + "A" * 64,  # not lower-case hex
    "sha256:",
    ":" + "0" * 64,
    "SHA256:" + "0" * 64,
    "sha256:" + "0" * 62 + "%20",
]


@pytest.mark.parametrize("digest", BAD_DIGESTS)
async def test_malformed_digest(seeded: Seeded, digest: str) -> None:
    payload = manifest_body(seeded)
    cases: list[tuple[str, str, bytes | None]] = [
        ("GET", f"/v2/repo/blobs/{digest}", None),
        ("HEAD", f"/v2/repo/blobs/{digest}", None),
        ("DELETE", f"/v2/repo/blobs/{digest}", None),
        ("GET", f"/v2/repo/manifests/{digest}", None),
        ("HEAD", f"/v2/repo/manifests/{digest}", None),
        ("PUT", f"/v2/repo/manifests/{digest}", payload),
        ("DELETE", f"/v2/repo/manifests/{digest}", None),
        ("GET", f"/v2/repo/referrers/{digest}", None),
        ("POST", f"/v2/repo/blobs/uploads/?digest={digest}", b"x"),
        ("PUT", f"{seeded.upload}?digest={digest}", b"x"),
    ]
    for method, path, body in cases:
        await assert_refused(seeded, method, path, 400, "DIGEST_INVALID", body=body)


@pytest.mark.parametrize("path", ["/v2/repo/blobs/sha256", "/v2/repo/blobs/latest"])
async def test_blob_path_without_a_digest(seeded: Seeded, path: str) -> None:
    await assert_refused(seeded, "GET", path, 400, "DIGEST_INVALID")


async def test_missing_digest_parameter(seeded: Seeded) -> None:
    await assert_refused(seeded, "PUT", seeded.upload, 400, "DIGEST_INVALID", body=b"x")
    await assert_refused(seeded, "PUT", f"{seeded.upload}?digest=", 400, "DIGEST_INVALID")
    await assert_refused(
        seeded, "POST", "/v2/repo/blobs/uploads/?digest=", 400, "DIGEST_INVALID", body=b"x"
    )


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "SHA256", "sha256;x", "../x"])
async def test_unsupported_digest_algorithm(seeded: Seeded, algorithm: str) -> None:
    await assert_refused(
        seeded,
        "POST",
        f"/v2/repo/blobs/uploads/?digest-algorithm={algorithm}",
        400,
        "DIGEST_INVALID",
    )


# -- tags -------------------------------------------------------------------------------------

BAD_TAGS = ["-x", ".x", "a" * 129, "a%20b", "%C3%A9", "a%2fb", "a+b", "a$b"]


@pytest.mark.parametrize("tag", BAD_TAGS)
async def test_malformed_tag(seeded: Seeded, tag: str) -> None:
    payload = manifest_body(seeded)
    digest = seeded.image.digest
    cases: list[tuple[str, str, bytes | None]] = [
        ("GET", f"/v2/repo/manifests/{tag}", None),
        ("HEAD", f"/v2/repo/manifests/{tag}", None),
        ("PUT", f"/v2/repo/manifests/{tag}", payload),
        ("DELETE", f"/v2/repo/manifests/{tag}", None),
        ("PUT", f"/v2/repo/manifests/{digest}?tag=ok&tag={tag}", payload),
    ]
    for method, path, body in cases:
        await assert_refused(seeded, method, path, 400, "TAG_INVALID", body=body)


async def test_longest_tag_is_fine(seeded: Seeded) -> None:
    tag = "a" * 128
    await seeded.registry.put_manifest("repo", tag, manifest_body(seeded))
    assert tag in await seeded.registry.tags("repo")


# -- Range and Content-Range ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("bytes=abc", 416),
        ("bytes=", 416),
        ("bytes=-", 416),
        ("bytes=--5", 416),
        ("bytes=5", 416),
        ("bytes=10-5", 416),  # reversed
        ("bytes=1-2-3", 416),
        ("bytes=99999999999999999999999-", 416),
        # Python's int() refuses more than 4300 digits; such numbers are merely huge.
        ("bytes=" + "9" * 5000 + "-", 416),
        ("bytes=0-" + "9" * 5000, 206),
        ("bytes=-" + "9" * 5000, 206),
        ("bytes=" + "0" * 5000 + "0-1999", 206),
        ("bytes=0-1,3-4", 200),  # several ranges: the whole blob
        ("bytes=0-1, 3-4", 200),
        ("foo", 416),
        ("", 200),
        ("pages=1-2", 200),  # an unknown unit is ignored (RFC 9110 14.2)
    ],
)
async def test_range_header(seeded: Seeded, header: str, status: int) -> None:
    path = f"/v2/repo/blobs/{seeded.blob_digest}"
    if status == 416:
        reply = await assert_refused(
            seeded, "GET", path, 416, "RANGE_INVALID", headers={"Range": header}
        )
        assert reply.headers["Content-Range"] == "bytes */2000"
        return
    reply = await send(seeded.registry, "GET", path, headers={"Range": header})
    assert reply.status == status
    assert len(reply.body) == 2000
    if status == 206:
        assert reply.headers["Content-Range"] == "bytes 0-1999/2000"


@pytest.mark.parametrize(
    "header",
    [
        "abc",
        "5-",
        "-5",
        "100-",
        "110-100",  # reversed
        "bytes */10",
        "100-99999999999999999999999",
        "100-103,104-107",
        "100-" + "9" * 5000,
        "9" * 4400 + "-" + "9" * 3000,  # aiohttp refuses header lines over 8190 bytes
        "0-3",  # not where the upload stands
        "100-107",  # where it stands, but not the body's length
        "bytes=100-",
    ],
)
async def test_content_range_header(seeded: Seeded, header: str) -> None:
    reply = await assert_refused(
        seeded,
        "PATCH",
        seeded.upload,
        416,
        "RANGE_INVALID",
        body=b"four",
        headers={"Content-Range": header},
    )
    assert reply.headers["Range"] == "0-99"


# -- manifests --------------------------------------------------------------------------------


def bad_manifests(seeded: Seeded) -> dict[str, tuple[bytes, str, int, str]]:
    config = seeded.image.config
    assert config is not None
    body = json.loads(seeded.image.payload)
    missing = image_manifest(random_config(), [random_blob()])
    return {
        "not-json": (b"{", OCI_MANIFEST, 400, "MANIFEST_INVALID"),
        "empty": (b"", OCI_MANIFEST, 400, "MANIFEST_INVALID"),
        "null": (b"null", OCI_MANIFEST, 400, "MANIFEST_INVALID"),
        "deep": (b"[" * 100_000 + b"]" * 100_000, OCI_MANIFEST, 400, "MANIFEST_INVALID"),
        "duplicate-key": (
            b'{"schemaVersion": 2, "schemaVersion": 2}',
            OCI_MANIFEST,
            400,
            "MANIFEST_INVALID",
        ),
        "wrong-type": (seeded.image.payload, "text/plain", 400, "MANIFEST_INVALID"),
        "type-mismatch": (seeded.image.payload, OCI_INDEX, 400, "MANIFEST_INVALID"),
        "size-not-int": (
            json.dumps({**body, "config": {**body["config"], "size": "1"}}).encode(),
            OCI_MANIFEST,
            400,
            "MANIFEST_INVALID",
        ),
        "missing-blobs": (missing, OCI_MANIFEST, 400, "MANIFEST_BLOB_UNKNOWN"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "not-json",
        "empty",
        "null",
        "deep",
        "duplicate-key",
        "wrong-type",
        "type-mismatch",
        "size-not-int",
        "missing-blobs",
    ],
)
@pytest.mark.parametrize("reference", ["tag", "digest"])
async def test_bad_manifest(seeded: Seeded, case: str, reference: str) -> None:
    payload, content_type, status, code = bad_manifests(seeded)[case]
    target = "new" if reference == "tag" else digest_of(payload)
    await assert_refused(
        seeded,
        "PUT",
        f"/v2/repo/manifests/{target}",
        status,
        code,
        body=payload,
        headers={"Content-Type": content_type},
    )


@pytest.mark.parametrize("transfer", ["content-length", "chunked"])
async def test_five_mebibyte_manifest(seeded: Seeded, transfer: str) -> None:
    registry = seeded.registry
    payload = b'{"schemaVersion": 2, "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    before = await registry.snapshot()
    data = io.BytesIO(payload) if transfer == "content-length" else chunked(payload, 1 << 20)
    response = await registry.request(
        "PUT", "/v2/repo/manifests/big", data=data, headers={"Content-Type": OCI_MANIFEST}
    )
    reply = Reply(response.status, response.headers, await response.read())
    assert_error(reply, 413, "MANIFEST_INVALID")
    assert await registry.snapshot() == before


# -- pagination -------------------------------------------------------------------------------


# U+00B2 (superscript two) passes str.isdigit() but not int(); U+0661 (Arabic-Indic one)
# passes both, but not Go's strconv.Atoi: both must be refused.
@pytest.mark.parametrize(
    "n", ["-1", "abc", "1e3", "+1", "%00", "99999999999999999999", "%C2%B2", "%D9%A1", "1%20"]
)
@pytest.mark.parametrize("path", ["/v2/repo/tags/list", "/v2/_catalog"])
async def test_bad_page_size(seeded: Seeded, path: str, n: str) -> None:
    await assert_refused(seeded, "GET", f"{path}?n={n}", 400, "PAGINATION_NUMBER_INVALID")


# -- unknown uploads --------------------------------------------------------------------------

UNKNOWN_UPLOADS = [
    str(uuid.uuid4()),
    "garbage",
    "a" * 1000,
    "%2e%2e",
    "00000000-0000-0000-0000-00000000000g",
]


@pytest.mark.parametrize("upload_id", UNKNOWN_UPLOADS)
async def test_unknown_upload(seeded: Seeded, upload_id: str) -> None:
    path = f"/v2/repo/blobs/uploads/{upload_id}"
    for method, body in (("GET", None), ("PATCH", b"abc"), ("DELETE", None)):
        await assert_refused(seeded, method, path, 404, "BLOB_UPLOAD_UNKNOWN", body=body)
    await assert_refused(
        seeded, "PUT", f"{path}?digest={digest_of(b'abc')}", 404, "BLOB_UPLOAD_UNKNOWN", body=b"abc"
    )


async def test_dot_dot_upload_id(seeded: Seeded) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        await assert_refused(
            seeded, method, "/v2/repo/blobs/uploads/..", 404, "BLOB_UPLOAD_UNKNOWN", raw=True
        )


async def test_upload_of_another_repository(seeded: Seeded) -> None:
    other = seeded.upload.replace("/v2/repo/", "/v2/other/")
    for method, body in (("GET", None), ("PATCH", b"abc"), ("DELETE", None)):
        await assert_refused(seeded, method, other, 404, "BLOB_UPLOAD_UNKNOWN", body=body)


# -- methods ----------------------------------------------------------------------------------


def method_cases(seeded: Seeded) -> list[tuple[str, str]]:
    digest = seeded.image.digest
    return [
        ("POST", "/v2/"),
        ("DELETE", "/v2/"),
        ("PUT", "/v2/_catalog"),
        ("DELETE", "/v2/_catalog"),
        ("POST", "/v2/repo/tags/list"),
        ("DELETE", "/v2/repo/tags/list"),
        ("POST", f"/v2/repo/blobs/{seeded.blob_digest}"),
        ("PUT", f"/v2/repo/blobs/{seeded.blob_digest}"),
        ("PATCH", f"/v2/repo/blobs/{seeded.blob_digest}"),
        ("POST", f"/v2/repo/manifests/{digest}"),
        ("PATCH", "/v2/repo/manifests/v1"),
        ("GET", "/v2/repo/blobs/uploads/"),
        ("HEAD", "/v2/repo/blobs/uploads/"),
        ("PUT", "/v2/repo/blobs/uploads/"),
        ("PATCH", "/v2/repo/blobs/uploads/"),
        ("DELETE", "/v2/repo/blobs/uploads/"),
        ("POST", seeded.upload),
        ("PUT", f"/v2/repo/referrers/{digest}"),
        ("DELETE", f"/v2/repo/referrers/{digest}"),
        ("OPTIONS", "/v2/repo/manifests/v1"),
        ("TRACE", f"/v2/repo/blobs/{seeded.blob_digest}"),
        ("PROPFIND", "/v2/repo/tags/list"),
    ]


async def test_unknown_method_on_a_known_route(seeded: Seeded) -> None:
    for method, path in method_cases(seeded):
        reply = await assert_refused(seeded, method, path, 405, "UNSUPPORTED", body=b"data")
        # RFC 9110 15.5.6: a 405 MUST say which methods the resource does support.
        allowed = {m.strip() for m in reply.headers["Allow"].split(",")}
        assert method not in allowed
        assert allowed & {"GET", "POST"}, (method, path, allowed)


async def test_unknown_method_with_a_bad_name_is_still_405(seeded: Seeded) -> None:
    await assert_refused(seeded, "POST", "/v2/Bad/tags/list", 405, "UNSUPPORTED")
