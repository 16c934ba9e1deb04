"""AWS Signature Version 4 for S3 requests: in the Authorization header, or presigned.

What AWS documents ("Authenticating Requests: Using the Authorization Header",
S3 API reference), in the order it is computed:

1. The *canonical request*: the method; the URI-encoded path exactly as sent
   (S3 encodes each key segment once, keeps ``/``); the canonical query string;
   one ``name:value`` line per signed header (names lower-cased and sorted,
   values trimmed, inner runs of spaces made one); the signed header names
   joined by ``;``; the payload hash, which is also sent as
   ``x-amz-content-sha256``.
2. The *string to sign*: ``AWS4-HMAC-SHA256``, the request time
   (``x-amz-date``), the scope ``<yyyymmdd>/<region>/<service>/aws4_request``,
   and the hex SHA-256 of the canonical request.
3. The *signing key*: HMAC-SHA256 of the date, then the region, the service
   and ``aws4_request``, starting from ``"AWS4" + secret``. It changes once a
   day, so ``Signer`` keeps the last one.
4. The signature, the hex HMAC of the string to sign under that key.

Every header handed to ``Signer.sign`` is signed; leave out the ones a proxy may
rewrite (``User-Agent``). ``Content-Length`` need not be signed.

A presigned URL (``Signer.presign``) carries the same signature in its query
instead: the ``X-Amz-*`` parameters are part of the canonical query string,
only ``host`` is signed, and the payload hash is ``UNSIGNED-PAYLOAD``.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
#: The payload hash of a request without a body (GET, HEAD).
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
#: The payload hash S3 accepts in place of the body's, which it then does not check.
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


@dataclass(frozen=True, slots=True)
class Credentials:
    """Who signs: an access key, its secret, and a session token for temporary credentials."""

    access_key: str
    secret_key: str
    token: str | None = None


def uri_encode(text: str, *, keep_slash: bool = False) -> str:
    """S3's UriEncode: every byte of the UTF-8 but ``A-Za-z0-9-._~`` as ``%XY`` (upper hex).

    ``keep_slash`` for an object key in the path, where ``/`` separates segments.
    """
    # quote() leaves exactly the unreserved characters (and ``safe``) alone.
    return quote(text, safe="/" if keep_slash else "")


def canonical_query(params: Mapping[str, str]) -> str:
    """The canonical query string: encoded names and values, sorted, ``name=value`` by ``&``."""
    pairs = sorted((uri_encode(name), uri_encode(value)) for name, value in params.items())
    return "&".join(f"{name}={value}" for name, value in pairs)


def amz_date(when: float) -> str:
    """``when`` (seconds since the epoch) as ``x-amz-date`` writes it: ``20130524T000000Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))


class Signer:
    """Signs requests for one region and service."""

    __slots__ = ("_key", "region", "service")

    def __init__(self, region: str, service: str = "s3") -> None:
        self.region = region
        self.service = service
        self._key: tuple[str, str, bytes] = ("", "", b"")  # (secret, day, signing key)

    def sign(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        credentials: Credentials,
        *,
        query: str = "",
        payload_hash: str = EMPTY_SHA256,
        when: float | None = None,
    ) -> dict[str, str]:
        """``headers`` (which must include ``host``) plus the signature's headers.

        ``path`` is the URI-encoded path as sent, ``query`` the canonical query
        string. Adds ``x-amz-date``, ``x-amz-content-sha256``,
        ``x-amz-security-token`` (with a session token) and ``Authorization``.
        """
        stamp = amz_date(time.time() if when is None else when)
        signed = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
        signed["x-amz-date"] = stamp
        signed["x-amz-content-sha256"] = payload_hash
        if credentials.token:
            signed["x-amz-security-token"] = credentials.token
        names = sorted(signed)
        signed_names = ";".join(names)
        canonical = "\n".join(
            (
                method,
                path or "/",
                query,
                "".join(f"{name}:{signed[name]}\n" for name in names),
                signed_names,
                payload_hash,
            )
        )
        signed["authorization"] = (
            f"{ALGORITHM} Credential={credentials.access_key}/{self.scope(stamp)}, "
            f"SignedHeaders={signed_names}, "
            f"Signature={self._signature(canonical, stamp, credentials.secret_key)}"
        )
        return signed

    def presign(
        self,
        method: str,
        path: str,
        host: str,
        credentials: Credentials,
        expires: int,
        *,
        when: float | None = None,
    ) -> str:
        """The query string of a presigned URL (``X-Amz-*``, signature last) for ``path``
        (URI-encoded, as sent) on ``host``, valid ``expires`` seconds from ``when``.

        Only ``host`` is signed, and the payload is not: whoever holds the URL
        sends the request (AWS's "Authenticating Requests: Using Query Parameters").
        """
        stamp = amz_date(time.time() if when is None else when)
        params = {
            "X-Amz-Algorithm": ALGORITHM,
            "X-Amz-Credential": f"{credentials.access_key}/{self.scope(stamp)}",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": str(expires),
            "X-Amz-SignedHeaders": "host",
        }
        if credentials.token:
            params["X-Amz-Security-Token"] = credentials.token
        query = canonical_query(params)
        canonical = "\n".join(
            (method, path or "/", query, f"host:{host}\n", "host", UNSIGNED_PAYLOAD)
        )
        return (
            f"{query}&X-Amz-Signature={self._signature(canonical, stamp, credentials.secret_key)}"
        )

    def scope(self, stamp: str) -> str:
        """The credential scope of a request signed at ``stamp`` (``x-amz-date``)."""
        return f"{stamp[:8]}/{self.region}/{self.service}/aws4_request"

    def _signature(self, canonical: str, stamp: str, secret: str) -> str:
        string_to_sign = "\n".join(
            (ALGORITHM, stamp, self.scope(stamp), hashlib.sha256(canonical.encode()).hexdigest())
        )
        key = self.signing_key(secret, stamp[:8])
        return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()

    def signing_key(self, secret: str, day: str) -> bytes:
        """The key for ``day`` (``yyyymmdd``); derived once per secret and day."""
        cached_secret, cached_day, key = self._key
        if cached_secret != secret or cached_day != day:
            key = ("AWS4" + secret).encode()
            for part in (day, self.region, self.service, "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._key = (secret, day, key)
        return key
