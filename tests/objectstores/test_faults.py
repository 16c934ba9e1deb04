"""When Azurite or the GCS emulator stops mid-push: 503 UNAVAILABLE, nothing half-written.

Each test stops an emulator of this package's own (``stoppable``), keeping its
data on disk, at one step of a chunked push's closing PUT, and starts it again
on the same port and data: Azurite with SIGTERM, which saves its metadata (a
SIGKILL would lose its last seconds of writes), the GCS emulator with SIGKILL.
The registry runs in process, so a test can stop the store at an exact step.
S3's counterpart, on SeaweedFS, is ``tests/s3/test_faults.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from azure.storage.blob.aio import ExponentialRetry

from cargohold.api.app import API_KEY
from cargohold.digest import Digest
from cargohold.storage.driver import azure, gcs
from cargohold.storage.driver.base import ImmediateFiles, StorageDriver, Watches
from cargohold.storage.paths import BlobData, path_for
from tests.objectstores.conftest import Stoppable
from tests.s3.conftest import AiohttpClient, MiB, app_client, error_codes, registry_config, sha256
from tests.s3.test_faults import NAME, is_layer_link, no_tracebacks, push_chunked

Client = TestClient[web.Request, web.Application]

#: Where the store stops while the registry finishes the upload: the driver call it was
#: about to make (its name, and a test of its path), or None: while the body streams in.
STOP_POINTS: dict[str, tuple[str, Callable[[str], bool]] | None] = {
    "while-the-body-streams": None,
    # Moving the verified content from the upload to its place under blobs/.
    "move-into-blobs": ("Move", lambda path: "/_uploads/" in path and "/commit-" in path),
    # Writing the repository's link, the last step: the content is in place by then.
    "write-link": ("PutContent", is_layer_link),
}


class StopAt:
    """A driver watch that stops the store just before the first matching driver call."""

    def __init__(self, store: Stoppable, action: str, matches: Callable[[str], bool]) -> None:
        self._store = store
        self._action = action
        self._matches = matches
        self.stopped_before: list[str] = []

    def action(self, driver: str, action: str, path: str) -> AbstractContextManager[object]:
        if not self.stopped_before and action == self._action and self._matches(path):
            self.stopped_before.append(path)
            self._store.stop()  # nothing is in flight: the driver has not sent this call yet
        return nullcontext()

    def immediate(self, files: ImmediateFiles, driver: str) -> ImmediateFiles:
        return files


@contextmanager
def watched(driver: StorageDriver, watch: StopAt) -> Iterator[None]:
    before = driver.watch
    driver.watch = watch if before is None else Watches(before, watch)
    try:
        yield
    finally:
        driver.watch = before


async def stopping_midway(
    store: Stoppable, body: bytes, stopped: list[str]
) -> AsyncIterator[bytes]:
    """``body`` in 1 MiB pieces; the store stops before the last, which is short."""
    last = len(body) - len(body) % MiB or len(body) - MiB
    for offset in range(0, last, MiB):
        yield body[offset : offset + MiB]
    # Noted first: once the registry has answered, the client sends no more of the body.
    stopped.append(f"after {last} bytes")
    # In a thread: the registry, on this event loop, may be halfway through a request
    # to the store, which a graceful stop lets it finish.
    await asyncio.to_thread(store.stop)
    yield body[last:]


@pytest.fixture
def root() -> str:
    return f"t-{secrets.token_hex(6)}"


@pytest.fixture
async def registry(
    aiohttp_client: AiohttpClient,
    stoppable: Stoppable,
    root: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Client:
    """A registry on the stoppable store, serving blobs itself, under a root of its own.

    Each request to the store is tried once, so a stopped store fails a request at
    once instead of after seconds of backoff. GCS sessions take 1 MiB chunks, so the
    body of a request goes to the store while it streams in (Azure stages 8 MiB blocks).
    """
    store = stoppable.server
    for variable, value in store.env.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setattr(gcs, "ATTEMPTS", 1)

    def once(**options: Any) -> ExponentialRetry:
        return ExponentialRetry(**{**options, "retry_total": 0})

    monkeypatch.setattr(azure, "ExponentialRetry", once)
    extra = {"chunksize": MiB} if store.driver == "gcs" else {}
    parameters = store.parameters(rootdirectory=f"/{root}", **extra)
    document = registry_config(parameters, driver=store.driver, redirect=False)
    return await app_client(aiohttp_client, document)


def driver_of(client: Client) -> StorageDriver:
    driver: StorageDriver = client.app[API_KEY].registry.driver  # type: ignore[attr-defined]
    return driver


async def assert_unknown(registry: Client, digest: str) -> None:
    assert (await registry.head(f"/v2/{NAME}/blobs/{digest}")).status == 404
    reply = await registry.get(f"/v2/{NAME}/blobs/{digest}")
    assert reply.status == 404
    assert error_codes(await reply.read()) == ["BLOB_UNKNOWN"]


@pytest.mark.parametrize("stop_point", STOP_POINTS)
async def test_a_store_stopped_during_a_chunked_push_leaves_no_blob_behind(
    registry: Client,
    stoppable: Stoppable,
    root: str,
    caplog: pytest.LogCaptureFixture,
    stop_point: str,
) -> None:
    caplog.set_level(logging.WARNING)
    data = os.urandom(12 * MiB + 1234)
    digest = sha256(data)
    closing = await push_chunked(registry, data, 3 * MiB)  # one PATCH; the PUT brings the rest

    stopped: list[str] = []
    point = STOP_POINTS[stop_point]
    if point is None:
        reply = await registry.put(
            closing, data=stopping_midway(stoppable, data[3 * MiB :], stopped)
        )
    else:
        watch = StopAt(stoppable, *point)
        stopped = watch.stopped_before
        with watched(driver_of(registry), watch):
            reply = await registry.put(closing, data=io.BytesIO(data[3 * MiB :]))
    assert stopped, f"the closing PUT never reached {stop_point}"
    assert reply.status == 503, await reply.text()
    assert error_codes(await reply.read()) == ["UNAVAILABLE"]
    no_tracebacks(caplog)

    # Back on the same data: no blob, no link; content only where the link was next, whole.
    stoppable.start()
    await assert_unknown(registry, digest)
    store = stoppable.server
    assert store.names(f"{root}/docker/registry/v2/repositories/{NAME}/_layers/") == []
    stored = store.content(root + path_for(BlobData(Digest.parse(digest))))
    assert (stored is not None) == (stop_point == "write-link"), "moved into blobs/ before"
    if stored is not None:
        assert "sha256:" + hashlib.sha256(stored).hexdigest() == digest

    # The same registry serves again: the same content pushed again the same way is whole.
    closing = await push_chunked(registry, data, 3 * MiB)
    reply = await registry.put(closing, data=io.BytesIO(data[3 * MiB :]))
    assert reply.status == 201, await reply.text()
    reply = await registry.get(f"/v2/{NAME}/blobs/{digest}")
    assert reply.status == 200
    assert await reply.read() == data
