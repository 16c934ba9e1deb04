"""``GET /debug/health``: Distribution's format, every kind of check, and Redis for real.

The application runs in process (``tests/support/inprocess.py``, on both request
paths); the checks probe real
things: files, a real HTTP server, real TCP ports, the storage root on disk, a
real ``redis-server``. Polled checks run every 20 ms here, so a test waits for
a status with ``until`` instead of sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from tests.support.inprocess import Client, Servers
from tests.support.redis import RedisServer
from tests.support.servers import free_port

from cargohold.api.app import create_app
from cargohold.api.health import Check, Health
from cargohold.config import parse_config

MakeClient = Callable[..., Awaitable[Client]]
JSON_UTF8 = "application/json; charset=utf-8"
FAST = "20ms"


@pytest.fixture
def make_client(servers: Servers, tmp_path: Path) -> MakeClient:
    """A registry on filesystem storage under ``tmp_path/root`` with ``settings`` merged in."""

    async def make(**settings: Any) -> Client:
        data: dict[str, Any] = {
            "version": "0.1",
            "storage": {"filesystem": {"rootdirectory": str(tmp_path / "root")}},
            "http": {"addr": "127.0.0.1:5000"},
        }
        for section, value in settings.items():
            if isinstance(value, dict) and isinstance(data.get(section), dict):
                data[section] = {**data[section], **value}
            else:
                data[section] = value
        app = create_app(parse_config(yaml.safe_dump(data), environ={}))
        return await servers.serve(app)

    return make


async def health(client: Client) -> tuple[int, dict[str, str]]:
    response = await client.get("/debug/health")
    assert response.headers["Content-Type"] == JSON_UTF8
    body: dict[str, str] = json.loads(await response.read())
    return response.status, body


async def until(
    client: Client,
    wanted: Callable[[int, dict[str, str]], bool],
    within: float = 5,
) -> tuple[int, dict[str, str]]:
    """The first health reply ``wanted`` accepts, else the last one after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        status, body = await health(client)
        if wanted(status, body) or time.monotonic() > deadline:
            return status, body
        await asyncio.sleep(0.01)


def healthy(status: int, body: dict[str, str]) -> bool:
    return status == 200 and body == {}


# -- the format -------------------------------------------------------------------------


async def test_no_checks_answer_200_and_an_empty_object(make_client: MakeClient) -> None:
    client = await make_client()
    response = await client.get("/debug/health")
    assert response.status == 200
    assert response.headers["Content-Type"] == JSON_UTF8
    assert response.headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert await response.read() == b"{}"
    head = await client.head("/debug/health")
    assert head.status == 200
    assert await head.read() == b""


async def test_other_methods_get_go_s_not_found(make_client: MakeClient) -> None:
    client = await make_client()
    for method in ("POST", "PUT", "DELETE"):
        response = await client.request(method, "/debug/health")
        assert response.status == 404
        assert await response.text() == "404 page not found\n"


async def test_failing_checks_are_named_with_their_errors_compact_sorted_and_escaped(
    make_client: MakeClient, tmp_path: Path
) -> None:
    # Go's json.Marshal: keys sorted, no spaces, <, > and & escaped.
    second, first = tmp_path / "b-down", tmp_path / "a<down>&out"
    second.touch()
    first.touch()
    client = await make_client(
        health={"file": [{"file": str(second), "interval": FAST}, {"file": str(first)}]}
    )
    await until(client, lambda s, b: len(b) == 2)
    response = await client.get("/debug/health")
    assert response.status == 503
    escaped = str(first).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    assert await response.read() == (
        f'{{"{escaped}":"file exists","{second}":"file exists"}}'.encode()
    )


async def test_the_endpoint_needs_no_credentials_and_ignores_the_prefix(
    make_client: MakeClient, tmp_path: Path
) -> None:
    down = tmp_path / "down"
    down.touch()
    client = await make_client(
        auth={"silly": {"realm": "http://127.0.0.1/token", "service": "registry"}},
        http={"prefix": "/registry/"},
        health={"file": [{"file": str(down)}]},
    )
    assert (await client.get("/registry/v2/")).status == 401  # access control is on
    assert await until(client, lambda s, b: s == 503) == (503, {str(down): "file exists"})


# -- the checks -------------------------------------------------------------------------


async def test_a_file_check_follows_the_file(make_client: MakeClient, tmp_path: Path) -> None:
    down = tmp_path / "maintenance"
    client = await make_client(health={"file": [{"file": str(down), "interval": FAST}]})
    assert await health(client) == (200, {})
    down.touch()
    assert await until(client, lambda s, b: s == 503) == (503, {str(down): "file exists"})
    down.unlink()
    assert await until(client, healthy) == (200, {})


