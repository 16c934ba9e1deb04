"""Connections under abuse: the offenders are closed, everyone else is served at once.

A real ``cargohold serve`` (one worker, filesystem storage, short timeouts so
the test is quick) meets 1,000 idle keep-alive connections, 200 slowloris
connections dribbling a request head a byte at a time and 50 uploads stalled
mid-body, while another client pulls and pushes; every one of that client's
requests must succeed, the 99th percentile under a second, each offender must
be closed about one timeout after it began to offend, and the server's
memory must stay bounded. Request heads are bounded too (``431`` one byte
past the bound, on either path and after a hand-over), and running out of
file descriptors is logged once and survived.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import json
import os
import resource
import socket
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml

from cargohold.api.connection import (
    BODY_TIMEOUT,
    HEADER_TIMEOUT,
    IDLE_TIMEOUT,
    LONGEST_HEAD,
    WRITE_TIMEOUT,
)
from cargohold.config import parse_config
from tests.support.http_raw import RawReply, read_reply
from tests.support.servers import cargohold_argv, free_port, stop, wait_for_http
from tests.support.waiting import wait_until

MiB = 1024 * 1024
IDLE, HEADER, BODY = 4.0, 2.0, 2.0
#: The sweep looks every half second (a quarter of the shortest timeout); a loaded
#: two-core machine may add as much again.
MARGIN = 1.5
LONGEST = 16 * 1024

IDLE_CONNECTIONS, SLOWLORIS, STALLED = 1000, 200, 50


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logged(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module", autouse=True)
def many_descriptors() -> None:
    """This process holds every abusive connection: let it have as many as it may."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] > 2 * IDLE_CONNECTIONS


@contextlib.contextmanager
def served(folder: Path, *args: str, open_files: tuple[int, int] | None = None) -> Iterator[Server]:
    """``cargohold serve`` with short timeouts (and ``open_files`` as its starting limits)."""
    port = free_port()
    config = {
        "version": "0.1",
        "log": {"level": "info"},
        "storage": {"filesystem": {"rootdirectory": str(folder / "root")}},
        "http": {
            "addr": f"127.0.0.1:{port}",
            "timeouts": {"idle": f"{IDLE:g}s", "header": f"{HEADER:g}s", "body": f"{BODY:g}s"},
            "maxheaderbytes": LONGEST,
        },
    }
    path = folder / f"config-{port}.yml"
    path.write_text(yaml.safe_dump(config))
    log = folder / f"serve-{port}.log"

    def limit() -> None:
        if open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, open_files)

    environ = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    with open(log, "wb") as out:
        process = subprocess.Popen(
            cargohold_argv("serve", str(path), "--workers", "1", *args),
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=limit,
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}/v2/", process)
            yield Server(process, port, log)
        finally:
            stop(process)


def rss(pid: int) -> int:
    """Resident bytes of ``pid`` and every process under it."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(child) for child in (task / "children").read_text().split())
        except FileNotFoundError:
            continue  # gone meanwhile
        line = next(line for line in status.splitlines() if line.startswith("VmRSS:"))
        total += int(line.split()[1]) * 1024
    return total


# -- a client that behaves ----------------------------------------------------------------


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Client:
    """Pulls and pushes, timing every request."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.latencies: list[float] = []
        self.failures: list[str] = []

    async def timed(self, method: str, path: str, want: int, **kwargs: object) -> bytes:
        url = path if path.startswith("http") else self.url + path
        began = time.monotonic()
        async with self.session.request(method, url, **kwargs) as reply:  # type: ignore[arg-type]
            body = await reply.read()
            location = reply.headers.get("Location", "")
        self.latencies.append(time.monotonic() - began)
        if reply.status != want:
            self.failures.append(f"{method} {path}: {reply.status} {body[:200]!r}")
        return location.encode() if method in ("POST", "PATCH") else body

    async def push_blob(self, name: str, data: bytes) -> str:
        location = (await self.timed("POST", f"/v2/{name}/blobs/uploads/", 202)).decode()
        url = location if location.startswith("http") else self.url + location
        digest = digest_of(data)
        await self.timed("PUT", url, 201, params={"digest": digest}, data=data)
        return digest

    async def push_image(self, name: str, tag: str, layer: bytes) -> tuple[bytes, str, str]:
        """Push an image of one layer; its manifest, config digest and layer digest."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "tag": tag}).encode()
        config_digest = await self.push_blob(name, config)
        layer_digest = await self.push_blob(name, layer)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": layer_digest,
                        "size": len(layer),
                    }
                ],
            }
        ).encode()
        headers = {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
        await self.timed("PUT", f"/v2/{name}/manifests/{tag}", 201, data=manifest, headers=headers)
        return manifest, config_digest, layer_digest


# -- the offenders -------------------------------------------------------------------------


async def closed(reader: asyncio.StreamReader) -> float:
    """When the server closes the connection (everything it sends first is read and dropped)."""
    with contextlib.suppress(ConnectionError):
        while await reader.read(65536):
            pass
    return time.monotonic()


async def idle(port: int) -> tuple[float, Awaitable[float]]:
    """A keep-alive connection that asks one thing and then nothing: when answered, and closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v2/ HTTP/1.1\r\nHost: registry.test\r\n\r\n")
    reply = await read_reply(reader, head_only=False)
    assert reply.status == 200
    answered = time.monotonic()
    return answered, asyncio.ensure_future(closing(reader, writer))


