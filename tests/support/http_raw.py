"""HTTP/1.1 written and read byte for byte, for tests of framing, pipelining and keep-alive.

``request_bytes`` writes a request the way a test means it (nothing
normalised); ``read_replies`` reads one reply per request sent on a
connection, taking each body by its ``Content-Length`` (none for a HEAD, a
204 or a 304), so that replies pipelined back to back are split exactly
where the server said they end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class RawReply:
    status_line: bytes
    #: Lower-case names; the last of a repeated name wins.
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def comparable(self) -> tuple[bytes, dict[bytes, bytes], bytes]:
        """Everything but what differs between any two replies: ``Date``, and the value
        of ``X-Request-Id`` (each request's own)."""
        headers = {k: b"<id>" if k == b"x-request-id" else v for k, v in self.headers.items()}
        headers.pop(b"date", None)
        return self.status_line, headers, self.body


def request_bytes(
    method: str, target: str, *extra: str, version: str = "HTTP/1.1", body: bytes = b""
) -> bytes:
    lines = [f"{method} {target} {version}", "Host: registry.test", "User-Agent: test/1.0", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_reply(reader: asyncio.StreamReader, head_only: bool) -> RawReply:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head[:-4].split(b"\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get(b"content-length", b"0"))
    no_body = head_only or status_line.split()[1] in (b"204", b"304")
    body = b"" if no_body else await reader.readexactly(length)
    return RawReply(status_line, headers, body)


async def read_replies(reader: asyncio.StreamReader, requests: Sequence[bytes]) -> list[RawReply]:
    """One reply for each of ``requests``, in order (within 30 s)."""
    async with asyncio.timeout(30):
        return [await read_reply(reader, request.startswith(b"HEAD ")) for request in requests]
