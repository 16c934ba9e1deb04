from __future__ import annotations

import base64
import datetime
import hashlib
import json
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from cargohold.errors import ManifestInvalid, ManifestUnverified, NameInvalid
from cargohold.manifest import (
    SCHEMA1,
    SCHEMA1_LAYER,
    SCHEMA1_SIGNED,
    SignedManifest,
    media_type_of,
    parse_manifest,
)
from cargohold.manifest.schema1 import (
    UNKNOWN_SIZE,
    PrivateKey,
    create_signature,
    merge_signatures,
    sign,
)
from tests.manifest.builders import fake_digest

EMPTY_LAYER = fake_digest("empty")
BASE_LAYER = fake_digest("base")


def unsigned(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "schemaVersion": 1,
        "name": "library/busybox",
        "tag": "1.36",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": EMPTY_LAYER}, {"blobSum": BASE_LAYER}, {"blobSum": EMPTY_LAYER}],
        "history": [
            {"v1Compatibility": '{"id":"c","cmd":"<sh>"}'},
            {"v1Compatibility": '{"id":"b"}'},
            {"v1Compatibility": '{"id":"a"}'},
        ],
    }
    body.update(fields)
    return body


@pytest.fixture(scope="module")
def p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def other_p256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signed(p256: ec.EllipticCurvePrivateKey) -> bytes:
    return sign(unsigned(), p256)


def splice(canonical: bytes, signatures: list[dict[str, Any]]) -> bytes:
    """A pretty-JWS body built by hand, so that tests can send what merging would refuse."""
    assert canonical.endswith(b"\n}")
    block = json.dumps(signatures, indent=3).replace("\n", "\n   ").encode()
    return canonical[:-2] + b',\n   "signatures": ' + block + b"\n}"


def signature_objects(signed_bytes: bytes) -> list[dict[str, Any]]:
    signatures: list[dict[str, Any]] = json.loads(signed_bytes)["signatures"]
    return signatures


def with_signatures(signed_bytes: bytes, signatures: list[dict[str, Any]]) -> bytes:
    """The same canonical part, carrying other signatures."""
    return splice(SignedManifest.parse(signed_bytes).canonical, signatures)


# --- signing and verifying ---------------------------------------------------------------


def test_signed_manifest_verifies_and_reports_its_layers(signed: bytes) -> None:
    manifest = parse_manifest(signed, SCHEMA1_SIGNED)

    assert isinstance(manifest, SignedManifest)
    assert manifest.media_type == SCHEMA1_SIGNED
    assert manifest.name == "library/busybox"
    assert manifest.tag == "1.36"
    assert manifest.architecture == "amd64"
    assert manifest.fs_layers == [EMPTY_LAYER, BASE_LAYER, EMPTY_LAYER]
    assert manifest.history[1] == '{"id":"b"}'
    # One presence check per distinct layer; schema1 records no sizes.
    assert [(d.digest, d.media_type, d.size) for d in manifest.blobs()] == [
        (EMPTY_LAYER, SCHEMA1_LAYER, UNKNOWN_SIZE),
        (BASE_LAYER, SCHEMA1_LAYER, UNKNOWN_SIZE),
    ]
    assert manifest.manifests() == []
    assert manifest.subject is None
    assert manifest.artifact_type is None


def test_payload_and_digest_are_the_canonical_bytes(signed: bytes) -> None:
    manifest = SignedManifest.parse(signed)

    assert b"signatures" not in manifest.payload
    assert manifest.canonical == manifest.payload
    body = json.loads(signed)
    del body["signatures"]
    assert json.loads(manifest.payload) == body
    assert signed.startswith(manifest.payload[: -len(b"\n}")])
    assert manifest.digest() == "sha256:" + hashlib.sha256(manifest.payload).hexdigest()
    assert manifest.digest() != "sha256:" + hashlib.sha256(signed).hexdigest()


