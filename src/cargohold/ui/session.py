"""Signed cookies: who signed in, until when, and the token that proves a form is ours.

A session is a cookie the server signed (HMAC-SHA256), so that any worker or
process holding the key reads it without shared state: the key is
``http.secret`` when set, which every process serving one registry must then
share, else one the supervisor made for its workers, else one of this process.

Forms are protected against cross-site requests twice: the cookies are
``SameSite=Strict``, and every form carries a token derived from the visitor's
own cookie (signed in or not), which another site can neither read nor make.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass

__all__ = ["KEY_VARIABLE", "Session", "Signer", "session_key"]

#: Where the supervisor leaves a key its workers share when ``http.secret`` is not set.
KEY_VARIABLE = "CARGOHOLD_UI_KEY"


def session_key(secret: str) -> bytes:
    """The key sessions are signed with (see the module docstring)."""
    if secret:
        return hashlib.sha256(b"cargohold ui\0" + secret.encode()).digest()
    shared = os.environ.get(KEY_VARIABLE)
    if shared:
        return hashlib.sha256(b"cargohold ui\0" + shared.encode()).digest()
    return secrets.token_bytes(32)


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in visitor."""

    user: str
    #: When it ends (seconds since the epoch).
    expires: float
    #: A refresh token, when the registry authenticates with tokens.
    refresh: str | None = None
    #: Random, so that two sign-ins of one user have different form tokens.
    nonce: str = ""


class Signer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    def _mac(self, text: str) -> str:
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def seal(self, session: Session) -> str:
        body = {"u": session.user, "e": session.expires, "n": session.nonce}
        if session.refresh is not None:
            body["r"] = session.refresh
        text = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
        return f"{text}.{self._mac(text)}"

    def open(self, cookie: str | None, now: float | None = None) -> Session | None:
        """The session in ``cookie``, or None when it is absent, forged, damaged or over."""
        if not cookie or "." not in cookie:
            return None
        text, _, mac = cookie.rpartition(".")
        if not hmac.compare_digest(mac, self._mac(text)):
            return None
        try:
            body = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            session = Session(
                str(body["u"]), float(body["e"]), body.get("r"), str(body.get("n", ""))
            )
        except (ValueError, KeyError, TypeError):
            return None
        if session.expires <= (time.time() if now is None else now):
            return None
        return session

    def form_token(self, anchor: str) -> str:
        """The token a form must carry, for a visitor whose cookie holds ``anchor``."""
        return self._mac("form\0" + anchor)

    def form_token_valid(self, anchor: str, token: str) -> bool:
        return bool(anchor) and hmac.compare_digest(token, self.form_token(anchor))
