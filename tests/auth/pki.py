"""Keys, certificates and tokens made by the tests themselves (``cryptography``, ``pyjwt``).

``Authority`` is a certificate authority: its root certificate goes into a
registry's ``rootcertbundle`` (or a client's CA file), and it issues TLS server
certificates and token-signing certificates, directly or through an
intermediate. ``mint`` signs a token the way a token server would; ``forge``
writes the tokens no token server should, signed by hand.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
KeyKind = Literal["rsa", "p256", "p384", "p521", "ed25519"]
ALGORITHM: dict[KeyKind, str] = {
    "rsa": "RS256",
    "p256": "ES256",
    "p384": "ES384",
    "p521": "ES512",
    "ed25519": "EdDSA",
}


def new_key(kind: KeyKind = "p256") -> PrivateKey:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    curve = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1(), "p521": ec.SECP521R1()}[kind]
    return ec.generate_private_key(curve)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _hash_for(key: PrivateKey) -> hashes.SHA256 | None:
    return None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()


@dataclass
class Issued:
    """A key and its certificate, with the chain above it up to (not including) the root."""

    key: PrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def x5c(self) -> list[str]:
        return [
            base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
            for cert in (self.certificate, *self.chain)
        ]

    def write(self, folder: Path, stem: str) -> tuple[Path, Path]:
        """``stem.crt`` (the certificate and its chain) and ``stem.key``; their paths."""
        folder.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
        cert_path.write_bytes(
            b"".join(
                cert.public_bytes(serialization.Encoding.PEM)
                for cert in (self.certificate, *self.chain)
            )
        )
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


class Authority:
    """A self-signed root CA that issues certificates."""

    def __init__(self, name: str = "cargohold test CA", kind: KeyKind = "p256") -> None:
        self.key = new_key(kind)
        now = datetime.now(UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, _hash_for(self.key))
        )
        self.chain: tuple[x509.Certificate, ...] = ()

    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.pem())
        return path

    def issue(
        self,
        name: str,
        kind: KeyKind = "p256",
        *,
        ca: bool = False,
        ip: str | None = None,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
    ) -> Issued:
        key = new_key(kind)
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid_from or now - timedelta(days=1))
            .not_valid_after(valid_until or now + timedelta(days=10))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ip is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(IPv4Address(ip))]), critical=False
            )
        certificate = builder.sign(self.key, _hash_for(self.key))
        return Issued(
            key, certificate, (*(() if self.is_root else (self.certificate,)), *self.chain)
        )

    @property
    def is_root(self) -> bool:
        return not self.chain and self.certificate.issuer == self.certificate.subject

    def intermediate(self, name: str = "cargohold test intermediate") -> Authority:
        """A CA under this one: what it issues carries it in its chain."""
        issued = self.issue(name, ca=True)
        below = Authority.__new__(Authority)
        below.key = issued.key
        below.certificate = issued.certificate
        below.chain = issued.chain
        return below


def expired_signer(ca: Authority) -> Issued:
    """A signer whose certificate expired an hour ago."""
    return ca.issue("expired signer", valid_until=datetime.now(UTC) - timedelta(hours=1))


def signed_by_a_leaf(ca: Authority) -> Issued:
    """A signer certified by a certificate that is no CA (``CA:false``)."""
    middle = ca.issue("not a CA")
    fake = Authority.__new__(Authority)
    fake.key, fake.certificate, fake.chain = middle.key, middle.certificate, ()
    leaf = fake.issue("signed by a leaf")
    leaf.chain = (middle.certificate,)
    return leaf


# -- tokens ---------------------------------------------------------------------------------


def claims(
    *,
    issuer: str,
    service: str | list[str],
    access: list[dict[str, Any]] | None = None,
    subject: str = "alice",
    lifetime: float = 300,
    not_before: float | None = None,
    now: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    now = time.time() if now is None else now
    body: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": service,
        "exp": int(now + lifetime),
        "nbf": int(now if not_before is None else not_before),
        "iat": int(now),
        "jti": secrets.token_hex(8),
        "access": access if access is not None else [],
    }
    body.update(extra)
    return {key: value for key, value in body.items() if value is not None}


def repository(name: str, *actions: str) -> dict[str, Any]:
    return {"type": "repository", "name": name, "actions": list(actions)}


def mint(
    key: PrivateKey,
    body: dict[str, Any],
    *,
    x5c: list[str] | None = None,
    kid: str | None = None,
    jwk: dict[str, Any] | None = None,
    algorithm: str | None = None,
) -> str:
    """A JWT as a token server signs it, with the key-finding headers asked for."""
    headers: dict[str, Any] = {}
    if x5c is not None:
        headers["x5c"] = x5c
    if kid is not None:
        headers["kid"] = kid
    if jwk is not None:
        headers["jwk"] = jwk
    if algorithm is None:
        algorithm = _algorithm_of(key)
    return jwt.encode(body, key, algorithm=algorithm, headers=headers)


def _algorithm_of(key: PrivateKey) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    return {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[key.curve.name]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], body: dict[str, Any], signature: bytes = b"") -> str:
    """A token put together by hand, whatever its header says."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"
    return f"{signing_input}.{_b64(signature)}"


def forge_hmac(secret: bytes, header: dict[str, Any], body: dict[str, Any]) -> str:
    """An HS256 token keyed with ``secret``: key confusion, when ``secret`` is a public key."""
    header = {**header, "alg": "HS256", "typ": "JWT"}
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(body).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
