"""Rate limits over HTTP: a flooding client gets 429 TOOMANYREQUESTS, everyone else is served.

Every limit here refills one token in 1000 seconds, so a bucket empties after
its burst and stays empty while the test runs: no test waits for a token to
come back (``tests/ratelimit/`` moves a clock for that). Another client is
another source address (``127.0.0.2``, on the loopback like the server) or
another user. Flooding requests go on fresh connections, so that on the fast
path each one meets the fast path's own check first.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from multidict import CIMultiDictProxy
from tests.api.conftest import (
    MakeRegistry,
    Registry,
    assert_common_headers,
    assert_error,
    config_text,
)
from tests.auth.conftest import write_htpasswd
from tests.support.accesslog import ACCESS_LOG_ENV, requests
from tests.support.http import request
from tests.support.inprocess import Client, Servers
from tests.support.redis import RedisServer
from tests.support.servers import cargohold_argv, free_port, running
from tests.support.waiting import wait_until

from cargohold.api.app import API_KEY, create_app
from cargohold.api.pipeline import PIPELINE, limited_reply
from cargohold.config import parse_config

#: A token every 1000 s: none comes back while a test runs.
SLOW = 0.001
#: What a client just over such a limit is told to wait: one interval, in whole seconds.
RETRY_AFTER = "1000"


def limits(**kinds: dict[str, int]) -> dict[str, Any]:
    """The ``ratelimit`` settings: each kind (``perclient``...) maps read/write to a burst."""
    section: dict[str, Any] = {"enabled": True}
    for kind, bursts in kinds.items():
        section[kind] = {rw: {"rate": SLOW, "burst": burst} for rw, burst in bursts.items()}
    return {"ratelimit": section}


async def statuses(
    session: aiohttp.ClientSession, method: str, url: str, count: int, **kwargs: Any
) -> list[int]:
    """``count`` requests, each on a connection of its own; their statuses."""
    found = []
    for _ in range(count):
        async with session.request(method, url, **kwargs) as response:
            await response.read()
            found.append(response.status)
    return found


async def client_from(address: str) -> aiohttp.ClientSession:
    """A client whose connections come from ``address``, one connection per request."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0), force_close=True)
    return aiohttp.ClientSession(connector=connector)


@pytest.fixture
async def flooder() -> AsyncIterator[aiohttp.ClientSession]:
    async with await client_from("127.0.0.1") as session:
        yield session


@pytest.fixture
async def bystander() -> AsyncIterator[aiohttp.ClientSession]:
    async with await client_from("127.0.0.2") as session:
        yield session


def url(registry: Registry, path: str) -> str:
    return str(registry.client.make_url(registry.url(path)))


async def assert_limited(response: aiohttp.ClientResponse, *, head: bool = False) -> None:
    """``response`` is the 429 of a client over its limit."""
    await assert_error(response, 429, "TOOMANYREQUESTS", head=head)
    assert response.headers["Retry-After"] == RETRY_AFTER
    assert_common_headers(response.headers)


async def test_a_flooding_client_is_limited_while_another_is_served(
    make_registry: MakeRegistry,
    flooder: aiohttp.ClientSession,
    bystander: aiohttp.ClientSession,
) -> None:
    registry = await make_registry(limits(perclient={"read": 3}))
    blob = await registry.push_blob("flood/app")  # a write: no write limit is set
    target = url(registry, f"/v2/flood/app/blobs/{blob.digest}")
    assert await statuses(flooder, "GET", target, 5) == [200, 200, 200, 429, 429]
    async with flooder.get(target) as refused:
        await assert_limited(refused)
    async with flooder.head(target) as refused:
        await assert_limited(refused, head=True)
    assert await statuses(bystander, "GET", target, 3) == [200, 200, 200]
    async with bystander.get(target) as served:
        assert served.status == 429, "the bystander has a burst of its own, now spent"


async def test_reads_and_writes_have_buckets_of_their_own(
    make_registry: MakeRegistry, flooder: aiohttp.ClientSession
) -> None:
    registry = await make_registry(limits(perclient={"read": 2, "write": 1}))
    uploads = url(registry, "/v2/rw/app/blobs/uploads/")
    assert await statuses(flooder, "POST", uploads, 1) == [202]
    async with flooder.post(uploads) as refused:
        await assert_limited(refused)
    async with flooder.delete(uploads) as refused:
        await assert_limited(refused)  # any method but GET and HEAD writes
    base = url(registry, "/v2/")
    assert await statuses(flooder, "GET", base, 3) == [200, 200, 429]


