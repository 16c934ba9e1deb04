"""A mirror reaches an upstream that wants credentials: Basic, bearer tokens, helpers, TLS.

The upstream is reached through cargohold's own client: it pings ``/v2/`` once
to learn the challenge, then answers it with Basic credentials, or with a
bearer token from the realm the challenge names, kept per scope. Upstreams
here are real servers on loopback ports: cargohold with its own token server
over TLS (its CA made by ``tests/auth/pki.py``), cargohold asking for client
certificates, and Distribution 2.8.2 with htpasswd. Anonymous pulls from an
upstream without access control are ``test_mirror.py``'s.
"""

from __future__ import annotations

import base64
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cargohold.api.app import API_KEY, create_app
from cargohold.config import parse_config
from cargohold.manifest import OCI_MANIFEST
from tests.api.conftest import Image, assert_error
from tests.auth.conftest import write_htpasswd
from tests.auth.pki import claims, mint, repository
from tests.proxy.auth_support import (
    Pki,
    Pusher,
    RequestLog,
    client_context,
    credential_helper,
    go_registry_with_htpasswd,
    make_pki,
    served_upstream,
)
from tests.proxy.conftest import Mirror, mirror_config
from tests.proxy.relay import Relay
from tests.support.inprocess import Servers

SERVICE = "upstream.test"
ISSUER = "upstream-issuer"
USERS = {"alice": "wonderland-4c1e9f", "bob": "builder-8d2a7b"}
ACCEPT = {"Accept": OCI_MANIFEST}
#: What pulling an image of two layers asks its upstream, once the ping is done: a HEAD for
#: the tag, a GET for the manifest, and for the config and each layer a HEAD (its size) then
#: a GET.
PULL = [("HEAD", "manifests"), ("GET", "manifests")] + [("HEAD", "blobs"), ("GET", "blobs")] * 3


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def htpasswd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_htpasswd(tmp_path_factory.mktemp("users") / "htpasswd", USERS)


MirrorOf = Callable[..., Awaitable[Mirror]]


@pytest.fixture
def mirror_of(servers: Servers, tmp_path: Path) -> MirrorOf:
    """A mirror (filesystem storage under ``tmp_path``) of ``url`` under ``docker.io/``.

    ``upstream`` are the upstream's settings: ``username``, ``tls``, ``exec``, …
    """
    numbers = itertools.count()

    async def make(url: str, **upstream: Any) -> Mirror:
        root = tmp_path / f"mirror-{next(numbers)}"
        proxy = {"upstreams": [{"prefix": "docker.io/", "remoteurl": url, **upstream}]}
        app = create_app(parse_config(mirror_config(root, proxy), environ={}))
        client = await servers.serve(app)
        return Mirror(client, "filesystem", root, prefix=app[API_KEY].prefix)

    return make


async def pull_image(mirror: Mirror, name: str, tag: str, image: Image) -> None:
    """The manifest by tag, then every blob it names: each byte as pushed."""
    response = await mirror.request("GET", f"/v2/docker.io/{name}/manifests/{tag}", headers=ACCEPT)
    assert response.status == 200, await response.text()
    assert await response.read() == image.payload
    assert response.headers["Docker-Content-Digest"] == image.digest
    for blob in (image.config, *image.layers):
        assert blob is not None
        assert await mirror.pull_blob(f"docker.io/{name}", blob.digest) == blob.data


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# -- cargohold with its own token server, over TLS ------------------------------------------


@dataclass
class TokenUpstream:
    """A cargohold whose registry takes only tokens from the token server beside it."""

    url: str
    log: RequestLog
    pki: Pki

    async def push_image(self, name: str, tag: str) -> Image:
        # A token minted here, so that the token server hears only the mirror.
        token = mint(
            self.pki.signer.key,
            claims(issuer=ISSUER, service=SERVICE, access=[repository(name, "pull", "push")]),
            x5c=self.pki.signer.x5c,
        )
        pusher = Pusher(self.url, f"Bearer {token}", client_context(self.pki))
        try:
            return await pusher.push_image(name, tag)
        finally:
            await pusher.close()


def token_settings(pki: Pki, htpasswd: Path) -> dict[str, Any]:
    """``auth.token`` with its realm on the server itself, and that token server's ACL."""
    return {
        "http": {"tls": {"certificate": str(pki.server_cert), "key": str(pki.server_key)}},
        "auth": {
            "token": {
                "realm": "{url}/auth/token",
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(pki.bundle),
            }
        },
        "tokenserver": {
            "enabled": True,
            "key": str(pki.signer_key),
            "certificate": str(pki.signer_cert),
            "htpasswd": {"path": str(htpasswd)},
            "acl": [{"name": "team/**", "users": ["alice"], "actions": ["pull"]}],
            "anonymous": [{"name": "public/**", "actions": ["pull"]}],
        },
    }


