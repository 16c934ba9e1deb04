"""Bearer tokens: verified as Distribution's ``token`` access controller verifies them.

A client presents ``Authorization: Bearer <JWT>``. The token is accepted when:

1. it is a compact JWS (three base64url parts) whose ``alg`` is an asymmetric
   algorithm allowed by ``signingalgorithms`` (RS256/384/512, PS256/384/512,
   ES256/384/512, EdDSA). ``none`` and the HMAC family are always refused:
   a registry holds no shared secret, and verifying ``HS256`` with a public
   key is the classic key-confusion attack. A ``crit`` header is refused.
2. its signing key is trusted, found as Distribution finds it, in this order:

   - ``x5c``: a certificate chain whose leaf holds the key and that verifies
     up to a certificate of ``rootcertbundle`` (signatures, validity periods,
     CA and path-length constraints; a leaf that is itself in the bundle is
     trusted as it is, as Go does; extended key usage is not checked, as
     Distribution asks Go not to);
   - ``jwk``: an embedded key, trusted when it carries a chain as above (whose
     leaf holds that very key) or when it is one of the trusted keys;
   - ``kid``: the ID of a trusted key. A certificate of ``rootcertbundle`` is
     known by its libtrust key ID (``ABCD:EFGH:…``, what Distribution 2.x
     tokens carry) and by its RFC 7638 JWK thumbprint (what 3.x uses); a key
     of ``jwks`` by its own ``kid``.
3. the signature verifies with that key, and the key suits the algorithm
   (an RSA key for RS/PS, the named curve for ES, Ed25519 for EdDSA);
4. ``iss`` is the configured issuer and ``aud`` (a string or a list) contains
   the configured service;
5. ``exp`` and ``nbf`` (seconds since the epoch) hold, with 60 s of leeway for
   clock skew. A token without ``exp`` is expired, as in Distribution.

What it grants is its ``access`` claim: ``[{"type", "name", "actions"}]``,
where the action ``*`` stands for every action.

Every refusal is ``Unauthorized`` with a ``Bearer`` challenge naming the scopes
the request needs, and ``error="invalid_token"`` for a bad token or
``error="insufficient_scope"`` for a good one that lacks them. The reason is
logged, never told to the client.

A verified token is remembered (by its exact text) until it expires, so each
token's signature and chain are checked once, not on every request of a push.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import jwt
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtensionOID

from cargohold.auth.access import Access, Grant, format_scope, quote
from cargohold.errors import ConfigError, Unauthorized

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "LEEWAY",
    "InvalidToken",
    "PublicKey",
    "TokenAccessController",
    "jwk_thumbprint",
    "libtrust_key_id",
    "load_certificates",
    "verify_chain",
]

log = logging.getLogger("cargohold.auth")

PublicKey: TypeAlias = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)

#: Clock skew allowed on ``exp`` and ``nbf``, as Distribution's ``token.Leeway``.
LEEWAY = 60.0
ASYMMETRIC_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
_CURVES = {"ES256": ec.SECP256R1, "ES384": ec.SECP384R1, "ES512": ec.SECP521R1}
#: Distribution 3 refuses a longer audience list (2.x takes only a string).
_MAX_AUDIENCES = 10
#: How deep a certificate chain may go; real ones have one or two intermediates.
_MAX_CHAIN = 8
#: Verified tokens and chains remembered at most; past that the memory starts over.
_CACHE_MAX = 4096
# The extensions Go's x509 understands; a critical one outside this set fails a chain there.
_HANDLED_EXTENSIONS = frozenset(
    {
        ExtensionOID.KEY_USAGE,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.NAME_CONSTRAINTS,
        ExtensionOID.CRL_DISTRIBUTION_POINTS,
        ExtensionOID.CERTIFICATE_POLICIES,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.EXTENDED_KEY_USAGE,
    }
)


class InvalidToken(Exception):
    """A token that is malformed, untrusted, expired or meant for someone else."""


# -- keys ---------------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _spki(key: PublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def libtrust_key_id(key: PublicKey) -> str:
    """The libtrust key ID: SHA-256 of the DER public key, 240 bits in base32 groups of 4.

    What Distribution 2.x names a trusted key by, and what its tokens carry in ``kid``.
    """
    encoded = base64.b32encode(hashlib.sha256(_spki(key)).digest()[:30]).decode("ascii")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


def jwk_thumbprint(key: PublicKey) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url) of ``key``."""
    members: dict[str, str]
    if isinstance(key, rsa.RSAPublicKey):
        numbers = key.public_numbers()
        members = {
            "e": _b64url(numbers.e.to_bytes((numbers.e.bit_length() + 7) // 8, "big")),
            "kty": "RSA",
            "n": _b64url(numbers.n.to_bytes((numbers.n.bit_length() + 7) // 8, "big")),
        }
    elif isinstance(key, ec.EllipticCurvePublicKey):
        point = key.public_numbers()
        size = (key.curve.key_size + 7) // 8  # RFC 7518 6.2.1.2: full-length coordinates
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        members = {
            "crv": curve.get(key.curve.name, key.curve.name),
            "kty": "EC",
            "x": _b64url(point.x.to_bytes(size, "big")),
            "y": _b64url(point.y.to_bytes(size, "big")),
        }
    else:
        raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        crv = "Ed25519" if isinstance(key, ed25519.Ed25519PublicKey) else "Ed448"
        members = {"crv": crv, "kty": "OKP", "x": _b64url(raw)}
    text = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(text.encode()).digest())


def _public_key(key: object) -> PublicKey:
    if isinstance(
        key,
        rsa.RSAPublicKey
        | ec.EllipticCurvePublicKey
        | ed25519.Ed25519PublicKey
        | ed448.Ed448PublicKey,
    ):
        return key
    raise ValueError(f"unsupported key type {type(key).__name__}")


def load_certificates(path: str, key: str) -> list[x509.Certificate]:
    """The certificates of a PEM bundle; ``ConfigError`` naming ``key`` when there are none."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ConfigError(key, f"{path} holds no PEM certificate") from None
    for certificate in certificates:
        try:
            _public_key(certificate.public_key())
        except (ValueError, UnsupportedAlgorithm):
            raise ConfigError(
                key, f"{path}: {certificate.subject.rfc4514_string()} has an unsupported key"
            ) from None
    return certificates


def _load_jwks(path: str, key: str) -> dict[str, PublicKey]:
    try:
        with open(path, "rb") as file:
            document = json.loads(file.read())
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(key, f"{path} is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigError(key, f'{path} is not a JWK set (no "keys" list)')
    keys: dict[str, PublicKey] = {}
    for entry in entries:
        kid = entry.get("kid") if isinstance(entry, dict) else None
        if not isinstance(kid, str) or not kid:
            raise ConfigError(key, f'{path}: every key needs a "kid" to be found by')
        if entry.get("kty") == "oct":
            # A shared secret would let HS256 tokens in: cargohold trusts public keys only.
            log.warning("jwks %s: key %r is a shared secret (oct); it is ignored", path, kid)
            continue
        try:
            found = jwt.PyJWK(entry).key
            keys[kid] = _public_key(
                found.public_key() if hasattr(found, "private_bytes") else found
            )
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            raise ConfigError(key, f"{path}: key {kid!r} is not a usable public key") from None
    return keys


# -- certificate chains -------------------------------------------------------------------


def _timestamp(moment: datetime) -> float:
    return moment.timestamp()


def _check_certificate(cert: x509.Certificate, now: float) -> None:
    if not _timestamp(cert.not_valid_before_utc) <= now <= _timestamp(cert.not_valid_after_utc):
        raise InvalidToken(f"certificate {cert.subject.rfc4514_string()} is not valid now")
    for extension in cert.extensions:
        if extension.critical and extension.oid not in _HANDLED_EXTENSIONS:
            raise InvalidToken(f"certificate has an unhandled critical extension {extension.oid}")
    if isinstance(cert.signature_hash_algorithm, hashes.SHA1 | hashes.MD5):
        # Go refuses these signatures, and so must we, or a token would work here only.
        raise InvalidToken("certificate signed with SHA-1 or MD5")


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


def _may_issue(issuer: x509.Certificate, below: int, is_root: bool) -> bool:
    """Whether ``issuer`` may sign a chain with ``below`` intermediates under it (Go's rules)."""
    try:
        constraints: x509.BasicConstraints | None = issuer.extensions.get_extension_for_class(
            x509.BasicConstraints
        ).value
    except x509.ExtensionNotFound:
        constraints = None
    if not is_root and (constraints is None or not constraints.ca):
        return False
    return (
        constraints is None or constraints.path_length is None or below <= constraints.path_length
    )


def verify_chain(
    chain: Sequence[x509.Certificate], roots: Sequence[x509.Certificate], now: float
) -> tuple[float, float]:
    """Check that ``chain[0]`` leads to one of ``roots``; the window in which all of it is valid.

    ``chain[1:]`` are intermediates, in any order, as in an ``x5c`` header.
    Raises InvalidToken when no path to a root verifies.
    """
    if not chain:
        raise InvalidToken("empty certificate chain")
    leaf, pool = chain[0], list(chain[1:])
    root_set = {root.public_bytes(serialization.Encoding.DER) for root in roots}

    def extend(path: list[x509.Certificate]) -> list[x509.Certificate] | None:
        cert = path[-1]
        _check_certificate(cert, now)
        if cert.public_bytes(serialization.Encoding.DER) in root_set:
            return path
        if len(path) > _MAX_CHAIN:
            return None
        below = len(path) - 1  # intermediates under the next issuer
        for root in roots:
            if (
                root.subject == cert.issuer
                and _signed_by(cert, root)
                and _may_issue(root, below, is_root=True)
            ):
                _check_certificate(root, now)
                return [*path, root]
        for issuer in pool:
            if issuer in path or issuer.subject != cert.issuer or not _signed_by(cert, issuer):
                continue
            if _may_issue(issuer, below, is_root=False):
                found = extend([*path, issuer])
                if found is not None:
                    return found
        return None

    found = extend([leaf])
    if found is None:
        raise InvalidToken("certificate chain does not lead to a trusted root")
    return (
        max(_timestamp(cert.not_valid_before_utc) for cert in found),
        min(_timestamp(cert.not_valid_after_utc) for cert in found),
    )


# -- tokens -------------------------------------------------------------------------------


_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


def _decode(part: str) -> bytes:
    # Strictly: Python's decoder would skip stray characters that Go's refuses.
    if not _BASE64URL.fullmatch(part) or len(part) % 4 == 1:
        raise InvalidToken("not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _object(data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except ValueError:
        raise InvalidToken("not JSON") from None
    if not isinstance(document, dict):
        raise InvalidToken("not a JSON object")
    return document


def _integer(claims: Mapping[str, Any], name: str) -> int:
    # Go decodes these into int64: absent or null is 0, anything but an integer is malformed.
    value = claims.get(name)
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidToken(f"{name} is not an integer")
    return value


def _string(mapping: Mapping[str, Any], name: str) -> str:
    value = mapping.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidToken(f"{name} is not a string")
    return value


def _audience(claims: Mapping[str, Any]) -> list[str]:
    value = claims.get("aud")
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if (
        isinstance(value, list)
        and len(value) <= _MAX_AUDIENCES
        and all(isinstance(item, str) for item in value)
    ):
        return value
    raise InvalidToken("aud is neither a string nor a list of at most 10 strings")


def _access(claims: Mapping[str, Any]) -> list[Access]:
    entries = claims.get("access")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise InvalidToken("access is not a list")
    found: list[Access] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise InvalidToken("an access entry is not an object")
        type_, name = _string(entry, "type"), _string(entry, "name")
        _string(entry, "class")
        actions = entry.get("actions") or []
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise InvalidToken("actions is not a list of strings")
        found.extend(Access.of(type_, name, action) for action in actions)
    return found


def _suits(algorithm: str, key: PublicKey) -> bool:
    if algorithm.startswith(("RS", "PS")):
        return isinstance(key, rsa.RSAPublicKey)
    if algorithm.startswith("ES"):
        return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(
            key.curve, _CURVES[algorithm]
        )
    return isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)


@dataclass(frozen=True, slots=True)
class _Verified:
    grant: Grant
    #: The span of time in which the token is good: ``nbf``/``exp`` with leeway, and
    #: the validity of the certificates that vouched for its key.
    valid_from: float
    valid_until: float


class TokenAccessController:
    """Distribution's ``token`` access controller: bearer tokens from a trusted issuer."""

    def __init__(
        self,
        *,
        realm: str,
        service: str,
        issuer: str,
        roots: Sequence[x509.Certificate] = (),
        jwks: Mapping[str, PublicKey] | None = None,
        algorithms: Iterable[str] = (),
        autoredirect: bool = False,
        autoredirectpath: str = "/auth/token",
    ) -> None:
        self.realm = realm
        self.service = service
        self.issuer = issuer
        self.autoredirect = autoredirect
        self.autoredirectpath = autoredirectpath
        self.roots = list(roots)
        wanted = list(algorithms) or list(ASYMMETRIC_ALGORITHMS)
        refused = [name for name in wanted if name not in ASYMMETRIC_ALGORITHMS]
        if refused:
            log.warning("token signing algorithms %s are not accepted (public keys only)", refused)
        every = jwt.algorithms.get_default_algorithms()
        self._algorithms = {name: every[name] for name in wanted if name in ASYMMETRIC_ALGORITHMS}
        self._keys: dict[str, PublicKey] = {}
        for root in self.roots:
            key = _public_key(root.public_key())
            self._keys[libtrust_key_id(key)] = key
            self._keys[jwk_thumbprint(key)] = key
        self._keys.update(jwks or {})
        self._trusted_spki = {_spki(key) for key in self._keys.values()}
        self._tokens: dict[str, _Verified] = {}
        self._chains: dict[tuple[str, ...], tuple[PublicKey, float, float]] = {}

    @classmethod
    def from_config(
        cls,
        *,
        realm: str,
        service: str,
        issuer: str,
        rootcertbundle: str = "",
        jwks: str = "",
        signingalgorithms: Iterable[str] = (),
        autoredirect: bool = False,
        autoredirectpath: str = "/auth/token",
    ) -> TokenAccessController:
        """A controller whose trusted keys come from files; ``ConfigError`` when they are bad."""
        roots = (
            load_certificates(rootcertbundle, "auth.token.rootcertbundle") if rootcertbundle else []
        )
        keys = _load_jwks(jwks, "auth.token.jwks") if jwks else {}
        if not roots and not keys:
            raise ConfigError("auth.token", "no key to verify tokens with")
        return cls(
            realm=realm,
            service=service,
            issuer=issuer,
            roots=roots,
            jwks=keys,
            algorithms=signingalgorithms,
            autoredirect=autoredirect,
            autoredirectpath=autoredirectpath,
        )

    # -- the access controller ------------------------------------------------------------

    async def authorize(self, headers: Mapping[str, str], access: Sequence[Access]) -> Grant:
        return self._decide(headers, access)

    def authorize_now(self, headers: Mapping[str, str], access: Sequence[Access]) -> Grant | None:
        # Verifying a token needs nothing but the CPU (and verified tokens are remembered).
        try:
            return self._decide(headers, access, quiet=True)
        except Unauthorized:
            return None

    def _decide(
        self, headers: Mapping[str, str], access: Sequence[Access], *, quiet: bool = False
    ) -> Grant:
        scheme, _, raw = headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            raise self._challenge(headers, access, None)
        try:
            grant = self.verify(raw.strip())
        except InvalidToken as exc:
            if not quiet:  # the awaited path decides again, and logs it then
                log.info("token refused: %s", exc)
            raise self._challenge(headers, access, "invalid_token") from None
        if not all(grant.permits(item) for item in access):
            raise self._challenge(headers, access, "insufficient_scope")
        return grant

    def _challenge(
        self, headers: Mapping[str, str], access: Sequence[Access], error: str | None
    ) -> Unauthorized:
        realm = self.realm
        if self.autoredirect:
            # Distribution 3's rule: the realm follows the host the client asked for.
            scheme = headers.get("X-Forwarded-Proto") or "https"
            realm = f"{scheme}://{headers.get('Host', '')}{self.autoredirectpath}"
        challenge = f'Bearer realm="{quote(realm)}",service="{quote(self.service)}"'
        scope = format_scope(access)
        if scope:
            challenge += f',scope="{quote(scope)}"'
        if error:
            challenge += f',error="{error}"'
        return Unauthorized(detail=[item.record() for item in access] or None, challenge=challenge)

    # -- verification ---------------------------------------------------------------------

    def verify(self, raw: str, now: float | None = None) -> Grant:
        """The grant of the token ``raw``; InvalidToken saying why when it is not good now."""
        now = time.time() if now is None else now
        verified = self._tokens.get(raw)
        if verified is None:
            verified = self._verify(raw, now)
            if len(self._tokens) >= _CACHE_MAX:
                self._tokens.clear()
            self._tokens[raw] = verified
        if now < verified.valid_from or now > verified.valid_until:
            raise InvalidToken("expired, or not valid yet")
        return verified.grant

    def _verify(self, raw: str, now: float) -> _Verified:
        parts = raw.split(".")
        if len(parts) != 3:
            raise InvalidToken("not a compact JWS")
        header = _object(_decode(parts[0]))
        signature = _decode(parts[2])
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise InvalidToken(f"signing algorithm {algorithm!r} is not accepted")
        if "crit" in header:
            raise InvalidToken("critical header parameters are not supported")
        key, valid_from, valid_until = self._signing_key(header, now)
        if not _suits(algorithm, key):
            raise InvalidToken(f"a {type(key).__name__} cannot make {algorithm} signatures")
        signed = f"{parts[0]}.{parts[1]}".encode("ascii")
        try:
            good = self._algorithms[algorithm].verify(signed, key, signature)
        except (ValueError, TypeError, InvalidSignature):
            good = False
        if not good:
            raise InvalidToken("bad signature")
        claims = _object(_decode(parts[1]))
        if _string(claims, "iss") != self.issuer:
            raise InvalidToken(f"issuer {claims.get('iss')!r} is not trusted")
        if self.service not in _audience(claims):
            raise InvalidToken(f"token is for {claims.get('aud')!r}, not {self.service!r}")
        expires, not_before = _integer(claims, "exp"), _integer(claims, "nbf")
        _integer(claims, "iat")
        subject = _string(claims, "sub")
        _string(claims, "jti")
        grant = Grant.of(subject, _access(claims))
        return _Verified(
            grant,
            max(not_before - LEEWAY, valid_from),
            min(expires + LEEWAY, valid_until),
        )

    def _signing_key(self, header: Mapping[str, Any], now: float) -> tuple[PublicKey, float, float]:
        """The trusted key that signed the token, and when what vouches for it is valid."""
        x5c = header.get("x5c")
        jwk = header.get("jwk")
        kid = header.get("kid")
        if x5c:
            return self._chain_key(x5c, now)
        if jwk is not None:
            return self._embedded_key(jwk, now)
        if kid:
            if not isinstance(kid, str):
                raise InvalidToken("kid is not a string")
            key = self._keys.get(kid)
            if key is None:
                raise InvalidToken(f"token signed by untrusted key with ID {kid!r}")
            return key, float("-inf"), float("inf")
        raise InvalidToken("the token names no signing key (x5c, jwk or kid)")

    def _chain_key(self, x5c: object, now: float) -> tuple[PublicKey, float, float]:
        if not isinstance(x5c, list) or not all(isinstance(item, str) for item in x5c):
            raise InvalidToken("x5c is not a list of strings")
        known = self._chains.get(tuple(x5c))
        if known is not None and known[1] <= now <= known[2]:
            return known
        try:
            chain = [
                x509.load_der_x509_certificate(base64.b64decode(item, validate=True))
                for item in x5c
            ]
            key = _public_key(chain[0].public_key())
        except (binascii.Error, ValueError, UnsupportedAlgorithm):
            raise InvalidToken("x5c holds something that is not a certificate") from None
        valid_from, valid_until = verify_chain(chain, self.roots, now)
        if len(self._chains) >= _CACHE_MAX:
            self._chains.clear()
        self._chains[tuple(x5c)] = (key, valid_from, valid_until)
        return key, valid_from, valid_until

    def _embedded_key(self, jwk: object, now: float) -> tuple[PublicKey, float, float]:
        if not isinstance(jwk, dict) or jwk.get("kty") == "oct":
            raise InvalidToken("jwk is not a public key")
        try:
            found = jwt.PyJWK(jwk).key
            key = _public_key(found.public_key() if hasattr(found, "private_bytes") else found)
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            raise InvalidToken("jwk is not a usable public key") from None
        chain = jwk.get("x5c")
        if chain:
            leaf, valid_from, valid_until = self._chain_key(chain, now)
            if _spki(leaf) != _spki(key):
                raise InvalidToken("the jwk is not the key of its certificate")
            return key, valid_from, valid_until
        if _spki(key) not in self._trusted_spki:
            raise InvalidToken("untrusted jwk with no certificate chain")
        return key, float("-inf"), float("inf")
