"""Backends dying under load: Redis and the object store are killed mid-traffic and come back.

Real processes throughout: ``cargohold serve`` (two workers on one Redis, or
one on S3), a ``redis-server`` and a SeaweedFS of the test's own, SIGKILLed as
a crash would kill them and started again on the same port (and, for the
object store, the same data). Concurrent clients keep pulling and pushing
through the outage, every request on a new connection so both workers answer.

- Redis is an accelerator: while it is down no request fails (reads are
  answered from storage, pushes go through), and once it is back nothing
  deleted is answered from it, whether it came back empty or with a snapshot
  taken before a delete (``storage/cache/redis.py``, "A Redis that comes back").
- The object store is the truth: while it is down, requests in flight answer
  ``503 UNAVAILABLE`` (never a 500, never a hang), the clients retry, and
  everything the registry acknowledged reads back to its digest afterwards.
- ``/debug/health`` (on the debug listener) names the backend for as long
  as it is down, and is ``200 {}`` again once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import pytest
import yaml

from tests.cache.registries import (
    OCI_MANIFEST,
    digest_of,
    manifest_of,
    push_blob,
    push_image,
    random_bytes,
    write_config,
)
from tests.s3.conftest import ObjectStore, registry_config, serving
from tests.support.http import with_query
from tests.support.redis import RedisServer, running_redis
from tests.support.servers import cargohold, free_port
from tests.support.waiting import until

MiB = 1 << 20
#: Seconds of load before the kill, during the outage, and after the restart.
PHASE = 1.0
#: No request may take longer than this, outage or not.
BOUND = 20.0
#: New connections per check of what every worker answers (SO_REUSEPORT spreads them).
ASKS = 16
MANIFEST_TYPE = {"Content-Type": OCI_MANIFEST}


# -- the load -----------------------------------------------------------------------------


@dataclass
class Answer:
    phase: str
    kind: str  # "read", "push" or "health"
    method: str
    status: int  # 0: no reply at all (the connection was cut, or BOUND passed)
    began: float  # time.monotonic()
    ended: float
    body: bytes = b""
    #: The absolute URL of the reply's Location, if any.
    location: str = ""

    @property
    def seconds(self) -> float:
        return self.ended - self.began


@dataclass
class Tally:
    """Every answer the clients got, by the phase of the outage it was asked in."""

    phase: str = "up"
    answers: list[Answer] = field(default_factory=list)
    #: The requests whose 200 came with the wrong body.
    wrong: list[str] = field(default_factory=list)

    async def call(
        self, session: aiohttp.ClientSession, kind: str, method: str, url: str, **options: Any
    ) -> Answer:
        phase, began = self.phase, time.monotonic()
        try:
            async with session.request(method, url, allow_redirects=False, **options) as reply:
                status, body = reply.status, await reply.read()
                location = reply.headers.get("Location", "")
        except (aiohttp.ClientError, TimeoutError):
            status, body, location = 0, b"", ""
        if location:
            location = urljoin(url, location)
        answer = Answer(phase, kind, method, status, began, time.monotonic(), body, location)
        self.answers.append(answer)
        return answer

    def statuses(self, kind: str, phase: str | None = None) -> Counter[int]:
        return Counter(
            a.status for a in self.answers if a.kind == kind and phase in (None, a.phase)
        )


def session() -> aiohttp.ClientSession:
    """A client that opens a new connection per request, and gives up after ``BOUND``."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True),
        timeout=aiohttp.ClientTimeout(total=BOUND),
    )


@dataclass(frozen=True)
class Image:
    name: str
    tag: str
    config: bytes
    layer: bytes
    manifest: bytes


def seed(url: str, name: str, count: int) -> list[Image]:
    images = []
    for number in range(count):
        config, layers, manifest = push_image(url, name, f"seed-{number}")
        images.append(Image(name, f"seed-{number}", config, layers[0], manifest))
    return images


