"""A body still in the socket it arrives on, handed over to be passed on by the kernel.

A blob read from an object store over plain HTTP arrives on a TCP socket. Sent
on to a client over plain HTTP, its bytes can go from one socket to the other
with ``splice`` (``api/relay.py``) instead of through the process: no copy into
Python's memory and out again, no pass through the HTTP parser, no turn of the
event loop per piece. A stream of chunks that can give up its socket this way
is ``InSocket``; whatever reads it (the storage layer's range limit, the HTTP
layer) asks before taking the first chunk, and goes on with the chunks when
the answer is None.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

#: Below this many bytes still to come a body is read on: a socket handed over takes its
#: connection with it, and a new connection costs more than copying so few bytes.
MINIMUM = 1 << 20


@dataclass(slots=True)
class SocketBody:
    """The rest of a body: what the process already received, then bytes in a socket."""

    #: Bytes of the body already received, which go first.
    head: bytes
    #: A non-blocking duplicate of the socket's descriptor, owned by this object.
    fd: int
    #: Bytes of the body still to come on the socket after ``head``: read no more.
    length: int
    #: Seconds to wait for the socket's next bytes before giving up; None waits on.
    read_timeout: float | None
    #: Gives up the connection the body came on: the bytes taken from it leave it unusable.
    release: Callable[[], None]

    def close(self) -> None:
        """Close the duplicate and give the connection up; once."""
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            try:
                os.close(fd)
            finally:
                self.release()


@runtime_checkable
class InSocket(Protocol):
    """A stream of chunks that can instead hand over the socket its bytes arrive on."""

    def socket_body(self, most: int) -> SocketBody | None:
        """At most ``most`` bytes of the body, taken out of the stream, which then has no
        more chunks. None, and the stream as it was, when they cannot be: a stream already
        read from, an encrypted or encoded body, or too little left to be worth it."""
        ...


class Relayable:
    """``chunks`` as an async iterator that may give up its socket through ``take`` first."""

    def __init__(
        self, chunks: AsyncGenerator[bytes, None], take: Callable[[int], SocketBody | None]
    ) -> None:
        self._chunks = chunks
        self._take = take
        self._started = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self

    async def __anext__(self) -> bytes:
        self._started = True
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()

    def socket_body(self, most: int) -> SocketBody | None:
        return None if self._started else self._take(most)
