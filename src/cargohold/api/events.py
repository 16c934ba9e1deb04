"""What a request did to the registry's content, as notifications will report it.

A reply that pulled, pushed, mounted or deleted something carries one
``Event`` naming the action and its target. The request pipeline hands it to
every hook once the reply has gone out (``pipeline.py``), so a listener hears
only of what a client was told succeeded. The actions and target fields are
Distribution's (``notifications/event.go``): ``pull``, ``push``, ``mount``,
``delete``; the request and actor parts come from the exchange.
"""

from __future__ import annotations

from typing import NamedTuple

from cargohold.descriptor import Descriptor
from cargohold.digest import Digest

__all__ = ["DELETE", "MOUNT", "PULL", "PUSH", "Event"]

PULL = "pull"
PUSH = "push"
MOUNT = "mount"
DELETE = "delete"


class Event(NamedTuple):
    """One action on one piece of content of a repository.

    A named tuple rather than a frozen dataclass: most requests make one, and it
    is made at a fifth of the cost.
    """

    action: str
    repository: str
    #: The blob or manifest acted on; a tag delete names only the tag.
    digest: Digest | None = None
    media_type: str | None = None
    size: int | None = None
    tag: str | None = None
    #: For a mount: the repository the blob came from.
    from_repository: str | None = None
    #: For a manifest pushed or pulled: its bytes (kept, not copied), for a listener
    #: that reports what it references.
    payload: bytes | None = None
    #: For a manifest deleted: the tags that pointed at it, deleted with it.
    untagged: tuple[str, ...] = ()

    @classmethod
    def of(
        cls,
        action: str,
        repository: str,
        descriptor: Descriptor,
        *,
        tag: str | None = None,
        from_repository: str | None = None,
        payload: bytes | None = None,
    ) -> Event:
        return cls(
            action,
            repository,
            descriptor.digest,
            descriptor.media_type,
            descriptor.size,
            tag,
            from_repository,
            payload,
        )
