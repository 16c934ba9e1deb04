"""Settings that change how the API answers: read-only mode, deletes, prefix, URLs.

Read-only mode follows Distribution: it registers no write handler then, so
every write is a 405 naming the methods left (``Allow``), while reads, and the
status of an upload started before, keep working. Distribution's 405 body is
Go's plain "Method Not Allowed"; cargohold sends the specification's
``UNSUPPORTED`` error document instead, as for every other error.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from tests.api.conftest import (
    Image,
    MakeRegistry,
    Registry,
    assert_common_headers,
    assert_error,
    digest_of,
    random_blob,
)

from cargohold.manifest import OCI_MANIFEST

# -- read-only mode ---------------------------------------------------------------------------


async def read_only_pair(make_registry: MakeRegistry) -> tuple[Registry, Registry]:
    """A writable registry and a read-only one on the same storage."""
    writable = await make_registry()
    read_only = await make_registry(
        {"storage": {"maintenance": {"readonly": {"enabled": True}}}},
        registry=writable.namespace if writable.storage == "inmemory" else None,
    )
    return writable, read_only


async def test_read_only_refuses_every_write(make_registry: MakeRegistry) -> None:
    writable, registry = await read_only_pair(make_registry)
    image = await writable.push_image("repo", "v1")
    blob = await writable.push_blob("repo")
    upload = await writable.start_upload("repo")
    new = random_blob()
    writes: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", "/v2/repo/blobs/uploads/", {}, ""),
        ("POST", f"/v2/repo/blobs/uploads/?digest={new.digest}", {"data": new.data}, ""),
        ("POST", f"/v2/other/blobs/uploads/?mount={blob.digest}&from=repo", {}, ""),
        ("PATCH", upload, {"data": b"abc"}, "GET"),
        ("PUT", f"{upload}?digest={digest_of(b'')}", {}, "GET"),
        ("DELETE", upload, {}, "GET"),
        ("PUT", "/v2/repo/manifests/v2", {"data": image.payload}, "GET, HEAD"),
        ("PUT", f"/v2/repo/manifests/{image.digest}", {"data": image.payload}, "GET, HEAD"),
        ("DELETE", f"/v2/repo/manifests/{image.digest}", {}, "GET, HEAD"),
        ("DELETE", "/v2/repo/manifests/v1", {}, "GET, HEAD"),
        ("DELETE", f"/v2/repo/blobs/{blob.digest}", {}, "GET, HEAD"),
    ]
    before = await registry.snapshot()
    for method, path, kwargs, allow in writes:
        headers = {"Content-Type": OCI_MANIFEST} if "manifests" in path else None
        response = await registry.request(method, path, headers=headers, **kwargs)
        error = await assert_error(response, 405, "UNSUPPORTED")
        assert "read-only" in error["message"]
        assert response.headers["Allow"] == allow, (method, path)
        assert_common_headers(response.headers)
    assert await registry.snapshot() == before

    # Everything is still there, and the upload can be finished once writes are back.
    assert await writable.tags("repo") == ["v1"]
    response = await writable.request("PUT", upload, params={"digest": new.digest}, data=new.data)
    assert response.status == 201


async def test_read_only_serves_reads(make_registry: MakeRegistry) -> None:
    writable, registry = await read_only_pair(make_registry)
    image = await writable.push_image("repo", "v1")
    assert image.config is not None
    upload = await writable.start_upload("repo")
    response = await writable.request("PATCH", upload, data=b"12345")
    upload = writable.local(response.headers["Location"])

    before = await registry.snapshot()
    response = await registry.request("GET", "/v2/")
    assert response.status == 200
    for reference in ("v1", image.digest):
        response = await registry.request("GET", f"/v2/repo/manifests/{reference}")
        assert response.status == 200
        assert await response.read() == image.payload
        response = await registry.request("HEAD", f"/v2/repo/manifests/{reference}")
        assert response.status == 200
    response = await registry.request("GET", f"/v2/repo/blobs/{image.config.digest}")
    assert await response.read() == image.config.data
    response = await registry.request(
        "GET", f"/v2/repo/blobs/{image.config.digest}", headers={"Range": "bytes=0-3"}
    )
    assert response.status == 206
    assert await response.read() == image.config.data[:4]
    assert await registry.tags("repo") == ["v1"]
    response = await registry.request("GET", "/v2/_catalog")
    assert await response.json() == {"repositories": ["repo"]}
    response = await registry.request("GET", f"/v2/repo/referrers/{image.digest}")
    assert response.status == 200
    # Upload status is a read: Distribution answers it in read-only mode too.
    response = await registry.request("GET", upload)
    assert response.status == 204
    assert response.headers["Range"] == "0-4"
    # Reading wrote nothing.
    assert await registry.snapshot() == before


async def test_read_only_still_validates_nothing_before_refusing(
    make_registry: MakeRegistry,
) -> None:
    # The mode is checked first: a write with bad input is a 405 too, not a 400.
    _, registry = await read_only_pair(make_registry)
    response = await registry.request("PUT", "/v2/BAD/manifests/-x", data=b"{")
    await assert_error(response, 405, "UNSUPPORTED")


# -- deletes disabled -------------------------------------------------------------------------


async def test_deletes_disabled_still_cancel_uploads(make_registry: MakeRegistry) -> None:
    # Distribution gates blob and manifest deletes on storage.delete.enabled, not uploads.
    registry = await make_registry({"storage": {"delete": {"enabled": False}}})
    image = await registry.push_image("repo", "v1")
    for path in (
        f"/v2/repo/manifests/{image.digest}",
        "/v2/repo/manifests/v1",
        f"/v2/repo/blobs/{image.layers[0].digest}",
    ):
        response = await registry.request("DELETE", path)
        await assert_error(response, 405, "UNSUPPORTED")
    upload = await registry.start_upload("repo")
    response = await registry.request("DELETE", upload)
    assert response.status == 204
    response = await registry.request("GET", upload)
    await assert_error(response, 404, "BLOB_UPLOAD_UNKNOWN")


async def test_deletes_are_disabled_by_default(make_registry: MakeRegistry) -> None:
    registry = await make_registry({"storage": {"delete": None}})
    blob = await registry.push_blob("repo")
    response = await registry.request("DELETE", f"/v2/repo/blobs/{blob.digest}")
    await assert_error(response, 405, "UNSUPPORTED")


# -- http.prefix ------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/registry/", "/registry", "/a/b/", "registry/"])
async def test_prefix_mounts_everything_under_it(make_registry: MakeRegistry, prefix: str) -> None:
    registry = await make_registry({"http": {"prefix": prefix}})
    base = "/" + prefix.strip("/")
    assert registry.prefix == base

    response = await registry.request("GET", f"{base}/v2/")
    assert response.status == 200
    assert await response.read() == b"{}"
    assert_common_headers(response.headers)
    for outside in ("/v2/", "/v2/_catalog", f"{base}/v3/", f"{base}v2/"):
        response = await registry.request("GET", outside)
        assert response.status == 404, outside

    # A whole push through the prefix, following each Location.
    blob = random_blob(5000)
    response = await registry.request("POST", f"{base}/v2/repo/blobs/uploads/")
    assert response.status == 202
    location = registry.local(response.headers["Location"])
    assert location.startswith(f"{base}/v2/repo/blobs/uploads/")
    response = await registry.request("PATCH", location, data=blob.data)
    location = registry.local(response.headers["Location"])
    assert location.startswith(f"{base}/v2/repo/blobs/uploads/")
    response = await registry.request("PUT", location, params={"digest": blob.digest})
    assert response.status == 201
    assert registry.local(response.headers["Location"]) == f"{base}/v2/repo/blobs/{blob.digest}"

    response = await registry.request(
        "POST",
        f"{base}/v2/mounted/blobs/uploads/",
        params={"mount": blob.digest, "from": "repo"},
    )
    assert response.status == 201
    assert registry.local(response.headers["Location"]) == f"{base}/v2/mounted/blobs/{blob.digest}"

    image = await registry.push_image("repo", "v1")  # helpers go through registry.url()
    await registry.put_manifest("repo", "v2", image.payload)
    response = await registry.request(
        "PUT",
        f"{base}/v2/repo/manifests/v3",
        data=image.payload,
        headers={"Content-Type": OCI_MANIFEST},
    )
    assert (
        registry.local(response.headers["Location"]) == f"{base}/v2/repo/manifests/{image.digest}"
    )
    response = await registry.request("GET", f"{base}/v2/repo/manifests/v1")
    assert await response.read() == image.payload

    response = await registry.request("GET", f"{base}/v2/repo/tags/list?n=1")
    assert await response.json() == {"name": "repo", "tags": ["v1"]}
    link = re.fullmatch(r'<([^>]+)>; rel="next"', response.headers["Link"])
    assert link is not None
    assert registry.local(link.group(1)) == f"{base}/v2/repo/tags/list?n=1&last=v1"

    response = await registry.request("GET", f"{base}/v2/_catalog?n=1")
    assert await response.json() == {"repositories": ["mounted"]}
    link = re.fullmatch(r'<([^>]+)>; rel="next"', response.headers["Link"])
    assert link is not None
    assert registry.local(link.group(1)) == f"{base}/v2/_catalog?n=1&last=mounted"

    response = await registry.request("GET", f"{base}/v2/repo/blobs/{blob.digest}")
    assert await response.read() == blob.data
    response = await registry.request("GET", f"{base}/v2/Bad/tags/list")
    await assert_error(response, 400, "NAME_INVALID")


# -- the URLs in Location and Link ------------------------------------------------------------


async def test_relative_urls(make_registry: MakeRegistry) -> None:
    registry = await make_registry({"http": {"relativeurls": True}})
    response = await registry.request("POST", "/v2/repo/blobs/uploads/")
    location = response.headers["Location"]
    assert re.fullmatch(r"/v2/repo/blobs/uploads/[0-9a-f-]{36}", location), location
    blob = random_blob()
    response = await registry.request(
        "PUT", location, params={"digest": blob.digest}, data=blob.data
    )
    assert response.headers["Location"] == f"/v2/repo/blobs/{blob.digest}"


async def test_configured_host(make_registry: MakeRegistry) -> None:
    registry = await make_registry({"http": {"host": "https://registry.example.com:8443/"}})
    response = await registry.request("POST", "/v2/repo/blobs/uploads/")
    assert response.headers["Location"].startswith(
        "https://registry.example.com:8443/v2/repo/blobs/uploads/"
    )


async def test_forwarded_headers(registry: Registry) -> None:
    response = await registry.request(
        "POST",
        "/v2/repo/blobs/uploads/",
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "front.example.com"},
    )
    assert response.headers["Location"].startswith("https://front.example.com/v2/repo/")


async def test_manifest_location_follows_the_same_rules(make_registry: MakeRegistry) -> None:
    registry = await make_registry({"http": {"relativeurls": True, "prefix": "/r/"}})
    image: Image = await registry.push_image("repo", "v1")
    response = await registry.request(
        "PUT", "/r/v2/repo/manifests/v2", data=image.payload, headers={"Content-Type": OCI_MANIFEST}
    )
    assert response.headers["Location"] == f"/r/v2/repo/manifests/{image.digest}"
