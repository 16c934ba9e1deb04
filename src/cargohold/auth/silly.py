"""The ``silly`` access controller, for tests only, as Distribution's.

Any ``Authorization`` header at all lets the request through with every
action; without one the request gets ``401`` and a Bearer challenge naming
the scopes it would need. It checks nothing: never use it where it matters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cargohold.auth.access import Access, Grant, format_scope, quote
from cargohold.errors import Unauthorized

__all__ = ["SillyAccessController"]


class SillyAccessController:
    def __init__(self, realm: str, service: str) -> None:
        self.realm = realm
        self.service = service

    def authorize_now(self, headers: Mapping[str, str], access: Sequence[Access]) -> Grant | None:
        return Grant("silly") if headers.get("Authorization") else None

    async def authorize(self, headers: Mapping[str, str], access: Sequence[Access]) -> Grant:
        if headers.get("Authorization"):
            return Grant("silly")
        challenge = f'Bearer realm="{quote(self.realm)}",service="{quote(self.service)}"'
        scope = format_scope(access)
        if scope:
            challenge += f',scope="{quote(scope)}"'
        raise Unauthorized(detail=[item.record() for item in access] or None, challenge=challenge)
