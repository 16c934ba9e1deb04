"""Server bugs the client work ran into, each guarded by a test now that it is fixed."""

from __future__ import annotations

import socket
import ssl

import pytest


def test_a_tls_hello_on_the_plain_http_port_is_refused_at_once(cargohold_url: str) -> None:
    # The fast path once buffered a ClientHello waiting for the end of a header block,
    # so skopeo (HTTPS first) waited its 10 s handshake timeout on every connection.
    host, _, port = cargohold_url.removeprefix("http://").partition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    # Distribution answers with a plain-HTTP 400 at once: the handshake fails fast.
    with (
        socket.create_connection((host, int(port)), timeout=3) as sock,
        pytest.raises(ssl.SSLError),
    ):
        context.wrap_socket(sock, server_hostname=host)
