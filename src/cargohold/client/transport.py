"""HTTP to one registry: scheme and TLS, retries with backoff, auth, errors as domain values.

Every request of the client goes through :meth:`Transport.send`, which

- picks the scheme as docker does: plain HTTP for loopback registries
  (``localhost``, ``127.0.0.0/8``, ``::1``), HTTPS with certificate
  verification (optionally against ``ca_file``) for any other, and with
  ``insecure`` HTTPS without verification falling back to plain HTTP;
- pings ``/v2/`` once to learn the registry's auth challenge, then sends each
  request with the ``Authorization`` its scopes need (``cargohold.client.auth``);
- retries connection errors, ``429`` (after ``Retry-After``) and ``5xx`` with
  exponential backoff and jitter, a bounded number of times, for requests
  whose body can be sent again;
- turns an error reply into the domain error of its code
  (``api.errcode.error_for``: the server's table, reversed), so callers see
  ``BlobUnknown`` or ``ManifestInvalid``, never a status code.

A connection that cannot be made, or a reply that keeps failing, becomes
``Unavailable``.
"""

from __future__ import annotations

import asyncio
import email.utils
import importlib.metadata
import io
import ipaddress
import json
import random
import ssl
import time
from collections.abc import AsyncIterable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp
from yarl import URL

from cargohold.api.errcode import error_for
from cargohold.client.auth import Authenticator, Credentials, TokenReply, find_credentials
from cargohold.errors import (
    BlobUnknown,
    CargoholdError,
    Denied,
    ManifestBlobUnknown,
    ManifestTooLarge,
    OperationUnsupported,
    RangeInvalid,
    RegistryError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)

__all__ = ["RetryPolicy", "Transport", "is_loopback"]


def _version() -> str:
    try:
        return importlib.metadata.version("cargohold")
    except importlib.metadata.PackageNotFoundError:
        return "dev"


USER_AGENT = f"cargohold/{_version()}"
#: Replies worth asking again: the server may do better in a moment (RFC 9110 15.6).
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
#: At most this much of an error body is read: it is for a message, not content.
ERROR_BODY_LIMIT = 64 * 1024
#: Bytes bodies larger than this go out as a file object (aiohttp's threshold).
LARGE_BODY = 1 << 20
#: A 401 is answered with fresh authorization at most this many times per request.
AUTH_ATTEMPTS = 2

