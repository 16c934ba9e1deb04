"""Service-account keys, and the V4 signed URLs (GOOG4-RSA-SHA256) they sign, for GCS.

A signed URL is made locally with the key's RSA private key, as Google's own
clients make it (https://cloud.google.com/storage/docs/access-control/signing-urls-manually).
It is written here rather than taken from gcloud-aio-storage, whose
``Blob.get_signed_url`` always names ``storage.googleapis.com``: a URL for an
emulator (``STORAGE_EMULATOR_HOST``, plain http on another host) must be
signed for that host, since the host is one of the signed headers. The
function is checked against Google's published conformance vectors
(``tests/storage/data/gcs_v4_signatures.json``).

Example::

    account = service_account(json.loads(Path("key.json").read_text()), "storage.gcs.keyfile")
    url = signed_url(account, "GET", "https", "storage.googleapis.com",
                     "/bucket/path/to/object", expires=1200, now=datetime.now(UTC))
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

#: The longest a V4 signed URL may stay valid (7 days).
MAX_EXPIRY = 7 * 24 * 3600
ALGORITHM = "GOOG4-RSA-SHA256"
_UNSIGNED = "UNSIGNED-PAYLOAD"
_PORT = re.compile(r"(?<!:):[0-9]+$")  # a port after a host name, an IPv4 or an [IPv6]


@dataclass(frozen=True)
class ServiceAccount:
    """A service account's key: what signs URLs, and the whole JSON for OAuth tokens."""

    email: str
    private_key: rsa.RSAPrivateKey
    info: Mapping[str, Any]


def service_account(info: Mapping[str, Any], where: str) -> ServiceAccount:
    """The service account of a key's JSON document; ValueError with one line if it is not one.

    ``where`` names the key's origin in the message (a file, a config key).
    """
    if info.get("type") != "service_account":
        kind = info.get("type")
        raise ValueError(
            f"{where} is not a service account key (type {kind!r}, want 'service_account')"
        )
    email, pem = info.get("client_email"), info.get("private_key")
    if not isinstance(email, str) or not email:
        raise ValueError(f"{where} has no client_email")
    if not isinstance(pem, str) or not pem:
        raise ValueError(f"{where} has no private_key")
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{where}: the private_key is not a PEM RSA key ({exc})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{where}: the private_key is not an RSA key")
    return ServiceAccount(email, key, dict(info))


def signed_url(
    account: ServiceAccount,
    method: str,
    scheme: str,
    host: str,
    resource: str,
    *,
    expires: int,
    now: datetime,
    headers: Mapping[str, str] | None = None,
    query: Mapping[str, str] | None = None,
) -> str:
    """A V4 signed URL for ``method`` on ``resource`` (``/bucket/object``, not yet quoted).

    ``host`` is the host (and port) the URL names and the client will send;
    ``headers`` are further headers the client must send as given (with
    ``X-Goog-Content-SHA256`` the payload is signed too), ``query`` further
    query parameters. Valid ``expires`` seconds from ``now`` (a UTC time).
    """
    if not 1 <= expires <= MAX_EXPIRY:
        raise ValueError(f"a signed URL is valid 1 s to 7 days, not {expires} s")
    timestamp = now.strftime("%Y%m%dT%H%M%SZ")
    scope = f"{now:%Y%m%d}/auto/storage/goog4_request"
    # The host is signed without its port, as Google's clients sign it.
    signed = {"host": _PORT.sub("", host).lower()}
    for name, value in (headers or {}).items():
        # Trimmed, and every run of whitespace inside made one space.
        signed[name.lower()] = " ".join(value.split())
    names = sorted(signed)
    signed_headers = ";".join(names)
    parameters = {
        **(query or {}),
        "X-Goog-Algorithm": ALGORITHM,
        "X-Goog-Credential": f"{account.email}/{scope}",
        "X-Goog-Date": timestamp,
        "X-Goog-Expires": str(expires),
        "X-Goog-SignedHeaders": signed_headers,
    }
    canonical_query = "&".join(
        f"{quote(name, safe='')}={quote(value, safe='')}"
        for name, value in sorted(parameters.items())
    )
    path = quote(resource, safe="/~")
    canonical_request = "\n".join(
        [
            method.upper(),
            path,
            canonical_query,
            "".join(f"{name}:{signed[name]}\n" for name in names),
            signed_headers,
            signed.get("x-goog-content-sha256", _UNSIGNED),
        ]
    )
    digest = hashlib.sha256(canonical_request.encode()).hexdigest()
    string_to_sign = "\n".join([ALGORITHM, timestamp, scope, digest])
    signature = account.private_key.sign(
        string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256()
    ).hex()
    return f"{scheme}://{host}{path}?{canonical_query}&X-Goog-Signature={signature}"
