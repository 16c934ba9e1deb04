"""The pull storm: many clients pulling one image at once, as a fleet of nodes would.

The image is ``LAYERS`` layers of ``LAYER_SIZE`` random bytes (each a gzip stream
of stored blocks, so the media type is true), a config and an OCI manifest,
tagged ``TAG`` in ``fixtures.PULL_REPO``. It is made once by the fixtures and
pushed to both registries, so both serve the same bytes.

Each client pulls as containerd does, one connection: GET the manifest by tag
with containerd's ``Accept`` list, then GET the config and every layer in order.
Bodies are discarded by the kernel (``rawhttp``'s MSG_TRUNC) and their lengths
checked; one client of each storm hashes what it reads and checks every digest,
so the bytes served under load are checked too. The clients are threads of the
bench process on blocking sockets: a thread costs the client little more than
its system calls (aiohttp would spend more CPU per byte than the servers do).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field

from bench import rawhttp
from bench.client import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, BenchError, digest_of

LAYERS = 5
#: Each layer's random content (its gzip stream adds a few KiB): 200 MiB in all.
LAYER_SIZE = 40 << 20
TAG = "storm"
CLIENTS = 64

#: What containerd's resolver sends as Accept for a manifest (``remotes/docker``).
CONTAINERD_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "*/*",
    ]
)


@dataclass
class Image:
    """The storm's image, held in memory: pushed to both registries, checked on both."""

    config: bytes
    layers: list[bytes]
    manifest: bytes = b""
    digest: str = ""
    #: (digest, size) of the config, then of every layer: what a pull GETs.
    blobs: list[tuple[str, int]] = field(default_factory=list)

    @classmethod
    def generate(cls, layers: int = LAYERS, layer_size: int = LAYER_SIZE) -> Image:
        # Stored blocks: a real gzip stream, as large as its content, made at memcpy speed.
        blobs = [
            gzip.compress(os.urandom(layer_size), compresslevel=0, mtime=0) for _ in range(layers)
        ]
        config = json.dumps(
            {"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers"}}
        ).encode()
        image = cls(config=config, layers=blobs)
        image.blobs = [(digest_of(blob), len(blob)) for blob in [config, *blobs]]
        (config_digest, config_size), *layer_blobs = image.blobs
        image.manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
                "layers": [
                    {"mediaType": OCI_LAYER, "digest": digest, "size": size}
                    for digest, size in layer_blobs
                ],
            },
            separators=(",", ":"),
        ).encode()
        image.digest = digest_of(image.manifest)
        return image

    @property
    def size(self) -> int:
        """Bytes of one complete pull: every blob (the manifest's few hundred left out)."""
        return sum(size for _, size in self.blobs)


def push(url: str, repository: str, image: Image) -> None:
    """Push every blob of ``image`` to ``repository``, then its manifest under ``TAG``."""
    for data, (digest, _) in zip([image.config, *image.layers], image.blobs, strict=True):
        rawhttp.push_monolithic(url, repository, memoryview(data), digest)
    host, port, _ = rawhttp.split_url(url)
    with rawhttp.Connection(host, port) as conn:
        path = f"/v2/{repository}/manifests/{TAG}"
        reply = conn.request("PUT", path, {"Content-Type": OCI_MANIFEST}, image.manifest)
        rawhttp.expect(reply, 201, f"PUT {path}")


def pull(url: str, repository: str, image: Image, verify: bool) -> float:
    """One pull as containerd makes it, one connection; the seconds to a complete image.

    The manifest must be the one pushed; every blob is read whole, its length
    checked and, with ``verify``, its digest.
    """
    started = time.perf_counter()
    host, port, _ = rawhttp.split_url(url)
    with rawhttp.Connection(host, port) as conn:
        path = f"/v2/{repository}/manifests/{TAG}"
        reply = conn.request("GET", path, {"Accept": CONTAINERD_ACCEPT})
        rawhttp.expect(reply, 200, f"GET {path}")
        if reply.body != image.manifest:
            raise BenchError(f"GET {path}: not the manifest pushed: {reply.body[:200]!r}")
        for digest, size in image.blobs:
            path = f"/v2/{repository}/blobs/{digest}"
            hasher = hashlib.sha256() if verify else None
            reply = conn.request("GET", path, drain=True, sink=hasher and hasher.update)
            rawhttp.expect(reply, 200, f"GET {path}")
            if reply.length != size:
                raise BenchError(f"GET {path}: {reply.length} bytes, not {size}")
            if hasher is not None and f"sha256:{hasher.hexdigest()}" != digest:
                raise BenchError(f"GET {path}: the content does not match its digest")
    return time.perf_counter() - started


def storm(url: str, repository: str, image: Image, clients: int) -> tuple[float, list[float]]:
    """``clients`` threads pulling at once, the first one checking digests.

    Returns the wall seconds and each client's seconds to a complete image.
    """
    each, wall = rawhttp.together(clients, lambda index: pull(url, repository, image, index == 0))
    return wall, each


def percentile(values: list[float], fraction: float) -> float:
    """Nearest rank: the smallest value at or above ``fraction`` of them (of 64, p99 is the
    slowest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]