async def pull(tally: Tally, url: str, images: list[Image], stop: asyncio.Event) -> None:
    """HEAD and GET of a layer and GET of a manifest by tag, until ``stop``."""
    rng = random.Random(secrets.randbits(32))
    async with session() as client:
        while not stop.is_set():
            image = rng.choice(images)
            blob = f"{url}/v2/{image.name}/blobs/{digest_of(image.layer)}"
            await tally.call(client, "read", "HEAD", blob)
            got = await tally.call(client, "read", "GET", blob)
            if got.status == 200 and got.body != image.layer:
                tally.wrong.append(f"GET {blob}")
            manifest = f"{url}/v2/{image.name}/manifests/{image.tag}"
            got = await tally.call(
                client, "read", "GET", manifest, headers={"Accept": OCI_MANIFEST}
            )
            if got.status == 200 and got.body != image.manifest:
                tally.wrong.append(f"GET {manifest}")


@dataclass
class Pushed:
    """What the registry acknowledged, by repository and digest or tag."""

    blobs: dict[tuple[str, str], bytes] = field(default_factory=dict)
    tags: dict[tuple[str, str], bytes] = field(default_factory=dict)

    async def read_back(self, url: str) -> None:
        """Every blob and manifest answers with its bytes and digest, every tag is listed."""
        async with session() as client:
            for kind, stored in (("blobs", self.blobs), ("manifests", self.tags)):
                for (name, reference), data in stored.items():
                    target = f"{url}/v2/{name}/{kind}/{reference}"
                    async with client.get(target, headers={"Accept": OCI_MANIFEST}) as reply:
                        assert reply.status == 200, target
                        assert await reply.read() == data, target
                        assert reply.headers["Docker-Content-Digest"] == digest_of(data)
            for name in {name for name, _ in self.tags}:
                async with client.get(f"{url}/v2/{name}/tags/list") as reply:
                    listed = set((await reply.json())["tags"])
                assert {tag for n, tag in self.tags if n == name} <= listed, name


async def push_monolithic(
    tally: Tally, url: str, name: str, pushed: Pushed, stop: asyncio.Event
) -> None:
    """Config, layer (monolithic uploads) and a tagged manifest, again and again, until ``stop``."""
    async with session() as client:
        while not stop.is_set():
            config, layer = random_bytes(300), random_bytes(4096)
            acknowledged = True
            for blob in (config, layer):
                target = f"{url}/v2/{name}/blobs/uploads/?digest={digest_of(blob)}"
                answer = await tally.call(client, "push", "POST", target, data=blob)
                if answer.status == 201:
                    pushed.blobs[(name, digest_of(blob))] = blob
                acknowledged = acknowledged and answer.status == 201
            if not acknowledged:
                continue
            tag, manifest = secrets.token_hex(4), manifest_of(config, [layer])
            target = f"{url}/v2/{name}/manifests/{tag}"
            answer = await tally.call(
                client, "push", "PUT", target, data=manifest, headers=MANIFEST_TYPE
            )
            if answer.status == 201:
                pushed.tags[(name, tag)] = manifest


