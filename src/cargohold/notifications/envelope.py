"""What a receiver is sent: Distribution's event envelope, or a CloudEvent.

An event is rendered once, when it happens, as Distribution renders it
(``record``); the spool keeps that object, with the id every retry repeats.
Delivery wraps it per endpoint: in Distribution's envelope (``distribution``),
or as a CloudEvents 1.0 structured-mode event whose ``data`` is the same object
(``cloudevent``).

Distribution's fields, as its ``notifications/event.go`` names them:
``id``, ``timestamp``, ``action``; ``target`` (``mediaType``, ``size``,
``digest``, ``length``, ``repository``, ``fromRepository``, ``url``, ``tag``,
``references``); ``request`` (``id``, ``addr``, ``host``, ``method``,
``useragent``); ``actor`` (``name``); ``source`` (``addr``, ``instanceID``).
Empty strings and zero sizes are left out, as Go's ``omitempty`` leaves them;
``request.id``, ``request.method`` and ``request.useragent`` are always there.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from cargohold.api.events import Event

__all__ = [
    "CLOUDEVENTS_MEDIA_TYPE",
    "EVENTS_MEDIA_TYPE",
    "SIGNATURE_HEADER",
    "cloudevent",
    "distribution",
    "record",
    "sign",
]

EVENTS_MEDIA_TYPE = "application/vnd.docker.distribution.events.v2+json"
CLOUDEVENTS_MEDIA_TYPE = "application/cloudevents+json"
SIGNATURE_HEADER = "X-Cargohold-Signature"
#: The CloudEvents ``type`` of each event: ``<TYPE_PREFIX><kind>.<done>``.
TYPE_PREFIX = "io.cargohold."
_DONE = {"push": "pushed", "pull": "pulled", "mount": "mounted", "delete": "deleted"}


def timestamp(when: float) -> str:
    """RFC 3339 in UTC with microseconds, as receivers of Go's ``time.Time`` parse it."""
    return datetime.fromtimestamp(when, UTC).isoformat().replace("+00:00", "Z")


def record(
    event: Event,
    *,
    kind: str,
    when: float,
    url: str,
    request: Mapping[str, str],
    actor: str | None,
    source: Mapping[str, str],
    references: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The event as the spool keeps it: Distribution's object, and its ``kind``.

    ``kind`` is what the event is about (``manifest``, ``blob``, ``tag``), which
    Distribution's object does not always say (a delete names only a digest).
    """
    target: dict[str, Any] = {}
    if event.media_type and event.action != "delete":
        target["mediaType"] = event.media_type
    if event.size:
        target["size"] = event.size
    if event.digest is not None:
        target["digest"] = str(event.digest)
    if event.size:
        target["length"] = event.size
    target["repository"] = event.repository
    if event.from_repository:
        target["fromRepository"] = event.from_repository
    if url:
        target["url"] = url
    if event.tag:
        target["tag"] = event.tag
    if references:
        target["references"] = references
    return {
        "kind": kind,
        "event": {
            "id": str(uuid.uuid4()),
            "timestamp": timestamp(when),
            "action": event.action,
            "target": target,
            "request": {key: value for key, value in request.items() if value or key in _ALWAYS},
            "actor": {"name": actor} if actor else {},
            "source": dict(source),
        },
    }


_ALWAYS = frozenset({"id", "method", "useragent"})


def distribution(events: list[dict[str, Any]]) -> bytes:
    """Distribution's envelope of ``events`` (their ``event`` objects)."""
    return json.dumps({"events": events}, indent=3).encode()


def cloudevent(kept: Mapping[str, Any]) -> bytes:
    """A CloudEvents 1.0 structured-mode event of one kept record."""
    event = kept["event"]
    target = event["target"]
    subject = target["repository"]
    if target.get("tag"):
        subject += ":" + target["tag"]
    elif target.get("digest"):
        subject += "@" + target["digest"]
    source = event["source"]
    body = {
        "specversion": "1.0",
        "id": event["id"],
        "source": f"//cargohold/{source.get('addr', '')}/{source.get('instanceID', '')}",
        "type": f"{TYPE_PREFIX}{kept['kind']}.{_DONE[event['action']]}",
        "time": event["timestamp"],
        "subject": subject,
        "datacontenttype": "application/json",
        "data": event,
    }
    return json.dumps(body).encode()


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
