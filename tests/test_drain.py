"""On SIGTERM the server drains: requests under way finish within ``http.draintimeout``.

A slow upload chunk (a PATCH whose body trickles in) is under way when the
server is told to stop. Within the drain time it completes with 202 and the
server exits after it; past the drain time it is cut, and the log names it.
With several workers, each worker drains, not only the supervisor.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.http import request
from tests.support.servers import cargohold_argv, free_port, running
from tests.support.waiting import wait_until


def start_upload(url: str) -> str:
    reply = request("POST", f"{url}/v2/drain/blobs/uploads/")
    assert reply.status == 202
    return str(reply.headers["Location"])


def slow_patch(location: str) -> socket.socket:
    """A PATCH that has sent its head and one chunk; the rest is for the caller to send."""
    target = location.split("/", 3)[3]
    host, port = location.split("/")[2].split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"PATCH /{target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: application/octet-stream\r\n\r\n".encode()
    )
    sock.sendall(b"5\r\nhello\r\n")
    return sock


def finish(sock: socket.socket, pieces: int, pause: float) -> bytes:
    """Send ``pieces`` more chunks ``pause`` seconds apart, end the body, read the reply."""
    for _ in range(pieces):
        time.sleep(pause)
        sock.sendall(b"5\r\nworld\r\n")
    sock.sendall(b"0\r\n\r\n")
    sock.settimeout(20)
    reply = b""
    while b"\r\n\r\n" not in reply:
        data = sock.recv(4096)
        if not data:
            break
        reply += data
    sock.close()
    return reply


def under_way(root: Path, location: str) -> Callable[[], bool]:
    """Whether the slow PATCH's first chunk has reached the upload's data."""
    upload_id = location.rstrip("/").rsplit("/", 1)[1].split("?")[0]
    data = root / f"docker/registry/v2/repositories/drain/_uploads/{upload_id}/data"
    return lambda: data.exists() and data.stat().st_size == 5


def refusing(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def wait_for_exit(process: subprocess.Popen[bytes], within: float) -> float:
    started = time.monotonic()
    process.wait(timeout=within)
    return time.monotonic() - started


@pytest.mark.parametrize("workers", [1, 2])
def test_a_request_under_way_completes_within_the_drain_time(tmp_path: Path, workers: int) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "root"),
        "REGISTRY_HTTP_DRAINTIMEOUT": "10s",
        "REGISTRY_LOG_LEVEL": "info",
    }
    log = tmp_path / "server.log"
    argv = cargohold_argv("serve", "--workers", str(workers))
    with running(argv, f"{url}/v2/", env=env, log=log) as server:
        location = start_upload(url)
        sock = slow_patch(location)
        wait_until(under_way(tmp_path / "root", location), within=10)
        server.send_signal(signal.SIGTERM)
        wait_until(lambda: refusing(port), within=10)  # it stopped accepting
        reply = finish(sock, pieces=3, pause=0.4)
        assert reply.startswith(b"HTTP/1.1 202 "), reply
        assert b"Range: 0-19" in reply
        assert wait_for_exit(server, within=15) < 10
    text = log.read_text()
    assert "draining 1 requests for up to 10s" in text
    assert "1 requests finished, 0 cut" in text


def test_a_request_past_the_drain_time_is_cut_and_logged(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "root"),
        "REGISTRY_HTTP_DRAINTIMEOUT": "1s",
        "REGISTRY_LOG_LEVEL": "info",
    }
    log = tmp_path / "server.log"
    with running(
        cargohold_argv("serve", "--workers", "1"), f"{url}/v2/", env=env, log=log
    ) as server:
        location = start_upload(url)
        sock = slow_patch(location)
        wait_until(under_way(tmp_path / "root", location), within=10)
        server.send_signal(signal.SIGTERM)
        elapsed = wait_for_exit(server, within=15)
        assert 0.9 < elapsed < 5, "it waited for the drain time, then stopped"
        sock.close()
    text = log.read_text()
    assert "cut PATCH /v2/drain/blobs/uploads/" in text
    assert "0 requests finished, 1 cut" in text
