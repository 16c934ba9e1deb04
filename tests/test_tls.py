"""TLS as Distribution's ``http.tls`` configures it: client certificates, versions, suites.

Every certificate here is made by the test (``tests/auth/pki.py``): the
server's, issued for 127.0.0.1 by one authority; client certificates issued
by the authority ``clientcas`` names, and by another one nobody trusts. The
handshakes run against the listener ``cargohold serve`` runs, in process;
refusals and skopeo's push over mutual TLS run ``cargohold serve`` itself.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from cargohold.api.app import create_app
from cargohold.api.listener import Listener
from cargohold.api.tls import server_context
from cargohold.config import parse_config
from tests.auth.pki import Authority
from tests.support.images import build_image
from tests.support.inprocess import listening_socket
from tests.support.servers import cargohold_argv, free_port, stop
from tests.support.skopeo import SkopeoError, skopeo


@dataclass(frozen=True)
class Pki:
    folder: Path
    server_ca: Path
    server_cert: Path
    server_key: Path
    client_ca: Path
    client: tuple[Path, Path]
    stranger: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    servers, clients = Authority("server CA"), Authority("client CA")
    server_cert, server_key = servers.issue("127.0.0.1", ip="127.0.0.1").write(folder, "server")
    client = clients.issue("alice").write(folder, "alice")
    stranger = Authority("nobody's CA").issue("mallory").write(folder, "mallory")
    return Pki(
        folder,
        servers.write(folder / "server-ca.crt"),
        server_cert,
        server_key,
        clients.write(folder / "client-ca.crt"),
        client,
        stranger,
    )


def settings(pki: Pki, root: Path, **tls: Any) -> dict[str, Any]:
    return {
        "version": "0.1",
        "storage": {"filesystem": {"rootdirectory": str(root)}},
        "http": {
            "addr": "127.0.0.1:0",
            "tls": {"certificate": str(pki.server_cert), "key": str(pki.server_key), **tls},
        },
    }


@asynccontextmanager
async def tls_registry(pki: Pki, root: Path, **tls: Any) -> AsyncIterator[tuple[str, int]]:
    config = parse_config(yaml.safe_dump(settings(pki, root, **tls)), environ={})
    listener = Listener(create_app(config), ssl_context=server_context(config.http.tls))
    await listener.start(listening_socket())
    try:
        yield listener.address
    finally:
        await listener.close()


def client_context(
    pki: Pki,
    certificate: tuple[Path, Path] | None = None,
    *,
    maximum: ssl.TLSVersion | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.server_ca))
    if certificate is not None:
        context.load_cert_chain(*map(str, certificate))
    if maximum is not None:
        context.maximum_version = maximum
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


async def version_check(address: tuple[str, int], context: ssl.SSLContext) -> str:
    """GET /v2/ over TLS: the status line, or what went wrong (``refused: ...``)."""
    try:
        reader, writer = await asyncio.open_connection(
            *address, ssl=context, server_hostname="127.0.0.1"
        )
    except (ssl.SSLError, ConnectionError) as exc:
        return f"refused: {type(exc).__name__}"
    try:
        writer.write(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        # Under TLS 1.3 the server checks the client's certificate after the client's
        # handshake is done: a refusal arrives as an alert on the first read.
        line = await asyncio.wait_for(reader.readline(), timeout=10)
    except (ssl.SSLError, ConnectionError) as exc:
        return f"refused: {type(exc).__name__}"
    finally:
        writer.close()
    return line.decode().strip() or "refused: closed"


OK = "HTTP/1.1 200 OK"


async def test_without_client_certificates_configured_any_client_gets_in(
    pki: Pki, tmp_path: Path
) -> None:
    async with tls_registry(pki, tmp_path) as address:
        assert await version_check(address, client_context(pki)) == OK


async def test_required_client_certificates_are_verified(pki: Pki, tmp_path: Path) -> None:
    cas = [str(pki.client_ca)]
    async with tls_registry(pki, tmp_path, clientcas=cas) as address:  # the default mode
        assert (await version_check(address, client_context(pki))).startswith("refused")
        stranger = client_context(pki, pki.stranger)
        assert (await version_check(address, stranger)).startswith("refused")
        assert await version_check(address, client_context(pki, pki.client)) == OK


async def test_optional_client_certificates_are_verified_when_given(
    pki: Pki, tmp_path: Path
) -> None:
    cas, mode = [str(pki.client_ca)], "verify-client-cert-if-given"
    async with tls_registry(pki, tmp_path, clientcas=cas, clientauth=mode) as address:
        assert await version_check(address, client_context(pki)) == OK
        stranger = client_context(pki, pki.stranger)
        assert (await version_check(address, stranger)).startswith("refused")
        assert await version_check(address, client_context(pki, pki.client)) == OK


async def test_minimumtls_refuses_older_clients(pki: Pki, tmp_path: Path) -> None:
    async with tls_registry(pki, tmp_path, minimumtls="tls1.3") as address:
        old = client_context(pki, maximum=ssl.TLSVersion.TLSv1_2)
        assert (await version_check(address, old)).startswith("refused")
        assert await version_check(address, client_context(pki)) == OK
    async with tls_registry(pki, tmp_path) as address:  # default: tls1.2
        old = client_context(pki, maximum=ssl.TLSVersion.TLSv1_2)
        assert await version_check(address, old) == OK


async def test_ciphersuites_are_the_only_tls12_suites_accepted(pki: Pki, tmp_path: Path) -> None:
    suites = ["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"]
    async with tls_registry(pki, tmp_path, ciphersuites=suites) as address:
        other = client_context(
            pki, maximum=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES256-GCM-SHA384"
        )
        assert (await version_check(address, other)).startswith("refused")
        chosen = client_context(
            pki, maximum=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"
        )
        assert await version_check(address, chosen) == OK
        _, writer = await asyncio.open_connection(*address, ssl=chosen, server_hostname="127.0.0.1")
        ssl_object = writer.get_extra_info("ssl_object")
        assert ssl_object.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"
        writer.close()


# -- what is refused, and skopeo over mutual TLS, against `cargohold serve` ------------------


@pytest.mark.parametrize(
    ("tls", "key", "wording"),
    [
        ({"clientauth": "request-client-cert"}, "http.tls.clientauth", "not supported"),
        ({"clientauth": "require-any-client-cert"}, "http.tls.clientauth", "not supported"),
        ({"clientauth": "verify-client-cert-if-given"}, "http.tls.clientauth", "clientcas"),
        ({"ciphersuites": ["TLS_MADE_UP"]}, "http.tls.ciphersuites", "TLS_MADE_UP"),
        ({"clientcas": ["/nonexistent/ca.pem"]}, "http.tls.clientcas", "/nonexistent/ca.pem"),
        ({"letsencrypt": {"cachefile": "/x", "hosts": ["a"]}}, "http.tls.letsencrypt", ""),
    ],
)
def test_what_cannot_be_honoured_is_refused_at_start(
    pki: Pki, tmp_path: Path, tls: dict[str, Any], key: str, wording: str
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(settings(pki, tmp_path / "root", **tls)))
    result = subprocess.run(
        cargohold_argv("serve", str(config)), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"cargohold: config: {key}: ")
    assert wording in line


@pytest.fixture
def mtls_registry(pki: Pki, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    document = settings(pki, tmp_path / "root", clientcas=[str(pki.client_ca)])
    document["http"]["addr"] = f"127.0.0.1:{port}"
    config = tmp_path / "config.yml"
    config.write_text(yaml.safe_dump(document))
    process = subprocess.Popen(
        cargohold_argv("serve", str(config)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        for _ in range(400):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None, "cargohold exited"
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        stop(process)


def test_skopeo_pushes_over_mutual_tls_with_its_cert_dir(
    pki: Pki, tmp_path: Path, mtls_registry: str
) -> None:
    layout = tmp_path / "layout"
    build_image(layout, "v1", (2000, 30_000))
    certs = tmp_path / "certs.d"
    certs.mkdir()
    (certs / "ca.crt").write_bytes(pki.server_ca.read_bytes())
    (certs / "client.cert").write_bytes(pki.client[0].read_bytes())
    (certs / "client.key").write_bytes(pki.client[1].read_bytes())
    anonymous = tmp_path / "anonymous.d"
    anonymous.mkdir()
    (anonymous / "ca.crt").write_bytes(pki.server_ca.read_bytes())
    destination = f"docker://{mtls_registry}/mtls/app:v1"

    with pytest.raises(SkopeoError) as refused:  # without a client certificate: no handshake
        skopeo("copy", "--dest-cert-dir", str(anonymous), f"oci:{layout}:v1", destination)
    # Under TLS 1.3 the server refuses after the client's handshake: skopeo sees the close.
    stderr = refused.value.stderr
    assert "pinging container registry" in stderr
    assert "EOF" in stderr or "connection reset by peer" in stderr
    skopeo("copy", "--dest-cert-dir", str(certs), f"oci:{layout}:v1", destination)
    listed = skopeo("list-tags", "--cert-dir", str(certs), f"docker://{mtls_registry}/mtls/app")
    assert b'"v1"' in listed
