"""One scrape shows the whole server: every worker's requests, the dead ones' included.

``cargohold serve --workers 2`` with its debug listener: a known number of
requests of each kind, each on a connection of its own (so the kernel spreads
them over both workers; blob HEADs, manifest GETs and tag lists are answered
on the fast path), then one scrape, which must count exactly those. A worker
killed with SIGKILL takes none of its counts with it; its replacement counts
on from there.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cargohold.metrics import layout
from cargohold.metrics.store import read_stores
from tests.support.http import request
from tests.support.metrics import Scrape, scrape
from tests.support.servers import cargohold_argv, free_port, running
from tests.support.waiting import wait_until

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
#: A worker younger than this is not replaced when it dies (``supervisor.MIN_LIFETIME``).
MIN_LIFETIME = 5.0


@dataclass
class Server:
    url: str
    metrics: str
    process: subprocess.Popen[bytes]
    root: Path
    started: float

    def scrape(self) -> Scrape:
        return scrape(self.metrics)

    def metrics_directory(self) -> str:
        """Where the workers keep their stores: the folder of the store a worker has open."""
        pid = min(self.worker_pids())
        opened = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        (found,) = {path for path in opened if path.endswith(f"worker-{pid}.metrics")}
        return os.path.dirname(found)

    def worker_pids(self) -> set[int]:
        text = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        return {int(pid) for pid in text.split()}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    port, metrics = free_port(), free_port()
    config = tmp_path / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'root'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"  debug:\n    addr: 127.0.0.1:{metrics}\n    prometheus:\n      enabled: true\n"
    )
    argv = cargohold_argv("serve", str(config), "--workers", "2")
    url = f"http://127.0.0.1:{port}"
    with running(argv, f"{url}/v2/", log=tmp_path / "server.log") as process:
        server = Server(url, f"http://127.0.0.1:{metrics}/metrics", process, tmp_path, 0.0)
        wait_until(lambda: len(server.worker_pids()) == 2)
        server.started = time.monotonic()
        wait_until(lambda: server.scrape().value("cargohold_workers") == 2)
        yield server


def push(url: str) -> tuple[str, str]:
    """A blob and a manifest tagged ``v1`` in ``app``; returns the blob's digest and the tag."""
    config = json.dumps({"architecture": "amd64", "os": "linux"}).encode()
    layer = os.urandom(2000)
    digests = []
    for blob in (config, layer):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        reply = request("POST", f"{url}/v2/app/blobs/uploads/?digest={digest}", blob)
        assert reply.status == 201
        digests.append(digest)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": digests[0],
            "size": len(config),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digests[1],
                "size": len(layer),
            }
        ],
    }
    reply = request(
        "PUT",
        f"{url}/v2/app/manifests/v1",
        json.dumps(manifest).encode(),
        {"Content-Type": OCI_MANIFEST},
    )
    assert reply.status == 201
    return digests[1], "v1"


def traffic(url: str, blob: str, rounds: int) -> None:
    """Per round: 4 blob HEADs, 3 manifest GETs, 2 tag lists, 1 version check."""
    accept = {"Accept": OCI_MANIFEST}
    for _ in range(rounds):
        for _ in range(4):
            assert request("HEAD", f"{url}/v2/app/blobs/{blob}").status == 200
        for _ in range(3):
            assert request("GET", f"{url}/v2/app/manifests/v1", headers=accept).status == 200
        for _ in range(2):
            assert request("GET", f"{url}/v2/app/tags/list").status == 200
        assert request("GET", f"{url}/v2/").status == 200


def counts(found: Scrape) -> dict[tuple[str, str], float]:
    name = "registry_http_requests_total"
    return {
        (dict(labels)["handler"], dict(labels)["method"]): found.samples[name, labels]
        for labels in found.label_sets(name)
        if dict(labels)["code"] == "200"
    }


def test_one_scrape_counts_every_workers_requests(server: Server) -> None:
    blob, _ = push(server.url)
    before = counts(server.scrape())
    traffic(server.url, blob, rounds=10)
    after = counts(server.scrape())
    added = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    assert added == {
        ("blob", "head"): 40,
        ("manifest", "get"): 30,
        ("tags", "get"): 20,
        ("base", "get"): 10,
    }
    assert server.scrape().value("cargohold_workers") == 2
    # Both workers answered some: the scrape summed more than one store.
    answered = [
        sum(row.values[layout.HTTP_COUNT] for row in store.rows if row.kind == layout.HTTP)
        for store in read_stores(server.metrics_directory())
        if store.alive
    ]
    assert len(answered) == 2
    assert all(count > 0 for count in answered), answered


def test_a_killed_worker_takes_none_of_its_counts_with_it(server: Server) -> None:
    blob, _ = push(server.url)
    traffic(server.url, blob, rounds=10)
    before = server.scrape()
    heads = before.value("registry_http_requests_total", code="200", handler="blob", method="head")
    assert heads == 40
    pushed = before.value("cargohold_repository_pushes_total", repository="app", type="blob")
    assert pushed == 2

    # The supervisor replaces a worker only once it has lived a while.
    wait_until(lambda: time.monotonic() - server.started > MIN_LIFETIME)
    victim = min(server.worker_pids())
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in server.worker_pids() and len(server.worker_pids()) == 2)
    wait_until(lambda: server.scrape().value("cargohold_workers") == 2)

    after = server.scrape()
    assert (
        after.value("registry_http_requests_total", code="200", handler="blob", method="head")
        == heads
    )
    assert after.value("cargohold_repository_pushes_total", repository="app", type="blob") == 2
    assert after.value("process_cpu_seconds_total") >= before.value("process_cpu_seconds_total")
    traffic(server.url, blob, rounds=5)
    more = server.scrape()
    assert (
        more.value("registry_http_requests_total", code="200", handler="blob", method="head")
        == heads + 20
    )
