"""Fixtures of the access-control tests: keys made per session, registries made per test.

``keys`` is one certificate authority for the whole session, with what a test
needs around it on disk: the ``rootcertbundle``, a token-signing certificate
and key, a TLS certificate for 127.0.0.1, and a second, untrusted authority.
``make_registry`` builds a registry app (in process, filesystem storage) with
the settings a test gives; ``snapshot`` lists everything its storage holds,
so a test can show that a refused request wrote nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from yarl import URL

from cargohold.api.app import create_app
from cargohold.config import parse_config
from tests.auth.pki import Authority, Issued, claims, mint, repository
from tests.support.servers import cargohold_argv, free_port, running, stop

SERVICE = "cargohold.test"
ISSUER = "cargohold-test-issuer"
REALM = "https://auth.example.test/token"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


# -- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    folder: Path
    ca: Authority
    bundle: Path
    signer: Issued
    signer_cert: Path
    signer_key: Path
    tls_cert: Path
    tls_key: Path
    #: A signer whose authority no test registry trusts.
    stranger: Issued

    def token(
        self,
        access: list[dict[str, Any]] | None = None,
        *,
        signer: Issued | None = None,
        **fields: Any,
    ) -> str:
        """A good token for :data:`SERVICE` from :data:`ISSUER` (``fields`` change the claims)."""
        signer = signer or self.signer
        body = claims(**{"issuer": ISSUER, "service": SERVICE, "access": access, **fields})
        return mint(signer.key, body, x5c=signer.x5c)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    ca = Authority()
    bundle = ca.write(folder / "ca.crt")
    signer = ca.issue("token signer")
    signer_cert, signer_key = signer.write(folder, "signer")
    tls_cert, tls_key = ca.issue("127.0.0.1", ip="127.0.0.1").write(folder, "tls")
    stranger = Authority("somebody else's CA").issue("token signer")
    return Keys(folder, ca, bundle, signer, signer_cert, signer_key, tls_cert, tls_key, stranger)


def write_htpasswd(path: Path, users: Mapping[str, str]) -> Path:
    """An htpasswd file as ``htpasswd -B`` writes it (cost 4: the tests need no slow hashes)."""
    lines = []
    for user, password in users.items():
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        lines.append(f"{user}:{hashed.replace('$2b$', '$2y$', 1)}\n")
    path.write_text("".join(lines))
    return path


def token_auth(keys: Keys, **more: Any) -> dict[str, Any]:
    """The ``auth`` settings of a registry that trusts ``keys.ca``."""
    settings = {
        "realm": REALM,
        "service": SERVICE,
        "issuer": ISSUER,
        "rootcertbundle": str(keys.bundle),
        **more,
    }
    return {"auth": {"token": settings}}


# -- registries in process --------------------------------------------------------------------


@dataclass
class Registry:
    client: TestClient[web.Request, web.Application]
    root: Path

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        authorization: str | None = None,
        **kwargs: Any,
    ) -> ClientResponse:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if authorization is not None:
            headers["Authorization"] = authorization
        # encoded=True: the path goes out exactly as written (%2f stays %2f).
        return await self.client.request(method, URL(path, encoded=True), headers=headers, **kwargs)

    def snapshot(self) -> dict[str, bytes | None]:
        """Every folder and file under the storage root, with each file's content, but
        the intent log (which holds writes until they are durable where they are)."""
        found: dict[str, bytes | None] = {}
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if d != ".~intents"]
            for name in dirs:
                found[os.path.join(folder, name)] = None
            for name in files:
                found[os.path.join(folder, name)] = Path(folder, name).read_bytes()
        return found

    async def push_blob(self, name: str, data: bytes, **auth: Any) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        response = await self.request(
            "POST", f"/v2/{name}/blobs/uploads/?digest={digest}", data=data, **auth
        )
        assert response.status == 201, await response.text()
        return digest

    async def push_image(self, name: str, tag: str, **auth: Any) -> str:
        """A config, one layer and a manifest; the manifest's digest."""
        config = json.dumps({"nonce": os.urandom(8).hex()}).encode()
        layer = os.urandom(2048)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": await self.push_blob(name, config, **auth),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": await self.push_blob(name, layer, **auth),
                        "size": len(layer),
                    }
                ],
            }
        ).encode()
        response = await self.request(
            "PUT",
            f"/v2/{name}/manifests/{tag}",
            data=manifest,
            headers={"Content-Type": OCI_MANIFEST},
            **auth,
        )
        assert response.status == 201, await response.text()
        return "sha256:" + hashlib.sha256(manifest).hexdigest()