async def poll_health(tally: Tally, url: str, stop: asyncio.Event) -> None:
    async with session() as client:
        while not stop.is_set():
            await tally.call(client, "health", "GET", f"{url}/debug/health")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(*clients: Callable[[asyncio.Event], Awaitable[None]]) -> AsyncIterator[None]:
    """The clients, until the block ends; a client that raised fails the test."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(client(stop)) for client in clients]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def health_passed(tally: Tally) -> bool:
    """Whether a poll asked once the backend was back has passed."""
    return any(a.kind == "health" and a.phase == "back" and a.status == 200 for a in tally.answers)


def outage_reported(tally: Tally, check: str, killed: float, restarting: float) -> None:
    """``/debug/health`` named ``check`` from soon after the kill until the restart, then not.

    Only polls asked and answered while the backend was down count for the
    outage, and only those asked once it was back for the recovery. The former
    may pass only before the first that failed (the check had not run yet),
    the latter may fail only before the first that passed (nor had it then).
    """
    polls = [a for a in tally.answers if a.kind == "health"]
    down = [a for a in polls if a.began >= killed and a.ended <= restarting]
    back = [a for a in polls if a.phase == "back"]
    failing = [i for i, a in enumerate(down) if a.status == 503]
    assert failing, f"{check} was never reported during an outage of {restarting - killed:.1f} s"
    for answer in down[failing[0] :]:
        assert answer.status == 503, answer
        assert check in json.loads(answer.body), answer
    passing = [i for i, a in enumerate(back) if a.status == 200]
    assert passing, f"{check} was still reported after the outage"
    for answer in back[passing[0] :]:
        assert (answer.status, answer.body) == (200, b"{}"), [
            (round(a.began - restarting, 2), a.status, a.body[:200]) for a in back
        ]


# -- Redis --------------------------------------------------------------------------------


def debug_config(path: Path, redis_port: int, debug_port: int) -> Path:
    """``tests/cache``'s config (deletes enabled, the Redis cache) with a debug listener."""
    write_config(path, redis_port)
    document = yaml.safe_load(path.read_text())
    document["http"] = {"debug": {"addr": f"127.0.0.1:{debug_port}"}}
    path.write_text(yaml.safe_dump(document))
    return path


async def heads(url: str, target: str) -> Counter[int]:
    """``ASKS`` HEADs of ``target``, each on a new connection: what every worker answers."""
    async with session() as client:
        statuses = []
        for _ in range(ASKS):
            async with client.head(f"{url}{target}") as reply:
                statuses.append(reply.status)
    return Counter(statuses)


@dataclass
class Doomed:
    """Blobs and a manifest that the test deletes around the outage."""

    name: str
    after_snapshot: str  # a blob deleted while Redis is up, after its snapshot
    while_down: str  # a blob deleted while Redis is down
    manifest: str  # the digest of a manifest deleted while Redis is down
    after_restart: str  # a blob deleted once Redis is back

    def blob(self, digest: str) -> str:
        return f"/v2/{self.name}/blobs/{digest}"

    def image(self) -> str:
        return f"/v2/{self.name}/manifests/{self.manifest}"

    def gone_before_the_restart(self) -> list[str]:
        return [self.blob(self.after_snapshot), self.blob(self.while_down), self.image()]


def doom(url: str, redis: RedisServer) -> Doomed:
    """Push what will be deleted, and check that Redis holds its blobs' entries."""
    name = "restart/doomed"
    blobs = [push_blob(url, name, random_bytes()) for _ in range(3)]
    _, _, manifest = push_image(url, name, "doomed")
    raw = redis.client()
    try:
        members = f"repository::{name}::blobs"
        for digest in blobs:
            assert raw.sismember(members, digest), "a pushed blob was not cached"
    finally:
        raw.close()
    return Doomed(name, blobs[0], blobs[1], digest_of(manifest), blobs[2])