async def test_the_storage_check_stats_the_root(make_client: MakeClient, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    client = await make_client(
        health={"storagedriver": {"enabled": True, "interval": FAST, "threshold": 2}}
    )
    assert await until(client, healthy) == (200, {})
    # A root that is a symbolic link to itself: stat fails with ELOOP, not "not found".
    moved = tmp_path / "moved"
    root.rename(moved)
    root.symlink_to(root)
    try:
        status, body = await until(client, lambda s, b: s == 503)
        assert status == 503
        assert list(body) == ["storagedriver_filesystem"]
        assert "StorageUnavailable" in body["storagedriver_filesystem"]
    finally:
        root.unlink()
        moved.rename(root)
    assert await until(client, healthy) == (200, {})


async def test_a_missing_storage_root_is_healthy(make_client: MakeClient, tmp_path: Path) -> None:
    # As Distribution: "not found" means the backend answered.
    client = await make_client(health={"storagedriver": {"enabled": True, "interval": FAST}})
    assert not (tmp_path / "root").exists()
    await asyncio.sleep(0.05)
    assert await health(client) == (200, {})


@pytest.fixture
async def downstream(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> dict[str, Any]:
    """An HTTP server answering HEAD / with the status in ``state["status"]``."""
    state: dict[str, Any] = {"status": 200, "seen": []}

    async def answer(request: web.Request) -> web.Response:
        state["seen"].append(request.headers.get("X-Probe"))
        return web.Response(status=state["status"])

    app = web.Application()
    app.router.add_route("HEAD", "/", answer)
    server = await aiohttp_server(app)
    state["uri"] = str(server.make_url("/"))
    return state


async def test_an_http_check_wants_its_status_code(
    make_client: MakeClient, downstream: dict[str, Any]
) -> None:
    uri = downstream["uri"]
    client = await make_client(
        health={
            "http": [
                {"uri": uri, "statuscode": 204, "interval": FAST, "headers": {"X-Probe": ["yes"]}}
            ]
        }
    )
    status, body = await until(client, lambda s, b: s == 503)
    assert (status, body) == (
        503,
        {uri: f"{uri}: downstream service returned unexpected status: 200"},
    )
    assert "yes" in downstream["seen"]
    downstream["status"] = 204
    assert await until(client, healthy) == (200, {})


async def test_an_http_check_of_nothing_fails(make_client: MakeClient) -> None:
    uri = f"http://127.0.0.1:{free_port()}/"
    client = await make_client(health={"http": [{"uri": uri, "interval": FAST}]})
    status, body = await until(client, lambda s, b: s == 503)
    assert status == 503
    assert body[uri].startswith(f"{uri}: error while checking: ")


@pytest.fixture
def listening() -> Iterator[str]:
    """A listener that takes every connection: unaccepted ones would fill its backlog (at a
    check every 20 ms, in about two seconds) and the check would then rightly fail."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()

        def accept() -> None:
            with contextlib.suppress(OSError):  # the socket closed: the test is over
                while True:
                    sock.accept()[0].close()

        taker = threading.Thread(target=accept, daemon=True)
        taker.start()
        yield f"127.0.0.1:{sock.getsockname()[1]}"
        sock.shutdown(socket.SHUT_RDWR)
    taker.join(5)


async def test_a_tcp_check_wants_a_listener(make_client: MakeClient, listening: str) -> None:
    closed = f"127.0.0.1:{free_port()}"
    client = await make_client(
        health={"tcp": [{"addr": listening, "interval": FAST}, {"addr": closed, "interval": FAST}]}
    )
    status, body = await until(client, lambda s, b: s == 503)
    assert status == 503
    assert list(body) == [closed]
    assert body[closed].startswith(f"{closed}: connection failed: ")


async def test_the_redis_check_pings_the_cache(
    make_client: MakeClient, redis_db: RedisServer
) -> None:
    client = await make_client(
        storage={"cache": {"blobdescriptor": "redis"}},
        redis={"addr": f"127.0.0.1:{redis_db.port}"},
    )
    assert await health(client) == (200, {})


async def test_the_redis_check_fails_at_once_when_redis_does_not_answer(
    make_client: MakeClient,
) -> None:
    address = f"127.0.0.1:{free_port()}"
    client = await make_client(
        storage={"cache": {"blobdescriptor": "redis"}}, redis={"addr": address}
    )
    assert await health(client) == (503, {"redis": f"{address}: no reply to PING"})
    # Only the health check failed: the registry still answers from storage.
    assert (await client.get("/v2/")).status == 200


# -- the threshold, exactly -------------------------------------------------------------


async def test_a_check_fails_after_threshold_failures_in_a_row() -> None:
    results: list[str | None] = []

    async def probe() -> str | None:
        return results.pop(0)

    check = Check("c", probe, interval=1, threshold=3)
    seen = []
    results += ["e1", "e2", None, "e3", "e4", "e5", "e6", None]
    for _ in range(8):
        await check.run()
        seen.append(check.error)
    assert seen == [None, None, None, None, None, "e5", "e6", None]


async def test_a_threshold_of_zero_fails_at_once_and_slow_probes_fail() -> None:
    async def slow() -> str | None:
        await asyncio.sleep(1)
        return None

    check = Check("slow", slow, interval=0.05)
    await check.run()
    assert check.error == "slow: no result within 0.05 s"


async def test_reading_the_status_runs_no_polled_check() -> None:
    calls = 0

    async def probe() -> str | None:
        nonlocal calls
        calls += 1
        return "broken"

    check = Check("c", probe)
    health = Health([check])
    assert await health.status() == {}
    await check.run()
    for _ in range(3):
        assert await health.status() == {"c": "broken"}
    assert calls == 1
