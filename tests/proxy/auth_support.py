"""Upstreams that want credentials, for the mirror's upstream-auth tests.

- ``make_pki``: a CA (``tests/auth/pki.py``) and what is issued under it: a TLS
  certificate for 127.0.0.1, a token-signing certificate and a client
  certificate for the mirror.
- ``served_upstream``: a cargohold registry in memory, served in process on the
  same ``Listener`` ``cargohold serve`` runs, with the TLS context
  ``cargohold serve`` builds from ``http.tls`` (so ``clientcas`` is the
  server's own). Its socket is bound first, so the settings may name the
  server's own URL (``{url}``: a token realm on the very server). Every request
  it answers, token requests included, is written down (``RequestLog``).
- ``go_registry_with_htpasswd``: Debian's ``docker-registry`` (Distribution
  2.8.2) with ``auth.htpasswd``, on a free loopback port.
- ``Pusher``: pushes random images over plain HTTP or TLS with a fixed
  ``Authorization``, by POST then PUT, as both registries take it.
- ``credential_helper``: a docker credential helper script that notes each run.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin

import aiohttp
import yaml

from cargohold.api.app import create_app
from cargohold.api.listener import Listener
from cargohold.api.pipeline import Exchange
from cargohold.api.tls import server_context
from cargohold.config import parse_config
from cargohold.manifest import OCI_MANIFEST
from tests.api.conftest import (
    Blob,
    Image,
    _merge,
    image_manifest,
    random_blob,
    random_config,
)
from tests.auth.pki import Authority, Issued
from tests.support.distribution import distribution
from tests.support.inprocess import listening_socket

#: Where cargohold's token server answers (``tokenserver.path``'s default).
TOKEN_PATH = "/auth/token"

# -- keys -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """One CA and what it issued, on disk under ``folder``."""

    folder: Path
    ca: Authority
    #: The CA's certificate: what the mirror trusts (``tls.ca``), and what verifies clients.
    bundle: Path
    server_cert: Path
    server_key: Path
    signer: Issued
    signer_cert: Path
    signer_key: Path
    client_cert: Path
    client_key: Path


def make_pki(folder: Path) -> Pki:
    ca = Authority("cargohold upstream-auth CA")
    bundle = ca.write(folder / "ca.crt")
    server_cert, server_key = ca.issue("127.0.0.1", ip="127.0.0.1").write(folder, "server")
    signer = ca.issue("token signer")
    signer_cert, signer_key = signer.write(folder, "signer")
    client_cert, client_key = ca.issue("the mirror").write(folder, "client")
    return Pki(
        folder,
        ca,
        bundle,
        server_cert,
        server_key,
        signer,
        signer_cert,
        signer_key,
        client_cert,
        client_key,
    )


def client_context(pki: Pki, *, certificate: bool = False) -> ssl.SSLContext:
    """A client's TLS context that trusts ``pki``'s CA (and shows the client certificate)."""
    context = ssl.create_default_context(cafile=str(pki.bundle))
    if certificate:
        context.load_cert_chain(pki.client_cert, pki.client_key)
    return context


# -- what an upstream saw -------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request an upstream answered."""

    method: str
    path: str
    query: str
    status: int
    #: The ``Authorization`` header as sent ("" when none).
    authorization: str
    #: Who the upstream's access control found the credentials to be.
    user: str | None

    @property
    def kind(self) -> str:
        """``manifests`` or ``blobs`` for a request of either; "" for any other."""
        for kind in ("manifests", "blobs"):
            if f"/{kind}/" in self.path:
                return kind
        return ""

    @property
    def scopes(self) -> list[str]:
        """The ``scope`` parameters of a token request."""
        return parse_qs(self.query).get("scope", [])

    @property
    def scheme(self) -> str:
        """``basic``, ``bearer``, or "" without credentials."""
        return self.authorization.partition(" ")[0].lower()


@dataclass
class RequestLog:
    """A request hook (``api.pipeline.RequestHook``) that keeps every finished request."""

    seen: list[Seen] = field(default_factory=list)

    def request_started(self, exchange: Exchange) -> None:
        pass

    def request_finished(self, exchange: Exchange) -> None:
        path, _, query = exchange.target.partition("?")
        authorization = exchange.headers.get("Authorization", "")
        # Anonymous is None on the fast path and "" on aiohttp's: None here for both.
        user = exchange.user or None
        self.seen.append(Seen(exchange.method, path, query, exchange.status, authorization, user))

    def reset(self) -> None:
        self.seen.clear()

    @property
    def tokens(self) -> list[Seen]:
        """The requests to the token server."""
        return [s for s in self.seen if s.path == TOKEN_PATH]

    @property
    def registry(self) -> list[Seen]:
        """The requests to the registry API, the ``/v2/`` ping left out."""
        return [s for s in self.seen if s.path.startswith("/v2/") and s.path != "/v2/"]


