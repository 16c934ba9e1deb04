"""The client's address as Distribution reads it: proxies' headers first.

``X-Forwarded-For``'s first address, else ``X-Real-IP``, else the peer's
address (Distribution's ``requestutil.RemoteIP``). A header that is not an
address is passed over. Only what a client is sent to depends on it (a CDN or
the storage itself, ``cloudfront``'s ``ipfilteredby``), never who it may be.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

__all__ = ["remote_ip"]


def remote_ip(headers: Mapping[str, str], peer: str | None) -> str | None:
    """The client's IP address by ``headers``, or ``peer`` (the connection's)."""
    forwarded = headers.get("X-Forwarded-For")
    if forwarded:
        first = forwarded.split(",", 1)[0].strip(" ")
        if _is_address(first):
            return first
    real = headers.get("X-Real-IP")
    if real and _is_address(real):
        return real
    return peer


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
