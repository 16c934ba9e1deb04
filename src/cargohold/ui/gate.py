"""Who is looking, and what they may see and do: the registry's own access control.

The UI decides nothing itself. A visitor's rights are those the configured
access controller grants to the credentials they bring:

- an ``Authorization`` header sent with the page (Basic, or a Bearer token),
  passed to the controller as the API would;
- a session from the sign-in form. With htpasswd (and ``silly``) the form's
  password is checked by the controller once, and the session is that user's.
  With token authentication the form asks the token server for a refresh
  token (cargohold's own ``tokenserver`` in this process, or the ``realm``
  over HTTP), and each page then asks it for an access token for exactly the
  repositories it shows, which the controller verifies;
- nothing: without access control everyone may do everything; with tokens,
  an anonymous token says what anonymous users may; with htpasswd, nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import aiohttp

from cargohold.auth import AccessController
from cargohold.auth.access import Access, Grant, format_scope
from cargohold.errors import Unauthorized
from cargohold.ui.session import Session, Signer

if TYPE_CHECKING:
    from cargohold.auth.issuer import TokenIssuer

__all__ = ["Gate", "IssuerTokens", "RealmTokens", "SignInRefused", "TokenSource", "Viewer"]

log = logging.getLogger("cargohold.ui")

#: Scopes asked for in one token request: a page's repositories, in a few requests at most.
SCOPES_PER_TOKEN = 200


class SignInRefused(Exception):
    """The credentials of a sign-in were not accepted (the message says so plainly)."""


class TokenSource(Protocol):
    """Where tokens come from when the registry authenticates with them."""

    async def refresh_token(self, username: str, password: str) -> str:
        """A refresh token for the user; ``SignInRefused`` for wrong credentials."""
        ...

    async def access_token(self, refresh: str | None, wanted: Sequence[Access]) -> str:
        """An access token for what of ``wanted`` the user (anonymous without ``refresh``)
        may have; ``SignInRefused`` when the refresh token is no longer honoured."""
        ...


class Viewer:
    """A visitor and their rights (``grant`` None: the registry controls no access)."""

    def __init__(
        self,
        user: str | None,
        session: Session | None,
        gate: Gate,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.user = user
        self.session = session
        self._gate = gate
        self._headers = headers
        self._known: dict[Access, bool] = {}

    @property
    def signed_in(self) -> bool:
        return self.session is not None

    async def allowed(self, wanted: Sequence[Access]) -> list[bool]:
        """Whether each of ``wanted`` is allowed (answers are remembered for the request)."""
        unknown = [item for item in dict.fromkeys(wanted) if item not in self._known]
        if unknown:
            self._known.update(await self._gate.decide(self, unknown, self._headers))
        return [self._known[item] for item in wanted]

    async def may(self, access: Access) -> bool:
        return (await self.allowed([access]))[0]


class Gate:
    def __init__(
        self,
        controller: AccessController | None,
        signer: Signer,
        *,
        tokens: TokenSource | None = None,
        lifetime: float = 8 * 3600.0,
    ) -> None:
        self.controller = controller
        self.signer = signer
        self.tokens = tokens
        self.lifetime = lifetime

    @property
    def has_sign_in(self) -> bool:
        return self.controller is not None

    def viewer(self, headers: Mapping[str, str], cookie: str | None) -> Viewer:
        if self.controller is None:
            return Viewer(None, None, self)
        if headers.get("Authorization"):
            return Viewer(_header_user(headers), None, self, headers)
        session = self.signer.open(cookie)
        return Viewer(session.user if session else None, session, self)

    async def sign_in(self, username: str, password: str) -> Session:
        if self.controller is None:
            raise SignInRefused("this registry has no accounts")
        expires = time.time() + self.lifetime
        nonce = secrets.token_urlsafe(12)
        if self.tokens is not None:
            refresh = await self.tokens.refresh_token(username, password)
            return Session(username, expires, refresh, nonce)
        basic = base64.b64encode(f"{username}:{password}".encode()).decode()
        try:
            await self.controller.authorize({"Authorization": f"Basic {basic}"}, ())
        except Unauthorized:
            raise SignInRefused("wrong user name or password") from None
        return Session(username, expires, None, nonce)

    async def decide(
        self, viewer: Viewer, wanted: Sequence[Access], headers: Mapping[str, str] | None
    ) -> dict[Access, bool]:
        controller = self.controller
        if controller is None:
            return dict.fromkeys(wanted, True)
        if headers is not None:
            grant = await _grant(controller, headers)
            return {item: grant is not None and grant.permits(item) for item in wanted}
        if self.tokens is None:
            # htpasswd (and silly) grant a valid user everything and anyone else nothing.
            return dict.fromkeys(wanted, viewer.session is not None)
        refresh = viewer.session.refresh if viewer.session is not None else None
        decided: dict[Access, bool] = {}
        for start in range(0, len(wanted), SCOPES_PER_TOKEN):
            chunk = wanted[start : start + SCOPES_PER_TOKEN]
            try:
                token = await self.tokens.access_token(refresh, chunk)
            except SignInRefused:
                token = None
            grant = (
                await _grant(controller, {"Authorization": f"Bearer {token}"})
                if token is not None
                else None
            )
            decided.update({item: grant is not None and grant.permits(item) for item in chunk})
        return decided


async def _grant(controller: AccessController, headers: Mapping[str, str]) -> Grant | None:
    try:
        return await controller.authorize(headers, ())
    except Unauthorized:
        return None


def _header_user(headers: Mapping[str, str]) -> str | None:
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip()).decode().partition(":")[0] or None
        except (ValueError, UnicodeDecodeError):
            return None
    return None


class IssuerTokens:
    """Tokens from cargohold's own token server, in this process."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self._issuer = issuer

    async def refresh_token(self, username: str, password: str) -> str:
        from cargohold.auth.issuer import TokenRequestInvalid

        form = {
            "grant_type": "password",
            "username": username,
            "password": password,
            "access_type": "offline",
        }
        try:
            reply = await self._issuer.post(form)
        except TokenRequestInvalid:
            raise SignInRefused("wrong user name or password") from None
        if reply.refresh_token is None:
            raise SignInRefused("the token server gave no refresh token")
        return reply.refresh_token

    async def access_token(self, refresh: str | None, wanted: Sequence[Access]) -> str:
        from cargohold.auth.issuer import TokenRequestInvalid

        scope = format_scope(wanted)
        try:
            if refresh is None:
                reply = await self._issuer.get(service=None, scopes=[scope])
            else:
                form = {"grant_type": "refresh_token", "refresh_token": refresh, "scope": scope}
                reply = await self._issuer.post(form)
        except (TokenRequestInvalid, Unauthorized) as exc:
            raise SignInRefused(str(exc)) from None
        return reply.token


