"""The blob descriptor cache: size and media type per digest, globally and per repository.

It sits in front of stat calls and is never the truth: every miss falls back to
storage, and every entry is dropped when the blob or link it describes goes
away. ``memory.py`` keeps entries in process; ``redis.py`` shares them between
processes in Distribution's key layout.
"""

from __future__ import annotations

from typing import Protocol

from cargohold.descriptor import Descriptor
from cargohold.digest import Digest


class BlobDescriptorCache(Protocol):
    #: True when every registry process sees the same entries (Redis), so an entry
    #: for a repository may stand in for reading its link file. An in-process cache
    #: cannot see another process unlink a blob, so for it links are always read.
    shared: bool

    @property
    def errors(self) -> int:
        """Round trips that failed so far (always 0 for a cache in process memory)."""
        ...

    async def get(self, digest: Digest) -> Descriptor | None:
        """The descriptor of a blob, wherever it is linked."""
        ...

    async def set(self, descriptor: Descriptor) -> None: ...

    async def clear(self, digest: Digest) -> None:
        """Forget the blob globally (it was deleted from storage)."""
        ...

    async def get_linked(self, repository: str, digest: Digest) -> Descriptor | None:
        """The descriptor of a blob linked in ``repository``, with that repository's media type."""
        ...

    async def set_linked(self, repository: str, descriptor: Descriptor) -> None: ...

    async def clear_linked(self, repository: str, digest: Digest) -> None:
        """Forget that the blob is linked in ``repository`` (it was unlinked)."""
        ...

    async def ping(self) -> bool:
        """Whether the cache answers (and has replayed what it could not send before)."""
        ...

    async def close(self) -> None: ...
