"""The ``_state`` of an upload URL, as Distribution signs it with ``http.secret``.

cargohold keeps everything about an upload in storage, so it never needs the
state a URL carries, and it trusts none. But a Go registry sharing the same
storage (a rolling migration, a mixed fleet) does: it refuses to continue an
upload whose next URL lacks a ``_state`` it can verify. So with ``http.secret``
set, every upload URL cargohold hands out carries one, in Distribution's form:
URL-safe base64 (padded) of an HMAC-SHA256 of the JSON state, followed by the
state itself, ``{"Name","UUID","Offset","StartedAt"}`` as Go marshals it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

__all__ = ["pack_upload_state"]


def _go_time(when: datetime) -> str:
    """A time as Go's ``encoding/json`` writes it: RFC 3339, fractions only when there are."""
    when = when.astimezone(UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if when.microsecond:
        text += f".{when.microsecond:06d}".rstrip("0")
    return text + "Z"


def pack_upload_state(
    secret: str, name: str, upload_id: str, offset: int, started_at: datetime
) -> str:
    """The ``_state`` token of upload ``upload_id`` of repository ``name`` at ``offset``."""
    state = {"Name": name, "UUID": upload_id, "Offset": offset, "StartedAt": _go_time(started_at)}
    message = json.dumps(state, separators=(",", ":")).encode()
    mac = hmac.new(secret.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac + message).decode()
