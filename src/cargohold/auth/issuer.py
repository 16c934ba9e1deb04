"""cargohold's own token server: the other half of Distribution's token authentication.

Distribution leaves issuing tokens to a separate service. With ``tokenserver``
enabled, the registry process serves one itself at ``tokenserver.path``, so one
process is a complete secured registry::

    GET  <path>?service=<service>&scope=repository:team/app:pull,push[&offline_token=true]
         Authorization: Basic <user:password>            (optional: anonymous otherwise)
    POST <path>  grant_type=password&username=…&password=…&service=…&scope=…[&access_type=offline]
    POST <path>  grant_type=refresh_token&refresh_token=…&service=…&scope=…

The answer is ``{"token", "access_token", "expires_in", "issued_at"}``, plus a
``refresh_token`` when asked (``offline_token=true``, or ``access_type=offline``
in the password grant) by a user with credentials.

What a token grants is the intersection of what was asked and what the ACL
allows the account (:class:`AccessList`). Asking for more is not an error:
the token simply lacks it, and the registry later answers
``insufficient_scope``, as the token specification wants. Wrong credentials,
though, are refused (401): a client must not mistake them for anonymous access.

Tokens are JWTs signed with ``tokenserver.key``; their header carries the key's
``kid`` (its libtrust key ID unless ``keyid`` says otherwise) and, when a
certificate is configured, the chain as ``x5c``, so both cargohold and
Distribution verify them against a ``rootcertbundle`` holding that certificate
or its CA. A refresh token is a JWT too, signed with the same key but for
another audience (``<service>#refresh``), so no registry takes it for an access
token; it names its user and a digest of the user's htpasswd entry, so it dies
with the user or a password change, and it can be checked by any process.
"""

from __future__ import annotations

import base64
import logging
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from cargohold.auth.access import ANY, Access, Resource, parse_scope, quote
from cargohold.auth.htpasswd import HtpasswdFile, parse_basic
from cargohold.auth.token import libtrust_key_id, load_certificates
from cargohold.config import Config, TokenServer
from cargohold.errors import ConfigError, NameInvalid, Unauthorized
from cargohold.reference import validate_name

__all__ = ["AccessList", "TokenIssuer", "TokenReply", "TokenRequestInvalid", "compile_pattern"]

log = logging.getLogger("cargohold.auth")

_ACCOUNT = "${account}"
_REFRESH_AUDIENCE = "{service}#refresh"


