"""Large blobs leave through a thread that copies the file to the socket."""

from __future__ import annotations

import hashlib
import io
import os
import socket
import time
from pathlib import Path

import aiohttp
from tests.support.servers import cargohold


async def push(url: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/v2/big/blobs/uploads/", params={"digest": digest}, data=io.BytesIO(data)
        ) as response,
    ):
        assert response.status == 201
    return digest


def raw_get(url: str, path: str, extra: str = "") -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
    return sock


async def test_a_large_blob_and_its_ranges_arrive_whole(tmp_path: Path) -> None:
    data = os.urandom(24 * 1024 * 1024 + 123)
    with cargohold(tmp_path) as url:
        digest = await push(url, data)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/v2/big/blobs/{digest}") as response:
                assert response.status == 200
                assert hashlib.sha256(await response.read()).hexdigest() == digest[7:]
            ranged = {"Range": "bytes=1000000-9000000"}
            async with session.get(f"{url}/v2/big/blobs/{digest}", headers=ranged) as response:
                assert response.status == 206
                assert await response.read() == data[1_000_000:9_000_001]


async def test_a_client_that_leaves_mid_blob_does_not_hurt_the_next(tmp_path: Path) -> None:
    data = os.urandom(64 * 1024 * 1024)
    with cargohold(tmp_path) as url:
        digest = await push(url, data)
        for _ in range(5):
            sock = raw_get(url, f"/v2/big/blobs/{digest}")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
            sock.close()  # gone after the first piece, with megabytes still to come
        time.sleep(0.2)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/v2/big/blobs/{digest}") as response,
        ):
            assert hashlib.sha256(await response.read()).hexdigest() == digest[7:]


async def test_keep_alive_carries_on_after_a_large_blob(tmp_path: Path) -> None:
    data = os.urandom(2 * 1024 * 1024)
    with cargohold(tmp_path) as url:
        digest = await push(url, data)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            for _ in range(3):
                async with session.get(f"{url}/v2/big/blobs/{digest}") as response:
                    assert await response.read() == data
                async with session.head(f"{url}/v2/big/blobs/{digest}") as response:
                    assert response.headers["Content-Length"] == str(len(data))


async def test_overlapping_transfers_both_arrive_whole(tmp_path: Path) -> None:
    """The second transfer, while the first is stalled, goes out with sendfile."""
    data = os.urandom(32 * 1024 * 1024)
    with cargohold(tmp_path) as url:
        digest = await push(url, data)
        stalled = raw_get(url, f"/v2/big/blobs/{digest}")
        first = stalled.recv(65536)  # then read nothing: the copying thread waits for room
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/v2/big/blobs/{digest}") as response,
        ):
            assert hashlib.sha256(await response.read()).hexdigest() == digest[7:]
        head, _, body = first.partition(b"\r\n\r\n")
        received = bytearray(body)
        while len(received) < len(data):
            piece = stalled.recv(1 << 20)
            assert piece, "the stalled transfer was cut"
            received += piece
        stalled.close()
        assert head.startswith(b"HTTP/1.1 200")
        assert bytes(received) == data
