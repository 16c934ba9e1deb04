"""Metrics as an operator reads them, on both storages and both request paths.

A registry with ``http.debug.prometheus`` on, its debug application served
beside it (as ``serve`` does on ``http.debug.addr``), scraped after known
requests: requests answered on the fast path are counted like any other,
uploads are counted as they start, finish and are cancelled, and each
repository's pulls and pushes are counted, up to the configured number of
repositories.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from tests.api.conftest import MakeRegistry, Registry, chunked, random_blob
from tests.api.test_pipeline import Recorder
from tests.support.inprocess import listening_socket
from tests.support.metrics import Scrape, parse

from cargohold.api.debug import create_debug_app
from cargohold.config import parse_config

PROMETHEUS = {"http": {"debug": {"addr": "127.0.0.1:0", "prometheus": {"enabled": True}}}}

Scraper = Callable[[Registry], Awaitable[Scrape]]


@pytest.fixture
async def scraper() -> AsyncIterator[Scraper]:
    """Serves each registry's debug application and scrapes it."""
    runners: list[web.AppRunner] = []
    ports: dict[int, int] = {}

    async def scrape(registry: Registry) -> Scrape:
        if id(registry.app) not in ports:
            config = parse_config(
                "version: 0.1\nstorage: {inmemory: {}}\n"
                "http: {debug: {addr: '127.0.0.1:0', prometheus: {enabled: true}}}\n",
                environ={},
            )
            runner = web.AppRunner(create_debug_app(config, registry.app, None))
            await runner.setup()
            sock = listening_socket()
            await web.SockSite(runner, sock).start()
            runners.append(runner)
            ports[id(registry.app)] = sock.getsockname()[1]
        url = f"http://127.0.0.1:{ports[id(registry.app)]}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            return parse(await response.text())

    yield scrape
    for runner in runners:
        await runner.cleanup()


def requests(found: Scrape, handler: str, method: str, code: str = "200") -> float:
    return found.value("registry_http_requests_total", code=code, handler=handler, method=method)


async def test_fast_path_requests_are_counted_like_any_other(
    make_registry: MakeRegistry, scraper: Scraper, serving: str
) -> None:
    recorder = Recorder()
    registry = await make_registry(PROMETHEUS, hooks=[recorder])
    blob = await registry.push_blob("repo", random_blob(700))
    for _ in range(5):
        assert (await registry.request_anew("HEAD", f"/v2/repo/blobs/{blob.digest}"))[0] == 200
    heads = [e for e in recorder.finished if e.method == "HEAD"]
    assert [e.fast for e in heads] == [serving == "fast"] * 5
    found = await scraper(registry)
    assert requests(found, "blob", "head") == 5
    assert (
        found.value("registry_http_request_duration_seconds_count", handler="blob", method="head")
        == 5
    )
    assert found.value("registry_http_response_size_bytes_count", handler="blob") == 5
    assert found.value("registry_http_response_size_bytes_sum", handler="blob") == 0


QUIET = {**PROMETHEUS, "log": {"accesslog": {"disabled": True}}}


