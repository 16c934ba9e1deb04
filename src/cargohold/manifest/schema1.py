"""Docker image manifest v2 schema 1, signed with libtrust's "pretty" JSON web signatures.

A signed schema1 manifest is a JSON object whose last member, ``signatures``, was spliced in
after signing. Each signature's ``protected`` header records ``formatLength`` and
``formatTail``: the signed text (the *canonical* payload) is the first ``formatLength`` bytes
of the manifest followed by ``formatTail`` (usually ``"\\n}"``), i.e. the manifest as it was
before ``signatures`` was added. Each signature is a JWS over
``protected + "." + base64url(canonical)``; its key is the first certificate of
``header.x5c`` when there is a chain (the chain itself is not checked), else ``header.jwk``.

How CNCF Distribution stores schema1 (what a root it wrote looks like)
----------------------------------------------------------------------

- **Digest.** A schema1 manifest's digest is the SHA-256 of its canonical payload, not of
  the bytes pushed or served (``manifest/schema1/manifest.go`` registers an unmarshal
  function whose descriptor digests ``Canonical``). ``Docker-Content-Digest``, pulls by
  digest and the revision path all use it.
- **Revision blob.** Every 2.x release stores the canonical payload, and only that, as the
  revision blob: ``blobs/sha256/<2>/<hex>/data`` plus
  ``repositories/<name>/_manifests/revisions/sha256/<hex>/link`` (before 2.3:
  ``registry/storage/revisionstore.go``; from 2.3, when schema2 arrived:
  ``signedmanifesthandler.go``, which puts ``Canonical`` under the media type
  ``...manifest.v1+json``; that type, not ``+prettyjws``, is what the blob descriptor
  cache records for it).
- **Signatures, 2.0-2.4.** Each signature, in the compact JSON form libtrust's
  ``Signatures()`` produces (``{"header":{"jwk":…,"alg":…},"signature":…,"protected":…}``),
  was stored as an ordinary blob and linked at
  ``_manifests/revisions/sha256/<manifest hex>/signatures/sha256/<signature hex>/link``
  (``paths.go``: ``manifestSignatureLinkPathSpec``; ``signaturestore.go``). A GET listed
  that folder (sha256 only), read each linked blob and merged them back onto the canonical
  payload (libtrust ``NewJSONSignature(canonical, sigs...)`` then
  ``PrettySignature("signatures")``: what :func:`merge_signatures` does). 2.4 added
  ``compatibility.schema1.disablesignaturestore`` (distribution PR #1420).
- **Signatures, 2.5-2.8.** The signature store was removed (distribution issue #1596).
  A PUT verifies the signatures, then drops them. A GET reads the canonical payload and
  signs it afresh with the registry's own key (``compatibility.schema1.signingkeyfile``, or
  an ephemeral P-256 key generated at every start): 2.8.2 serves a pretty JWS carrying that
  one signature, as ``...v1+prettyjws``, with the canonical digest. Its body therefore
  differs from what was pushed and from one restart to the next; only the canonical part
  and the digest are stable. 2.8 refuses schema1 PUTs unless
  ``compatibility.schema1.enabled`` is true, but still serves stored ones
  (``v1unsupportedhandler.go`` unmarshals, and only refuses ``Put``).
- **Garbage collection** (from 2.5 on) marks manifest digests and their references only,
  so it sweeps signature blobs: a root that went through it may hold signature links whose
  blob is gone. 2.8 ignores the ``signatures/`` folder entirely, so writing it is harmless.

So a store that must read those roots stores :attr:`SignedManifest.payload` (the canonical
bytes) as the revision, may keep :attr:`SignedManifest.signatures` beside it as 2.0-2.4
did, and on GET merges whatever signatures it finds (skipping links to missing blobs) with
:func:`merge_signatures`, or, when there are none, signs the canonical payload with its own
key through :func:`create_signature`, as 2.5-2.8 do.

Errors: a body that is not a JSON object, or a canonical payload whose fields are malformed,
is ``ManifestInvalid``; missing, malformed or failing signatures are ``ManifestUnverified``;
a ``name`` outside the repository grammar is ``NameInvalid``, as in Distribution.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Self

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from cargohold.descriptor import Descriptor
from cargohold.digest import Digest
from cargohold.errors import DigestInvalid, ManifestInvalid, ManifestUnverified, NameInvalid
from cargohold.manifest.base import Manifest, check_schema_version, load_object, unique
from cargohold.manifest.mediatypes import SCHEMA1, SCHEMA1_LAYER, SCHEMA1_SIGNED
from cargohold.reference import validate_name

__all__ = [
    "UNKNOWN_SIZE",
    "PrivateKey",
    "SignedManifest",
    "create_signature",
    "merge_signatures",
    "sign",
]

#: Schema1 layers carry no size: their descriptors report this instead.
UNKNOWN_SIZE: Final = -1
#: No real manifest has more than a couple of signatures; each one costs a verification.
MAX_SIGNATURES: Final = 64
#: libtrust reads an RSA exponent into 32 bits; a bigger one only makes verification slow.
MAX_RSA_EXPONENT_BYTES: Final = 4
MAX_RSA_BITS: Final = 16384

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

# JWK curve name, JWS algorithm, hash, and the octet length of a coordinate.
_CURVES: Final[Mapping[str, tuple[str, type[hashes.HashAlgorithm], int]]] = {
    "P-256": ("ES256", hashes.SHA256, 32),
    "P-384": ("ES384", hashes.SHA384, 48),
    "P-521": ("ES512", hashes.SHA512, 66),
}
_CURVE_NAMES: Final[Mapping[str, str]] = {
    "secp256r1": "P-256",
    "secp384r1": "P-384",
    "secp521r1": "P-521",
}
_CURVE_OBJECTS: Final[Mapping[str, ec.EllipticCurve]] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
_RSA_HASHES: Final[Mapping[str, type[hashes.HashAlgorithm]]] = {
    "RS256": hashes.SHA256,
    "RS384": hashes.SHA384,
    "RS512": hashes.SHA512,
}
_BASE64URL: Final = re.compile(rb"[A-Za-z0-9_-]*")


# --- encodings -------------------------------------------------------------------------


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: object, what: str) -> bytes:
    # JOSE's unpadded base64url as libtrust reads it: newlines and spaces dropped, and a
    # length of 4n+1 (which no byte string encodes to) refused.
    if not isinstance(text, str):
        raise ManifestUnverified(f"{what}: not a string")
    raw = text.replace("\n", "").replace(" ", "").encode("ascii", "replace")
    if _BASE64URL.fullmatch(raw) is None or len(raw) % 4 == 1:
        raise ManifestUnverified(f"{what}: not base64url")
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))


def _int_bytes(value: int, length: int | None = None) -> bytes:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(size, "big")


def _key_id(public_key: PublicKey) -> str:
    """libtrust's key ID: 240 bits of the SHA-256 of the DER public key, base32, in 4s."""
    der = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii")
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))


