"""A bounded, in-process LRU blob descriptor cache."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from cargohold.descriptor import Descriptor
from cargohold.digest import Digest
from cargohold.reference import validate_name

#: Distribution's default for ``storage.cache.blobdescriptorsize``.
DEFAULT_SIZE = 10_000

_K = TypeVar("_K")


class _LRU(Generic[_K]):
    def __init__(self, size: int) -> None:
        self._size = max(1, size)
        self._entries: OrderedDict[_K, Descriptor] = OrderedDict()

    def get(self, key: _K) -> Descriptor | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def set(self, key: _K, value: Descriptor) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def pop(self, key: _K) -> None:
        self._entries.pop(key, None)

    def __len__(self) -> int:
        return len(self._entries)


class MemoryBlobDescriptorCache:
    """Up to ``size`` global entries and ``size`` repository entries, least recently used out."""

    shared = False
    errors = 0

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self._global: _LRU[Digest] = _LRU(size)
        self._linked: _LRU[tuple[str, Digest]] = _LRU(size)

    async def get(self, digest: Digest) -> Descriptor | None:
        return self._global.get(digest)

    async def set(self, descriptor: Descriptor) -> None:
        self._global.set(descriptor.digest, descriptor)

    async def clear(self, digest: Digest) -> None:
        self._global.pop(digest)

    async def get_linked(self, repository: str, digest: Digest) -> Descriptor | None:
        validate_name(repository)
        # A blob cleared globally (garbage collected) is gone from every repository.
        if self._global.get(digest) is None:
            return None
        return self._linked.get((repository, digest))

    async def set_linked(self, repository: str, descriptor: Descriptor) -> None:
        validate_name(repository)
        self._linked.set((repository, descriptor.digest), descriptor)
        if self._global.get(descriptor.digest) is None:
            self._global.set(descriptor.digest, descriptor)

    async def clear_linked(self, repository: str, digest: Digest) -> None:
        validate_name(repository)
        self._linked.pop((repository, digest))

    async def ping(self) -> bool:
        return True  # it lives in this process

    async def close(self) -> None:
        pass  # nothing held beyond this object
