"""Request ids and the access log, on both paths.

Every request has an id: the client's ``X-Request-Id`` when it is well-formed
(visible ASCII, no spaces, at most 128 characters), else a new one. Every
reply echoes it, and every log line about the request carries it as
``http.request.id``. The access log line holds the request's facts as fields
under Distribution's names, one JSON key each with ``formatter: json``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator

import pytest
from tests.api.conftest import MakeRegistry, random_blob
from tests.support.http_raw import read_replies, request_bytes

from cargohold.errors import StorageUnavailable
from cargohold.log import JSONFormatter
from cargohold.storage.driver.inmemory import InMemoryDriver
from cargohold.storage.registry import StorageRegistry

GENERATED = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Lines(logging.Handler):
    """Keeps each record as the JSON formatter writes it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JSONFormatter({}))
        self.entries: list[dict[str, object]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entries.append(json.loads(self.format(record)))

    def access(self) -> list[dict[str, object]]:
        return [e for e in self.entries if "http.response.status" in e]


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def send(registry_port: tuple[str, int], *requests: bytes) -> list[dict[bytes, bytes]]:
    reader, writer = await asyncio.open_connection(*registry_port)
    try:
        writer.write(b"".join(requests))
        replies = await read_replies(reader, list(requests))
    finally:
        writer.close()
    return [reply.headers for reply in replies]


async def test_each_request_gets_a_new_id_echoed_and_logged(
    make_registry: MakeRegistry, lines: Lines, serving: str
) -> None:
    registry = await make_registry()
    blob = await registry.push_blob("team/app", random_blob(300))
    lines.entries.clear()
    target = f"/v2/team/app/blobs/{blob.digest}"
    address = (registry.client.host, registry.client.port)
    first, second = await send(address, *[request_bytes("HEAD", target)] * 2)

    ids = [first[b"x-request-id"].decode(), second[b"x-request-id"].decode()]
    assert all(GENERATED.fullmatch(i) for i in ids), ids
    assert ids[0] != ids[1]
    logged = lines.access()
    assert [entry["http.request.id"] for entry in logged] == ids
    entry = logged[0]
    assert entry["http.request.method"] == "HEAD"
    assert entry["http.request.uri"] == target
    assert entry["http.request.host"] == "registry.test"
    assert entry["http.request.useragent"] == "test/1.0"
    assert entry["http.request.remoteaddr"] == "127.0.0.1"
    assert (entry["http.response.status"], entry["http.response.written"]) == (200, 0)
    assert entry["http.request.received"] == 0
    assert entry["vars.name"] == "team/app"
    assert isinstance(entry["http.response.duration"], float)
    assert entry["msg"].startswith("127.0.0.1 [")  # type: ignore[union-attr]
    assert f'"HEAD {target} HTTP/1.1" 200 0 "-" "test/1.0"' in entry["msg"]  # type: ignore[operator]


async def test_bytes_in_and_out_are_logged(make_registry: MakeRegistry, lines: Lines) -> None:
    registry = await make_registry()
    blob = random_blob(5000)
    lines.entries.clear()
    pushed = await registry.push_blob("app", blob)
    status, body = await registry.request_anew("GET", f"/v2/app/blobs/{pushed.digest}")
    assert (status, body) == (200, blob.data)
    push, get = lines.access()[-2:]  # a monolithic POST ?digest=
    assert push["http.request.method"] == "POST"
    assert (push["http.response.status"], push["http.request.received"]) == (201, 5000)
    assert (get["http.response.status"], get["http.response.written"]) == (200, 5000)


@pytest.mark.parametrize(
    "given",
    ["build-42/step:7", "0123456789abcdef" * 8, "a=b;c,d@e!~"],
)
async def test_a_well_formed_request_id_is_kept(
    make_registry: MakeRegistry, lines: Lines, given: str
) -> None:
    registry = await make_registry()
    lines.entries.clear()
    address = (registry.client.host, registry.client.port)
    (headers,) = await send(address, request_bytes("GET", "/v2/", f"X-Request-Id: {given}"))
    assert headers[b"x-request-id"] == given.encode()
    assert [entry["http.request.id"] for entry in lines.access()] == [given]


@pytest.mark.parametrize(
    "given",
    [
        "x" * 129,  # too long
        "has space",
        "tab\there",
        "caf\u00e9",  # not ASCII
    ],
)
async def test_a_malformed_request_id_is_replaced(
    make_registry: MakeRegistry, lines: Lines, given: str
) -> None:
    registry = await make_registry()
    lines.entries.clear()
    address = (registry.client.host, registry.client.port)
    line = f"X-Request-Id: {given}".encode()
    raw = request_bytes("GET", "/v2/").replace(b"\r\n\r\n", b"\r\n" + line + b"\r\n\r\n")
    (headers,) = await send(address, raw)
    echoed = headers[b"x-request-id"].decode()
    assert GENERATED.fullmatch(echoed), echoed
    assert [entry["http.request.id"] for entry in lines.access()] == [echoed]


class FailingManifests(InMemoryDriver):
    """Storage whose tags of repository ``down`` cannot be read."""

    async def _get_content(self, path: str) -> bytes:
        if "/repositories/down/" in path:
            raise StorageUnavailable(path, self.name, "the disk is gone")
        return await super()._get_content(path)


async def test_every_line_about_a_request_carries_its_id(
    make_registry: MakeRegistry, lines: Lines
) -> None:
    registry = await make_registry(registry=StorageRegistry(FailingManifests()))
    lines.entries.clear()
    response = await registry.request(
        "GET", "/v2/down/manifests/latest", headers={"X-Request-Id": "trace-me"}
    )
    assert response.status == 503
    assert response.headers["X-Request-Id"] == "trace-me"
    warning, access = [e for e in lines.entries if e.get("http.request.id") == "trace-me"]
    assert warning["level"] == "warning"
    assert "storage unavailable" in warning["msg"]  # type: ignore[operator]
    assert access["http.response.status"] == 503
    unrelated = [e for e in lines.entries if e not in (warning, access)]
    assert all(e.get("http.request.id") != "trace-me" for e in unrelated)