def _go_json(value: object, indent: str | None = None) -> str:
    """JSON as Go's encoding/json writes it: UTF-8, with <, >, & and U+2028/9 escaped."""
    if indent is None:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    else:
        text = json.dumps(value, ensure_ascii=False, indent=indent)
    # These characters only occur inside strings, so replacing them everywhere is safe.
    for char, escape in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(char, escape)
    return text


# --- keys --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    """A public key as libtrust models it: its JWK (canonical form), ID and verifier."""

    jwk: dict[str, str]
    key_id: str
    public_key: PublicKey | None = None

    def verify(self, alg: object, signature: bytes, signed: bytes) -> None:
        key = self.public_key
        if isinstance(key, ec.EllipticCurvePublicKey):
            _verify_ec(key, self.jwk["crv"], alg, signature, signed)
        elif isinstance(key, rsa.RSAPublicKey):
            _verify_rsa(key, alg, signature, signed)
        else:
            raise ManifestUnverified("missing public key")


def _verify_ec(
    key: ec.EllipticCurvePublicKey, crv: str, alg: object, signature: bytes, signed: bytes
) -> None:
    expected, hash_type, octets = _CURVES[crv]
    if alg != expected:
        raise ManifestUnverified(f"alg {alg!r} does not suit a {crv} key")
    # JWS carries r and s as two fixed-width big-endian numbers; cryptography wants DER.
    if len(signature) != 2 * octets:
        raise ManifestUnverified("signature has the wrong length for its curve")
    r, s = int.from_bytes(signature[:octets], "big"), int.from_bytes(signature[octets:], "big")
    try:
        key.verify(encode_dss_signature(r, s), signed, ec.ECDSA(hash_type()))
    except InvalidSignature as exc:
        raise ManifestUnverified("invalid signature") from exc


