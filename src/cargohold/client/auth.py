"""Authentication as registry clients do it: challenges, credentials, bearer tokens.

A registry that wants credentials answers ``401`` with ``WWW-Authenticate``:

- ``Basic realm="…"``: every request carries the username and password.
- ``Bearer realm="…",service="…",scope="repository:<name>:pull"``: the client
  asks the token server at ``realm`` for a token good for ``service`` and the
  scopes it needs, and sends ``Authorization: Bearer <token>``.

Tokens are kept per scope set: a push needs ``pull,push`` on the target and
``pull`` on a mount's source, a catalog needs ``registry:catalog:*``; a scope
the registry asks for in a later challenge (``error="insufficient_scope"``) is
added to the set, and the wider set gets its own token. When the token server
hands out a ``refresh_token`` (Distribution's ``offline_token=true``, or a
docker ``identitytoken``), later tokens come from an OAuth2 ``POST`` with
``grant_type=refresh_token`` instead of resending the password. Without any
credentials the token request goes out anonymously, which public registries
answer with a pull-only token.

Credentials, first found wins (see :func:`find_credentials`):

1. the ``credentials`` argument (the CLI's ``--creds``);
2. ``CARGOHOLD_USERNAME`` and ``CARGOHOLD_PASSWORD`` in the environment, for
   every registry the process talks to;
3. the ``auths`` entry for the registry's host in docker's ``config.json``
   (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``): ``auth``
   (base64 ``user:password``), ``username``/``password``, or
   ``identitytoken``. Credential helpers (``credsStore``, ``credHelpers``) are
   not run.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from cargohold.errors import Unauthorized

__all__ = [
    "Authenticator",
    "Challenge",
    "Credentials",
    "find_credentials",
    "merge_scopes",
    "parse_challenges",
]

ENV_USERNAME = "CARGOHOLD_USERNAME"
ENV_PASSWORD = "CARGOHOLD_PASSWORD"
#: Sent with token requests so that the token server can tell clients apart.
CLIENT_ID = "cargohold"
#: Distribution's token specification: a token without ``expires_in`` lasts 60 s.
DEFAULT_TOKEN_LIFETIME = 60.0
#: A token this close to its expiry is not used for a new request.
EXPIRY_MARGIN = 5.0


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password, or an identity token (an OAuth2 refresh token)."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, text: str) -> Credentials:
        """``user:password`` (the CLI's ``--creds``); the password may contain ``:``."""
        username, colon, password = text.partition(":")
        if not colon or not username:
            raise ValueError("credentials must be given as USERNAME:PASSWORD")
        return cls(username, password)

    def basic(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"


# -- challenges ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: a scheme and its parameters."""

    scheme: str  # lower case: "basic", "bearer"
    params: Mapping[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str | None:
        return self.params.get("service")

    @property
    def scopes(self) -> list[str]:
        # Several scopes are separated by spaces (RFC 6749 3.3).
        return self.params.get("scope", "").split()


_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_SCHEME = re.compile(rf"\s*({_TOKEN})")
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*(?:\"((?:[^\"\\]|\\.)*)\"|({_TOKEN}))\s*(?:,|$)")
_TOKEN68 = re.compile(r"\s*[A-Za-z0-9\-._~+/]+=*\s*(?:,|$)")
_ESCAPE = re.compile(r"\\(.)")


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """Every challenge in the ``WWW-Authenticate`` values (RFC 9110 11.6.1).

    One header may hold several challenges (``Basic realm="a", Bearer realm="b"``),
    parameters may be quoted strings with backslash escapes or bare tokens.
    Anything that does not parse ends the header rather than failing the request.
    """
    found: list[Challenge] = []
    for header in headers:
        pos = 0
        while pos < len(header):
            while pos < len(header) and header[pos] in " \t,":
                pos += 1
            scheme = _SCHEME.match(header, pos)
            if scheme is None:
                break
            pos = scheme.end()
            params: dict[str, str] = {}
            while True:
                param = _PARAM.match(header, pos)
                if param is None:
                    break
                name, quoted, bare = param.groups()
                params[name.lower()] = _ESCAPE.sub(r"\1", quoted) if quoted is not None else bare
                pos = param.end()
            if not params:
                token68 = _TOKEN68.match(header, pos)
                if token68 is not None:
                    pos = token68.end()
            found.append(Challenge(scheme.group(1).lower(), params))
    return found


def merge_scopes(*groups: Iterable[str]) -> tuple[str, ...]:
    """Scopes with the actions of one resource merged: ``repository:a:pull,push``.

    The result is sorted, so that equal scope sets are equal tuples (one token each).
    """
    actions: dict[tuple[str, str], set[str]] = {}
    for group in groups:
        for scope in group:
            resource, colon, acts = scope.rpartition(":")
            kind, colon2, name = resource.partition(":")
            if not colon or not colon2:
                continue  # not type:name:actions; a scope we cannot merge is dropped
            actions.setdefault((kind, name), set()).update(a for a in acts.split(",") if a)
    return tuple(
        sorted(f"{kind}:{name}:{','.join(sorted(acts))}" for (kind, name), acts in actions.items())
    )


# -- credentials --------------------------------------------------------------------------


def docker_config_path(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    folder = environ.get("DOCKER_CONFIG")
    if folder:
        return Path(folder) / "config.json"
    return Path(environ.get("HOME") or Path.home()) / ".docker" / "config.json"


def _host_of(key: str) -> str:
    # Keys are "host:port", "https://host/v1/" (docker's legacy Hub key) or "http://host".
    if "://" in key:
        return urlsplit(key).netloc.lower()
    return key.partition("/")[0].lower()


def _from_docker_entry(entry: Mapping[str, Any]) -> Credentials | None:
    identity = entry.get("identitytoken") or None
    username = entry.get("username") or ""
    password = entry.get("password") or ""
    encoded = entry.get("auth")
    if isinstance(encoded, str) and encoded:
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            decoded = ""
        username, colon, password = decoded.partition(":")
        if not colon:
            username, password = "", ""
    if not (username or identity):
        return None
    return Credentials(
        str(username), str(password), identity if isinstance(identity, str) else None
    )


def docker_credentials(host: str, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The credentials docker's ``config.json`` holds for ``host`` (``host[:port]``), if any."""
    path = docker_config_path(environ)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        return None
    host = host.lower()
    for key, entry in auths.items():
        if isinstance(key, str) and isinstance(entry, dict) and _host_of(key) == host:
            found = _from_docker_entry(entry)
            if found is not None:
                return found
    return None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ValueError(f"{path} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a JSON object")
    return document


def _write_config(path: Path, document: Mapping[str, Any]) -> None:
    """Replace docker's config whole (a temporary sibling renamed over it), readable by its
    owner only, as docker writes it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(document, out, indent="\t")
        out.write("\n")
    os.replace(temporary, path)


def store_docker_credentials(
    host: str, credentials: Credentials, environ: Mapping[str, str] | None = None
) -> Path:
    """Keep ``credentials`` for ``host`` in docker's ``config.json`` (its ``auths``, under
    ``host``, as ``docker login`` writes them; the rest of the file as it was); its path."""
    path = docker_config_path(environ)
    document = _read_config(path)
    auths = document.get("auths")
    if not isinstance(auths, dict):
        auths = document["auths"] = {}
    for key in [k for k in auths if isinstance(k, str) and _host_of(k) == host.lower()]:
        del auths[key]
    pair = f"{credentials.username}:{credentials.password}".encode()
    auths[host] = {"auth": base64.b64encode(pair).decode()}
    _write_config(path, document)
    return path


def remove_docker_credentials(host: str, environ: Mapping[str, str] | None = None) -> bool:
    """Forget the credentials docker's ``config.json`` holds for ``host``; whether it had any."""
    path = docker_config_path(environ)
    document = _read_config(path)
    auths = document.get("auths")
    if not isinstance(auths, dict):
        return False
    keys = [k for k in auths if isinstance(k, str) and _host_of(k) == host.lower()]
    for key in keys:
        del auths[key]
    if keys:
        _write_config(path, document)
    return bool(keys)


def find_credentials(
    host: str,
    credentials: Credentials | None = None,
    environ: Mapping[str, str] | None = None,
) -> Credentials | None:
    """The credentials for ``host``: the argument, else the environment, else docker's config."""
    if credentials is not None:
        return credentials
    environ = os.environ if environ is None else environ
    username = environ.get(ENV_USERNAME)
    if username:
        return Credentials(username, environ.get(ENV_PASSWORD, ""))
    return docker_credentials(host, environ)


# -- tokens -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenReply:
    status: int
    body: bytes


class TokenFetcher(Protocol):
    """How the authenticator reaches a token server (the transport supplies it, with retries)."""

    async def __call__(
        self,
        method: str,
        url: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        form: Sequence[tuple[str, str]] | None = None,
        authorization: str | None = None,
    ) -> TokenReply: ...


@dataclass(slots=True)
class _Token:
    value: str
    expires_at: float

    def fresh(self) -> bool:
        return time.monotonic() < self.expires_at - EXPIRY_MARGIN


class Authenticator:
    """What to send as ``Authorization`` to one registry, learned from its challenges."""

    def __init__(self, host: str, credentials: Credentials | None, fetch: TokenFetcher) -> None:
        self.host = host
        self.credentials = credentials
        self._fetch = fetch
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, str | None, tuple[str, ...]], _Token] = {}
        self._refresh: dict[tuple[str, str | None], str] = {}
        #: Refresh tokens a token server refused: not offered again.
        self._refused: set[str] = set()
        # One token request per scope set at a time, however many blobs ask at once.
        self._locks: dict[tuple[str, str | None, tuple[str, ...]], asyncio.Lock] = {}
        #: How many token requests went out (for tests and diagnostics).
        self.token_requests = 0

    @property
    def challenge(self) -> Challenge | None:
        return self._challenge

    def learn(self, headers: Iterable[str]) -> bool:
        """Remember the registry's challenge; whether it is one this client can answer."""
        challenges = parse_challenges(headers)
        for scheme in ("bearer", "basic"):
            for challenge in challenges:
                if challenge.scheme == scheme:
                    self._challenge = challenge
                    return True
        return False

    async def authorization(self, scopes: Sequence[str]) -> str | None:
        """The ``Authorization`` value for a request needing ``scopes``, or None."""
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            if self.credentials is None or not self.credentials.username:
                raise Unauthorized(
                    f"{self.host} requires credentials "
                    f"(--creds, {ENV_USERNAME}/{ENV_PASSWORD}, or docker login)"
                )
            return self.credentials.basic()
        return f"Bearer {await self.token(challenge, merge_scopes(scopes))}"

    def widen(
        self, headers: Iterable[str], scopes: Sequence[str], sent: str | None
    ) -> tuple[str, ...] | None:
        """After a 401 to a request that carried ``sent``: the scopes to retry with.

        None when retrying cannot help: no challenge this client answers, no
        credentials for Basic, or Basic credentials that were just refused.
        """
        if not self.learn(headers):
            return None
        challenge = self._challenge
        assert challenge is not None
        if challenge.scheme == "basic":
            if self.credentials is None or (sent or "").startswith("Basic "):
                return None
            return merge_scopes(scopes)
        wider = merge_scopes(scopes, challenge.scopes)
        if sent == f"Bearer {self._cached(challenge, wider)}":
            # That very token was refused (revoked, or expired early): fetch a new one.
            # The caller bounds the retries, so a token server that keeps issuing
            # useless tokens cannot loop us.
            self._tokens.pop((challenge.realm, challenge.service, wider), None)
        return wider

    def _cached(self, challenge: Challenge, scopes: tuple[str, ...]) -> str | None:
        token = self._tokens.get((challenge.realm, challenge.service, scopes))
        return None if token is None else token.value

    async def token(self, challenge: Challenge, scopes: tuple[str, ...]) -> str:
        key = (challenge.realm, challenge.service, scopes)
        token = self._tokens.get(key)
        if token is not None and token.fresh():
            return token.value
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            token = self._tokens.get(key)
            if token is not None and token.fresh():
                return token.value
            token = await self._request_token(challenge, scopes)
            self._tokens[key] = token
            return token.value

    async def _request_token(self, challenge: Challenge, scopes: tuple[str, ...]) -> _Token:
        if not challenge.realm:
            raise Unauthorized(f"{self.host} asked for a bearer token but named no realm")
        where = (challenge.realm, challenge.service)
        refresh = self._refresh.get(where)
        if refresh is None and self.credentials is not None:
            refresh = self.credentials.identity_token
        if refresh is not None and refresh not in self._refused:
            token = await self._oauth_refresh(challenge, scopes, refresh)
            if token is not None:
                return token
        return await self._get_token(challenge, scopes)

    def _common(self, challenge: Challenge, scopes: tuple[str, ...]) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = []
        if challenge.service is not None:
            params.append(("service", challenge.service))
        # Docker sends one scope parameter per scope; Distribution's token server reads all.
        params.extend(("scope", scope) for scope in scopes)
        return params

    async def _oauth_refresh(
        self, challenge: Challenge, scopes: tuple[str, ...], refresh: str
    ) -> _Token | None:
        form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh),
            ("client_id", CLIENT_ID),
        ]
        if challenge.service is not None:
            form.append(("service", challenge.service))
        if scopes:
            # OAuth2 takes the scopes as one space-separated parameter.
            form.append(("scope", " ".join(scopes)))
        self.token_requests += 1
        reply = await self._fetch("POST", challenge.realm, form=form)
        if reply.status == 200:
            return self._accept(challenge, reply.body)
        # The refresh token was refused (revoked, expired) or the server has no OAuth2
        # endpoint: forget it and fall back to a plain token request.
        self._refresh.pop((challenge.realm, challenge.service), None)
        self._refused.add(refresh)
        return None

    async def _get_token(self, challenge: Challenge, scopes: tuple[str, ...]) -> _Token:
        params = self._common(challenge, scopes)
        authorization = None
        credentials = self.credentials
        if credentials is not None and credentials.username:
            authorization = credentials.basic()
            # Ask for a refresh token, so that the password is sent only once.
            params += [("offline_token", "true"), ("client_id", CLIENT_ID)]
        self.token_requests += 1
        reply = await self._fetch(
            "GET", challenge.realm, params=params, authorization=authorization
        )
        if reply.status in (401, 403):
            who = "anonymous access" if authorization is None else "the credentials"
            raise Unauthorized(f"the token server of {self.host} refused {who}")
        if reply.status != 200:
            raise Unauthorized(
                f"the token server of {self.host} answered {reply.status} to a token request"
            )
        return self._accept(challenge, reply.body)

    def _accept(self, challenge: Challenge, body: bytes) -> _Token:
        try:
            document = json.loads(body)
        except ValueError:
            document = None
        if not isinstance(document, dict):
            raise Unauthorized(f"the token server of {self.host} sent no JSON object")
        value = document.get("token") or document.get("access_token")
        if not isinstance(value, str) or not value:
            raise Unauthorized(f"the token server of {self.host} sent no token")
        refresh = document.get("refresh_token")
        if isinstance(refresh, str) and refresh:
            self._refresh[(challenge.realm, challenge.service)] = refresh
        lifetime = document.get("expires_in")
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        return _Token(value, time.monotonic() + float(lifetime))