Body = bytes | AsyncIterable[bytes] | None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a failing request is tried again."""

    #: Tries in all, the first included.
    attempts: int = 5
    #: The wait before the second try; it doubles for each further one.
    base_delay: float = 0.25
    max_delay: float = 8.0
    #: A longer ``Retry-After`` than this is cut down to it.
    max_retry_after: float = 60.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """The wait after failed try number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        backoff: float = min(self.base_delay * 2.0 ** (attempt - 1), self.max_delay)
        # Full jitter would make a first retry nearly instant; keep at least half.
        return backoff / 2 + random.random() * backoff / 2


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(float(when.timestamp()) - time.time(), 0.0)


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a registry is: ``scheme://host[:port]``, and whether plain HTTP may be tried."""

    scheme: str
    netloc: str
    http_fallback: bool = False

    @property
    def base(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    @classmethod
    def of(cls, url: str, insecure: bool) -> Endpoint:
        """``host[:port]`` or ``http(s)://host[:port]`` (a path is not allowed)."""
        text = url.strip().rstrip("/")
        if "://" not in text:
            host = urlsplit(f"//{text}").hostname or ""
            if not host:
                raise ValueError(f"not a registry address: {url!r}")
            if is_loopback(host):
                return cls("http", text)
            return cls("https", text, http_fallback=insecure)
        parts = urlsplit(text)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not a registry URL: {url!r}")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"a registry URL has no path: {url!r}")
        if parts.scheme == "http" and not (insecure or is_loopback(parts.hostname)):
            raise ValueError(f"plain HTTP to {parts.netloc} needs insecure=True")
        return cls(parts.scheme, parts.netloc)


class Transport:
    """Requests to one registry, with its session, its auth and its retry policy."""

    def __init__(
        self,
        url: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool = False,
        ca_file: str | None = None,
        client_certificate: tuple[str, str | None] | None = None,
        retry: RetryPolicy | None = None,
        user_agent: str = USER_AGENT,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoint = Endpoint.of(url, insecure)
        self.insecure = insecure
        self.retry = retry or RetryPolicy()
        self.user_agent = user_agent
        self._ssl: ssl.SSLContext | bool = self._ssl_context(insecure, ca_file, client_certificate)
        self.auth = Authenticator(
            self.endpoint.netloc,
            find_credentials(self.endpoint.netloc, credentials, environ),
            self._fetch_token,
        )
        self._session: aiohttp.ClientSession | None = None
        self._ready = False
        self._ready_lock: asyncio.Lock | None = None
        #: HTTP requests sent so far, retries included (for diagnostics and tests).
        self.requests_sent = 0

    @staticmethod
    def _ssl_context(
        insecure: bool, ca_file: str | None, client_certificate: tuple[str, str | None] | None
    ) -> ssl.SSLContext | bool:
        if insecure and client_certificate is None:
            return False
        context = ssl.create_default_context(cafile=ca_file)
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client_certificate is not None:
            context.load_cert_chain(*client_certificate)
        return context

    @property
    def host(self) -> str:
        """The registry as a reference names it: ``host[:port]``."""
        return self.endpoint.netloc

    @property
    def base(self) -> str:
        return self.endpoint.base

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=64),
                # Blobs must arrive exactly as stored: never decompress a body.
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, connect=30, sock_read=300),
                read_bufsize=1 << 18,
                headers={"User-Agent": self.user_agent, "Accept-Encoding": "identity"},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, target: str) -> URL:
        """An absolute URL for a path (``/v2/…``) or a ``Location`` the registry sent."""
        if "://" not in target:
            target = urljoin(self.base + "/", target)
        # encoded: a Location's query (Distribution's signed _state) must go back untouched.
        return URL(target, encoded=True)

    # -- the ping --------------------------------------------------------------------------

    async def ping(self) -> None:
        """``GET /v2/`` once: learns the auth challenge and, when insecure, the scheme."""
        if self._ready:
            return
        if self._ready_lock is None:
            self._ready_lock = asyncio.Lock()
        async with self._ready_lock:
            if self._ready:
                return
            try:
                # With a fallback to try, one failed handshake is enough to move on.
                await self._ping_once(retry=not self.endpoint.http_fallback)
            except Unavailable:
                if not self.endpoint.http_fallback:
                    raise
                # Docker's rule for insecure registries: HTTPS first, else plain HTTP.
                self.endpoint = Endpoint("http", self.endpoint.netloc)
                await self._ping_once(retry=True)
            self._ready = True

    async def _ping_once(self, *, retry: bool) -> None:
        response = await self._attempts("GET", self.url("/v2/"), {}, None, retry=retry)
        async with response:
            if response.status == 401:
                self.auth.learn(response.headers.getall("WWW-Authenticate", []))
            await response.read()

    # -- requests --------------------------------------------------------------------------

    async def send(
        self,
        method: str,
        target: str,
        *,
        scopes: Sequence[str] = (),
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        ok: Collection[int] = (200,),
        missing: Callable[[], RegistryError] | None = None,
        retry: bool = True,
    ) -> aiohttp.ClientResponse:
        """Send a request; the reply when its status is in ``ok``, else its domain error.

        ``missing`` makes the error of a 404 that carries no error code (a HEAD
        reply has no body). A streamed ``body`` is sent once: neither a retry nor
        a 401 can replay it, so its caller recovers (see ``uploads``).
        """
        await self.ping()
        url = self.url(target)
        replayable = body is None or isinstance(body, bytes)
        sent_scopes: Sequence[str] = scopes
        for auth_round in range(AUTH_ATTEMPTS + 1):
            all_headers = dict(headers or {})
            authorization = await self.auth.authorization(sent_scopes)
            if authorization is not None:
                all_headers["Authorization"] = authorization
            response = await self._attempts(
                method, url, all_headers, body, retry=retry and replayable
            )
            if response.status == 401 and replayable and auth_round < AUTH_ATTEMPTS:
                wider = self.auth.widen(
                    response.headers.getall("WWW-Authenticate", []), sent_scopes, authorization
                )
                if wider is not None:
                    response.release()
                    sent_scopes = wider
                    continue
            if response.status in ok:
                return response
            async with response:
                raise await error_from_reply(response, missing)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempts(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        body: Body,
        *,
        retry: bool,
    ) -> aiohttp.ClientResponse:
        """One request, tried again on connection errors, 429 and 5xx when ``retry``."""
        attempts = self.retry.attempts if retry else 1
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            data: Body | io.BytesIO = body
            if isinstance(body, bytes) and len(body) > LARGE_BODY:
                # aiohttp warns of large bytes bodies; a fresh file object per try is fine.
                data = io.BytesIO(body)
            self.requests_sent += 1
            try:
                response = await self.session.request(
                    method, url, headers=headers, data=data, ssl=self._ssl
                )
            except aiohttp.TooManyRedirects as exc:
                # Not the network: the registry's replies lead nowhere, on every try.
                raise RegistryError(f"{self.host}: {method} {url.path}: a redirect loop") from exc
            except aiohttp.ClientSSLError as exc:
                # A certificate will not verify on the next try either.
                raise Unavailable(f"{self.host}: TLS failed: {_describe(exc)}") from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                if isinstance(exc.__cause__, CargoholdError):
                    # A streamed body's source failed (aiohttp wraps what it raised):
                    # that error, not the broken connection, is what the caller must see.
                    raise exc.__cause__ from None
                if last:
                    raise Unavailable(
                        f"{self.host}: {method} {url.path} failed: {_describe(exc)}"
                    ) from exc
                await asyncio.sleep(self.retry.delay(attempt))
                continue
            if response.status not in RETRY_STATUSES or last:
                return response
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            response.release()
            await asyncio.sleep(self.retry.delay(attempt, retry_after))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _fetch_token(
        self,
        method: str,
        url: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        form: Sequence[tuple[str, str]] | None = None,
        authorization: str | None = None,
    ) -> TokenReply:
        """A request to a token server: with retries, without the registry's auth."""
        target = URL(url)
        if params:
            target = target.extend_query(list(params))
        headers = {"Authorization": authorization} if authorization else {}
        body: bytes | None = None
        if form is not None:
            body = urlencode(list(form)).encode("ascii")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        response = await self._attempts(method, target, headers, body, retry=True)
        async with response:
            return TokenReply(response.status, await response.content.read(ERROR_BODY_LIMIT))


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        # Its own text names the SSL context object; the OS error is what matters.
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


