"""How many upload requests one client may have under way at once (``limits.uploadsperclient``).

An upload request holds a connection, a file and a thread's writes for as long
as its body streams; a client that opens hundreds at once would take them from
everyone else. The count is per worker and per client address: nothing needs
sharing, since a request is counted only while this worker serves it, and a
client's requests spread over N workers are held to N times the bound at most.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from cargohold.errors import TooManyRequests

__all__ = ["UploadSlots"]


class UploadSlots:
    """Slots for upload requests, ``limit`` per client address (0: as many as asked)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    @contextmanager
    def hold(self, client: str) -> Iterator[None]:
        """Holds a slot of ``client`` while the block runs.

        Raises ``TooManyRequests`` when the client has none free: it is asked to
        try again in a second, by when one of its uploads has usually moved on.
        """
        if not self.limit:
            yield
            return
        held = self._held.get(client, 0)
        if held >= self.limit:
            raise TooManyRequests(
                f"{held} uploads from this client are under way; at most {self.limit} at once"
                " (limits.uploadsperclient)"
            )
        self._held[client] = held + 1
        try:
            yield
        finally:
            left = self._held[client] - 1
            if left:
                self._held[client] = left
            else:
                del self._held[client]  # the table holds only clients with uploads under way