@pytest.mark.parametrize("settings", [PROMETHEUS, QUIET], ids=["access-log", "metrics-alone"])
async def test_hot_reads_count_alike_with_an_exchange_or_without(
    make_registry: MakeRegistry, scraper: Scraper, settings: dict[str, Any]
) -> None:
    """With metrics the only hook the fast path opens no exchange (``pipeline.Counter``);
    with another hook it does: the counts are the same."""
    registry = await make_registry(settings)
    image = await registry.push_image("team/app", tag="v1")
    layer = image.layers[0]
    before = await scraper(registry)
    for _ in range(3):
        assert (await registry.request_anew("HEAD", f"/v2/team/app/blobs/{layer.digest}"))[0] == 200
        status, body = await registry.request_anew("GET", f"/v2/team/app/blobs/{layer.digest}")
        assert (status, body) == (200, layer.data)
    status, manifest = await registry.request_anew("GET", "/v2/team/app/manifests/v1")
    assert status == 200

    found = await scraper(registry)
    assert requests(found, "blob", "head") == 3
    assert requests(found, "blob", "get") == 3
    assert requests(found, "manifest", "get") == 1
    duration = "registry_http_request_duration_seconds"
    for handler, method, count in (("blob", "head", 3), ("blob", "get", 3), ("manifest", "get", 1)):
        assert found.value(f"{duration}_count", handler=handler, method=method) == count
        bucket = found.value(f"{duration}_bucket", handler=handler, method=method, le="+Inf")
        assert bucket == count
    sent = "registry_http_response_size_bytes"
    pushed = before.value(f"{sent}_sum", handler="blob")
    assert found.value(f"{sent}_sum", handler="blob") == pushed + 3 * layer.size
    assert found.value(f"{sent}_sum", handler="manifest") == len(manifest)
    received = "registry_http_request_size_bytes"
    assert (
        found.value(f"{received}_count", handler="blob")
        - before.value(f"{received}_count", handler="blob")
        == 6
    )
    pulls = found.by("cargohold_repository_pulls_total", "type")
    assert pulls == {"blob": 3, "manifest": 1}, "a HEAD pulls nothing"
    pulled = found.value("cargohold_repository_pulled_bytes_total", repository="team/app")
    assert pulled == 3 * layer.size + len(manifest)
    stat = found.total("registry_storage_action_seconds_count", action="Stat")
    assert stat > before.total("registry_storage_action_seconds_count", action="Stat")


async def test_storage_calls_of_both_paths_are_timed(
    make_registry: MakeRegistry, scraper: Scraper, storage: str
) -> None:
    registry = await make_registry(PROMETHEUS)
    blob = await registry.push_blob("repo", random_blob(700))
    before = (await scraper(registry)).total(
        "registry_storage_action_seconds_count", action="Stat", driver=storage
    )
    assert (await registry.request_anew("HEAD", f"/v2/repo/blobs/{blob.digest}"))[0] == 200
    after = (await scraper(registry)).total(
        "registry_storage_action_seconds_count", action="Stat", driver=storage
    )
    assert after > before


async def test_uploads_are_counted_as_they_start_finish_and_are_cancelled(
    make_registry: MakeRegistry, scraper: Scraper
) -> None:
    registry = await make_registry(PROMETHEUS)
    data = random_blob(5000)
    location = await registry.start_upload("repo")
    other = await registry.start_upload("repo")
    found = await scraper(registry)
    assert found.value("cargohold_uploads_started_total") == 2
    assert found.value("cargohold_uploads_in_progress") == 2

    response = await registry.request("PATCH", location, data=chunked(data.data))
    assert response.status == 202
    finished = await registry.request(
        "PUT", registry.local(response.headers["Location"]), params={"digest": data.digest}
    )
    assert finished.status == 201
    cancelled = await registry.request("DELETE", other)
    assert cancelled.status == 204

    found = await scraper(registry)
    assert found.value("cargohold_uploads_completed_total") == 1
    assert found.value("cargohold_uploads_cancelled_total") == 1
    assert found.value("cargohold_uploads_in_progress") == 0
    assert requests(found, "blob_upload", "post", "202") == 2
    assert requests(found, "blob_upload_chunk", "patch", "202") == 1
    assert requests(found, "blob_upload_chunk", "put", "201") == 1
    assert requests(found, "blob_upload_chunk", "delete", "204") == 1
    assert found.value("cargohold_repository_pushed_bytes_total", repository="repo") == 5000


async def test_each_repository_counts_its_pulls_and_pushes(
    make_registry: MakeRegistry, scraper: Scraper
) -> None:
    registry = await make_registry(PROMETHEUS)
    image = await registry.push_image("team/app", tag="v1")
    layer = image.layers[0]
    for _ in range(3):
        status, body = await registry.request_anew("GET", f"/v2/team/app/blobs/{layer.digest}")
        assert (status, body) == (200, layer.data)
    status, manifest = await registry.request_anew("GET", "/v2/team/app/manifests/v1")
    assert status == 200
    assert (await registry.request_anew("HEAD", f"/v2/team/app/blobs/{layer.digest}"))[0] == 200

    found = await scraper(registry)
    pulls = found.by("cargohold_repository_pulls_total", "type")
    assert pulls == {"blob": 3, "manifest": 1}, "a HEAD pulls nothing"
    pulled = found.value("cargohold_repository_pulled_bytes_total", repository="team/app")
    assert pulled == 3 * layer.size + len(manifest)
    pushes = found.by("cargohold_repository_pushes_total", "type")
    assert pushes == {"blob": 1 + len(image.layers), "manifest": 1}
    pushed = found.value("cargohold_repository_pushed_bytes_total", repository="team/app")
    assert image.config is not None
    assert pushed == image.config.size + sum(b.size for b in image.layers) + image.size


