"""Pulls of manifests told to storage, for retention policies that keep what is pulled.

A request hook (``pipeline.py``): once a manifest's reply is out (a GET or a
HEAD, by tag or by digest; a 304 carries no event and is not told), the
namespace's upkeep notes it (``Upkeep.note_pull``). Installed only when a
retention policy reads pulls, so that no other registry pays for it.
"""

from __future__ import annotations

from cargohold.api.events import PULL
from cargohold.api.pipeline import Exchange
from cargohold.registry import Upkeep

__all__ = ["PullNotes"]


class PullNotes:
    """Tells ``upkeep`` of every manifest pulled."""

    def __init__(self, upkeep: Upkeep) -> None:
        self._upkeep = upkeep

    def request_started(self, exchange: Exchange) -> None:
        pass

    def request_finished(self, exchange: Exchange) -> None:
        event = exchange.event
        # A manifest's pull carries its bytes; a blob's does not.
        if event is None or event.action != PULL or event.payload is None:
            return
        if event.digest is not None:
            self._upkeep.note_pull(event.repository, event.digest)
