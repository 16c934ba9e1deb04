"""The few registry calls the set-up makes, over one aiohttp session.

The timed bulk transfers use ``rawhttp`` instead. Every call checks the status
the specification requires and raises ``BenchError`` naming the request
otherwise: a benchmark of failing requests measures nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from urllib.parse import urljoin

import aiohttp

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

#: What ``docker pull`` sends as Accept for a manifest.
DOCKER_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/json",
    ]
)


class BenchError(RuntimeError):
    """A request did not do what the benchmark needs."""


def digest_of(data: bytes | bytearray | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def session(connections: int = 16) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    timeout = aiohttp.ClientTimeout(total=600)
    return aiohttp.ClientSession(
        connector=connector, timeout=timeout, read_bufsize=1 << 20, auto_decompress=False
    )


async def _expect(response: aiohttp.ClientResponse, statuses: Iterable[int], what: str) -> None:
    if response.status not in statuses:
        body = (await response.read())[:300]
        raise BenchError(f"{what}: HTTP {response.status}: {body!r}")


async def start_upload(http: aiohttp.ClientSession, url: str, name: str) -> str:
    """POST a new upload session; its absolute Location."""
    async with http.post(f"{url}/v2/{name}/blobs/uploads/") as response:
        await _expect(response, (202,), f"POST {name} upload")
        return urljoin(url, response.headers["Location"])


def _with_query(location: str, query: str) -> str:
    return location + ("&" if "?" in location else "?") + query


async def push_monolithic(
    http: aiohttp.ClientSession, url: str, name: str, data: bytes | memoryview, digest: str
) -> None:
    """POST, then one PUT ?digest= with the whole body."""
    location = await start_upload(http, url, name)
    headers = {"Content-Type": "application/octet-stream"}
    async with http.put(_with_query(location, f"digest={digest}"), data=data, headers=headers) as r:
        await _expect(r, (201,), f"PUT {name} blob {digest}")


async def mount(http: aiohttp.ClientSession, url: str, name: str, digest: str, source: str) -> None:
    query = f"mount={digest}&from={source}"
    async with http.post(f"{url}/v2/{name}/blobs/uploads/?{query}") as response:
        await _expect(response, (201,), f"mount {digest} from {source} into {name}")


async def put_manifest(
    http: aiohttp.ClientSession, url: str, name: str, reference: str, body: bytes
) -> None:
    headers = {"Content-Type": OCI_MANIFEST}
    async with http.put(f"{url}/v2/{name}/manifests/{reference}", data=body, headers=headers) as r:
        await _expect(r, (201,), f"PUT {name} manifest {reference}")


async def get_bytes(
    http: aiohttp.ClientSession, url: str, path: str, headers: dict[str, str] | None = None
) -> bytes:
    async with http.get(f"{url}{path}", headers=headers) as response:
        await _expect(response, (200,), f"GET {path}")
        return await response.read()


def manifest(config: bytes, layer: bytes, annotation: str | None = None) -> bytes:
    """An OCI image manifest of ``config`` and one ``layer``; annotated to make it distinct."""
    body: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest_of(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER, "digest": digest_of(layer), "size": len(layer)}],
    }
    if annotation is not None:
        body["annotations"] = {"bench.id": annotation}
    return json.dumps(body, separators=(",", ":")).encode()
