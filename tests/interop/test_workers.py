"""``cargohold serve --workers 2``: both processes answer, and either continues the other's work.

Every request goes on a fresh connection, so the kernel (SO_REUSEPORT) spreads
them over the workers; each worker writes its ``pid`` into the access log.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

from tests.support.accesslog import ACCESS_LOG_ENV, requests
from tests.support.http import location, request, with_query
from tests.support.images import OCI_MANIFEST, sha256
from tests.support.servers import cargohold_argv, free_port, running
from tests.support.waiting import wait_until

UPLOADS = 12
PULLS = 5


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(child) for child in (task / "children").read_text().split())
    return found


def push_blob(base: str, name: str, data: bytes) -> str:
    """POST, PATCH, GET (the upload's status), PUT: four requests, four connections."""
    started = request("POST", f"{base}/v2/{name}/blobs/uploads/")
    assert started.status == 202
    patched = request("PATCH", location(started, base), data)
    assert patched.status == 202, patched.body
    assert patched.headers["Range"] == f"0-{len(data) - 1}"
    status = request("GET", location(patched, base))
    assert status.status == 204
    assert status.headers["Range"] == f"0-{len(data) - 1}"
    digest = sha256(data)
    finished = request("PUT", with_query(location(status, base), f"digest={digest}"))
    assert finished.status == 201, finished.body
    return digest


def test_two_workers_share_the_work(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "cargohold.log"
    base = f"http://127.0.0.1:{port}"
    env = {
        **ACCESS_LOG_ENV,
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "root"),
    }
    argv = cargohold_argv("serve", "--workers", "2")
    with running(argv, f"{base}/v2/", env=env, log=log) as server:
        wait_until(lambda: len(children(server.pid)) == 2, within=10)
        workers = children(server.pid)

        def both_listening() -> bool:
            # A worker forked is not yet one that listens: until both do, the kernel
            # gives every connection to the one that does.
            assert request("GET", f"{base}/v2/").status == 200
            return {r.pid for r in requests(log) if r.path == "/v2/"} == workers

        wait_until(both_listening, within=20)

        blobs = {push_blob(base, "workers/app", os.urandom(50_000 + n)): n for n in range(UPLOADS)}
        contents = {digest: 50_000 + n for digest, n in blobs.items()}
        layers = list(blobs)
        config = b'{"architecture": "amd64", "os": "linux"}'
        config_digest = push_blob(base, "workers/app", config)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": d,
                        "size": contents[d],
                    }
                    for d in layers
                ],
            }
        ).encode()
        put = request(
            "PUT",
            f"{base}/v2/workers/app/manifests/v1",
            manifest,
            {"Content-Type": OCI_MANIFEST},
        )
        assert put.status == 201, put.body

        for _ in range(PULLS):
            got = request("GET", f"{base}/v2/workers/app/manifests/v1")
            assert (got.status, got.body) == (200, manifest)
            for layer in json.loads(got.body)["layers"]:
                blob = request("GET", f"{base}/v2/workers/app/blobs/{layer['digest']}")
                assert blob.status == 200
                assert sha256(blob.body) == layer["digest"]
                assert len(blob.body) == layer["size"]

    logged = [r for r in requests(log) if r.path.startswith("/v2/workers/")]
    assert len(logged) == 4 * (UPLOADS + 1) + 1 + PULLS * (1 + UPLOADS)
    assert {r.status for r in logged} <= {200, 201, 202, 204}
    answered_by = {r.pid for r in logged}
    assert answered_by == workers  # both workers answered, and nobody else
    # An upload lives in storage, not in a process: some went from one worker to the
    # other (PATCH, GET, PUT all on one worker for all 13 uploads: odds of 1 in 4**13).
    by_upload: dict[str, set[int | None]] = defaultdict(set)
    for r in logged:
        if "/blobs/uploads/" in r.path and not r.path.endswith("/uploads/"):
            by_upload[r.path.rpartition("/")[2]].add(r.pid)
    assert len(by_upload) == UPLOADS + 1
    assert any(len(pids) == 2 for pids in by_upload.values())