def _verify_rsa(key: rsa.RSAPublicKey, alg: object, signature: bytes, signed: bytes) -> None:
    hash_type = _RSA_HASHES.get(alg) if isinstance(alg, str) else None
    if hash_type is None:
        raise ManifestUnverified(f"alg {alg!r} does not suit an RSA key")
    try:
        key.verify(signature, signed, padding.PKCS1v15(), hash_type())
    except InvalidSignature as exc:
        raise ManifestUnverified("invalid signature") from exc


def _key_from_public(public_key: object) -> _Key:
    """Model a key as libtrust does: its JWK holds the minimal big-endian numbers (EC
    coordinates padded to the curve's width) and its ID, with keys in sorted order."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        crv = _CURVE_NAMES.get(public_key.curve.name)
        if crv is None:
            raise ManifestUnverified(f"unsupported elliptic curve {public_key.curve.name}")
        octets = _CURVES[crv][2]
        numbers = public_key.public_numbers()
        jwk = {
            "crv": crv,
            "kid": _key_id(public_key),
            "kty": "EC",
            "x": _b64url_encode(_int_bytes(numbers.x, octets)),
            "y": _b64url_encode(_int_bytes(numbers.y, octets)),
        }
    elif isinstance(public_key, rsa.RSAPublicKey):
        rsa_numbers = public_key.public_numbers()
        jwk = {
            "e": _b64url_encode(_int_bytes(rsa_numbers.e)),
            "kid": _key_id(public_key),
            "kty": "RSA",
            "n": _b64url_encode(_int_bytes(rsa_numbers.n)),
        }
    else:
        raise ManifestUnverified(f"unsupported key type {type(public_key).__name__}")
    return _Key(jwk, jwk["kid"], public_key)


def _key_from_jwk(jwk: object) -> _Key:
    """Read a JWK as libtrust does, including its check that ``kid`` names the key."""
    if not isinstance(jwk, dict):
        raise ManifestUnverified("jwk: not an object")
    kty = jwk.get("kty")
    if kty == "EC":
        key = _key_from_public(_ec_public_key(jwk))
    elif kty == "RSA":
        key = _key_from_public(_rsa_public_key(jwk))
    else:
        raise ManifestUnverified(f"jwk: unsupported key type {kty!r}")
    if "kid" in jwk and jwk["kid"] != key.key_id:
        raise ManifestUnverified("jwk: kid does not match the key")
    return key


def _ec_public_key(jwk: Mapping[str, Any]) -> ec.EllipticCurvePublicKey:
    crv = jwk.get("crv")
    if not isinstance(crv, str) or crv not in _CURVES:
        raise ManifestUnverified(f"jwk: unsupported curve {crv!r}")
    octets = _CURVES[crv][2]
    xb, yb = _b64url_decode(jwk.get("x"), "jwk.x"), _b64url_decode(jwk.get("y"), "jwk.y")
    if len(xb) != octets or len(yb) != octets:
        raise ManifestUnverified(f"jwk: coordinates of a {crv} key must be {octets} bytes")
    x, y = int.from_bytes(xb, "big"), int.from_bytes(yb, "big")
    try:
        return ec.EllipticCurvePublicNumbers(x, y, _CURVE_OBJECTS[crv]).public_key()
    except ValueError as exc:
        raise ManifestUnverified(f"jwk: not a point of {crv}") from exc


def _rsa_public_key(jwk: Mapping[str, Any]) -> rsa.RSAPublicKey:
    nb, eb = _b64url_decode(jwk.get("n"), "jwk.n"), _b64url_decode(jwk.get("e"), "jwk.e")
    n, e = int.from_bytes(nb, "big"), int.from_bytes(eb, "big")
    if (e.bit_length() + 7) // 8 > MAX_RSA_EXPONENT_BYTES or n.bit_length() > MAX_RSA_BITS:
        raise ManifestUnverified("jwk: RSA key out of range")
    try:
        return rsa.RSAPublicNumbers(e, n).public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ManifestUnverified(f"jwk: not a valid RSA key: {exc}") from exc


def _key_from_chain(chain: list[Any]) -> _Key:
    first = chain[0]
    if not isinstance(first, str):
        raise ManifestUnverified("x5c: not a list of strings")
    try:
        der = base64.b64decode(first, validate=True)
        certificate = x509.load_der_x509_certificate(der)
        public = certificate.public_key()
    except (binascii.Error, ValueError) as exc:
        raise ManifestUnverified(f"x5c[0]: not a certificate: {exc}") from exc
    return _key_from_public(public)


# --- signatures --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Signature:
    """One parsed JWS of a signed manifest."""

    #: The header's JWK in libtrust's canonical form, None when the header had none.
    jwk: dict[str, str] | None
    #: What libtrust sorts signatures by (the JWK's key ID).
    key_id: str
    #: The key that verifies: the first certificate's when there is a chain, else the JWK's.
    verifier: _Key | None
    alg: str
    chain: list[str] | None
    signature: str
    protected: str

    def sort_key(self) -> tuple[str, str]:
        # libtrust orders signatures by key ID, then by signature text.
        return (self.key_id, self.signature)

    def to_json(self) -> dict[str, Any]:
        """The signature as libtrust marshals it (field order of its Go structs)."""
        header: dict[str, Any] = {}
        if self.jwk is not None:
            header["jwk"] = self.jwk
        header["alg"] = self.alg
        if self.chain:
            header["x5c"] = self.chain
        return {"header": header, "signature": self.signature, "protected": self.protected}


def _parse_signature(value: object, where: str) -> _Signature:
    """Read one signature and the keys it names (verification is separate)."""
    if not isinstance(value, dict):
        raise ManifestUnverified(f"{where}: not an object")
    header = value.get("header")
    if not isinstance(header, dict):
        raise ManifestUnverified(f"{where}.header: not an object")
    alg = header.get("alg", "")
    chain = header.get("x5c")
    signature = value.get("signature")
    protected = value.get("protected")
    if not isinstance(alg, str):
        raise ManifestUnverified(f"{where}.header.alg: not a string")
    if chain is not None and not (
        isinstance(chain, list) and all(isinstance(c, str) for c in chain)
    ):
        raise ManifestUnverified(f"{where}.header.x5c: not a list of strings")
    if not isinstance(signature, str) or not isinstance(protected, str):
        raise ManifestUnverified(f"{where}: signature and protected must be strings")
    try:
        key = _key_from_jwk(header["jwk"]) if "jwk" in header else None
        verifier = _key_from_chain(chain) if chain else key
    except ManifestUnverified as exc:
        raise ManifestUnverified(f"{where}.header.{exc.message}") from exc
    key_id = key.key_id if key else verifier.key_id if verifier else ""
    jwk = key.jwk if key else None
    return _Signature(jwk, key_id, verifier, alg, chain or None, signature, protected)


def _read_format(protected: str, where: str) -> tuple[int, bytes]:
    try:
        header = json.loads(_b64url_decode(protected, f"{where}.protected"))
    except (ValueError, RecursionError) as exc:
        raise ManifestUnverified(f"{where}.protected: not JSON") from exc
    if not isinstance(header, dict):
        raise ManifestUnverified(f"{where}.protected: not an object")
    length = header.get("formatLength")
    # Go decodes the number as a float64 and truncates it.
    if isinstance(length, float) and length.is_integer():
        length = int(length)
    if type(length) is not int:
        raise ManifestUnverified(f"{where}.protected: formatLength missing or not an integer")
    tail = _b64url_decode(header.get("formatTail"), f"{where}.protected.formatTail")
    return length, tail


def _format_of(canonical: bytes) -> tuple[int, bytes]:
    """libtrust's split of a payload into the part kept and the tail moved to the header."""
    close = len(canonical.rstrip()) - 1
    if close < 0 or canonical[close : close + 1] != b"}":
        raise ManifestInvalid("canonical manifest does not end with '}'")
    length = len(canonical[:close].rstrip())
    if length == 0 or canonical[length - 1 : length] == b",":
        raise ManifestInvalid("canonical manifest is not a JSON object libtrust can sign")
    return length, canonical[length:]