async def test_a_repository_over_its_limit_leaves_the_others_alone(
    make_registry: MakeRegistry, flooder: aiohttp.ClientSession
) -> None:
    registry = await make_registry(limits(perrepository={"read": 2}))
    hot = await registry.push_blob("hot/app")
    cold = await registry.push_blob("cold/app")
    hot_url = url(registry, f"/v2/hot/app/blobs/{hot.digest}")
    assert await statuses(flooder, "HEAD", hot_url, 4) == [200, 200, 429, 429]
    cold_url = url(registry, f"/v2/cold/app/blobs/{cold.digest}")
    assert await statuses(flooder, "HEAD", cold_url, 2) == [200, 200]
    # The version check is about no repository: no repository's limit applies.
    assert await statuses(flooder, "GET", url(registry, "/v2/"), 4) == [200] * 4


async def test_each_user_has_a_bucket_of_their_own(
    make_registry: MakeRegistry, flooder: aiohttp.ClientSession, tmp_path: Path
) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"alice": "a-secret", "bob": "b-secret"})
    settings = limits(peruser={"read": 2})
    settings["auth"] = {"htpasswd": {"realm": "test", "path": str(htpasswd)}}
    registry = await make_registry(settings)
    base = url(registry, "/v2/")

    def basic(user: str, password: str) -> dict[str, str]:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    alice, bob = basic("alice", "a-secret"), basic("bob", "b-secret")
    assert await statuses(flooder, "GET", base, 3, headers=alice) == [200, 200, 429]
    async with flooder.get(base, headers=alice) as refused:
        await assert_limited(refused)
    # The same address, another user: served.
    assert await statuses(flooder, "GET", base, 2, headers=bob) == [200, 200]
    # No user at all: refused by access control, as ever, never by a user's limit.
    assert await statuses(flooder, "GET", base, 3) == [401, 401, 401]


async def test_requests_refused_by_access_control_count_against_their_address(
    make_registry: MakeRegistry, flooder: aiohttp.ClientSession, tmp_path: Path
) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"alice": "a-secret"})
    settings = limits(perclient={"read": 2})
    settings["auth"] = {"htpasswd": {"realm": "test", "path": str(htpasswd)}}
    registry = await make_registry(settings)
    wrong = {"Authorization": "Basic " + base64.b64encode(b"alice:guess").decode()}
    assert await statuses(flooder, "GET", url(registry, "/v2/"), 3, headers=wrong) == [
        401,
        401,
        429,
    ]


async def test_only_the_api_is_limited(
    make_registry: MakeRegistry, flooder: aiohttp.ClientSession
) -> None:
    registry = await make_registry(limits(perclient={"read": 1}))
    assert await statuses(flooder, "GET", url(registry, "/debug/health"), 3) == [200] * 3
    assert await statuses(flooder, "GET", url(registry, "/v2/"), 2) == [200, 429]
    assert await statuses(flooder, "GET", url(registry, "/debug/health"), 2) == [200] * 2
    assert await statuses(flooder, "GET", url(registry, "/elsewhere"), 2) == [404] * 2


async def test_without_a_limit_nothing_is_limited(
    make_registry: MakeRegistry, flooder: aiohttp.ClientSession
) -> None:
    registry = await make_registry()
    assert registry.app[PIPELINE].limiter is None
    assert await statuses(flooder, "GET", url(registry, "/v2/"), 20) == [200] * 20


@pytest.mark.parametrize(
    ("wait", "retry_after"), [(0.000001, "1"), (1.0, "1"), (1.2, "2"), (59.99, "60")]
)
async def test_retry_after_is_in_whole_seconds_rounded_up(
    make_registry: MakeRegistry, wait: float, retry_after: str
) -> None:
    registry = await make_registry()
    reply = limited_reply(registry.app[API_KEY], wait)
    assert reply.status == 429
    assert reply.headers["Retry-After"] == retry_after
    assert json.loads(reply.body)["errors"][0]["code"] == "TOOMANYREQUESTS"


# -- both paths, one answer --------------------------------------------------------------


def comparable(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in ("date", "x-request-id")}