@pytest.fixture
async def token_upstream(pki: Pki, htpasswd: Path) -> AsyncIterator[TokenUpstream]:
    log = RequestLog()
    async with served_upstream(token_settings(pki, htpasswd), log) as url:
        assert url.startswith("https://")
        yield TokenUpstream(url, log, pki)


async def test_a_pull_through_the_bearer_token_flow_over_tls(
    token_upstream: TokenUpstream, mirror_of: MirrorOf
) -> None:
    image = await token_upstream.push_image("team/app", "v1")
    mirror = await mirror_of(
        token_upstream.url,
        username="alice",
        password=USERS["alice"],
        tls={"ca": str(token_upstream.pki.bundle)},
    )
    log = token_upstream.log
    log.reset()

    await pull_image(mirror, "team/app", "v1", image)

    # The ping learned the challenge; one token, asked for with alice's credentials,
    # opened everything that followed.
    (ping,) = [s for s in log.seen if s.path == "/v2/"]
    assert (ping.status, ping.scheme) == (401, "")
    (token,) = log.tokens
    assert (token.method, token.status, token.scheme) == ("GET", 200, "basic")
    assert token.scopes == ["repository:team/app:pull"]
    assert [(s.method, s.kind) for s in log.registry] == PULL
    assert {(s.status, s.scheme, s.user) for s in log.registry} == {(200, "bearer", "alice")}


async def test_a_token_is_kept_for_its_scope_and_a_new_scope_gets_its_own(
    token_upstream: TokenUpstream, mirror_of: MirrorOf
) -> None:
    image = await token_upstream.push_image("team/app", "v1")
    other = await token_upstream.push_image("team/other", "v1")
    mirror = await mirror_of(
        token_upstream.url,
        username="alice",
        password=USERS["alice"],
        tls={"ca": str(token_upstream.pki.bundle)},
    )
    log = token_upstream.log
    log.reset()
    assert image.config is not None
    await mirror.pull_blob("docker.io/team/app", image.config.digest)
    assert len(log.tokens) == 1

    # Another blob of the same repository: the same scope, the token kept.
    await mirror.pull_blob("docker.io/team/app", image.layers[0].digest)
    await pull_image(mirror, "team/app", "v1", image)
    assert len(log.tokens) == 1
    # The config and layer 1 (HEAD and GET each), the tag, the manifest, layer 2.
    assert len(log.registry) == 2 + 2 + 4
    assert {(s.status, s.scheme) for s in log.registry} == {(200, "bearer")}

    # Another repository is another scope: one more token, kept in turn. The first answer
    # held a refresh token, so the second token comes from an OAuth2 POST with it: the
    # password is not sent again.
    await pull_image(mirror, "team/other", "v1", other)
    assert [(s.method, s.status, s.scheme) for s in log.tokens] == [
        ("GET", 200, "basic"),
        ("POST", 200, ""),
    ]
    assert log.tokens[0].scopes == ["repository:team/app:pull"]
    assert len(log.registry) == 8 + len(PULL)
    assert {(s.status, s.scheme, s.user) for s in log.registry} == {(200, "bearer", "alice")}


async def test_a_mirror_without_credentials_gets_anonymous_tokens_for_what_anyone_may_pull(
    token_upstream: TokenUpstream, mirror_of: MirrorOf
) -> None:
    public = await token_upstream.push_image("public/tool", "v1")
    await token_upstream.push_image("team/app", "v1")
    mirror = await mirror_of(token_upstream.url, tls={"ca": str(token_upstream.pki.bundle)})
    log = token_upstream.log
    log.reset()

    await pull_image(mirror, "public/tool", "v1", public)
    (token,) = log.tokens
    assert (token.status, token.scheme) == (200, "")
    assert [(s.method, s.kind) for s in log.registry] == PULL
    assert {(s.status, s.scheme, s.user) for s in log.registry} == {(200, "bearer", None)}

    # What only alice may pull, the anonymous token does not open.
    response = await mirror.request("GET", "/v2/docker.io/team/app/manifests/v1", headers=ACCEPT)
    error = await assert_error(response, 502, "UNKNOWN")
    assert "refused" in error["message"]


# -- Distribution 2.8.2 with htpasswd -------------------------------------------------------


@pytest.fixture(scope="module")
def go_registry(tmp_path_factory: pytest.TempPathFactory, htpasswd: Path) -> Iterator[str]:
    with go_registry_with_htpasswd(tmp_path_factory.mktemp("go"), htpasswd) as url:
        yield url


@pytest.fixture
async def go_relay(go_registry: str) -> AsyncIterator[Relay]:
    """Counts what reaches the Go registry (it forwards ``Authorization`` as it came)."""
    relay = Relay(go_registry)
    await relay.start()
    yield relay
    await relay.stop()