def _indent_of(canonical: bytes) -> bytes:
    # libtrust keeps the payload's own indentation: whatever lies between "{\n" and the
    # first quote.
    if len(canonical) > 2 and canonical[:2] == b"{\n":
        quote = canonical.find(b'"', 1)
        if quote > 1:
            return canonical[2:quote]
    return b""


def _pretty(canonical: bytes, signatures: Sequence[_Signature]) -> bytes:
    """libtrust's PrettySignature: the canonical payload with ``signatures`` spliced in."""
    length, _ = _format_of(canonical)
    ordered = [s.to_json() for s in sorted(signatures, key=_Signature.sort_key)]
    # surrogateescape carries whatever bytes the indentation holds through str and back.
    indent = _indent_of(canonical).decode("utf-8", "surrogateescape")
    if indent:
        block = _go_json(ordered, indent).replace("\n", "\n" + indent)
        joined = f',\n{indent}"signatures": {block}\n}}'
    else:
        joined = ',"signatures":' + _go_json(ordered) + "}"
    return canonical[:length] + joined.encode("utf-8", "surrogateescape")


def merge_signatures(canonical: bytes, signatures: Iterable[bytes]) -> bytes:
    """Rebuild the pretty-JWS manifest from its canonical payload and its signatures.

    This is what Distribution 2.0-2.4 did on GET with the signatures stored beside the
    revision; the result is byte for byte what libtrust would produce. Signatures are not
    verified here (they were when the manifest was pushed).
    """
    parsed = []
    for i, raw in enumerate(signatures):
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise ManifestInvalid(f"signatures[{i}]: not JSON") from exc
        try:
            parsed.append(_parse_signature(value, f"signatures[{i}]"))
        except ManifestUnverified as exc:
            raise ManifestInvalid(exc.message) from exc
    if not parsed:
        raise ManifestUnverified("a schema1 manifest needs at least one signature")
    return _pretty(canonical, parsed)