def test_sign_writes_go_style_json(signed: bytes) -> None:
    canonical = SignedManifest.parse(signed).canonical
    assert canonical.startswith(b'{\n   "schemaVersion": 1,\n   "name": "library/busybox",')
    # Go's encoder escapes <, > and & inside strings; a re-signed Go manifest matches.
    assert b"\\\\u003csh\\\\u003e" not in canonical
    assert b"\\u003csh\\u003e" in canonical
    assert canonical.endswith(b"\n}")


@pytest.mark.parametrize("content_type", [SCHEMA1_SIGNED, SCHEMA1, None, "application/json"])
def test_schema1_is_accepted_under_each_of_its_content_types(
    signed: bytes, content_type: str | None
) -> None:
    manifest = parse_manifest(signed, content_type)
    assert isinstance(manifest, SignedManifest)
    assert manifest.media_type == SCHEMA1_SIGNED


@pytest.mark.parametrize("curve", [ec.SECP384R1(), ec.SECP521R1()])
def test_larger_curves_sign_and_verify(curve: ec.EllipticCurve) -> None:
    signed_bytes = sign(unsigned(), ec.generate_private_key(curve))
    alg = signature_objects(signed_bytes)[0]["header"]["alg"]
    assert alg == {"secp384r1": "ES384", "secp521r1": "ES512"}[curve.name]
    assert SignedManifest.parse(signed_bytes).fs_layers[1] == BASE_LAYER


def test_rsa_key_signs_rs256_and_verifies(rsa_key: rsa.RSAPrivateKey) -> None:
    signed_bytes = sign(unsigned(), rsa_key)

    header = signature_objects(signed_bytes)[0]["header"]
    manifest = SignedManifest.parse(signed_bytes)

    assert header["alg"] == "RS256"
    assert header["jwk"]["kty"] == "RSA"
    assert sorted(header["jwk"]) == ["e", "kid", "kty", "n"]
    assert manifest.name == "library/busybox"


def test_signature_is_stored_as_libtrust_marshals_it(signed: bytes) -> None:
    (raw,) = SignedManifest.parse(signed).signatures

    assert b"\n" not in raw
    stored = json.loads(raw)
    assert list(stored) == ["header", "signature", "protected"]
    assert list(stored["header"]) == ["jwk", "alg"]
    assert list(stored["header"]["jwk"]) == ["crv", "kid", "kty", "x", "y"]
    assert stored == signature_objects(signed)[0]


def test_protected_header_records_the_format(p256: ec.EllipticCurvePrivateKey) -> None:
    canonical = json.dumps(unsigned(), indent=3).encode()
    when = datetime.datetime(2020, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)

    signature = json.loads(create_signature(canonical, p256, now=when))

    protected = signature["protected"]
    header = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))
    assert header == {
        "formatLength": len(canonical) - 2,
        "formatTail": "Cn0",  # base64url of "\n}"
        "time": "2020-01-02T03:04:05Z",
    }


def test_key_id_is_libtrusts_fingerprint() -> None:
    # A P-256 key and the ID libtrust gives it (a key seen in a libtrust-signed manifest):
    # the ID passes the kid check, so verification gets as far as the signature itself.
    jwk = {
        "crv": "P-256",
        "kid": "5HTY:A24B:L6PG:TQ3G:GMAK:QGKZ:ICD4:S7ZJ:P5JX:UTMP:XZLK:ZXVH",
        "kty": "EC",
        "x": "j5YnDSyrVIt3NquUKvcZIpbfeD8HLZ7BVBFL4WutRBM",
        "y": "PBgFAZ3nNakYN3H9enhrdUrQ_HPYzb8oX5rtJxJo1Y8",
    }
    canonical = json.dumps(unsigned(), indent=3).encode()
    throwaway = json.loads(create_signature(canonical, ec.generate_private_key(ec.SECP256R1())))
    throwaway["header"]["jwk"] = jwk

    with pytest.raises(ManifestUnverified) as caught:
        SignedManifest.parse(splice(canonical, [throwaway]))
    assert caught.value.message.endswith("invalid signature")

    jwk["kid"] = jwk["kid"].replace("5HTY", "5HTZ")
    with pytest.raises(ManifestUnverified, match="kid does not match"):
        SignedManifest.parse(splice(canonical, [throwaway]))


