"""Fixtures of the HTTP API tests: a registry app and client on each storage, and push helpers.

Every test that takes ``registry`` runs four times: on the in-memory and on
the filesystem storage, each with the request fast path on and off (``path``:
the application is served in process by the listener ``cargohold serve``
runs, ``tests/support/inprocess.py``). ``make_registry`` builds one with
other settings (``delete``, read-only mode, ``http.prefix``, ...). Content is
random bytes, manifests are built from it here: no network, no fixtures on
disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import ClientResponse, web
from multidict import CIMultiDict, CIMultiDictProxy
from tests.support.inprocess import PATHS, Client, Servers
from yarl import URL

from cargohold.api.app import API_KEY, create_app
from cargohold.api.pipeline import RequestHook
from cargohold.config import parse_config
from cargohold.manifest import (
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from cargohold.registry import Namespace
from cargohold.storage.driver.inmemory import InMemoryDriver

STORAGES = ("inmemory", "filesystem")
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")
#: Headers configured under ``http.headers`` in every test registry; each reply must carry them.
EXTRA_HEADERS = {"X-Content-Type-Options": ["nosniff"], "X-Test-Multi": ["one", "two"]}

# -- content ----------------------------------------------------------------------------


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


@dataclass(frozen=True)
class Blob:
    data: bytes
    media_type: str = OCI_LAYER_GZIP
    algorithm: str = "sha256"

    @property
    def digest(self) -> str:
        return digest_of(self.data, self.algorithm)

    @property
    def size(self) -> int:
        return len(self.data)

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size, **extra}


def random_blob(size: int = 1024, media_type: str = OCI_LAYER_GZIP) -> Blob:
    return Blob(os.urandom(size), media_type)


def random_config() -> Blob:
    # Random content so that two images never share a config by accident.
    body = {"architecture": "amd64", "os": "linux", "nonce": os.urandom(8).hex()}
    return Blob(json.dumps(body).encode(), OCI_CONFIG)


def encode(body: object) -> bytes:
    # Indented, with a trailing newline: bytes a registry would change if it re-serialised.
    return json.dumps(body, indent=3).encode() + b"\n"


def image_manifest(config: Blob, layers: Iterable[Blob], **fields: Any) -> bytes:
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    body.update(fields)
    return encode(body)


def image_index(children: Iterable[tuple[str, int]], **fields: Any) -> bytes:
    """An OCI index of manifests given as ``(digest, size)``."""
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": size,
                "platform": {"architecture": f"arch{i}", "os": "linux"},
            }
            for i, (digest, size) in enumerate(children)
        ],
    }
    body.update(fields)
    return encode(body)


EMPTY_CONFIG = Blob(b"{}", OCI_EMPTY)


@dataclass(frozen=True)
class Image:
    """A manifest as pushed, and the blobs it references."""

    payload: bytes
    media_type: str
    config: Blob | None = None
    layers: tuple[Blob, ...] = ()

    @property
    def digest(self) -> str:
        return digest_of(self.payload)

    @property
    def size(self) -> int:
        return len(self.payload)


# -- replies ----------------------------------------------------------------------------


async def assert_error(
    response: ClientResponse, status: int, code: str, *, head: bool = False
) -> dict[str, Any]:
    """``response`` is the specification's error reply: returns its one error entry.

    The body is ``{"errors": [{"code", "message", "detail"?}]}``, served as JSON with a
    Content-Length that matches it, and the reply carries the API version header.
    """
    body = await response.read()
    assert response.status == status, body[:500]
    assert response.headers[API_VERSION[0]] == API_VERSION[1]
    assert response.headers["Content-Type"] == "application/json"
    if head:
        assert body == b""
        return {}
    assert int(response.headers["Content-Length"]) == len(body)
    document = json.loads(body)
    assert set(document) == {"errors"}
    (error,) = document["errors"]
    assert error["code"] == code, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert set(error) <= {"code", "message", "detail"}
    return dict(error)


def assert_common_headers(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> None:
    """Every reply says which API it speaks and carries the configured ``http.headers``."""
    assert headers.getall(API_VERSION[0]) == [API_VERSION[1]]
    assert headers["X-Content-Type-Options"] == "nosniff"
    # A header configured with several values arrives with all of them, in order.
    assert [v.strip() for v in ",".join(headers.getall("X-Test-Multi")).split(",")] == [
        "one",
        "two",
    ]


def chunked_body(data: bytes) -> AsyncIterator[bytes]:
    return chunked(data, 256 * 1024)


async def chunked(data: bytes, size: int = 7000) -> AsyncIterator[bytes]:
    """An async generator: aiohttp sends it with ``Transfer-Encoding: chunked``."""
    for start in range(0, len(data), size):
        yield data[start : start + size]
        await asyncio.sleep(0)


# -- the registry under test --------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    headers: CIMultiDict[str]
    body: bytes


@dataclass
class Registry:
    """A running registry app and a client for it, with the steps of a push as helpers."""

    client: Client
    storage: str
    root: Path | None
    prefix: str = ""
    pushed: list[str] = field(default_factory=list)

    @property
    def app(self) -> web.Application:
        return self.client.app

    @property
    def namespace(self) -> Namespace:
        return self.app[API_KEY].registry

    def url(self, path: str) -> str:
        """``path`` under the configured prefix."""
        return self.prefix + path

    def local(self, location: str) -> str:
        """The path and query of an absolute ``Location`` that points back at this server."""
        url = URL(location)
        assert url.absolute, location
        assert url.scheme == "http"
        assert (url.host, url.port) == (self.client.host, self.client.port), location
        return url.raw_path_qs

    async def request(self, method: str, path: str, **kwargs: Any) -> ClientResponse:
        # encoded=True: the path goes out as written (%2f stays %2f).
        return await self.client.request(method, URL(path, encoded=True), **kwargs)

    async def request_anew(self, method: str, path: str, **kwargs: Any) -> tuple[int, bytes]:
        """A request on a connection of its own: status and body.

        A connection that met a request the fast path does not answer (an upload,
        say) stays with aiohttp; a new one starts on the fast path again.
        """
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.client.make_url(path), **kwargs) as response,
        ):
            return response.status, await response.read()

    async def raw(self, method: str, target: str, body: bytes = b"") -> RawResponse:
        """A request written byte for byte: aiohttp's client would normalise ``..`` away."""
        reader, writer = await asyncio.open_connection(self.client.host, self.client.port)
        try:
            head = (
                f"{method} {target} HTTP/1.1\r\nHost: test\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
        head_bytes, _, body = data.partition(b"\r\n\r\n")
        status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
        parsed: CIMultiDict[str] = CIMultiDict()
        for line in lines:
            name, _, value = line.partition(":")
            parsed.add(name.strip(), value.strip())
        return RawResponse(int(status_line.split()[1]), parsed, body)

    # -- pushing ------------------------------------------------------------------------

    async def push_blob(
        self, name: str, blob: Blob | None = None, *, chunked: bool = False
    ) -> Blob:
        """A monolithic upload (POST with ?digest=), the shortest way to a blob.

        ``chunked`` sends the body in pieces, as a large blob should be sent.
        """
        blob = blob if blob is not None else random_blob()
        response = await self.request(
            "POST",
            self.url(f"/v2/{name}/blobs/uploads/"),
            params={"digest": blob.digest},
            data=chunked_body(blob.data) if chunked else blob.data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert response.status == 201, await response.text()
        return blob

    async def start_upload(self, name: str, **params: str) -> str:
        """POST an upload; returns the path of its ``Location``."""
        response = await self.request(
            "POST", self.url(f"/v2/{name}/blobs/uploads/"), params=params or None
        )
        assert response.status == 202, await response.text()
        return self.local(response.headers["Location"])

    async def put_manifest(
        self, name: str, reference: str, payload: bytes, media_type: str = OCI_MANIFEST
    ) -> ClientResponse:
        response = await self.request(
            "PUT",
            self.url(f"/v2/{name}/manifests/{reference}"),
            data=payload,
            headers={"Content-Type": media_type},
        )
        assert response.status == 201, await response.text()
        return response

    async def push_image(
        self, name: str, tag: str | None = None, *, layers: int = 2, **fields: Any
    ) -> Image:
        """Push a config, ``layers`` random layers and an OCI manifest naming them."""
        config = await self.push_blob(name, random_config())
        pushed = [await self.push_blob(name, random_blob(512 + i)) for i in range(layers)]
        payload = image_manifest(config, pushed, **fields)
        image = Image(payload, OCI_MANIFEST, config, tuple(pushed))
        await self.put_manifest(name, tag or image.digest, payload)
        return image

    async def push_index(self, name: str, children: list[Image], tag: str | None = None) -> Image:
        payload = image_index((child.digest, child.size) for child in children)
        image = Image(payload, OCI_INDEX)
        await self.put_manifest(name, tag or image.digest, payload, OCI_INDEX)
        return image

    async def tags(self, name: str) -> list[str]:
        response = await self.request("GET", self.url(f"/v2/{name}/tags/list"))
        assert response.status == 200, await response.text()
        tags: list[str] = (await response.json())["tags"]
        return tags

    # -- what is stored -------------------------------------------------------------------

    async def snapshot(self) -> dict[str, bytes | None]:
        """Every file and folder the storage holds, with each file's content.

        On the filesystem this is everything under the root directory, hidden
        partial and temporary files included; in memory, every node of the tree
        and every writer's pending buffer. The registry's word that it is alive
        (``cargohold/live``, rewritten every few seconds) is not content, nor is
        the intent log (``cargohold/.~intents``, which holds writes until they
        are durable where they are).
        """
        if self.root is not None:
            found: dict[str, bytes | None] = {}
            skipped = {str(self.root / "cargohold" / name) for name in ("live", ".~intents")}
            for folder, dirs, files in os.walk(self.root):
                dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skipped]
                for name in dirs:
                    found[os.path.join(folder, name)] = None
                for name in files:
                    found[os.path.join(folder, name)] = Path(folder, name).read_bytes()
            return found
        driver = self.namespace.driver  # type: ignore[attr-defined]
        assert isinstance(driver, InMemoryDriver)
        found = {}
        async for info in driver.walk("/"):
            if info.path == "/cargohold/live" or info.path.startswith("/cargohold/live/"):
                continue
            found[info.path] = None if info.is_dir else await driver.get_content(info.path)
        # Uncommitted upload content lives beside the tree: nothing may hide there either.
        for path, buffer in driver._pending.items():
            found[f"pending:{path}"] = bytes(buffer)
        return found


def config_text(storage: str, root: Path, settings: dict[str, Any] | None = None) -> str:
    """A ``config.yml`` for ``storage``; ``settings`` are merged into it, section by section."""
    driver: dict[str, Any] = (
        {"filesystem": {"rootdirectory": str(root)}}
        if storage == "filesystem"
        else {"inmemory": {}}
    )
    data: dict[str, Any] = {
        "version": "0.1",
        "storage": {**driver, "delete": {"enabled": True}},
        "http": {"addr": "127.0.0.1:5000", "headers": EXTRA_HEADERS},
    }
    _merge(data, settings or {})
    return yaml.safe_dump(data)


def _merge(into: dict[str, Any], more: dict[str, Any]) -> None:
    for key, value in more.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


MakeRegistry = Callable[..., Awaitable[Registry]]


@pytest.fixture(params=STORAGES)
def storage(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=PATHS, ids=[f"{path}-path" for path in PATHS])
def serving(request: pytest.FixtureRequest) -> str:
    """How connections are served: fast path first (``fast``), or aiohttp alone (``full``)."""
    return str(request.param)


@pytest.fixture
async def servers(serving: str) -> AsyncIterator[Servers]:
    """Serves the test's applications in process, and stops them when it ends."""
    running = Servers(serving)
    yield running
    await running.close()


@pytest.fixture
def make_registry(servers: Servers, storage: str, tmp_path: Path) -> MakeRegistry:
    """Build a registry on this test's storage with extra ``settings``.

    Two registries built by one test share their storage: the filesystem root,
    or (in memory) the namespace passed as ``registry``.
    """

    async def make(
        settings: dict[str, Any] | None = None,
        registry: Namespace | None = None,
        hooks: Sequence[RequestHook] = (),
        **listener: Any,
    ) -> Registry:
        root = tmp_path / "root"
        config = parse_config(config_text(storage, root, settings), environ={})
        app = create_app(config, registry, hooks=hooks)
        client = await servers.serve(app, **listener)
        return Registry(
            client,
            storage,
            root if storage == "filesystem" else None,
            prefix=app[API_KEY].prefix,
        )

    return make


@pytest.fixture
async def registry(make_registry: MakeRegistry) -> Registry:
    """A registry with deletes enabled, on each storage in turn."""
    return await make_registry()