@pytest.mark.parametrize("comes_back", ["empty", "with-its-snapshot"])
async def test_redis_killed_under_load_fails_nothing_and_leaves_nothing_stale(
    tmp_path: Path, comes_back: str
) -> None:
    debug_port = free_port()
    debug = f"http://127.0.0.1:{debug_port}"
    with ExitStack() as stack:
        redis = stack.enter_context(running_redis(tmp_path / "redis"))
        config = debug_config(tmp_path / "config.yml", redis.port, debug_port)
        url = stack.enter_context(
            cargohold(tmp_path / "root", workers=2, config=config, log=tmp_path / "serve.log")
        )
        images = seed(url, "restart/pulled", 2)
        doomed = doom(url, redis)
        tally, pushed = Tally(), Pushed()

        async def delete(target: str) -> None:
            async with session() as client, client.delete(f"{url}{target}") as reply:
                assert reply.status == 202, await reply.text()

        clients = [
            *(lambda stop: pull(tally, url, images, stop) for _ in range(4)),
            *(lambda stop: push_monolithic(tally, url, "restart/pushed", pushed, stop),) * 2,
            lambda stop: poll_health(tally, debug, stop),
        ]
        async with running(*clients):
            await asyncio.sleep(PHASE)  # load before the kill
            if comes_back == "with-its-snapshot":
                raw = redis.client()
                await asyncio.to_thread(raw.save)  # dump.rdb, which the next server loads
                raw.close()
            await delete(doomed.blob(doomed.after_snapshot))

            redis.process.kill()
            await asyncio.to_thread(redis.process.wait)
            killed, tally.phase = time.monotonic(), "down"
            await delete(doomed.blob(doomed.while_down))
            await delete(doomed.image())
            await asyncio.sleep(PHASE)

            restarting, tally.phase = time.monotonic(), "restarting"
            again = await asyncio.to_thread(
                stack.enter_context, running_redis(redis.directory, redis.port)
            )
            tally.phase = "back"
            raw = again.client()
            loaded = raw.info("persistence")["rdb_last_load_keys_loaded"]
            raw.close()
            assert (loaded > 0) == (comes_back == "with-its-snapshot")
            # At once, before any periodic PING: whatever either worker answers.
            gone = doomed.gone_before_the_restart()
            assert {t: await heads(url, t) for t in gone} == {t: {404: ASKS} for t in gone}
            await delete(doomed.blob(doomed.after_restart))
            assert await heads(url, doomed.blob(doomed.after_restart)) == {404: ASKS}
            await asyncio.sleep(PHASE)
        await pushed.read_back(url)

    outage_reported(tally, "redis", killed, restarting)
    # Every read answered 200 with the right body, whatever the phase, and every push
    # went through: the cache is needed for neither.
    assert set(tally.statuses("read")) == {200}, tally.statuses("read")
    assert set(tally.statuses("push")) == {201}, tally.statuses("push")
    assert tally.wrong == []
    for phase in ("up", "down", "back"):
        assert tally.statuses("read", phase).total() >= 30, phase
        assert tally.statuses("push", phase).total() >= 10, phase
    assert max(a.seconds for a in tally.answers) < BOUND / 2


# -- the object store ---------------------------------------------------------------------


@pytest.fixture
def object_store(tmp_path: Path) -> Iterator[ObjectStore]:
    """A SeaweedFS of this test's own, which it may kill and start again."""
    store = ObjectStore(tmp_path / "seaweedfs")
    store.start()
    try:
        yield store
    finally:
        store.stop()


def s3_config(path: Path, store: ObjectStore, debug_port: int) -> Path:
    """A registry on ``store`` (no redirects: every byte comes through it), and its health check."""
    parameters = store.server.parameters(rootdirectory=f"/t-{secrets.token_hex(6)}")
    document = registry_config(parameters, redirect=False)
    document["http"] = {"debug": {"addr": f"127.0.0.1:{debug_port}"}}
    # Each run of the check is bounded by its interval: twice in a row, so that one slow
    # listing on a loaded machine is not an outage.
    document["health"] = {"storagedriver": {"enabled": True, "interval": "300ms", "threshold": 2}}
    path.write_text(yaml.safe_dump(document))
    return path