def test_x5c_chain_key_verifies(p256: ec.EllipticCurvePrivateKey) -> None:
    canonical = json.dumps(unsigned(), indent=3).encode()
    signature = json.loads(create_signature(canonical, p256))
    certificate = self_signed(p256)
    signature["header"] = {
        "alg": "ES256",
        "x5c": [base64.b64encode(certificate.public_bytes(Encoding.DER)).decode()],
    }
    merged = merge_signatures(canonical, [json.dumps(signature).encode()])

    manifest = SignedManifest.parse(merged)

    assert json.loads(manifest.signatures[0])["header"] == signature["header"]
    wrong = self_signed(ec.generate_private_key(ec.SECP256R1()))
    signature["header"]["x5c"] = [base64.b64encode(wrong.public_bytes(Encoding.DER)).decode()]
    with pytest.raises(ManifestUnverified, match="invalid signature"):
        SignedManifest.parse(merge_signatures(canonical, [json.dumps(signature).encode()]))


def self_signed(key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


# --- merging -----------------------------------------------------------------------------


def test_canonical_and_signatures_merge_back_to_the_signed_bytes(signed: bytes) -> None:
    manifest = SignedManifest.parse(signed)

    merged = merge_signatures(manifest.canonical, manifest.signatures)

    assert merged == signed
    assert manifest.signed() == signed
    again = SignedManifest.parse(merged)
    assert again.digest() == manifest.digest()
    assert again.signatures == manifest.signatures


def test_two_signatures_merge_in_key_id_order(
    p256: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey
) -> None:
    canonical = json.dumps(unsigned(), indent=3).encode()
    first, second = create_signature(canonical, p256), create_signature(canonical, rsa_key)

    merged = merge_signatures(canonical, [first, second])

    assert merged == merge_signatures(canonical, [second, first])
    manifest = SignedManifest.parse(merged)
    kids = [json.loads(s)["header"]["jwk"]["kid"] for s in manifest.signatures]
    assert len(kids) == 2
    assert kids == sorted(kids)
    assert manifest.canonical == canonical


def test_compact_canonical_merges_without_indentation(p256: ec.EllipticCurvePrivateKey) -> None:
    canonical = json.dumps(unsigned(), separators=(",", ":")).encode()

    merged = merge_signatures(canonical, [create_signature(canonical, p256)])

    assert merged.startswith(canonical[:-1] + b',"signatures":[{"header":')
    assert b"\n" not in merged
    assert SignedManifest.parse(merged).canonical == canonical


def test_stored_canonical_reads_without_signatures(signed: bytes) -> None:
    pushed = SignedManifest.parse(signed)

    stored = SignedManifest.from_canonical(pushed.canonical, pushed.signatures)

    assert stored.digest() == pushed.digest()
    assert stored.blobs() == pushed.blobs()
    assert stored.signed() == signed
    assert media_type_of(stored.payload) == SCHEMA1_SIGNED
    assert media_type_of(signed) == SCHEMA1_SIGNED


def test_merge_needs_a_signature(signed: bytes) -> None:
    with pytest.raises(ManifestUnverified):
        merge_signatures(SignedManifest.parse(signed).canonical, [])


def test_merge_refuses_a_corrupt_stored_signature(signed: bytes) -> None:
    canonical = SignedManifest.parse(signed).canonical
    with pytest.raises(ManifestInvalid, match=r"signatures\[0\]"):
        merge_signatures(canonical, [b"{not json"])
    with pytest.raises(ManifestInvalid, match=r"signatures\[0\]\.header"):
        merge_signatures(canonical, [b'{"signature": "x", "protected": "y"}'])


# --- tampering and malformed signatures --------------------------------------------------


def test_tampered_payload_is_unverified(signed: bytes) -> None:
    tampered = signed.replace(BASE_LAYER.encode(), fake_digest("evil").encode())
    assert tampered != signed
    with pytest.raises(ManifestUnverified, match="invalid signature"):
        parse_manifest(tampered, SCHEMA1_SIGNED)


def test_tampered_signature_is_unverified(signed: bytes) -> None:
    (signature,) = signature_objects(signed)
    text = signature["signature"]
    signature["signature"] = ("B" if text[0] != "B" else "C") + text[1:]
    with pytest.raises(ManifestUnverified, match="invalid signature"):
        parse_manifest(with_signatures(signed, [signature]), SCHEMA1_SIGNED)


def test_signature_by_another_key_is_unverified(
    signed: bytes, other_p256: ec.EllipticCurvePrivateKey
) -> None:
    (signature,) = signature_objects(signed)
    impostor = signature_objects(sign(unsigned(), other_p256))[0]
    signature["header"]["jwk"] = impostor["header"]["jwk"]
    with pytest.raises(ManifestUnverified, match="invalid signature"):
        parse_manifest(with_signatures(signed, [signature]), SCHEMA1_SIGNED)


def test_one_bad_signature_among_good_ones_is_unverified(
    signed: bytes, other_p256: ec.EllipticCurvePrivateKey
) -> None:
    good = signature_objects(signed)[0]
    bad = json.loads(create_signature(SignedManifest.parse(signed).canonical, other_p256))
    bad["signature"] = good["signature"]
    with pytest.raises(ManifestUnverified):
        parse_manifest(with_signatures(signed, [good, bad]), SCHEMA1_SIGNED)


def edit_signature(signed: bytes, change: Any) -> bytes:
    """The signed bytes with the first signature's JSON object edited."""
    signatures = signature_objects(signed)
    change(signatures[0])
    return with_signatures(signed, signatures)


def protected(fields: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()


UNVERIFIED: list[tuple[str, Any, str]] = [
    ("alg of another curve", lambda s: s["header"].update(alg="ES384"), "does not suit"),
    ("alg none", lambda s: s["header"].update(alg="none"), "does not suit"),
    ("no key at all", lambda s: s["header"].pop("jwk"), "missing public key"),
    ("jwk not an object", lambda s: s["header"].update(jwk="key"), "jwk: not an object"),
    (
        "jwk of unknown type",
        lambda s: s["header"]["jwk"].update(kty="OKP"),
        "unsupported key type",
    ),
    ("jwk off the curve", lambda s: s["header"]["jwk"].update(y=s["header"]["jwk"]["x"]), "point"),
    ("signature not base64url", lambda s: s.update(signature="!!!"), "not base64url"),
    ("signature too short", lambda s: s.update(signature="AAAA"), "wrong length"),
    ("header missing", lambda s: s.pop("header"), "header: not an object"),
    ("protected missing", lambda s: s.pop("protected"), "must be strings"),
    ("protected not base64", lambda s: s.update(protected="%%%"), "not base64url"),
    ("protected not JSON", lambda s: s.update(protected=protected([])), "not an object"),
    (
        "formatLength missing",
        lambda s: s.update(protected=protected({"formatTail": "Cn0"})),
        "formatLength",
    ),
    (
        "formatLength beyond the payload",
        lambda s: s.update(protected=protected({"formatLength": 10**9, "formatTail": "Cn0"})),
        "out of range",
    ),
    ("x5c not a list", lambda s: s["header"].update(x5c="cert"), "x5c: not a list of strings"),
    ("x5c not a certificate", lambda s: s["header"].update(x5c=["AAAA"]), "not a certificate"),
]


@pytest.mark.parametrize(
    ("change", "message"),
    [pytest.param(c, m, id=name) for name, c, m in UNVERIFIED],
)
def test_malformed_signature_is_unverified(signed: bytes, change: Any, message: str) -> None:
    with pytest.raises(ManifestUnverified) as caught:
        parse_manifest(edit_signature(signed, change), SCHEMA1_SIGNED)
    assert message in caught.value.message


def test_signatures_must_agree_on_the_format(
    signed: bytes, other_p256: ec.EllipticCurvePrivateKey
) -> None:
    canonical = SignedManifest.parse(signed).canonical
    good = signature_objects(signed)[0]
    other = json.loads(create_signature(canonical, other_p256))
    other["protected"] = protected({"formatLength": len(canonical) - 2, "formatTail": "fQ"})
    with pytest.raises(ManifestUnverified, match="conflicting"):
        parse_manifest(with_signatures(signed, [good, other]), SCHEMA1_SIGNED)


@pytest.mark.parametrize(
    "signatures",
    [pytest.param(None, id="missing"), pytest.param([], id="empty"), pytest.param({}, id="map")],
)
def test_unsigned_schema1_is_unverified(signatures: Any) -> None:
    body = unsigned()
    if signatures is not None:
        body["signatures"] = signatures
    with pytest.raises(ManifestUnverified, match="must be signed"):
        parse_manifest(json.dumps(body, indent=3).encode(), SCHEMA1)


# --- malformed manifests -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param(b"{oops", "not valid JSON", id="not json"),
        pytest.param(b"[1]", "not a JSON object", id="array"),
    ],
)
def test_malformed_body_is_invalid(payload: bytes, message: str) -> None:
    with pytest.raises(ManifestInvalid, match=message):
        parse_manifest(payload, SCHEMA1_SIGNED)