async def push_to_go(go_registry: str, name: str, tag: str) -> Image:
    pusher = Pusher(go_registry, basic("bob", USERS["bob"]))
    try:
        return await pusher.push_image(name, tag)
    finally:
        await pusher.close()


async def test_the_go_registry_with_htpasswd_is_pulled_with_basic_credentials(
    go_registry: str, go_relay: Relay, mirror_of: MirrorOf
) -> None:
    image = await push_to_go(go_registry, "team/app", "v1")
    mirror = await mirror_of(go_relay.url, username="alice", password=USERS["alice"])

    await pull_image(mirror, "team/app", "v1", image)

    # One ping to learn the Basic challenge; then the pull's requests, each sent once: none
    # was refused and asked again.
    assert go_relay.counts[("GET", "/v2/")] == 1
    assert sum(go_relay.counts.values()) == 1 + len(PULL)


async def assert_refused_and_secret(
    mirror: Mirror, paths: list[str], password: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Each of ``paths`` is a 502 UNKNOWN; no reply and no log record holds the password."""
    bodies = []
    for path in paths:
        response = await mirror.request("GET", path, headers=ACCEPT)
        error = await assert_error(response, 502, "UNKNOWN")
        assert "refused" in error["message"]
        bodies.append(await response.read())
    assert any("refused the mirror" in r.getMessage() for r in caplog.records)
    for secret in (password, basic("alice", password).split()[1]):
        assert not any(secret.encode() in body for body in bodies)
        assert secret not in caplog.text  # messages and tracebacks, every logger
        for record in caplog.records:
            assert secret not in record.getMessage()
            assert secret not in repr(record.args)
    assert mirror.blob_files() == set()


WRONG = "not-Alices-password-5e1f0c"


async def test_a_wrong_password_is_a_502_that_never_shows_the_password(
    go_registry: str,
    go_relay: Relay,
    mirror_of: MirrorOf,
    caplog: pytest.LogCaptureFixture,
) -> None:
    image = await push_to_go(go_registry, "team/app", "v1")
    caplog.set_level(logging.DEBUG)  # every logger, every level, from the mirror's start
    mirror = await mirror_of(go_relay.url, username="alice", password=WRONG)

    paths = [
        "/v2/docker.io/team/app/manifests/v1",
        f"/v2/docker.io/team/app/manifests/{image.digest}",
        f"/v2/docker.io/team/app/blobs/{image.layers[0].digest}",
    ]
    await assert_refused_and_secret(mirror, paths, WRONG, caplog)
    # Refused once each (the blob at its HEAD): never asked again with the same credentials.
    assert go_relay.counts[("GET", "/v2/")] == 1
    assert go_relay.count("HEAD", "/manifests/v1") == 1
    assert go_relay.count("GET", f"/manifests/{image.digest}") == 1
    assert go_relay.count("HEAD", "/blobs/") == 1
    assert sum(go_relay.counts.values()) == 4


async def test_a_wrong_password_at_the_token_server_is_a_502_that_never_shows_it(
    token_upstream: TokenUpstream, mirror_of: MirrorOf, caplog: pytest.LogCaptureFixture
) -> None:
    image = await token_upstream.push_image("team/app", "v1")
    caplog.set_level(logging.DEBUG)
    mirror = await mirror_of(
        token_upstream.url,
        username="alice",
        password=WRONG,
        tls={"ca": str(token_upstream.pki.bundle)},
    )
    token_upstream.log.reset()

    paths = [
        "/v2/docker.io/team/app/manifests/v1",
        f"/v2/docker.io/team/app/blobs/{image.layers[0].digest}",
    ]
    await assert_refused_and_secret(mirror, paths, WRONG, caplog)
    # The token server refused the credentials; the registry never saw a request after the ping.
    assert [(s.method, s.status, s.scheme) for s in token_upstream.log.tokens] == [
        ("GET", 401, "basic")
    ] * 2
    assert token_upstream.log.registry == []


# -- docker credential helpers (proxy.exec) -------------------------------------------------


async def test_a_credential_helper_without_a_lifetime_runs_once(
    go_registry: str, go_relay: Relay, mirror_of: MirrorOf, tmp_path: Path
) -> None:
    first = await push_to_go(go_registry, "team/app", "v1")
    second = await push_to_go(go_registry, "team/app", "v2")
    helper = credential_helper(tmp_path / "helper", "alice", USERS["alice"])
    mirror = await mirror_of(go_relay.url, exec={"command": str(helper.command)})

    await pull_image(mirror, "team/app", "v1", first)
    await pull_image(mirror, "team/app", "v2", second)
    await pull_image(mirror, "team/other", "v1", await push_to_go(go_registry, "team/other", "v1"))

    # Asked once, for the upstream's host, across three pulls' authorised requests.
    assert helper.runs() == [go_relay.url.removeprefix("http://")]
    assert sum(go_relay.counts.values()) == 1 + 3 * len(PULL)


async def test_a_credential_helper_with_lifetime_zero_runs_for_every_upstream_request(
    go_registry: str, go_relay: Relay, mirror_of: MirrorOf, tmp_path: Path
) -> None:
    image = await push_to_go(go_registry, "team/app", "v1")
    helper = credential_helper(tmp_path / "helper", "alice", USERS["alice"])
    mirror = await mirror_of(go_relay.url, exec={"command": str(helper.command), "lifetime": "0s"})

    await pull_image(mirror, "team/app", "v1", image)

    # The helper was asked before each request that carried credentials.
    ping = go_relay.counts[("GET", "/v2/")]
    authorised = sum(go_relay.counts.values()) - ping
    assert (ping, authorised) == (1, len(PULL))
    assert helper.runs() == [go_relay.url.removeprefix("http://")] * len(PULL)


# -- TLS client certificates ----------------------------------------------------------------


@dataclass
class CertificateUpstream:
    url: str
    log: RequestLog
    pki: Pki


@pytest.fixture
async def certificate_upstream(pki: Pki) -> AsyncIterator[CertificateUpstream]:
    """A cargohold (no access control) that takes only clients with a certificate of ``pki``."""
    log = RequestLog()
    settings = {
        "http": {
            "tls": {
                "certificate": str(pki.server_cert),
                "key": str(pki.server_key),
                "clientcas": [str(pki.bundle)],
            }
        }
    }
    async with served_upstream(settings, log) as url:
        yield CertificateUpstream(url, log, pki)


async def push_with_certificate(upstream: CertificateUpstream, name: str, tag: str) -> Image:
    pusher = Pusher(upstream.url, context=client_context(upstream.pki, certificate=True))
    try:
        return await pusher.push_image(name, tag)
    finally:
        await pusher.close()


async def test_a_client_certificate_opens_an_upstream_that_requires_one(
    certificate_upstream: CertificateUpstream, mirror_of: MirrorOf
) -> None:
    image = await push_with_certificate(certificate_upstream, "team/app", "v1")
    pki = certificate_upstream.pki
    tls = {"ca": str(pki.bundle), "certificate": str(pki.client_cert), "key": str(pki.client_key)}
    mirror = await mirror_of(certificate_upstream.url, tls=tls)
    certificate_upstream.log.reset()

    await pull_image(mirror, "team/app", "v1", image)
    seen = certificate_upstream.log.seen
    assert [(s.method, s.path, s.status) for s in seen[:1]] == [("GET", "/v2/", 200)]
    assert [(s.method, s.kind) for s in seen[1:]] == PULL
    assert {s.status for s in seen} == {200}


async def test_without_a_client_certificate_the_mirror_answers_503_not_500(
    certificate_upstream: CertificateUpstream, mirror_of: MirrorOf
) -> None:
    image = await push_with_certificate(certificate_upstream, "team/app", "v1")
    tls = {"ca": str(certificate_upstream.pki.bundle)}  # the CA, and no certificate to show
    mirror = await mirror_of(certificate_upstream.url, tls=tls)
    certificate_upstream.log.reset()

    response = await mirror.request("GET", "/v2/docker.io/team/app/manifests/v1", headers=ACCEPT)
    await assert_error(response, 503, "UNAVAILABLE")
    response = await mirror.request("GET", f"/v2/docker.io/team/app/blobs/{image.layers[0].digest}")
    await assert_error(response, 503, "UNAVAILABLE")
    # Refused in the handshake: no request reached the registry.
    assert certificate_upstream.log.seen == []
    assert mirror.blob_files() == set()


async def test_insecure_pulls_from_an_upstream_whose_certificate_is_not_trusted(
    certificate_upstream: CertificateUpstream, mirror_of: MirrorOf
) -> None:
    image = await push_with_certificate(certificate_upstream, "team/app", "v1")
    pki = certificate_upstream.pki
    certificate = {"certificate": str(pki.client_cert), "key": str(pki.client_key)}
    # No CA: the upstream's certificate cannot be verified, and is not, with insecure.
    trusting = await mirror_of(certificate_upstream.url, tls={**certificate, "insecure": True})
    await pull_image(trusting, "team/app", "v1", image)

    verifying = await mirror_of(certificate_upstream.url, tls=certificate)
    response = await verifying.request("GET", "/v2/docker.io/team/app/manifests/v1", headers=ACCEPT)
    await assert_error(response, 503, "UNAVAILABLE")