async def flood(storage: str, tmp_path: Path, path: str) -> tuple[list[int], Any]:
    """Five GETs of a blob on a registry served with ``path``; the statuses and the last reply."""
    servers = Servers(path)
    try:
        settings = limits(perclient={"read": 3})
        config = parse_config(config_text(storage, tmp_path / path, settings), environ={})
        client: Client = await servers.serve(create_app(config))
        registry = Registry(client, storage, None)
        blob = await registry.push_blob("same/app")
        async with await client_from("127.0.0.1") as session:
            target = str(client.make_url(f"/v2/same/app/blobs/{blob.digest}"))
            found = await statuses(session, "GET", target, 4)
            async with session.get(target) as last:
                reply = (last.status, comparable(last.headers), await last.read())
        return found, reply
    finally:
        await servers.close()


@pytest.mark.parametrize("storage", ["inmemory", "filesystem"])
async def test_the_fast_path_and_aiohttp_limit_alike(storage: str, tmp_path: Path) -> None:
    fast, fast_reply = await flood(storage, tmp_path, "fast")
    full, full_reply = await flood(storage, tmp_path, "full")
    assert fast == full == [200, 200, 200, 429]
    assert fast_reply == full_reply
    status, headers, body = fast_reply
    assert status == 429
    assert headers["Retry-After"] == RETRY_AFTER
    assert json.loads(body)["errors"][0]["code"] == "TOOMANYREQUESTS"


# -- shared by processes -----------------------------------------------------------------


def config_file(tmp_path: Path, port: int, settings: Mapping[str, Any]) -> Path:
    path = tmp_path / f"config-{port}.yml"
    document = {
        "version": "0.1",
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "root")}},
        "http": {"addr": f"127.0.0.1:{port}"},
        **settings,
    }
    path.write_text(yaml.safe_dump(document))
    return path


def test_the_workers_of_a_server_share_one_bucket(tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "cargohold.log"
    base = f"http://127.0.0.1:{port}"
    config = config_file(tmp_path, port, limits(perclient={"read": 6}))
    argv = cargohold_argv("serve", str(config), "--workers", "2")
    # Readiness and the wait for both workers ask a path outside the API: never limited.
    with running(argv, f"{base}/", env=ACCESS_LOG_ENV, log=log):

        def both_listening() -> bool:
            assert request("GET", f"{base}/").status == 404
            return len({r.pid for r in requests(log) if r.path == "/"}) == 2

        wait_until(both_listening, within=20)
        found = [request("GET", f"{base}/v2/").status for _ in range(24)]
        assert found.count(200) == 6, found
        assert found.count(429) == 18, found
        answered = [r for r in requests(log) if r.path == "/v2/"]
        assert len({r.pid for r in answered}) == 2, "both workers answered the flood"


def test_processes_sharing_redis_share_one_bucket(redis_db: RedisServer, tmp_path: Path) -> None:
    settings = limits(perclient={"read": 4})
    settings["ratelimit"]["redis"] = True
    settings["redis"] = {"addr": f"127.0.0.1:{redis_db.port}"}
    first, second = free_port(), free_port()
    argv = [
        cargohold_argv("serve", str(config_file(tmp_path, port, settings)), "--workers", "1")
        for port in (first, second)
    ]
    with (
        running(argv[0], f"http://127.0.0.1:{first}/", log=tmp_path / "first.log"),
        running(argv[1], f"http://127.0.0.1:{second}/", log=tmp_path / "second.log"),
    ):
        found = [
            request("GET", f"http://127.0.0.1:{port}/v2/").status
            for _ in range(5)
            for port in (first, second)
        ]
        assert found.count(200) == 4, found
        assert found[-2:] == [429, 429]
        refused = request("GET", f"http://127.0.0.1:{second}/v2/")
        assert refused.headers["Retry-After"] == RETRY_AFTER
        assert json.loads(refused.body)["errors"][0]["code"] == "TOOMANYREQUESTS"


async def test_requests_are_served_while_the_limits_redis_is_down(
    make_registry: MakeRegistry, flooder: aiohttp.ClientSession
) -> None:
    settings = limits(perclient={"read": 1})
    settings["ratelimit"]["redis"] = True
    settings["redis"] = {"addr": f"127.0.0.1:{free_port()}"}  # nothing listens there
    registry = await make_registry(settings)
    assert await statuses(flooder, "GET", url(registry, "/v2/"), 5) == [200] * 5