class RealmTokens:
    """Tokens from another token server, over HTTP (the OAuth2 form ``POST`` and ``GET``)."""

    def __init__(self, realm: str, service: str) -> None:
        self._realm = realm
        self._service = service

    async def _ask(
        self, method: str, refused: str = "the token server refused", **fields: str
    ) -> dict[str, object]:
        fields["service"] = self._service
        timeout = aiohttp.ClientTimeout(total=10)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                if method == "POST":
                    reply = await session.post(self._realm, data=fields)
                else:
                    reply = await session.get(self._realm, params=fields)
                async with reply:
                    body = await reply.read()
                    if reply.status in (400, 401):
                        raise SignInRefused(refused)
                    if reply.status != 200:
                        raise SignInRefused(f"the token server answered {reply.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("ui: token server %s: %s", self._realm, exc)
            raise SignInRefused("the token server cannot be reached") from None
        try:
            document = json.loads(body)
        except ValueError:
            raise SignInRefused("the token server's answer is not JSON") from None
        return document if isinstance(document, dict) else {}

    async def refresh_token(self, username: str, password: str) -> str:
        document = await self._ask(
            "POST",
            "wrong user name or password",
            grant_type="password",
            username=username,
            password=password,
            access_type="offline",
            client_id="cargohold-ui",
        )
        refresh = document.get("refresh_token")
        if not isinstance(refresh, str):
            raise SignInRefused("the token server gave no refresh token")
        return refresh

    async def access_token(self, refresh: str | None, wanted: Sequence[Access]) -> str:
        scope = format_scope(wanted)
        if refresh is None:
            document = await self._ask("GET", scope=scope)
        else:
            document = await self._ask(
                "POST",
                grant_type="refresh_token",
                refresh_token=refresh,
                scope=scope,
                client_id="cargohold-ui",
            )
        token = document.get("access_token") or document.get("token")
        if not isinstance(token, str):
            raise SignInRefused("the token server gave no token")
        return token
