"""The rest of an aiohttp client response's body, with its socket (``socketbody.py``)."""

from __future__ import annotations

import os
from typing import Any

import aiohttp

from cargohold.socketbody import MINIMUM, SocketBody


def socket_body(response: aiohttp.ClientResponse, most: int) -> SocketBody | None:
    """At most ``most`` more bytes of ``response``'s body: those its reader holds, then
    those still in its socket. None when the body is encrypted, encoded, chunked, failed,
    or has less than ``MINIMUM`` still to come; the response is then untouched."""
    connection = response.connection
    transport: Any = connection.transport if connection is not None else None
    protocol: Any = connection.protocol if connection is not None else None
    if transport is None or protocol is None or transport.get_extra_info("sslcontext"):
        return None
    sock = transport.get_extra_info("socket")
    headers = response.headers
    length = response.content_length
    if (
        sock is None
        or length is None
        or "Transfer-Encoding" in headers
        or headers.get("Content-Encoding", "identity") != "identity"
    ):
        return None
    content = response.content
    if content.exception() is not None or length - content.total_bytes < MINIMUM:
        return None
    try:
        fd = os.dup(sock.fileno())
    except OSError:  # out of descriptors: the body is read the ordinary way
        return None
    # What the reader holds goes first; reading it may let the connection read again, so
    # reading stops after (and with it the timeout on the socket: the taker keeps its own).
    head = content.read_nowait(-1)
    protocol.pause_reading()
    in_socket = length - content.total_bytes
    head = head[:most]
    return SocketBody(
        head, fd, min(in_socket, most - len(head)), protocol.read_timeout, response.close
    )