async def test_repositories_past_the_cap_are_counted_together(
    make_registry: MakeRegistry, scraper: Scraper
) -> None:
    capped: dict[str, Any] = {
        "http": {"debug": {"addr": ":0", "prometheus": {"enabled": True, "repositories": 2}}}
    }
    registry = await make_registry(capped)
    for name in ("one", "two", "three", "four"):
        await registry.push_blob(name, random_blob(100))
    found = await scraper(registry)
    pushed = found.by("cargohold_repository_pushes_total", "repository")
    assert pushed == {"one": 1, "two": 1, "_other": 2}


async def test_a_request_under_way_is_in_flight(
    make_registry: MakeRegistry, scraper: Scraper
) -> None:
    registry = await make_registry(PROMETHEUS)
    location = await registry.start_upload("repo")
    release = asyncio.Event()

    async def slowly() -> AsyncIterator[bytes]:
        yield b"first"
        await release.wait()
        yield b"last"

    patch = asyncio.ensure_future(registry.request("PATCH", location, data=slowly()))

    async def in_flight() -> float:
        found = await scraper(registry)
        return found.value("registry_http_in_flight_requests", handler="blob_upload_chunk")

    async with asyncio.timeout(10):
        while await in_flight() != 1:  # noqa: ASYNC110 - the scrape is the condition
            await asyncio.sleep(0.01)
    release.set()
    assert (await patch).status == 202
    assert await in_flight() == 0


async def test_the_debug_application_answers_health_too(
    make_registry: MakeRegistry, scraper: Scraper
) -> None:
    registry = await make_registry(PROMETHEUS)
    await scraper(registry)  # serves the debug application
    config = parse_config("version: 0.1\nstorage: {inmemory: {}}\n", environ={})
    runner = web.AppRunner(create_debug_app(config, registry.app, None))
    await runner.setup()
    sock = listening_socket()
    await web.SockSite(runner, sock).start()
    try:
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/debug/health") as health:
                assert (health.status, await health.json()) == (200, {})
            async with session.get(f"{base}/metrics") as metrics:
                assert metrics.status == 404, "prometheus is off in this configuration"
    finally:
        await runner.cleanup()


async def test_a_slow_scrape_holds_up_no_request(
    make_registry: MakeRegistry, scraper: Scraper, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cargohold.metrics import exposition

    registry = await make_registry(PROMETHEUS)
    blob = await registry.push_blob("repo", random_blob(300))
    rendering, release = threading.Event(), threading.Event()
    render = exposition.render

    def slow_render(*args: Any) -> tuple[bytes, str]:
        rendering.set()
        release.wait(30)
        return render(*args)

    monkeypatch.setattr(exposition, "render", slow_render)
    scrape = asyncio.ensure_future(scraper(registry))
    async with asyncio.timeout(10):
        while not rendering.is_set():  # noqa: ASYNC110 - set by the scrape's thread
            await asyncio.sleep(0.01)
    try:
        # The scrape is under way, stuck in its thread: requests are answered all the same.
        for _ in range(3):
            status, _ = await registry.request_anew("HEAD", f"/v2/repo/blobs/{blob.digest}")
            assert status == 200
        assert (await registry.request_anew("GET", "/v2/"))[0] == 200
        assert not scrape.done()
    finally:
        release.set()
    # The held scrape shows the samples as they were when it read them; the next, all three.
    assert requests(await scrape, "blob", "head") == 0
    assert requests(await scraper(registry), "blob", "head") == 3