async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> float:
    try:
        return await closed(reader)
    finally:
        writer.close()


async def slowloris(port: int) -> tuple[float, float]:
    """A head dribbled a byte each half second that never ends: its first byte, and its close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"GET /v2/ HTTP/1.1\r\nHost: registry.test\r\nX-Slow: " + b"z" * 1000
    end = asyncio.ensure_future(closed(reader))
    first = time.monotonic()
    try:
        for byte in head:
            writer.write(bytes([byte]))
            done, _ = await asyncio.wait([end], timeout=0.5)
            if done:
                break
        return first, await end
    finally:
        writer.close()


async def stalled_upload(client: Client, port: int) -> tuple[float, float]:
    """A PATCH promising 1 MiB that sends 4 KiB and stops: its last byte, and its close.

    ``client`` starts the upload: the offenders' own, not the one whose requests are timed.
    """
    location = (await client.timed("POST", "/v2/team/stalled/blobs/uploads/", 202)).decode()
    target = location.removeprefix(client.url)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"PATCH {target} HTTP/1.1\r\nHost: registry.test\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {MiB}\r\n\r\n".encode()
        + os.urandom(4096)
    )
    await writer.drain()
    last = time.monotonic()
    try:
        return last, await closed(reader)
    finally:
        writer.close()


async def in_batches(
    count: int, make: Callable[[], Awaitable[tuple[float, Awaitable[float]]]]
) -> list[tuple[float, Awaitable[float]]]:
    made: list[tuple[float, Awaitable[float]]] = []
    while len(made) < count:
        made += await asyncio.gather(*(make() for _ in range(min(100, count - len(made)))))
    return made


def within(started: float, ended: float, timeout: float) -> bool:
    return timeout - 0.1 <= ended - started <= timeout + MARGIN


# -- the tests -------------------------------------------------------------------------------


def test_the_defaults_of_the_configuration_are_the_listeners() -> None:
    http = parse_config("version: 0.1\nstorage: {inmemory: {}}\n", environ={}).http
    timeouts = http.timeouts
    assert (timeouts.idle, timeouts.header, timeouts.body, timeouts.write) == (
        IDLE_TIMEOUT,
        HEADER_TIMEOUT,
        BODY_TIMEOUT,
        WRITE_TIMEOUT,
    )
    assert (IDLE_TIMEOUT, HEADER_TIMEOUT, BODY_TIMEOUT, WRITE_TIMEOUT) == (75.0, 10.0, 60.0, 60.0)
    assert http.maxheaderbytes == LONGEST_HEAD == 64 * 1024


async def test_offenders_are_closed_while_pulls_and_pushes_take_under_a_second(
    tmp_path: Path,
) -> None:
    with served(tmp_path) as server:
        async with aiohttp.ClientSession() as session:
            client = Client(session, server.url)
            layer = os.urandom(MiB)  # above the fast path's 256 KiB: sent by aiohttp
            manifest, config_digest, layer_digest = await client.push_image("team/app", "v1", layer)
            before = rss(server.process.pid)

            stop_pulling = asyncio.Event()
            peak = before

            async def pull_and_push() -> None:
                nonlocal peak
                round_ = 0
                while not stop_pulling.is_set():
                    assert await client.timed("GET", "/v2/team/app/manifests/v1", 200) == manifest
                    await client.timed("GET", f"/v2/team/app/blobs/{config_digest}", 200)
                    assert (
                        await client.timed("GET", f"/v2/team/app/blobs/{layer_digest}", 200)
                        == layer
                    )
                    await client.timed("HEAD", f"/v2/team/app/blobs/{layer_digest}", 200)
                    if round_ % 4 == 0:
                        await client.push_image("team/pushed", f"t{round_}", os.urandom(64 * 1024))
                    peak = max(peak, rss(server.process.pid))
                    round_ += 1

            pulling = asyncio.ensure_future(pull_and_push())
            slow = [asyncio.ensure_future(slowloris(server.port)) for _ in range(SLOWLORIS)]
            offender = Client(session, server.url)
            stalled = [
                asyncio.ensure_future(stalled_upload(offender, server.port)) for _ in range(STALLED)
            ]
            idlers = await in_batches(IDLE_CONNECTIONS, lambda: idle(server.port))
            slow_times = await asyncio.gather(*slow)
            stalled_times = await asyncio.gather(*stalled)
            idle_closed = await asyncio.gather(*(end for _, end in idlers))
            stop_pulling.set()
            await pulling
            after = rss(server.process.pid)

        assert server.process.poll() is None, "the server is still running"
        assert client.failures == []
        assert offender.failures == []
        assert len(client.latencies) >= 200, "enough requests for a 99th percentile"
        p99 = statistics.quantiles(client.latencies, n=100)[98]
        assert p99 < 1.0, f"p99 {p99:.3f}s of {len(client.latencies)} requests"

        late = [t for t in slow_times if not within(*t, HEADER)]
        assert late == [], f"{len(late)} slowloris connections not closed about {HEADER}s in"
        late = [t for t in stalled_times if not within(*t, BODY)]
        assert late == [], f"{len(late)} stalled uploads not closed {BODY}s after their last byte"
        late = [
            (answered, end)
            for (answered, _), end in zip(idlers, idle_closed, strict=True)
            if not within(answered, end, IDLE)
        ]
        assert late == [], f"{len(late)} idle connections not closed {IDLE}s after their reply"

        # 1,250 connections at once: a few tens of KiB each at most, whatever they send.
        growth = peak - before
        assert peak < 300 * MiB, f"peak RSS {peak / MiB:.0f} MiB"
        assert growth < 96 * MiB, f"RSS grew {growth / MiB:.0f} MiB (from {before / MiB:.0f})"
        assert after < 300 * MiB
        print(
            f"\n{len(client.latencies)} requests, p99 {p99 * 1000:.0f} ms, "
            f"max {max(client.latencies) * 1000:.0f} ms; RSS {before / MiB:.0f} MiB before, "
            f"{peak / MiB:.0f} MiB at the peak, {after / MiB:.0f} MiB after"
        )
        assert "Traceback" not in server.logged()


def head_of(length: int, target: str = "/v2/", fields: int = 1) -> bytes:
    """A GET of ``target`` whose head is exactly ``length`` bytes, padded by ``fields`` fields."""
    start = f"GET {target} HTTP/1.1\r\nHost: registry.test\r\n".encode()
    room = length - len(start) - 2 - fields * len(b"X-Pad-00: \r\n")
    sizes = [room // fields + (1 if i < room % fields else 0) for i in range(fields)]
    pads = b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"p" * size) for i, size in enumerate(sizes))
    head = start + pads + b"\r\n"
    assert len(head) == length
    return head


async def converse(port: int, *heads: bytes) -> tuple[list[RawReply], bool]:
    """Send each head on one connection, reading each reply; and whether the server then closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = []
    try:
        for head in heads:
            writer.write(head)
            replies.append(await asyncio.wait_for(read_reply(reader, head_only=False), 10))
        try:
            ended = await asyncio.wait_for(reader.read(1), 1) == b""
        except TimeoutError:
            ended = False
        return replies, ended
    finally:
        writer.close()