# -- cargohold upstreams in process ---------------------------------------------------------


@asynccontextmanager
async def served_upstream(
    settings: dict[str, Any], log: RequestLog, *, fast_path: bool = True
) -> AsyncIterator[str]:
    """A cargohold in memory with ``settings``, over TLS when they set ``http.tls``; its URL.

    ``{url}`` in any string of ``settings`` is the server's own URL.
    """
    sock = listening_socket()
    port = sock.getsockname()[1]
    scheme = "https" if settings.get("http", {}).get("tls") else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    data: dict[str, Any] = {
        "version": "0.1",
        "storage": {"inmemory": {}},
        "http": {"addr": "127.0.0.1:0"},
    }
    _merge(data, json.loads(json.dumps(settings).replace("{url}", url)))
    config = parse_config(yaml.safe_dump(data), environ={})
    app = create_app(config, hooks=[log])
    listener = Listener(app, fast_path=fast_path, ssl_context=server_context(config.http.tls))
    try:
        await listener.start(sock)
    except BaseException:
        sock.close()
        raise
    try:
        yield url
    finally:
        await listener.close()


# -- the Go registry ------------------------------------------------------------------------


@contextmanager
def go_registry_with_htpasswd(folder: Path, htpasswd: Path) -> Iterator[str]:
    """``docker-registry serve`` whose users are ``htpasswd``'s; yields its URL."""
    folder.mkdir(parents=True, exist_ok=True)
    with distribution(folder / "root", log=folder / "go.log", htpasswd=htpasswd) as url:
        yield url


# -- pushing --------------------------------------------------------------------------------


class Pusher:
    """Pushes to the registry at ``url`` with a fixed ``Authorization`` (None: none)."""

    def __init__(
        self,
        url: str,
        authorization: str | None = None,
        context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        headers = {"Authorization": authorization} if authorization else {}
        self.session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=context if context is not None else True),
        )

    async def close(self) -> None:
        await self.session.close()

    async def push_blob(self, name: str, blob: Blob | None = None) -> Blob:
        """POST an upload, PUT its content with the digest: what both registries take."""
        blob = blob if blob is not None else random_blob()
        async with self.session.post(f"{self.url}/v2/{name}/blobs/uploads/") as started:
            assert started.status == 202, await started.text()
            location = urljoin(self.url, started.headers["Location"])
        async with self.session.put(
            location,
            params={"digest": blob.digest},
            data=blob.data,
            headers={"Content-Type": "application/octet-stream"},
        ) as done:
            assert done.status == 201, await done.text()
        return blob

    async def push_image(self, name: str, tag: str, *, layers: int = 2) -> Image:
        """A config, ``layers`` random layers and an OCI manifest, tagged ``tag``."""
        config = await self.push_blob(name, random_config())
        pushed = [await self.push_blob(name, random_blob(700 + i)) for i in range(layers)]
        payload = image_manifest(config, pushed)
        async with self.session.put(
            f"{self.url}/v2/{name}/manifests/{tag}",
            data=payload,
            headers={"Content-Type": OCI_MANIFEST},
        ) as response:
            assert response.status == 201, await response.text()
        return Image(payload, OCI_MANIFEST, config, tuple(pushed))


# -- credential helpers ---------------------------------------------------------------------


@dataclass(frozen=True)
class CredentialHelper:
    """A docker credential helper script, and the file it adds a line to on each run."""

    command: Path
    runs_file: Path

    def runs(self) -> list[str]:
        """What each run read on its standard input (the upstream's host), in order."""
        if not self.runs_file.exists():
            return []
        return self.runs_file.read_text().splitlines()


def credential_helper(folder: Path, username: str, secret: str) -> CredentialHelper:
    """``docker-credential-test get``: notes the host it is asked for, answers the credentials."""
    folder.mkdir(parents=True, exist_ok=True)
    command = folder / "docker-credential-test"
    runs = folder / "helper-runs"
    answer = json.dumps({"Username": username, "Secret": secret})
    command.write_text(
        "#!/bin/sh\n"
        '[ "$1" = get ] || exit 3\n'
        "IFS= read -r host\n"
        f"printf '%s\\n' \"$host\" >> '{runs}'\n"
        # ServerURL first, then the rest of the answer as written above.
        f'printf \'{{"ServerURL": "%s", %s\\n\' "$host" \'{answer[1:]}\'\n'
    )
    command.chmod(0o755)
    return CredentialHelper(command, runs)