def create_signature(
    canonical: bytes, private_key: PrivateKey, *, now: datetime | None = None
) -> bytes:
    """Sign a canonical payload as libtrust does; return the signature as stored (JSON).

    EC keys sign with the algorithm their curve dictates (ES256/384/512), RSA keys with
    RS256, as libtrust's ``Sign`` does when asked for SHA-256.
    """
    length, tail = _format_of(canonical)
    when = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    header = {"formatLength": length, "formatTail": _b64url_encode(tail), "time": when}
    protected = _b64url_encode(_go_json(header).encode("utf-8"))
    signed = f"{protected}.{_b64url_encode(canonical)}".encode("ascii")
    key = _key_from_public(private_key.public_key())
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        alg, hash_type, octets = _CURVES[key.jwk["crv"]]
        r, s = decode_dss_signature(private_key.sign(signed, ec.ECDSA(hash_type())))
        raw = _int_bytes(r, octets) + _int_bytes(s, octets)
    else:
        alg = "RS256"
        raw = private_key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    signature = _Signature(key.jwk, key.key_id, key, alg, None, _b64url_encode(raw), protected)
    return _go_json(signature.to_json()).encode("utf-8")


def sign(manifest: Mapping[str, Any], private_key: PrivateKey) -> bytes:
    """Serialise ``manifest`` (three-space indent, its key order kept) and sign it.

    The result is a libtrust-compatible pretty-JWS manifest, as Distribution's
    ``schema1.Sign`` produces.
    """
    canonical = _go_json(manifest, "   ").encode("utf-8")
    return merge_signatures(canonical, [create_signature(canonical, private_key)])