INVALID_FIELDS: list[tuple[str, dict[str, Any], str]] = [
    ("schemaVersion 2", unsigned(schemaVersion=2), "schemaVersion: must be 1"),
    ("name a number", unsigned(name=5), "name: not a string"),
    ("tag a list", unsigned(tag=["x"]), "tag: not a string"),
    ("fsLayers not a list", unsigned(fsLayers={}), "fsLayers: not a list"),
    (
        "blobSum not a digest",
        unsigned(fsLayers=[{"blobSum": "tarsum.dev+sha256:1"}] * 3),
        "fsLayers[0].blobSum: invalid digest",
    ),
    ("blobSum missing", unsigned(fsLayers=[{}, {}, {}]), "fsLayers[0].blobSum: required"),
    ("history entry not object", unsigned(history=["x", "y", "z"]), "history[0]: not an object"),
    (
        "v1Compatibility not a string",
        unsigned(history=[{"v1Compatibility": {}}] * 3),
        "history[0].v1Compatibility: not a string",
    ),
    ("history shorter than fsLayers", unsigned(history=[]), "history: 0 entries for 3"),
]


@pytest.mark.parametrize(
    ("body", "message"),
    [pytest.param(b, m, id=name) for name, b, m in INVALID_FIELDS],
)
def test_properly_signed_but_malformed_manifest_is_invalid(
    p256: ec.EllipticCurvePrivateKey, body: dict[str, Any], message: str
) -> None:
    with pytest.raises(ManifestInvalid) as caught:
        parse_manifest(sign(body, p256), SCHEMA1_SIGNED)
    assert message in caught.value.message


def test_name_outside_the_repository_grammar(p256: PrivateKey) -> None:
    with pytest.raises(NameInvalid, match="name: "):
        parse_manifest(sign(unsigned(name="Library/BusyBox"), p256), SCHEMA1_SIGNED)


def test_members_after_the_signed_text_change_nothing(signed: bytes) -> None:
    # Whatever follows formatLength is covered by no signature: a member there cannot
    # override a signed one, and any other member never reaches the stored canonical.
    overriding = signed[:-2] + b',\n   "name": "evil/name"\n}'
    with pytest.raises(ManifestInvalid, match="duplicate key 'name'"):
        parse_manifest(overriding, SCHEMA1_SIGNED)

    extra = signed[:-2] + b',\n   "comment": "unsigned"\n}'
    manifest = parse_manifest(extra, SCHEMA1_SIGNED)
    assert isinstance(manifest, SignedManifest)
    assert b"unsigned" not in manifest.payload
    assert manifest.digest() == SignedManifest.parse(signed).digest()