@pytest.mark.parametrize("path", ["--fast-path", "--no-fast-path"])
async def test_a_head_as_long_as_the_bound_is_served_and_a_byte_more_gets_431(
    tmp_path: Path, path: str
) -> None:
    with served(tmp_path, path) as server:
        # One field longer than aiohttp's usual 8190 bytes a line, then many short ones.
        for fields in (1, 40):
            replies, ended = await converse(server.port, head_of(LONGEST, fields=fields))
            assert [reply.status for reply in replies] == [200]
            assert not ended, "a head within the bound keeps its connection"

            replies, ended = await converse(server.port, head_of(LONGEST + 1, fields=fields))
            assert [reply.status for reply in replies] == [431]
            assert b"16384 bytes (http.maxheaderbytes)" in replies[0].body
            assert ended, "the connection is closed after a 431"

            # After a hand-over to aiohttp (a query is never the fast path's), the same.
            handed = head_of(200, "/v2/_catalog?n=1")
            replies, ended = await converse(server.port, handed, head_of(LONGEST, fields=fields))
            assert [reply.status for reply in replies] == [200, 200]
            assert not ended
            replies, ended = await converse(
                server.port, handed, head_of(LONGEST, fields=fields), head_of(LONGEST + 1)
            )
            assert [reply.status for reply in replies] == [200, 200, 431]
            assert ended
        assert server.process.poll() is None


def open_files_limit(pid: int) -> tuple[int, int]:
    line = next(
        line
        for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
        if line.startswith("Max open files")
    )
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_running_out_of_file_descriptors_is_logged_once_and_survived(tmp_path: Path) -> None:
    with served(tmp_path, open_files=(64, 160)) as server:
        assert open_files_limit(server.process.pid) == (160, 160), "raised to the hard limit"
        kept = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        kept.request("GET", "/v2/")
        assert kept.getresponse().read() == b"{}"

        flood = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(300)]
        try:
            wait_until(
                lambda: "cannot accept connections" in server.logged(),
                within=10,
                what="running out of descriptors was never logged",
            )
            assert "Too many open files" in server.logged()
            kept.request("GET", "/v2/")  # a connection it holds is still served
            reply = kept.getresponse()
            assert (reply.status, reply.read()) == (200, b"{}")
        finally:
            for sock in flood:
                sock.close()
            kept.close()

        def served_anew() -> bool:
            try:
                fresh = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
                with contextlib.closing(fresh):
                    fresh.request("GET", "/v2/")
                    return fresh.getresponse().status == 200
            except OSError:
                return False

        wait_until(served_anew, within=15, what="no new connection was served once fds were free")
        assert server.process.poll() is None
        assert server.logged().count("cannot accept connections") == 1
        assert "Traceback" not in server.logged()