# --- the manifest ------------------------------------------------------------------------


class SignedManifest(Manifest):
    """A schema1 manifest: ``payload`` is the canonical (signature-less) payload.

    ``payload`` is what the storage layer stores and what the digest covers;
    :meth:`signed` is what a GET serves.
    """

    __slots__ = ("architecture", "fs_layers", "history", "name", "signatures", "tag")

    media_types = (SCHEMA1_SIGNED, SCHEMA1)

    name: str
    tag: str
    architecture: str
    fs_layers: list[Digest]
    history: list[str]
    #: Each signature as libtrust's ``Signatures()`` gives it: compact JSON, key-ID order.
    signatures: list[bytes]

    def __init__(
        self,
        canonical: bytes,
        signatures: list[bytes],
        *,
        name: str,
        tag: str,
        architecture: str,
        fs_layers: list[Digest],
        history: list[str],
    ) -> None:
        super().__init__(SCHEMA1_SIGNED, canonical)
        self.signatures = signatures
        self.name = name
        self.tag = tag
        self.architecture = architecture
        self.fs_layers = fs_layers
        self.history = history

    @property
    def canonical(self) -> bytes:
        """The signed text: the manifest without ``signatures`` (same as ``payload``)."""
        return self.payload

    def signed(self) -> bytes:
        """The pretty-JWS manifest: the canonical payload with its signatures merged in."""
        return merge_signatures(self.payload, self.signatures)

    @classmethod
    def from_body(cls, payload: bytes, body: dict[str, Any], media_type: str) -> Self:
        """Parse a pushed signed manifest and verify every signature."""
        raw = body.get("signatures")
        if not isinstance(raw, list) or not raw:
            raise ManifestUnverified("signatures: a schema1 manifest must be signed")
        if len(raw) > MAX_SIGNATURES:
            raise ManifestInvalid(f"signatures: more than {MAX_SIGNATURES}")
        signatures = [_parse_signature(value, f"signatures[{i}]") for i, value in enumerate(raw)]
        canonical = _canonical(payload, signatures)
        # The fields come from the signed text, never from the rest of the body: whatever
        # follows formatLength in the pushed bytes is covered by no signature.
        manifest = cls.from_canonical(canonical)
        encoded = _b64url_encode(canonical)
        for i, signature in enumerate(signatures):
            _verify(signature, encoded, f"signatures[{i}]")
        manifest.signatures = [
            _go_json(s.to_json()).encode("utf-8")
            for s in sorted(signatures, key=_Signature.sort_key)
        ]
        return manifest

    @classmethod
    def from_canonical(cls, canonical: bytes, signatures: Iterable[bytes] = ()) -> Self:
        """Read a stored canonical payload; ``signatures`` are kept as given, not verified."""
        body = load_object(canonical)
        check_schema_version(body, 1)
        name = _string(body, "name")
        try:
            validate_name(name)
        except NameInvalid as exc:
            raise NameInvalid(f"name: {exc.message}") from exc
        fs_layers = _fs_layers(body)
        history = _history(body)
        if len(history) != len(fs_layers):
            raise ManifestInvalid(
                f"history: {len(history)} entries for {len(fs_layers)} fsLayers; "
                "they must match one to one"
            )
        return cls(
            canonical,
            list(signatures),
            name=name,
            tag=_string(body, "tag"),
            architecture=_string(body, "architecture"),
            fs_layers=fs_layers,
            history=history,
        )

    def blobs(self) -> list[Descriptor]:
        return unique(Descriptor(SCHEMA1_LAYER, d, UNKNOWN_SIZE) for d in self.fs_layers)