# -- errors -------------------------------------------------------------------------------

_BY_STATUS: Mapping[int, type[RegistryError]] = {
    401: Unauthorized,
    403: Denied,
    405: OperationUnsupported,
    413: ManifestTooLarge,
    416: RangeInvalid,
    429: TooManyRequests,
}


async def error_from_reply(
    response: aiohttp.ClientResponse, missing: Callable[[], RegistryError] | None = None
) -> RegistryError:
    """The domain error an error reply stands for (the caller releases the reply)."""
    body = b""
    if response.method != "HEAD":
        try:
            body = await response.content.read(ERROR_BODY_LIMIT)
        except aiohttp.ClientPayloadError:
            # Distribution 2.8 answers an unsatisfiable Range with a Content-Length its
            # body does not have: the status alone must do.
            body = b""
    entry = _first_error(body)
    where = f"{response.method} {response.url.path}"
    if entry is not None:
        code = entry.get("code")
        message = entry.get("message")
        detail = entry.get("detail")
        text = message if isinstance(message, str) and message else None
        cls = error_for(code, response.status) if isinstance(code, str) else RegistryError
        if cls is RegistryError and response.status == 404 and missing is not None:
            return missing()
        if cls is RegistryError and response.status >= 500:
            return Unavailable(f"{where}: the registry answered {response.status}: {text}")
        return _construct(cls, text, detail, missing)
    status = response.status
    if status == 404 and missing is not None:
        return missing()
    if status >= 500:
        return Unavailable(f"{where}: the registry answered {status}")
    cls = _BY_STATUS.get(status, RegistryError)
    return cls(f"{where}: the registry answered {status}")


def _first_error(body: bytes) -> dict[str, Any] | None:
    try:
        document = json.loads(body)
    except ValueError:
        return None
    if not isinstance(document, dict):
        return None
    found = document.get("errors")
    if isinstance(found, list) and found and isinstance(found[0], dict):
        return found[0]
    return None


def _construct(
    cls: type[RegistryError],
    message: str | None,
    detail: object,
    missing: Callable[[], RegistryError] | None,
) -> RegistryError:
    # Two errors carry digests in their constructor; the rest take (message, detail).
    if cls is BlobUnknown:
        fallback = missing() if missing is not None else None
        digest = getattr(fallback, "digest", None) or _digest_in(detail) or ""
        return BlobUnknown(digest, message or "")
    if cls is ManifestBlobUnknown:
        digests = _digests_in(detail)
        return ManifestBlobUnknown(digests, message or "")
    return cls(message or "", detail)


def _digest_in(detail: object) -> str | None:
    if isinstance(detail, str):
        return detail
    if isinstance(detail, dict) and isinstance(detail.get("digest"), str):
        return str(detail["digest"])
    return None


def _digests_in(detail: object) -> list[str]:
    if isinstance(detail, dict):
        found = detail.get("digests")
        if isinstance(found, list):
            return [str(d) for d in found]
    single = _digest_in(detail)
    return [single] if single else []
