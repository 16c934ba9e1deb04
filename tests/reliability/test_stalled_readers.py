"""A client that takes no byte of a reply is cut after ``http.timeouts.write``.

Each way a body leaves is held to it: through aiohttp's writer (a store that
streams through the process: in memory here, Azure or S3 over TLS alike), a
copying thread and ``sendfile`` (a local disk: the first large transfer gets
the thread, one beside it ``sendfile``), and ``splice`` from an object
store's socket (S3 on SeaweedFS, redirects off). The client asks for a large blob
with a small receive buffer and reads nothing; the connection must be closed
about one timeout later, while a client that reads slowly but steadily gets
its blob whole, and the server goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.api.test_filesend import push
from tests.support.servers import cargohold_argv, free_port, running
from tests.support.waiting import wait_until

WRITE = 1.0
#: The sweep looks every quarter of a second; a loaded two-core machine may add more.
MARGIN = 2.0
#: More than the kernel's buffers on both sides hold.
BLOB = 8 * 1024 * 1024


@contextlib.contextmanager
def _served(folder: Path, storage: dict[str, object]) -> Iterator[str]:
    port = free_port()
    config = {
        "version": "0.1",
        "log": {"level": "debug"},
        "storage": storage,
        "http": {"addr": f"127.0.0.1:{port}", "timeouts": {"write": f"{WRITE:g}s"}},
    }
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"
    argv = cargohold_argv("serve", str(path), "--workers", "1")
    with running(argv, f"{url}/v2/", log=folder / "serve.log", timeout=30):
        yield url


def _stalled_get(url: str, digest: str) -> socket.socket:
    """A GET of the blob from a client with a small receive buffer that reads nothing."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(f"GET /v2/big/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return sock


def _reset(sock: socket.socket) -> bool:
    """Whether the server has reset the connection, asked without reading from it."""
    state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]
    return state == _TCP_CLOSE


#: ``tcpi_state`` of a connection that is over (``TCP_CLOSE`` in the kernel's tcp_states.h).
_TCP_CLOSE = 7


def _read_slowly(url: str, digest: str, pace: float) -> bytes:
    """The whole reply's body, read at most 64 KiB every ``pace`` seconds."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(f"GET /v2/big/blobs/{digest} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        received = bytearray()
        head_end = -1
        while head_end < 0 or len(received) - head_end - 4 < BLOB:
            chunk = sock.recv(65536)
            assert chunk, f"cut after {len(received)} bytes"
            received += chunk
            if head_end < 0:
                head_end = received.find(b"\r\n\r\n")
            time.sleep(pace)
        return bytes(received[head_end + 4 :])


@pytest.mark.parametrize("store", ["filesystem", "inmemory", "s3"])
def test_a_client_that_takes_nothing_is_cut_after_the_write_timeout(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    storage: dict[str, object] = {
        "filesystem": {"filesystem": {"rootdirectory": str(tmp_path / "root")}},
        "inmemory": {"inmemory": {}},
    }.get(store) or {
        "s3": request.getfixturevalue("s3_parameters"),
        "redirect": {"disable": True},
    }
    data = os.urandom(BLOB)
    with _served(tmp_path, storage) as url:
        digest = asyncio.run(push(url, data))
        # On a local disk the first takes the copying thread and the second sendfile.
        stalled = [_stalled_get(url, digest) for _ in range(2)]
        started = time.monotonic()
        for sock in stalled:
            wait_until(
                lambda sock=sock: _reset(sock),  # type: ignore[misc]
                within=WRITE + 10 * MARGIN,
                what="a client that reads nothing was never cut",
            )
            sock.close()
        took = time.monotonic() - started
        assert WRITE <= took <= WRITE + 2 * MARGIN, f"cut after {took:.1f}s"
        # Longer in all than the timeout, yet taking bytes all along: served whole.
        started = time.monotonic()
        body = _read_slowly(url, digest, pace=0.01)
        assert time.monotonic() - started > WRITE
        assert hashlib.sha256(body).hexdigest() == digest[7:]
    assert "no byte of the reply taken for 1s" in (tmp_path / "serve.log").read_text()
