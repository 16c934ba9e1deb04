"""Where requests go: plain HTTP for loopback as docker does, HTTPS with verification otherwise."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cargohold.client import RemoteRegistry
from cargohold.client.transport import Endpoint, parse_retry_after
from cargohold.errors import Unavailable

ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.mark.parametrize(
    ("url", "insecure", "base", "fallback"),
    [
        ("127.0.0.1:5000", False, "http://127.0.0.1:5000", False),
        ("127.8.9.10:5000", False, "http://127.8.9.10:5000", False),
        ("localhost:5000", False, "http://localhost:5000", False),
        ("[::1]:5000", False, "http://[::1]:5000", False),
        ("registry.example.com", False, "https://registry.example.com", False),
        ("registry.example.com:443", True, "https://registry.example.com:443", True),
        ("http://registry.example.com", True, "http://registry.example.com", False),
        ("https://127.0.0.1:5000", False, "https://127.0.0.1:5000", False),
        ("http://localhost:5000/", False, "http://localhost:5000", False),
    ],
)
def test_the_scheme_follows_docker_rules(
    url: str, insecure: bool, base: str, fallback: bool
) -> None:
    endpoint = Endpoint.of(url, insecure)
    assert (endpoint.base, endpoint.http_fallback) == (base, fallback)


@pytest.mark.parametrize(
    "url", ["http://registry.example.com", "ftp://x.example", "https://x.example/path", ""]
)
def test_plain_http_elsewhere_needs_insecure_and_urls_have_no_path(url: str) -> None:
    with pytest.raises(ValueError, match=r"insecure|not a registry|no path"):
        Endpoint.of(url, False)


def test_retry_after_is_seconds_or_a_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# -- TLS --------------------------------------------------------------------------------------


def _certificates(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a certificate it signed for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cargohold test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.fixture
async def tls_registry(aiohttp_server: ServerFactory, tmp_path: Path) -> tuple[str, Path]:
    """An HTTPS registry on 127.0.0.1; its URL and the CA that signed its certificate."""
    ca, cert, key = _certificates(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def base(request: web.Request) -> web.Response:
        return web.json_response({})

    async def tags(request: web.Request) -> web.Response:
        return web.json_response({"name": "a", "tags": ["secure"]})

    app = web.Application()
    app.router.add_get("/v2/", base)
    app.router.add_get("/v2/a/tags/list", tags)
    server = await aiohttp_server(app, ssl=context)
    return f"https://127.0.0.1:{server.port}", ca


async def test_https_verifies_against_the_ca_file(tls_registry: tuple[str, Path]) -> None:
    url, ca = tls_registry
    async with RemoteRegistry(url, ca_file=str(ca), environ={}) as registry:
        assert await registry.repository("a").tags.all() == ["secure"]


async def test_an_unknown_certificate_fails_at_once(tls_registry: tuple[str, Path]) -> None:
    url, _ = tls_registry
    async with RemoteRegistry(url, environ={}) as registry:
        with pytest.raises(Unavailable, match="TLS"):
            await registry.repository("a").tags.all()


async def test_insecure_falls_back_to_plain_http(aiohttp_server: ServerFactory) -> None:
    async def tags(request: web.Request) -> web.Response:
        return web.json_response({"name": "a", "tags": ["plain"]})

    async def base(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/v2/", base)
    app.router.add_get("/v2/a/tags/list", tags)
    server = await aiohttp_server(app)
    async with RemoteRegistry(f"127.0.0.1:{server.port}", insecure=True, environ={}) as registry:
        # As for a registry not on loopback: HTTPS first, plain HTTP when TLS fails.
        registry.transport.endpoint = Endpoint("https", f"127.0.0.1:{server.port}", True)
        assert await registry.repository("a").tags.all() == ["plain"]
        assert registry.url == f"http://127.0.0.1:{server.port}"


async def test_insecure_skips_verification(tls_registry: tuple[str, Path]) -> None:
    url, _ = tls_registry
    async with RemoteRegistry(url, insecure=True, environ={}) as registry:
        assert await registry.repository("a").tags.all() == ["secure"]
