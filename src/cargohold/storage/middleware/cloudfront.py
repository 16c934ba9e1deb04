"""The ``cloudfront`` storage middleware: blob downloads go to CloudFront signed URLs.

A URL is signed with a *canned policy*, as AWS's SDKs sign one
(https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/private-content-creating-signed-url-canned-policy.html)::

    {"Statement":[{"Resource":"<url>","Condition":{"DateLessThan":{"AWS:EpochTime":<expires>}}}]}

The policy, exactly those bytes, is signed with RSA (PKCS #1 v1.5) over
SHA-1; the signature goes in base64 with CloudFront's replacements for the
characters a query cannot carry (``+`` → ``-``, ``=`` → ``_``, ``/`` → ``~``),
and the URL is ``<url>?Expires=<expires>&Signature=<signature>&Key-Pair-Id=<id>``.

The URL is ``baseurl`` followed by the blob's key in storage: on S3 its object
key (``rootdirectory`` included), as Distribution signs it. Distribution signs
only for S3 and hands any other driver's own URL out instead (on a local
disk: none, so no redirect at all); cargohold signs the same way for every
driver, the key being the path below the root directory on a local disk, so
that the setting does what it says wherever it is given.

With ``ipfilteredby``, a client inside AWS (``aws``) or inside the listed
regions (``awsregion``), by AWS's published ranges (``awsips.py``), gets what
the middleware wraps instead: S3's presigned URL, or, on a local disk, the
blob from the registry.
"""

from __future__ import annotations

import base64
import json
import time
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from cargohold.errors import ConfigError
from cargohold.storage.middleware import BlobRedirects
from cargohold.storage.middleware.awsips import AWSRanges

if TYPE_CHECKING:
    from cargohold.config import CloudFrontOptions

__all__ = ["CloudFront", "CloudFrontSigner", "canned_policy", "load_private_key"]

#: CloudFront's base64: the three characters a query cannot carry, replaced.
_URL_SAFE = bytes.maketrans(b"+=/", b"-_~")


def load_private_key(path: str) -> rsa.RSAPrivateKey:
    """The RSA private key in the PEM file at ``path`` (PKCS #1 or PKCS #8, unencrypted).

    ValueError with one line when it cannot be read or is not such a key.
    """
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        # TypeError: a key encrypted with a password, which nothing here could give.
        reason = str(exc).split("\n", 1)[0].rstrip(".")
        raise ValueError(f"{path} is not an unencrypted PEM private key ({reason})") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path} is not an RSA private key, which CloudFront signs with")
    return key


def canned_policy(resource: str, expires: int) -> bytes:
    """The canned policy of ``resource`` until ``expires`` (seconds since the epoch), the
    bytes that are signed: AWS's SDKs write it without a space."""
    statement = {"Resource": resource, "Condition": {"DateLessThan": {"AWS:EpochTime": expires}}}
    return json.dumps({"Statement": [statement]}, separators=(",", ":")).encode()


class CloudFrontSigner:
    """Signs URLs with the canned policy, as key pair ``key_pair_id``."""

    __slots__ = ("_key", "key_pair_id")

    def __init__(self, key: rsa.RSAPrivateKey, key_pair_id: str) -> None:
        self._key = key
        self.key_pair_id = key_pair_id

    def sign(self, url: str, expires: int) -> str:
        """``url`` signed to be valid until ``expires`` (seconds since the epoch)."""
        signature = self._key.sign(canned_policy(url, expires), padding.PKCS1v15(), hashes.SHA1())
        encoded = base64.b64encode(signature).translate(_URL_SAFE).decode()
        return f"{url}?Expires={expires}&Signature={encoded}&Key-Pair-Id={self.key_pair_id}"


class CloudFront:
    """``BlobRedirects`` to CloudFront signed URLs; clients inside AWS (``ranges``) get
    ``inner``'s answer."""

    __slots__ = (
        "_base",
        "_duration",
        "_inner",
        "_ranges",
        "_root",
        "_second",
        "_signed",
        "_signer",
    )

    def __init__(
        self,
        inner: BlobRedirects,
        signer: CloudFrontSigner,
        base: str,
        *,
        key_root: str = "",
        duration: float = 20 * 60.0,
        ranges: AWSRanges | None = None,
    ) -> None:
        self._inner = inner
        self._signer = signer
        self._base = base
        self._root = key_root.rstrip("/")
        self._duration = duration
        self._ranges = ranges
        # The URLs signed for the current second: a burst of pulls of one layer (a fleet
        # starting) shares one signature, which takes a third of a millisecond to make.
        self._second = 0
        self._signed: dict[str, str] = {}

    @classmethod
    def from_options(
        cls, inner: BlobRedirects, options: CloudFrontOptions, key_root: str
    ) -> CloudFront:
        """The middleware ``options`` describe (``key_root``: see ``build_redirects``)."""
        try:
            key = load_private_key(options.privatekey)
        except ValueError as exc:  # read when the configuration was, gone or changed since
            raise ConfigError(
                "middleware.storage", f"cloudfront option privatekey: {exc}"
            ) from None
        signer = CloudFrontSigner(key, options.keypairid)
        ranges = None
        if options.ipfilteredby != "none":
            ranges = AWSRanges(options.iprangesurl, options.updatefrequency, options.regions)
        return cls(
            inner,
            signer,
            options.baseurl,
            key_root=key_root,
            duration=options.duration,
            ranges=ranges,
        )

    def key(self, path: str) -> str:
        """The key CloudFront knows the content at ``path`` by (no leading ``/``)."""
        return (self._root + path).lstrip("/")

    async def redirect_url(self, path: str, method: str, client: str | None) -> str | None:
        ranges = self._ranges
        if ranges is not None and client is not None and await ranges.contains(client):
            return await self._inner.redirect_url(path, method, client)
        # Go's time.Now().Add(duration).Unix(): whole seconds, rounded down.
        expires = int(time.time() + self._duration)
        if expires != self._second:
            self._second, self._signed = expires, {}
        url = self._signed.get(path)
        if url is None:
            url = self._signed[path] = self._signer.sign(self._base + self.key(path), expires)
        return url

    async def close(self) -> None:
        if self._ranges is not None:
            await self._ranges.close()
        await self._inner.close()
