"""Requests are framed strictly, on both request paths, and never smuggled.

RFC 9112 leaves no room for a header name followed by whitespace before the
colon (section 5.1: "No whitespace is allowed between the field name and
colon ... A server MUST reject"), for a ``Content-Length`` that is doubled
or signed, or for a ``Transfer-Encoding`` the server does not know. A
registry behind a proxy that forwards such a request must refuse it, not
read its body as the next request. Each case here is sent raw, with a
request hidden after it in the same write, to cargohold with the fast path,
to cargohold without it, and to the Go registry (CNCF Distribution 2.8),
whose answers are the yardstick: every server answers once, with a 4xx (Go
answers an unknown transfer coding with 501, as RFC 9112 allows), and the
hidden request is never answered.

Pipelined well-formed requests, bodies included (a body that holds the text
of a request among them), get exactly one reply each, in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.distribution import distribution
from tests.support.http_raw import RawReply, read_reply
from tests.support.servers import cargohold

#: The request each malformed one tries to smuggle past the server in its "body".
HIDDEN = b"GET /v2/_catalog HTTP/1.1\r\nHost: x\r\n\r\n"


def smuggling(header: bytes, body: bytes = HIDDEN) -> bytes:
    return b"GET /v2/ HTTP/1.1\r\nHost: x\r\n" + header + b"\r\n\r\n" + body


#: Each case: the bytes, and what the Go registry answers them with.
MALFORMED = {
    "space before the colon": (smuggling(b"Content-Length : %d" % len(HIDDEN)), 400),
    "tab before the colon": (smuggling(b"Content-Length\t: %d" % len(HIDDEN)), 400),
    "transfer-encoding with a space": (smuggling(b"Transfer-Encoding : chunked"), 400),
    "doubled content-length": (
        smuggling(b"Content-Length: 0\r\nContent-Length: %d" % len(HIDDEN)),
        400,
    ),
    "content-length listed twice": (smuggling(b"Content-Length: 0, %d" % len(HIDDEN)), 400),
    "signed content-length": (smuggling(b"Content-Length: +%d" % len(HIDDEN)), 400),
    "negative content-length": (smuggling(b"Content-Length: -1"), 400),
    "unknown transfer-encoding": (smuggling(b"Transfer-Encoding: gzip"), 501),
    "chunked, then another coding": (smuggling(b"Transfer-Encoding: chunked, gzip"), 501),
    "a nul in a value": (smuggling(b"X-Test: a\x00b"), 400),
    "a line with no colon": (smuggling(b"Bogus"), 400),
}


@dataclass
class Servers:
    fast: str
    full: str
    go: str
    root: Path


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    root = tmp_path_factory.mktemp("framing") / "root"
    root.mkdir()
    with ExitStack() as stack:
        fast = stack.enter_context(cargohold(root))
        full = stack.enter_context(cargohold(root, extra_args=("--no-fast-path",)))
        go = stack.enter_context(distribution(root))
        yield Servers(fast, full, go, root)


async def exchange(url: str, data: bytes, heads: list[bool] | None = None) -> list[RawReply]:
    """Send ``data`` in one write; read every reply until the server closes or goes quiet."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    replies: list[RawReply] = []
    heads = list(heads or [])
    try:
        while True:
            head_only = heads.pop(0) if heads else False
            replies.append(await asyncio.wait_for(read_reply(reader, head_only), timeout=1.0))
    except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
        pass
    writer.close()
    return replies


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
async def test_a_malformed_request_is_refused_and_nothing_hidden_is_answered(
    servers: Servers, case: str
) -> None:
    data, go_status = MALFORMED[case]
    fast = await exchange(servers.fast, data)
    full = await exchange(servers.full, data)
    go = await exchange(servers.go, data)
    assert [reply.status for reply in go] == [go_status], "the Go registry refuses it too"
    assert [reply.status for reply in fast] == [400]
    assert [reply.comparable() for reply in fast] == [reply.comparable() for reply in full]
    for reply in fast + full + go:
        assert b"repositories" not in reply.body, "the hidden request was answered"


async def test_pipelined_requests_with_bodies_get_one_reply_each_in_order(
    servers: Servers,
) -> None:
    content = b"GET /v2/_catalog HTTP/1.1\r\nHost: x\r\n\r\n" * 3  # looks like requests
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(piece), piece) for piece in (content[:50], content[50:])
    )
    requests = [
        (b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n", False),
        (
            b"POST /v2/smuggle/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(content), content),
            False,
        ),
        (b"HEAD /v2/ HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (
            b"POST /v2/smuggle/blobs/uploads/ HTTP/1.1\r\nHost: x\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n%s0\r\n\r\n" % chunked,
            False,
        ),
        (b"GET /v2/nobody/tags/list HTTP/1.1\r\nHost: x\r\n\r\n", False),
        (b"GET /v2/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
    ]
    data = b"".join(request for request, _ in requests)
    heads = [head for _, head in requests]
    for url in (servers.fast, servers.full, servers.go):
        replies = await exchange(url, data, heads)
        # Uploads start (202), whatever their body; nothing else; one reply each, in order.
        assert [reply.status for reply in replies] == [200, 202, 200, 202, 404, 200], url
        for reply in replies:
            assert b"repositories" not in reply.body, url
