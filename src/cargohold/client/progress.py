"""How a transfer reports its progress: one :class:`BlobProgress` per blob.

The copy engine asks a :class:`Progress` for one per blob and feeds it bytes;
the CLI shows them as rich progress bars on a terminal and as one plain line
per blob otherwise (``cargohold.cli``). Library callers pass nothing and get
:data:`NO_PROGRESS`.
"""

from __future__ import annotations

from typing import Final, Protocol

from cargohold.descriptor import Descriptor

__all__ = ["NO_PROGRESS", "BlobProgress", "NullProgress", "Progress"]


class BlobProgress(Protocol):
    def advance(self, amount: int) -> None:
        """``amount`` more bytes went through."""
        ...

    def rewind(self, completed: int) -> None:
        """A retry starts over from ``completed`` bytes."""
        ...

    def finish(self, outcome: str) -> None:
        """The blob is done: ``copied``, ``exists`` (skipped) or ``mounted``."""
        ...


class Progress(Protocol):
    def blob(self, descriptor: Descriptor) -> BlobProgress:
        """The reporter for one blob's transfer."""
        ...


class NullProgress:
    """Reports nothing."""

    def advance(self, amount: int) -> None:
        pass

    def rewind(self, completed: int) -> None:
        pass

    def finish(self, outcome: str) -> None:
        pass

    def blob(self, descriptor: Descriptor) -> BlobProgress:
        return self


NO_PROGRESS: Final = NullProgress()