class Pusher:
    """Pushes to ``url`` that start a step again after a ``503`` (or a cut connection).

    A step that fails is begun anew (a layer from its POST), until ``deadline``.
    """

    def __init__(
        self, tally: Tally, client: aiohttp.ClientSession, url: str, pushed: Pushed
    ) -> None:
        self._tally, self._client, self._url, self._pushed = tally, client, url, pushed

    async def image(self, name: str, deadline: float) -> None:
        """A layer in 256 KiB PATCHes, a config (monolithic) and a tagged manifest."""
        config, layer = random_bytes(300), random_bytes(MiB)
        tag, manifest = secrets.token_hex(4), manifest_of(config, [layer])
        for step in (
            functools.partial(self.chunked, name, layer),
            functools.partial(self.monolithic, name, config),
            functools.partial(self.manifest, name, tag, manifest),
        ):
            while not await step():
                assert time.monotonic() < deadline, "a push never went through"
                await asyncio.sleep(0.1)

    async def chunked(self, name: str, data: bytes) -> bool:
        started = await self._call("POST", f"{self._url}/v2/{name}/blobs/uploads/")
        if started.status != 202:
            return False
        location = started.location
        for offset in range(0, len(data), 256 * 1024):
            piece = data[offset : offset + 256 * 1024]
            content_range = {"Content-Range": f"{offset}-{offset + len(piece) - 1}"}
            patched = await self._call("PATCH", location, data=piece, headers=content_range)
            if patched.status != 202:
                return False
            location = patched.location
        closed = await self._call("PUT", with_query(location, f"digest={digest_of(data)}"))
        return self._acknowledged(closed, name, data)

    async def monolithic(self, name: str, data: bytes) -> bool:
        target = f"{self._url}/v2/{name}/blobs/uploads/?digest={digest_of(data)}"
        return self._acknowledged(await self._call("POST", target, data=data), name, data)

    async def manifest(self, name: str, tag: str, payload: bytes) -> bool:
        target = f"{self._url}/v2/{name}/manifests/{tag}"
        answer = await self._call("PUT", target, data=payload, headers=MANIFEST_TYPE)
        if answer.status == 201:
            self._pushed.tags[(name, tag)] = payload
        return answer.status == 201

    async def _call(self, method: str, url: str, **options: Any) -> Answer:
        return await self._tally.call(self._client, "push", method, url, **options)

    def _acknowledged(self, answer: Answer, name: str, data: bytes) -> bool:
        if answer.status == 201:
            self._pushed.blobs[(name, digest_of(data))] = data
        return answer.status == 201


async def push_images(
    tally: Tally, url: str, name: str, images: int, pushed: Pushed, deadline: float
) -> None:
    async with session() as client:
        pusher = Pusher(tally, client, url, pushed)
        for _ in range(images):
            await pusher.image(name, deadline)


async def test_an_object_store_killed_mid_push_loses_nothing_acknowledged(
    tmp_path: Path, object_store: ObjectStore
) -> None:
    debug_port = free_port()
    config = s3_config(tmp_path / "config.yml", object_store, debug_port)
    # One S3 attempt per request, so a dead store fails a request at once.
    with serving(config, 1, tmp_path, env={"AWS_MAX_ATTEMPTS": "1"}) as (url,):
        tally, pushed = Tally(), Pushed()
        deadline = time.monotonic() + 45
        names = [f"outage/app-{number}" for number in range(4)]
        pushers = [
            asyncio.create_task(push_images(tally, url, name, 3, pushed, deadline))
            for name in names
        ]
        async with running(lambda stop: poll_health(tally, f"http://127.0.0.1:{debug_port}", stop)):
            await until(lambda: len(pushed.tags) >= 2, what="no image was pushed")
            assert not all(pusher.done() for pusher in pushers)
            object_store.kill()
            killed, tally.phase = time.monotonic(), "down"
            await until(
                lambda: tally.statuses("push", "down")[503] >= 4 and time.monotonic() > killed + 1,
                what="no push met the dead store",
            )
            await until(lambda: tally.statuses("health", "down")[503] > 0, what="never reported")
            restarting, tally.phase = time.monotonic(), "restarting"
            await asyncio.to_thread(object_store.start)
            tally.phase = "back"
            await asyncio.gather(*pushers)
            # The pushes left after the restart may end before the check has run twice.
            await until(lambda: health_passed(tally), what="the check never passed again")
        outage_reported(tally, "storagedriver_s3aws", killed, restarting)

        # What the store did while down: 503 UNAVAILABLE, never a 500, never a hang.
        statuses = tally.statuses("push")
        assert set(statuses) <= {201, 202, 503}, statuses
        for answer in tally.answers:
            if answer.kind == "push" and answer.status == 503:
                assert json.loads(answer.body)["errors"][0]["code"] == "UNAVAILABLE", answer
        assert max(a.seconds for a in tally.answers) < BOUND / 2

        # Everything acknowledged is there, byte for byte, and so is every tag.
        assert len(pushed.tags) == len(names) * 3
        await pushed.read_back(url)
