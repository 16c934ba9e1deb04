"""Every request passes one pipeline, whichever path answers it.

The hooks (``api/pipeline.py``) hear of every request, with its status, its
size, who answered it and what it did to the registry's content. Configuring
a feature that needs every request (a notification endpoint here) leaves the
fast path on: it calls the same hooks. The connection's own keep-alive
timer closes idle connections and only those, and pipelined replies, large
blobs among them, arrive whole and in order.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import time

from tests.api.conftest import Blob, MakeRegistry, random_blob, random_config
from tests.support.http_raw import read_replies, request_bytes

from cargohold.api.events import PULL, PUSH, Event
from cargohold.api.pipeline import Exchange
from cargohold.api.routes import Endpoint, Route


class Recorder:
    """A hook that keeps every exchange it hears of, and checks each is started first."""

    def __init__(self) -> None:
        self.started: list[Exchange] = []
        self.finished: list[Exchange] = []

    def request_started(self, exchange: Exchange) -> None:
        self.started.append(exchange)

    def request_finished(self, exchange: Exchange) -> None:
        assert exchange in self.started, "finished before it started"
        self.finished.append(exchange)

    def only(self, method: str, target: str) -> Exchange:
        (found,) = [e for e in self.finished if (e.method, e.target) == (method, target)]
        return found


async def test_with_a_request_hook_the_fast_path_still_answers(
    make_registry: MakeRegistry, serving: str
) -> None:
    """A hook (as notifications, metrics and logging will be) does not turn it off."""
    recorder = Recorder()
    registry = await make_registry(hooks=[recorder])
    blob = await registry.push_blob("repo", random_blob(700))
    target = f"/v2/repo/blobs/{blob.digest}"

    status, _ = await registry.request_anew("HEAD", target)

    assert status == 200
    assert registry.client.listener.fast is (serving == "fast")
    seen = recorder.only("HEAD", target)
    assert seen.fast is (serving == "fast"), "the fast path answered it, and the hook saw it"
    assert (seen.status, seen.size, seen.version) == (200, 0, "1.1")
    assert seen.route is not None
    assert seen.repository == "repo"
    assert seen.event is not None
    assert (seen.event.action, seen.event.repository) == (PULL, "repo")
    assert (seen.event.digest, seen.event.size) == (blob.digest, blob.size)
    assert seen.duration > 0


async def test_both_paths_report_the_same_exchange_for_the_same_request(
    make_registry: MakeRegistry,
) -> None:
    """A GET the fast path answers and one it leaves to aiohttp (a Range) report alike."""
    recorder = Recorder()
    registry = await make_registry(hooks=[recorder])
    blob = await registry.push_blob("repo", random_blob(1000))
    target = f"/v2/repo/blobs/{blob.digest}"
    assert await registry.request_anew("GET", target) == (200, blob.data)
    ranged_get = await registry.request_anew("GET", target, headers={"Range": "bytes=0-99"})
    assert ranged_get == (206, blob.data[:100])

    plain, ranged = [e for e in recorder.finished if e.target == target]
    assert ranged.fast is False
    assert (plain.status, plain.size) == (200, 1000)
    assert (ranged.status, ranged.size) == (206, 100)
    assert plain.event is not None
    assert plain.event == ranged.event


async def test_writes_and_errors_pass_the_hooks_too(make_registry: MakeRegistry) -> None:
    recorder = Recorder()
    registry = await make_registry(hooks=[recorder])
    config = await registry.push_blob("repo", random_config())
    missing = hashlib.sha256(b"missing").hexdigest()
    await registry.request("GET", f"/v2/repo/blobs/sha256:{missing}")
    await registry.request("GET", "/v2/repo/manifests/nope")
    await registry.request("GET", "/not/an/endpoint")

    pushed = recorder.only("POST", f"/v2/repo/blobs/uploads/?digest={config.digest}")
    assert (pushed.status, pushed.fast) == (201, False)
    assert pushed.event is not None
    assert pushed.event.action == PUSH
    assert pushed.event.digest == config.digest
    assert recorder.only("GET", f"/v2/repo/blobs/sha256:{missing}").status == 404
    assert recorder.only("GET", "/v2/repo/manifests/nope").status == 404
    assert recorder.only("GET", "/not/an/endpoint").status == 404
    for exchange in recorder.finished:
        if exchange.status >= 400:
            assert exchange.event is None, "a failed request did nothing to report"
    ids = [exchange.id for exchange in recorder.finished]
    assert len(set(ids)) == len(ids) == len(recorder.started)


#: No access log: a hook that is neither a counter nor selective would have every request
#: opened as an exchange.
QUIET = {"log": {"accesslog": {"disabled": True}}}


class Counting(Recorder):
    """A counter (``pipeline.Counter``): notes the numbers of each request it is told of."""

    def __init__(self) -> None:
        super().__init__()
        self.counted: list[tuple[Route, str, int, int, int, float, Event | None]] = []

    def request_counted(
        self,
        route: Route,
        method: str,
        status: int,
        received: int,
        sent: int,
        seconds: float,
        event: Event | None,
    ) -> None:
        self.counted.append((route, method, status, received, sent, seconds, event))


class Continuing(Recorder):
    """A selective hook (``pipeline.Selective``), as tracing that only continues traces is."""

    exchange_with = "traceparent"


async def test_counters_hear_the_fast_paths_requests_without_an_exchange(
    make_registry: MakeRegistry, serving: str
) -> None:
    """Metrics are a counter: alone, they cost the fast path no exchange and no two calls."""
    counting = Counting()
    registry = await make_registry(QUIET, hooks=[counting])
    blob = await registry.push_blob("repo", random_blob(700))
    target = f"/v2/repo/blobs/{blob.digest}"

    assert (await registry.request_anew("GET", target)) == (200, blob.data)

    if serving == "full":
        assert counting.only("GET", target).size == blob.size
        assert counting.counted == []
        return
    assert [e for e in counting.started if e.target == target] == [], "no exchange was opened"
    ((route, method, status, received, sent, seconds, event),) = counting.counted
    assert (route.endpoint, route.name, method, status) == (Endpoint.BLOB, "repo", "GET", 200)
    assert received > len(f"GET {target} HTTP/1.1\r\n")
    assert (sent, seconds > 0) == (blob.size, True)
    assert event is not None
    assert (event.action, event.repository, event.digest) == (PULL, "repo", blob.digest)


async def test_a_selective_hook_has_an_exchange_opened_only_for_its_header(
    make_registry: MakeRegistry, serving: str
) -> None:
    counting, continuing = Counting(), Continuing()
    registry = await make_registry(QUIET, hooks=[counting, continuing])
    blob = await registry.push_blob("repo", random_blob(700))
    target = f"/v2/repo/blobs/{blob.digest}"
    before = len(continuing.finished)

    assert (await registry.request_anew("HEAD", target))[0] == 200
    traceparent = {"traceparent": f"00-{'1' * 32}-{'2' * 16}-01"}
    assert (await registry.request_anew("HEAD", target, headers=traceparent))[0] == 200

    heard = continuing.finished[before:]
    if serving == "full":
        assert len(heard) == 2
        assert counting.counted == []
        return
    (exchange,) = heard
    assert exchange.fast
    assert exchange.headers.get("traceparent") == traceparent["traceparent"]
    assert counting.finished[-1] is exchange, "the counter heard it through the exchange"
    assert len(counting.counted) == 1, "the request without the header was counted alone"


async def test_any_other_hook_has_every_fast_request_opened_as_an_exchange(
    make_registry: MakeRegistry, serving: str
) -> None:
    counting, recorder = Counting(), Recorder()
    registry = await make_registry(QUIET, hooks=[counting, recorder])
    blob = await registry.push_blob("repo", random_blob(700))
    target = f"/v2/repo/blobs/{blob.digest}"

    assert (await registry.request_anew("HEAD", target))[0] == 200

    seen = recorder.only("HEAD", target)
    assert seen.fast is (serving == "fast")
    assert counting.only("HEAD", target) is seen
    assert counting.counted == []


# -- connections ----------------------------------------------------------------------------


async def test_a_busy_connection_stays_open_and_an_idle_one_closes(
    make_registry: MakeRegistry,
) -> None:
    keepalive = 0.4
    registry = await make_registry(keepalive_timeout=keepalive)
    blob = await registry.push_blob("repo", random_blob(600))
    reader, writer = await asyncio.open_connection(registry.client.host, registry.client.port)
    head = request_bytes("HEAD", f"/v2/repo/blobs/{blob.digest}")
    busy_until = time.monotonic() + 4 * keepalive
    answered = 0
    while time.monotonic() < busy_until:
        writer.write(head)
        (reply,) = await read_replies(reader, [head])
        last = time.monotonic()
        assert reply.status == 200
        answered += 1
        await asyncio.sleep(keepalive / 4)
    assert answered >= 12, "the connection stayed open for every request"
    # Now idle: the server closes it about one timeout after the last request.
    assert await asyncio.wait_for(reader.read(), timeout=10 * keepalive) == b""
    assert time.monotonic() - last >= keepalive * 0.9
    writer.close()


async def test_pipelined_large_and_small_replies_arrive_whole_and_in_order(
    make_registry: MakeRegistry,
) -> None:
    """Replies written ahead (small ones) must leave before a large blob's body does."""
    registry = await make_registry()
    large = await registry.push_blob("repo", Blob(os.urandom(3 * 1024 * 1024 + 5)), chunked=True)
    small = await registry.push_blob("repo", random_blob(2000))
    # Up to the inline limit: the fast path answers these, megabytes ahead of a large one.
    medium = await registry.push_blob("repo", random_blob(200 * 1024))
    requests = [request_bytes("GET", f"/v2/repo/blobs/{medium.digest}")] * 20
    requests += [
        request_bytes("GET", f"/v2/repo/blobs/{small.digest}"),
        request_bytes("HEAD", f"/v2/repo/blobs/{small.digest}"),
        request_bytes("GET", f"/v2/repo/blobs/{large.digest}"),
        request_bytes("GET", f"/v2/repo/blobs/{small.digest}"),
        request_bytes("GET", f"/v2/repo/blobs/{large.digest}", "Range: bytes=1000-1999999"),
        request_bytes("GET", f"/v2/repo/blobs/{small.digest}"),
        request_bytes("GET", f"/v2/repo/blobs/{large.digest}"),
    ]
    expected = [medium.data] * 20
    expected += [small.data, b"", large.data, small.data, large.data[1000:2000000]]
    expected += [small.data, large.data]
    for delay in (0.0, 0.3):  # reading at once, and after the server's buffers filled up
        sock = socket.socket()
        sock.setblocking(False)
        # A small window: replies queue up in the server's buffers, not in the client's.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        await asyncio.get_running_loop().sock_connect(
            sock, (registry.client.host, registry.client.port)
        )
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"".join(requests * 3))
        await asyncio.sleep(delay)
        replies = await read_replies(reader, requests * 3)
        assert [reply.body for reply in replies] == expected * 3, f"after {delay} s"
        writer.close()