MakeRegistry = Callable[..., Awaitable[Registry]]


def config_yaml(root: Path, settings: Mapping[str, Any]) -> str:
    data: dict[str, Any] = {
        "version": "0.1",
        "storage": {"filesystem": {"rootdirectory": str(root)}, "delete": {"enabled": True}},
        "http": {"addr": "127.0.0.1:5000"},
    }
    data.update(settings)
    return yaml.safe_dump(data)


@pytest.fixture
def make_registry(
    aiohttp_client: Callable[..., Awaitable[TestClient[web.Request, web.Application]]],
    tmp_path: Path,
) -> MakeRegistry:
    """A registry app on filesystem storage under ``tmp_path/root`` with ``settings``."""

    async def make(settings: Mapping[str, Any]) -> Registry:
        root = tmp_path / "root"
        root.mkdir(exist_ok=True)
        app = create_app(parse_config(config_yaml(root, settings), environ={}))
        return Registry(await aiohttp_client(app), root)

    return make


@pytest.fixture
async def token_registry(make_registry: MakeRegistry, keys: Keys) -> Registry:
    """A registry that trusts tokens signed under ``keys.ca``, with ``team/app`` pushed."""
    registry = await make_registry(token_auth(keys))
    everything = keys.token([repository("team/app", "pull", "push")])
    await registry.push_image("team/app", "v1", token=everything)
    return registry


# -- registries in their own process ---------------------------------------------------------


@contextmanager
def serve(
    folder: Path,
    settings: Mapping[str, Any],
    *,
    tls: Keys | None = None,
    env: Mapping[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[str]:
    """``cargohold serve`` (one worker) with ``settings``, over TLS when ``tls`` gives keys.

    Yields its URL; ``log`` receives its output (``env`` may turn on the access log).
    ``settings`` may use ``{url}`` in strings (a realm on this very
    server), filled in once the port is known.
    """
    port = free_port()
    scheme = "https" if tls else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    settings = json.loads(json.dumps(settings).replace("{url}", url))
    if tls is not None:
        http = dict(settings.get("http", {}))
        http["tls"] = {"certificate": str(tls.tls_cert), "key": str(tls.tls_key)}
        settings = {**settings, "http": http}
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"config-{port}.yml"
    config.write_text(config_yaml(folder / "root", settings))
    env = {"REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}", "REGISTRY_LOG_LEVEL": "warn", **(env or {})}
    argv = cargohold_argv("serve", str(config), "--workers", "1")
    log = log or folder / f"cargohold-{port}.log"
    if tls is None:
        with running(argv, f"{url}/v2/", env=env, log=log):
            yield url
    else:
        with _running_tls(argv, url, tls.bundle, env, log):
            yield url


@contextmanager
def _running_tls(
    argv: list[str], url: str, ca_file: Path, env: Mapping[str, str], log: Path
) -> Iterator[None]:
    """Like ``tests.support.servers.running``, but ready once ``url`` answers over TLS."""
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            context = ssl.create_default_context(cafile=str(ca_file))
            deadline = time.monotonic() + 20
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"cargohold exited with {process.returncode}")
                try:
                    urllib.request.urlopen(f"{url}/v2/", context=context, timeout=1).close()
                    break
                except urllib.error.HTTPError:
                    break  # any answer over TLS will do (401 here)
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield
        finally:
            stop(process)
