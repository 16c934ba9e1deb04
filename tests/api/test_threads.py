"""Every thread a registry starts belongs to its application, and stops with it.

Blocking work (fsync, hashing large pieces, sending large blobs, scanning the
catalog, checking bcrypt passwords) runs on one executor that the
application creates and shuts down. A registry served in a loop of its own
does all of that; once its listener is closed, no thread it started is left.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import threading
from pathlib import Path

import aiohttp
import bcrypt
import yaml
from tests.support.inprocess import serve

from cargohold.api.app import API_KEY, create_app
from cargohold.config import parse_config


def registry_config(root: Path, htpasswd: Path) -> str:
    return yaml.safe_dump(
        {
            "version": "0.1",
            "log": {"accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(root)}},
            "auth": {"htpasswd": {"realm": "test", "path": str(htpasswd)}},
        }
    )


async def exercise(root: Path, htpasswd: Path) -> tuple[set[str], list[threading.Thread]]:
    """Use every kind of blocking work; returns the names of threads seen, and those left."""
    app = create_app(parse_config(registry_config(root, htpasswd), environ={}))
    seen: set[str] = set()
    auth = {"Authorization": "Basic " + base64.b64encode(b"alice:secret").decode()}
    async with serve(app) as client, aiohttp.ClientSession(headers=auth) as session:

        def url(path: str) -> str:
            return str(client.make_url(path))

        data = os.urandom(3 * 1024 * 1024)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        async with session.post(url("/v2/app/blobs/uploads/")) as started:
            assert started.status == 202
            location = started.headers["Location"]
        for offset in range(0, len(data), 1024 * 1024):
            piece = data[offset : offset + 1024 * 1024]
            headers = {"Content-Range": f"{offset}-{offset + len(piece) - 1}"}
            async with session.patch(location, data=piece, headers=headers) as patched:
                assert patched.status == 202
                location = patched.headers["Location"]
        async with session.put(location, params={"digest": digest}) as finished:
            assert finished.status == 201
        config = b"{}"
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        async with session.post(
            url("/v2/app/blobs/uploads/"), params={"digest": config_digest}, data=config
        ) as pushed:
            assert pushed.status == 201
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest,
                    "size": len(data),
                }
            ],
        }
        async with session.put(
            url("/v2/app/manifests/v1"),
            data=json.dumps(manifest).encode(),
            headers={"Content-Type": manifest["mediaType"]},  # type: ignore[dict-item]
        ) as put:
            assert put.status == 201
        async with session.get(url(f"/v2/app/blobs/{digest}")) as pulled:
            assert hashlib.sha256(await pulled.read()).hexdigest() == digest[7:]
        async with session.get(url("/v2/_catalog")) as listed:
            assert (await listed.json())["repositories"] == ["app"]
        seen = {thread.name for thread in threading.enumerate()}
    left = [thread for thread in threading.enumerate() if thread is not threading.current_thread()]
    return seen, left


def test_no_thread_outlives_the_application(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_bytes(b"alice:" + bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)) + b"\n")
    before = set(threading.enumerate())
    seen, left = asyncio.run(exercise(tmp_path / "root", htpasswd))
    assert any(name.startswith("cargohold") for name in seen), "the work ran on its threads"
    assert set(left) <= before, [thread.name for thread in set(left) - before]


def test_maxthreads_bounds_the_threads(tmp_path: Path) -> None:
    """``storage.filesystem.maxthreads`` bounds the blocking calls running at once."""

    async def run() -> tuple[int, int]:
        config = parse_config(
            yaml.safe_dump(
                {
                    "version": "0.1",
                    "storage": {"filesystem": {"rootdirectory": str(tmp_path), "maxthreads": 25}},
                }
            ),
            environ={},
        )
        app = create_app(config)
        threads = app[API_KEY].threads
        assert threads is not None
        running = 0
        most = 0
        lock = threading.Lock()
        all_busy = threading.Event()
        release = threading.Event()

        def block() -> None:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
                if running == 25:
                    all_busy.set()
            release.wait(5)
            with lock:
                running -= 1

        loop = asyncio.get_running_loop()
        # The pool starts its threads as the calls are submitted, so once these
        # sixty are queued the number of its threads is settled.
        calls = [loop.run_in_executor(threads, block) for _ in range(60)]
        assert await asyncio.to_thread(all_busy.wait, 5)
        pool = [t for t in threading.enumerate() if t.name.startswith("cargohold")]
        seen = (most, len(pool))
        release.set()
        await asyncio.gather(*calls)
        threads.shutdown(wait=True)
        return seen

    assert asyncio.run(run()) == (25, 25)