async def test_the_hot_reads_take_the_fast_path_and_the_rest_do_not(
    make_registry: MakeRegistry, serving: str
) -> None:
    """Equal replies prove nothing if every request fell through: check who answered."""
    recorder = Recorder()
    registry = await make_registry(hooks=[recorder])
    image = await registry.push_image("repo", "v1")
    index = await registry.push_index("repo", [image], "multi")
    large = await registry.push_blob("repo", Blob(os.urandom(300 * 1024)))
    small = image.layers[0].digest
    hot = [
        ("GET", "/v2/"),
        ("HEAD", f"/v2/repo/blobs/{small}"),
        ("GET", f"/v2/repo/blobs/{small}"),
        ("HEAD", f"/v2/repo/blobs/{large.digest}"),
        ("GET", "/v2/repo/manifests/v1"),
        ("HEAD", f"/v2/repo/manifests/{index.digest}"),
        ("GET", "/v2/repo/manifests/multi"),
        ("GET", "/v2/repo/tags/list"),
    ]
    left = [
        ("GET", f"/v2/repo/blobs/{large.digest}", {}),
        ("GET", f"/v2/repo/blobs/{small}", {"Range": "bytes=1-2"}),
        ("GET", f"/v2/repo/blobs/{small}", {"If-None-Match": f'"{small}"'}),
        ("GET", "/v2/repo/tags/list?n=1", {}),
        ("GET", "/v2/repo/manifests/nope", {}),
        ("GET", "/v2/_catalog", {}),
        ("HEAD", "/v2/", {"Connection": "close"}),
    ]
    for method, target in hot:
        status, _ = await registry.request_anew(method, target)
        assert status == 200, target
    for method, target, headers in left:
        await registry.request_anew(method, target, headers=headers)
    answered = recorder.finished[-len(hot) - len(left) :]
    assert [(e.method, e.target) for e in answered[: len(hot)]] == hot
    assert [e.fast for e in answered[: len(hot)]] == [serving == "fast"] * len(hot)
    assert [e.fast for e in answered[len(hot) :]] == [False] * len(left)
