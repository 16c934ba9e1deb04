"""A mirror and its upstream, each a real server: cargohold upstream, a counting relay, the mirror.

``upstream`` is a cargohold registry in memory, served in process; ``relay``
stands between it and the mirror, counting requests and misbehaving when a
test says so (``relay.py``); ``make_mirror`` builds a cargohold mirror of the
relay on the filesystem, with the test's settings. Every test runs with the
request fast path on and off (``serving``).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cargohold.api.app import API_KEY, create_app
from cargohold.config import parse_config
from tests.api.conftest import Registry, _merge, servers, serving
from tests.api.test_metrics import scraper
from tests.proxy.relay import Relay
from tests.support.inprocess import Servers

__all__ = ["scraper", "servers", "serving"]


@dataclass
class Mirror(Registry):
    """A mirror under test, and where its storage is."""

    async def pull_blob(self, name: str, digest: str) -> bytes:
        response = await self.request("GET", f"/v2/{name}/blobs/{digest}")
        body = await response.read()
        assert response.status == 200, body[:300]
        assert hashlib.sha256(body).hexdigest() == digest.split(":", 1)[1]
        return body

    def blob_files(self) -> set[str]:
        """The digests whose content the mirror's storage holds."""
        assert self.root is not None
        blobs = self.root / "docker/registry/v2/blobs"
        while True:
            try:  # expiry may remove a folder while it is walked: walk again
                return {f"sha256:{data.parent.name}" for data in blobs.rglob("data")}
            except FileNotFoundError:
                continue


@pytest.fixture
async def upstream(servers: Servers, tmp_path: Path) -> Registry:
    """A cargohold registry in memory, deletes on: the upstream every mirror reaches."""
    text = yaml.safe_dump(
        {
            "version": "0.1",
            "storage": {"inmemory": {}, "delete": {"enabled": True}},
            "http": {"addr": "127.0.0.1:0"},
        }
    )
    client = await servers.serve(create_app(parse_config(text, environ={})))
    return Registry(client, "inmemory", None)


@pytest.fixture
async def relay(upstream: Registry) -> AsyncIterator[Relay]:
    relay = Relay(f"http://{upstream.client.host}:{upstream.client.port}")
    await relay.start()
    yield relay
    await relay.stop()


MakeMirror = Callable[..., Awaitable[Mirror]]


def mirror_config(root: Path, proxy: dict[str, Any], settings: dict[str, Any] | None = None) -> str:
    data: dict[str, Any] = {
        "version": "0.1",
        "storage": {"filesystem": {"rootdirectory": str(root)}},
        "http": {"addr": "127.0.0.1:0"},
        "proxy": proxy,
    }
    _merge(data, settings or {})
    return yaml.safe_dump(data)


@pytest.fixture
def make_mirror(servers: Servers, relay: Relay, tmp_path: Path) -> MakeMirror:
    """A mirror of the relay under ``prefix`` (a pure proxy, as Distribution, when None)."""

    async def make(
        prefix: str | None = "docker.io/",
        *,
        root: Path | None = None,
        settings: dict[str, Any] | None = None,
        **upstream: Any,
    ) -> Mirror:
        url = relay.url
        if prefix is None:
            proxy: dict[str, Any] = {"remoteurl": url, **upstream}
        else:
            proxy = {"upstreams": [{"prefix": prefix, "remoteurl": url, **upstream}]}
        root = root or tmp_path / "mirror"
        config = parse_config(mirror_config(root, proxy, settings), environ={})
        app = create_app(config)
        client = await servers.serve(app)
        return Mirror(client, "filesystem", root, prefix=app[API_KEY].prefix)

    return make