def _canonical(payload: bytes, signatures: Sequence[_Signature]) -> bytes:
    formats = {_read_format(s.protected, f"signatures[{i}]") for i, s in enumerate(signatures)}
    if len(formats) != 1:
        raise ManifestUnverified("signatures: conflicting formatLength or formatTail")
    ((length, tail),) = formats
    if not 0 < length <= len(payload):
        raise ManifestUnverified("signatures: formatLength is out of range")
    return payload[:length] + tail


def _verify(signature: _Signature, encoded_payload: str, where: str) -> None:
    if signature.verifier is None:
        raise ManifestUnverified(f"{where}.header: no jwk and no x5c: missing public key")
    raw = _b64url_decode(signature.signature, f"{where}.signature")
    signed = f"{signature.protected}.{encoded_payload}".encode("ascii", "replace")
    try:
        signature.verifier.verify(signature.alg, raw, signed)
    except ManifestUnverified as exc:
        raise ManifestUnverified(f"{where}: {exc.message}") from exc


def _string(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        raise ManifestInvalid(f"{key}: not a string")
    return value


def _fs_layers(body: Mapping[str, Any]) -> list[Digest]:
    value = body.get("fsLayers")
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestInvalid("fsLayers: not a list")
    out = []
    for i, layer in enumerate(value):
        if not isinstance(layer, dict):
            raise ManifestInvalid(f"fsLayers[{i}]: not an object")
        blob_sum = layer.get("blobSum")
        if not isinstance(blob_sum, str):
            raise ManifestInvalid(f"fsLayers[{i}].blobSum: required")
        try:
            out.append(Digest.parse(blob_sum))
        except DigestInvalid as exc:
            raise ManifestInvalid(f"fsLayers[{i}].blobSum: invalid digest") from exc
    return out


def _history(body: Mapping[str, Any]) -> list[str]:
    value = body.get("history")
    if value is None:
        return []
    if not isinstance(value, list):
        raise ManifestInvalid("history: not a list")
    out = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise ManifestInvalid(f"history[{i}]: not an object")
        compat = entry.get("v1Compatibility", "")
        if not isinstance(compat, str):
            raise ManifestInvalid(f"history[{i}].v1Compatibility: not a string")
        out.append(compat)
    return out


def load_signing_key(path: str) -> PrivateKey:
    """The key of ``compatibility.schema1.signingkeyfile``, as libtrust stores one.

    libtrust writes PEM whose block may carry headers (``keyID: ...``), or a JWK
    (JSON); EC and RSA keys are read. ``ConfigError`` names the setting otherwise.
    """
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from jwt.algorithms import ECAlgorithm, RSAAlgorithm

    from cargohold.errors import ConfigError

    key_name = "compatibility.schema1.signingkeyfile"
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError(key_name, f"cannot read {path}: {exc.strerror}") from None
    key: object
    try:
        if data.lstrip().startswith(b"{"):
            jwk = json.loads(data)
            algorithm = RSAAlgorithm if jwk.get("kty") == "RSA" else ECAlgorithm
            key = algorithm.from_jwk(jwk)
        else:
            # PEM headers ("keyID: ...") are libtrust's; OpenSSL reads a block without them.
            lines = [line for line in data.splitlines() if b": " not in line]
            key = load_pem_private_key(b"\n".join(lines) + b"\n", password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm, AttributeError) as exc:
        raise ConfigError(key_name, f"{path}: not a private key libtrust reads: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigError(key_name, f"{path}: an EC or RSA private key is needed")
    return key
