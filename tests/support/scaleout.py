"""Registry processes on one object store and one Redis behave as one registry.

docs/ARCHITECTURE.md, invariant 5: no request depends on process memory. The client here
sends every request of a push to the next process in turn (the POST, each
PATCH of a chunked upload, the closing PUT, the manifest PUT), following each
reply's ``Location`` but swapping its host for the next process's, which is
what a load balancer in front of them may do. What one process wrote, deleted
or cached in Redis must be what the others answer, at once.

``assert_one_registry`` is the whole check, run on every object store driver
(``tests/s3/test_scale_out.py``, ``tests/objectstores/test_serving.py``).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from tests.s3.conftest import MiB, error_codes, sha256
from tests.support.redis import RedisServer

REPO = "scale/app"
CHUNK = MiB
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class RoundRobin:
    """A client that sends each request to the next of ``urls`` in turn."""

    def __init__(self, session: aiohttp.ClientSession, urls: list[str]) -> None:
        self._session = session
        self._urls = urls
        self._turn = 0
        #: (method, the process that answered, status) of every request, in order.
        self.answered: list[tuple[str, str, int]] = []

    async def send(
        self, method: str, location: str, expect: int, **kwargs: Any
    ) -> tuple[CIMultiDictProxy[str], bytes]:
        """``method`` on ``location`` (a path, or a URL naming any process) at the next process."""
        process = self._urls[self._turn % len(self._urls)]
        self._turn += 1
        # Only the path and query of a Location are kept; the host is the next process's.
        url = URL(process + URL(location).raw_path_qs, encoded=True)
        async with self._session.request(method, url, allow_redirects=False, **kwargs) as reply:
            body = await reply.read()
            self.answered.append((method, process, reply.status))
            assert reply.status == expect, f"{method} {url}: {reply.status} {body[:500]!r}"
            return reply.headers, body

    async def push_blob(self, data: bytes) -> str:
        """POST, a PATCH per whole ``CHUNK`` with its Content-Range, then a PUT with the rest."""
        digest = sha256(data)
        headers, _ = await self.send("POST", f"/v2/{REPO}/blobs/uploads/", 202)
        location, offset = headers["Location"], 0
        while len(data) - offset > CHUNK:
            piece = data[offset : offset + CHUNK]
            last = offset + len(piece) - 1
            headers, _ = await self.send(
                "PATCH",
                location,
                202,
                data=io.BytesIO(piece),
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{last}",
                },
            )
            assert headers["Range"] == f"0-{last}", "every process sees the whole upload so far"
            location, offset = headers["Location"], offset + len(piece)
        closing = URL(location).update_query(digest=digest)
        headers, _ = await self.send(
            "PUT",
            str(closing),
            201,
            data=io.BytesIO(data[offset:]),
            headers={"Content-Type": "application/octet-stream"},
        )
        assert headers["Docker-Content-Digest"] == digest
        return digest

    async def push_image(self, tag: str, config: bytes, layers: list[bytes]) -> bytes:
        """Every blob, then the manifest by tag; the manifest's bytes."""
        for blob in [config, *layers]:
            await self.push_blob(blob)
        payload = image_manifest(config, layers)
        headers, _ = await self.send(
            "PUT",
            f"/v2/{REPO}/manifests/{tag}",
            201,
            data=payload,
            headers={"Content-Type": OCI_MANIFEST},
        )
        assert headers["Docker-Content-Digest"] == sha256(payload)
        return payload


def image_manifest(config: bytes, layers: list[bytes]) -> bytes:
    def descriptor(media_type: str, blob: bytes) -> dict[str, Any]:
        return {"mediaType": media_type, "digest": sha256(blob), "size": len(blob)}

    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER, layer) for layer in layers],
    }
    # Indented: bytes a registry that re-serialised the manifest would change.
    return json.dumps(manifest, indent=3).encode()


def image_config(name: str) -> bytes:
    nonce = os.urandom(8).hex()  # no two runs push the same config
    body = {"architecture": "amd64", "os": "linux", "name": name, "nonce": nonce}
    return json.dumps(body).encode()


