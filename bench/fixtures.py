"""What each registry holds before the timed runs, and the check that it serves it right.

Exactly 1000 repositories, ``bench/r0000`` … ``bench/r0999``, so that one
catalog page of n=1000 is the whole catalog on both servers:

- ``bench/r0000`` the small blob (HEAD), the 4 KiB blob (GET), and an image
  (config + one layer) tagged ``latest`` (GET manifest);
- ``bench/r0001`` the same image under 1000 tags ``t0000`` … ``t0999`` (one
  manifest, 1000 tags: tags/list reads tag names, not manifests);
- ``bench/r0002`` the 256 MiB blob (pull) and, when the pull storm runs, its
  image of five 40 MiB layers tagged ``storm`` (``bench.storm``);
- ``bench/r0003`` where the push workloads push;
- ``bench/r0004`` config and layer, where distinct manifests are PUT;
- ``bench/r0005`` … ``bench/r0999`` one blob each (the small blob, mounted).

The Redis comparison needs only ``bench/r0000`` (``full=False``).

Everything is pushed through the HTTP API with one aiohttp session, except
the 256 MiB blob, which goes through the raw client (aiohttp needs seconds of
client CPU for it, and this is set-up, not a measurement).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from bench import client, rawhttp, storm
from bench.client import DOCKER_ACCEPT, BenchError, digest_of
from bench.storm import Image as StormImage

REPOSITORIES = [f"bench/r{i:04d}" for i in range(1000)]
IMAGE_REPO, TAGS_REPO, PULL_REPO, PUSH_REPO, PUT_REPO = REPOSITORIES[:5]
TAGS = [f"t{i:04d}" for i in range(1000)]
SMALL_SIZE = 512
GET_BLOB_SIZE = 4096
BIG_SIZE = 256 << 20
CATALOG_QUERY = "?n=1000"
_SETUP_CONCURRENCY = 16


@dataclass
class Content:
    """The bytes both servers are given, generated once."""

    small: bytes
    blob4k: bytes
    config: bytes
    layer: bytes
    big: bytearray
    image: bytes = b""
    digests: dict[str, str] = field(default_factory=dict)
    #: The pull storm's image, made only when that workload runs (200 MiB more to push).
    storm: StormImage | None = None

    @classmethod
    def generate(cls, with_storm: bool = False) -> Content:
        config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {}}).encode()
        content = cls(
            small=os.urandom(SMALL_SIZE),
            blob4k=os.urandom(GET_BLOB_SIZE),
            config=config,
            layer=os.urandom(1024),
            big=bytearray(os.urandom(BIG_SIZE)),
        )
        content.image = client.manifest(content.config, content.layer)
        for key in ("small", "blob4k", "config", "layer", "big", "image"):
            content.digests[key] = digest_of(getattr(content, key))
        if with_storm:
            content.storm = StormImage.generate()
        return content

    def path(self, key: str) -> str:
        """The request path of a fixture by role."""
        paths = {
            "small": f"/v2/{IMAGE_REPO}/blobs/{self.digests['small']}",
            "blob4k": f"/v2/{IMAGE_REPO}/blobs/{self.digests['blob4k']}",
            "manifest": f"/v2/{IMAGE_REPO}/manifests/latest",
            "big": f"/v2/{PULL_REPO}/blobs/{self.digests['big']}",
            "tags": f"/v2/{TAGS_REPO}/tags/list",
            "catalog": f"/v2/_catalog{CATALOG_QUERY}",
        }
        return paths[key]


async def _gather(limit: int, jobs: Iterable[Callable[[], Awaitable[None]]]) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with semaphore:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


async def _populate(url: str, content: Content, full: bool) -> None:
    d = content.digests
    async with client.session(_SETUP_CONCURRENCY) as http:
        for key in ("small", "blob4k", "config", "layer"):
            data = getattr(content, key)
            await client.push_monolithic(http, url, IMAGE_REPO, data, d[key])
        await client.put_manifest(http, url, IMAGE_REPO, "latest", content.image)
        if not full:
            return
        for repo in (TAGS_REPO, PUT_REPO):
            for key in ("config", "layer"):
                await client.mount(http, url, repo, d[key], IMAGE_REPO)
        await _gather(
            _SETUP_CONCURRENCY,
            (
                lambda tag=tag: client.put_manifest(http, url, TAGS_REPO, tag, content.image)
                for tag in TAGS
            ),
        )
        await _gather(
            _SETUP_CONCURRENCY,
            (
                lambda repo=repo: client.mount(http, url, repo, d["small"], IMAGE_REPO)
                for repo in [PUSH_REPO, *REPOSITORIES[5:]]
            ),
        )


def populate(url: str, content: Content, full: bool = True) -> None:
    """Push every fixture (or only ``bench/r0000``'s) to the registry at ``url``."""
    if full:
        rawhttp.push_monolithic(url, PULL_REPO, memoryview(content.big), content.digests["big"])
        if content.storm is not None:
            storm.push(url, PULL_REPO, content.storm)
    asyncio.run(_populate(url, content, full))


def _need(condition: bool, what: str) -> None:
    if not condition:
        raise BenchError(f"check failed: {what}")


async def _check(url: str, content: Content, full: bool) -> None:
    d = content.digests
    async with client.session(4) as http:
        small = await client.get_bytes(http, url, content.path("small"))
        _need(small == content.small, "the small blob's bytes")
        async with http.head(f"{url}{content.path('small')}") as response:
            _need(response.status == 200, f"HEAD small blob: HTTP {response.status}")
            length = response.headers.get("Content-Length")
            _need(length == str(SMALL_SIZE), f"HEAD small blob: Content-Length {length}")
            _need(response.headers.get("Docker-Content-Digest") == d["small"], "HEAD digest")
        blob4k = await client.get_bytes(http, url, content.path("blob4k"))
        _need(blob4k == content.blob4k, "the 4 KiB blob's bytes")
        async with http.get(
            f"{url}{content.path('manifest')}", headers={"Accept": DOCKER_ACCEPT}
        ) as response:
            body = await response.read()
            _need(response.status == 200, f"GET manifest: HTTP {response.status}")
            _need(body == content.image, "the manifest's bytes")
            kind = response.headers.get("Content-Type")
            _need(kind == client.OCI_MANIFEST, f"manifest Content-Type {kind}")
        if not full:
            return
        tags = json.loads(await client.get_bytes(http, url, content.path("tags")))
        _need(sorted(tags["tags"]) == TAGS, f"tags/list: {len(tags['tags'])} tags")
        catalog = json.loads(await client.get_bytes(http, url, content.path("catalog")))
        _need(catalog["repositories"] == REPOSITORIES, "the catalog is the 1000 repositories")
        hasher = hashlib.sha256()
        async with http.get(f"{url}{content.path('big')}") as response:
            _need(response.status == 200, f"GET big blob: HTTP {response.status}")
            async for chunk in response.content.iter_chunked(1 << 20):
                hasher.update(chunk)
        _need(f"sha256:{hasher.hexdigest()}" == d["big"], "the 256 MiB blob's digest")


def check(url: str, content: Content, full: bool = True) -> None:
    """Read every fixture back and compare; raises BenchError on the first difference."""
    asyncio.run(_check(url, content, full))
    if full and content.storm is not None:
        storm.pull(url, PULL_REPO, content.storm, verify=True)
