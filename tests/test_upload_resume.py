"""An open upload survives what stops it midway, in Distribution's layout.

Its bytes are appended in place at ``_uploads/<id>/data``. A chunk the server
acknowledged (202) has reached the disk before the reply, so it survives the
process being killed. A chunk cut midway (the server killed, the client gone)
leaves at most a prefix of itself, and the ``Range`` the upload then reports
is exactly what is in the file: the client resumes from there and the blob it
finishes has the right digest.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cargohold.api.app import create_app
from cargohold.config import parse_config
from tests.support.http import request
from tests.support.inprocess import serve
from tests.support.servers import cargohold_argv, free_port, running
from tests.support.waiting import wait_until

REPO = "resume/app"
CHUNK = os.urandom(1 << 20)
REST = os.urandom(300_000)
BLOB = CHUNK + REST
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


def data_file(root: Path, upload_id: str) -> Path:
    return root / f"docker/registry/v2/repositories/{REPO}/_uploads/{upload_id}/data"


@contextmanager
def server(root: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root),
        "REGISTRY_LOG_LEVEL": "warn",
    }
    argv = cargohold_argv("serve", "--workers", "1")
    with running(argv, f"http://127.0.0.1:{port}/v2/", env=env) as process:
        yield process


def kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def start(url: str) -> tuple[str, str]:
    """A new upload: its path and its id."""
    reply = request("POST", f"{url}/v2/{REPO}/blobs/uploads/")
    assert reply.status == 202
    return urlsplit(str(reply.headers["Location"])).path, str(reply.headers["Docker-Upload-UUID"])


def resume_and_finish(url: str, path: str) -> int:
    """Ask where the upload stands, send the rest from there, close it; the offset asked."""
    status = request("GET", f"{url}{path}")
    assert status.status == 204
    first, _, last = str(status.headers["Range"]).partition("-")
    assert first == "0"
    offset = int(last) + 1
    rest = BLOB[offset:]
    patched = request(
        "PATCH",
        f"{url}{path}",
        rest,
        {"Content-Range": f"{offset}-{len(BLOB) - 1}", "Content-Type": "application/octet-stream"},
    )
    assert patched.status == 202, patched.body
    put = request("PUT", f"{url}{path}?digest={DIGEST}")
    assert put.status == 201, put.body
    pulled = request("GET", f"{url}/v2/{REPO}/blobs/{DIGEST}")
    assert hashlib.sha256(pulled.body).hexdigest() == DIGEST[7:]
    return offset


def test_an_acknowledged_chunk_survives_the_server_being_killed(tmp_path: Path) -> None:
    port = free_port()
    with server(tmp_path, port) as process:
        url = f"http://127.0.0.1:{port}"
        path, upload_id = start(url)
        patched = request("PATCH", f"{url}{path}", CHUNK)
        assert (patched.status, patched.headers["Range"]) == (202, f"0-{len(CHUNK) - 1}")
        kill(process)
    assert data_file(tmp_path, upload_id).read_bytes() == CHUNK
    with server(tmp_path, port):
        assert resume_and_finish(f"http://127.0.0.1:{port}", path) == len(CHUNK)


@pytest.mark.parametrize("cut_by", ["server killed", "client gone"])
def test_a_torn_chunk_leaves_a_prefix_and_the_range_says_where_to_resume(
    tmp_path: Path, cut_by: str
) -> None:
    port = free_port()
    sent = len(CHUNK) // 2
    with server(tmp_path, port) as process:
        url = f"http://127.0.0.1:{port}"
        path, upload_id = start(url)
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(
            f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(CHUNK)}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n".encode()
        )
        sock.sendall(CHUNK[:sent])
        data = data_file(tmp_path, upload_id)
        wait_until(lambda: data.stat().st_size > 0)
        if cut_by == "server killed":
            kill(process)
            sock.close()
        else:
            sock.close()
            # The server has finished with the chunk once a new request sees it settled.
            wait_until(lambda: request("GET", f"{url}{path}").status == 204)
    torn = data.read_bytes()
    assert 0 < len(torn) <= sent
    assert torn == CHUNK[: len(torn)], "what is there is a prefix of the chunk"
    with server(tmp_path, port):
        assert resume_and_finish(f"http://127.0.0.1:{port}", path) == len(torn)


async def test_a_chunk_is_on_disk_before_it_is_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``fdatasync`` of the upload's data covers the whole chunk before the 202 goes out."""
    synced: list[tuple[str, int]] = []
    real = os.fdatasync

    def recording(fd: int) -> None:
        real(fd)
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), os.fstat(fd).st_size))

    monkeypatch.setattr(os, "fdatasync", recording)
    config = parse_config(
        f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}\n", environ={}
    )
    async with serve(create_app(config)) as client:
        async with await client.post(f"/v2/{REPO}/blobs/uploads/") as started:
            assert started.status == 202
            path = urlsplit(started.headers["Location"]).path
            upload_id = started.headers["Docker-Upload-UUID"]
        data = str(data_file(tmp_path, upload_id))
        async with await client.patch(path, data=CHUNK) as patched:
            assert patched.status == 202
            assert (data, len(CHUNK)) in synced, synced