class TokenRequestInvalid(Exception):
    """A token request the server cannot honour: an OAuth2 ``error`` code and a description."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


# -- the ACL ------------------------------------------------------------------------------


def compile_pattern(pattern: str, account: str | None = None) -> re.Pattern[str] | None:
    """A resource-name pattern as a regular expression matching whole names.

    ``*`` matches any characters but ``/`` (so ``a/*`` matches ``a/b``, not
    ``a/b/c``, and never ``ab/c``); ``**`` matches any characters, ``/`` too
    (``a/**`` matches ``a/b`` and ``a/b/c``, not ``a``); ``${account}`` matches
    the requesting user's name exactly. Everything else is literal. None when
    the pattern names the account and there is none (anonymous requests).
    """
    parts: list[str] = []
    pos = 0
    while pos < len(pattern):
        if pattern.startswith("**", pos):
            parts.append(".*")
            pos += 2
        elif pattern[pos] == "*":
            parts.append("[^/]*")
            pos += 1
        elif pattern.startswith(_ACCOUNT, pos):
            if account is None:
                return None
            parts.append(re.escape(account))
            pos += len(_ACCOUNT)
        else:
            parts.append(re.escape(pattern[pos]))
            pos += 1
    return re.compile("".join(parts), re.DOTALL)


@dataclass(frozen=True, slots=True)
class _Rule:
    type: str
    pattern: str
    actions: frozenset[str]
    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    anonymous: bool = False
    compiled: re.Pattern[str] | None = field(default=None, compare=False)

    def matches(self, account: str | None, resource: Resource) -> bool:
        if resource.type != self.type:
            return False
        pattern = self.compiled
        if pattern is None:  # the pattern names the account: compiled per request
            pattern = compile_pattern(self.pattern, account)
        return pattern is not None and pattern.fullmatch(resource.name) is not None


class AccessList:
    """Which actions an account may have on a resource: the union of every rule that applies.

    A rule applies to an authenticated ``account`` when it names the account in
    ``users`` (or ``*``), or one of its groups; the anonymous rules apply to
    everyone, authenticated or not. There are no deny rules: what no rule
    grants is refused.
    """

    def __init__(self, settings: TokenServer) -> None:
        self._groups: dict[str, set[str]] = {}
        for group, members in settings.groups.items():
            for member in members:
                self._groups.setdefault(member, set()).add(group)
        self._rules = [
            self._rule(
                entry.type, entry.name, entry.actions, users=entry.users, groups=entry.groups
            )
            for entry in settings.acl
        ] + [
            self._rule(entry.type, entry.name, entry.actions, anonymous=True)
            for entry in settings.anonymous
        ]

    @staticmethod
    def _rule(
        type_: str,
        name: str,
        actions: Iterable[str],
        *,
        users: Iterable[str] = (),
        groups: Iterable[str] = (),
        anonymous: bool = False,
    ) -> _Rule:
        compiled = None if _ACCOUNT in name else compile_pattern(name)
        return _Rule(
            type_,
            name,
            frozenset(actions),
            frozenset(users),
            frozenset(groups),
            anonymous,
            compiled,
        )

    def _applies(self, rule: _Rule, account: str | None) -> bool:
        if rule.anonymous:
            return True
        if account is None:
            return False
        return (
            account in rule.users
            or "*" in rule.users
            or bool(rule.groups & self._groups.get(account, set()))
        )

    def allowed(self, account: str | None, resource: Resource) -> frozenset[str]:
        """The actions ``account`` (None: anonymous) may have on ``resource``."""
        actions: set[str] = set()
        for rule in self._rules:
            if self._applies(rule, account) and rule.matches(account, resource):
                actions |= rule.actions
        return frozenset(actions)

    def grant(self, account: str | None, wanted: Sequence[Access]) -> list[dict[str, Any]]:
        """The ``access`` claim for ``wanted``: per resource, the actions asked and allowed.

        A repository scope whose name is not a valid repository name is dropped,
        so no token ever names ``..`` or ``%2f``.
        """
        asked: dict[Resource, list[str]] = {}
        for item in wanted:
            if item.resource.type == "repository":
                try:
                    validate_name(item.resource.name)
                except NameInvalid:
                    continue
            listed = asked.setdefault(item.resource, [])
            if item.action not in listed:
                listed.append(item.action)
        claim: list[dict[str, Any]] = []
        for resource, actions in asked.items():
            allowed = self.allowed(account, resource)
            granted = list(actions) if ANY in allowed else [a for a in actions if a in allowed]
            if granted:
                claim.append({"type": resource.type, "name": resource.name, "actions": granted})
        return claim


# -- keys ---------------------------------------------------------------------------------


def _algorithm_for(key: object) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        algorithm = by_curve.get(key.curve.name)
        if algorithm is not None:
            return algorithm
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise ConfigError(
        "tokenserver.key", "expected an RSA, EC (P-256, P-384, P-521) or Ed25519 private key"
    )


def _load_key(
    path: str,
) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise ConfigError("tokenserver.key", f"cannot read {path}: {exc.strerror}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(
            "tokenserver.key", f"{path} holds no unencrypted PEM private key"
        ) from None
    _algorithm_for(key)
    assert isinstance(
        key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    )
    return key


# -- the issuer ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenReply:
    token: str
    expires_in: int
    issued_at: datetime
    refresh_token: str | None = None

    def document(self) -> dict[str, Any]:
        """The JSON body: both names of the token, as docker and OAuth2 clients read them."""
        body: dict[str, Any] = {
            "token": self.token,
            "access_token": self.token,
            "expires_in": self.expires_in,
            "issued_at": self.issued_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if self.refresh_token is not None:
            body["refresh_token"] = self.refresh_token
        return body


class TokenIssuer:
    """Issues tokens for ``service`` to the users of an htpasswd file, as the ACL allows."""

    def __init__(
        self,
        *,
        path: str,
        issuer: str,
        service: str,
        key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey,
        certificates: Sequence[x509.Certificate] = (),
        keyid: str = "",
        expiration: float = 300.0,
        refresh_expiration: float = 7 * 24 * 3600.0,
        users: HtpasswdFile | None = None,
        acl: AccessList,
    ) -> None:
        self.path = path
        self.issuer = issuer
        self.service = service
        self._key = key
        self._public = key.public_key()
        self._algorithm = _algorithm_for(key)
        self._header: dict[str, Any] = {"kid": keyid or libtrust_key_id(self._public)}
        if certificates:
            self._header["x5c"] = [
                base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")
                for cert in certificates
            ]
        self.expiration = expiration
        self.refresh_expiration = refresh_expiration
        self.users = users
        self.acl = acl
        self._challenge = f'Basic realm="{quote(issuer)}"'

    @classmethod
    def from_config(cls, config: Config, threads: Executor | None = None) -> TokenIssuer | None:
        """The configured issuer, or None when ``tokenserver`` is not enabled."""
        settings = config.tokenserver
        if not settings.enabled:
            return None
        token = config.auth.token
        issuer = settings.issuer or (token.issuer if token else "")
        service = settings.service or (token.service if token else "")
        if not issuer:
            raise ConfigError("tokenserver.issuer", "required (auth.token names none)")
        if not service:
            raise ConfigError("tokenserver.service", "required (auth.token names none)")
        key = _load_key(settings.key)
        certificates: list[x509.Certificate] = []
        if settings.certificate:
            certificates = load_certificates(settings.certificate, "tokenserver.certificate")
            if certificates[0].public_key() != key.public_key():
                raise ConfigError(
                    "tokenserver.certificate",
                    "the first certificate is not that of tokenserver.key",
                )
        users = (
            HtpasswdFile(settings.htpasswd.path, "tokenserver.htpasswd.path", threads=threads)
            if settings.htpasswd
            else None
        )
        return cls(
            path=settings.path,
            issuer=issuer,
            service=service,
            key=key,
            certificates=certificates,
            keyid=settings.keyid,
            expiration=settings.expiration,
            refresh_expiration=settings.refreshexpiration,
            users=users,
            acl=AccessList(settings),
        )

    # -- requests -------------------------------------------------------------------------

    async def get(
        self,
        *,
        service: str | None,
        scopes: Iterable[str],
        account: str | None = None,
        offline: bool = False,
        authorization: str | None = None,
    ) -> TokenReply:
        """Distribution's token request: Basic credentials (optional), scopes in the query."""
        self._check_service(service)
        user: str | None = None
        if authorization:
            credentials = parse_basic(authorization)
            if credentials is None or not await self._authenticate(*credentials):
                raise Unauthorized("invalid credentials", challenge=self._challenge)
            user = credentials[0]
            if account and account != user:
                raise TokenRequestInvalid(
                    "invalid_request", "account does not match the credentials"
                )
        return self._issue(user, _scopes(scopes), refresh=offline and user is not None)

    async def post(self, form: Mapping[str, str]) -> TokenReply:
        """The OAuth2 form ``POST``: ``grant_type`` ``password`` or ``refresh_token``."""
        self._check_service(form.get("service"))
        scopes = _scopes([form.get("scope", "")])
        grant_type = form.get("grant_type")
        if grant_type == "password":
            username = form.get("username", "")
            password = form.get("password", "").encode()
            if not username or not await self._authenticate(username, password):
                raise TokenRequestInvalid("invalid_grant", "invalid credentials")
            return self._issue(username, scopes, refresh=form.get("access_type") == "offline")
        if grant_type == "refresh_token":
            user = self._refresh_subject(form.get("refresh_token", ""))
            return self._issue(user, scopes, refresh=False)
        raise TokenRequestInvalid(
            "unsupported_grant_type", f"grant_type {grant_type!r} is not supported"
        )

    def _check_service(self, service: str | None) -> None:
        if service and service != self.service:
            raise TokenRequestInvalid(
                "invalid_request", f"this server issues tokens for {self.service!r}"
            )

    async def _authenticate(self, username: str, password: bytes) -> bool:
        return self.users is not None and await self.users.authenticate(username, password)

    # -- tokens ---------------------------------------------------------------------------

    def _issue(self, user: str | None, wanted: Sequence[Access], *, refresh: bool) -> TokenReply:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": self.service,
            "exp": now + int(self.expiration),
            "nbf": now,
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "access": self.acl.grant(user, wanted),
        }
        token = self._sign(claims)
        log.info("token issued to %s for %s", user or "anonymous", claims["access"])
        return TokenReply(
            token,
            int(self.expiration),
            datetime.fromtimestamp(now, UTC),
            self._refresh_token(user, now) if refresh and user else None,
        )

    def _sign(self, claims: Mapping[str, Any]) -> str:
        return jwt.encode(dict(claims), self._key, algorithm=self._algorithm, headers=self._header)

    def _refresh_token(self, user: str, now: int) -> str:
        return self._sign(
            {
                "iss": self.issuer,
                "sub": user,
                "aud": _REFRESH_AUDIENCE.format(service=self.service),
                "exp": now + int(self.refresh_expiration),
                "nbf": now,
                "iat": now,
                "jti": secrets.token_urlsafe(16),
                "pwd": self.users.fingerprint(user) if self.users else None,
            }
        )

    def _refresh_subject(self, token: str) -> str:
        """The user a refresh token of this server names, if the user and password still hold."""
        try:
            claims = jwt.decode(
                token,
                self._public,
                algorithms=[self._algorithm],
                audience=_REFRESH_AUDIENCE.format(service=self.service),
                issuer=self.issuer,
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            log.info("refresh token refused: %s", exc)
            raise TokenRequestInvalid("invalid_grant", "invalid refresh token") from None
        user = claims.get("sub")
        fingerprint = (
            self.users.fingerprint(user)
            if self.users is not None and isinstance(user, str)
            else None
        )
        if not isinstance(user, str) or fingerprint is None or fingerprint != claims.get("pwd"):
            raise TokenRequestInvalid(
                "invalid_grant", "the refresh token's user is gone or changed"
            )
        return user


def _scopes(values: Iterable[str]) -> list[Access]:
    # Docker sends one scope parameter per scope, OAuth2 one parameter separated by spaces.
    return [access for value in values for access in parse_scope(value)]