async def get(
    session: aiohttp.ClientSession, url: str, **kwargs: Any
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    async with session.get(url, **kwargs) as reply:
        return reply.status, reply.headers, await reply.read()


async def head_status(session: aiohttp.ClientSession, url: str) -> int:
    async with session.head(url, allow_redirects=False) as reply:
        return reply.status


async def assert_one_registry(urls: list[str], redis_db: RedisServer) -> None:
    """Two images pushed round robin over three processes, then pulled, deleted and checked
    through each: every process answers what any other wrote, deleted or cached.

    The big layer (over 5 MiB, in 1 MiB PATCHes) is written by every process in turn.
    """
    assert len(urls) == 3
    big, shared, own = (os.urandom(n) for n in (5 * MiB + 123_457, MiB + 4321, 2 * MiB + 999))
    config_one, config_two = image_config("one"), image_config("two")
    redis = redis_db.client()
    async with aiohttp.ClientSession() as session:
        client = RoundRobin(session, urls)
        one = await client.push_image("one", config_one, [big, shared])
        big_requests = client.answered[2:9]  # after config one's POST and PUT
        assert [method for method, _, _ in big_requests] == ["POST", *["PATCH"] * 5, "PUT"]
        assert {process for _, process, _ in big_requests} == set(urls)
        two = await client.push_image("two", config_two, [own, shared])
        manifest_put_by = client.answered[-1][1]

        # -- pulled back from another process, byte for byte ----------------------------
        puller = urls[(urls.index(manifest_put_by) + 1) % 3]
        images = {
            "one": (one, [config_one, big, shared]),
            "two": (two, [config_two, own, shared]),
        }
        for tag, (payload, blobs) in images.items():
            status, headers, body = await get(
                session, f"{puller}/v2/{REPO}/manifests/{tag}", headers={"Accept": OCI_MANIFEST}
            )
            assert (status, body) == (200, payload)
            assert headers["Docker-Content-Digest"] == sha256(payload)
            for blob in blobs:
                # Redirected to the object store when its driver signs URLs; aiohttp follows.
                status, _, body = await get(session, f"{puller}/v2/{REPO}/blobs/{sha256(blob)}")
                assert status == 200
                assert body == blob
                for url in urls:
                    async with session.head(f"{url}/v2/{REPO}/blobs/{sha256(blob)}") as reply:
                        assert reply.status == 200
                        assert reply.headers["Content-Length"] == str(len(blob))
                        assert reply.headers["Docker-Content-Digest"] == sha256(blob)
        # The descriptors are in Redis now: the deletes below must not leave them alive.
        assert redis.sismember(f"repository::{REPO}::blobs", sha256(big))

        # -- a manifest deleted through one process is gone on all ----------------------
        digest_one = sha256(one)
        for url in urls:
            assert (await get(session, f"{url}/v2/{REPO}/manifests/{digest_one}"))[0] == 200
        async with session.delete(f"{urls[0]}/v2/{REPO}/manifests/{digest_one}") as reply:
            assert reply.status == 202
        for url in urls:
            for reference in (digest_one, "one"):
                status, _, body = await get(session, f"{url}/v2/{REPO}/manifests/{reference}")
                assert (status, error_codes(body)) == (404, ["MANIFEST_UNKNOWN"]), url
            status, _, body = await get(session, f"{url}/v2/{REPO}/tags/list")
            assert (status, json.loads(body)) == (200, {"name": REPO, "tags": ["two"]})
            status, _, body = await get(session, f"{url}/v2/{REPO}/manifests/two")
            assert (status, body) == (200, two)

        # -- a blob deleted through one process is unknown to all -----------------------
        async with session.delete(f"{urls[1]}/v2/{REPO}/blobs/{sha256(big)}") as reply:
            assert reply.status == 202
        assert not redis.sismember(f"repository::{REPO}::blobs", sha256(big))
        for url in urls:
            blob_url = f"{url}/v2/{REPO}/blobs/{sha256(big)}"
            assert await head_status(session, blob_url) == 404
            # Not a redirect: the object itself stays until garbage collection.
            status, _, body = await get(session, blob_url, allow_redirects=False)
            assert (status, error_codes(body)) == (404, ["BLOB_UNKNOWN"]), url
            # What is still linked stays served.
            assert await head_status(session, f"{url}/v2/{REPO}/blobs/{sha256(shared)}") == 200
    redis.close()
