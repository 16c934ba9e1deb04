"""Content digests: ``algorithm:encoded``, as the OCI image specification defines them.

Supported algorithms are ``sha256`` (the default), ``sha384`` and ``sha512``. The OCI
image specification registers only sha256 and sha512; sha384 is accepted as well because
go-digest, which CNCF Distribution validates with, registers it too, so a digest that
Distribution accepts is never refused here.

An algorithm that fits the specification's grammar but is not one of these is refused as
*unsupported* rather than *malformed*, so a client learns which of the two it got wrong.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Final, Protocol, Self

from cargohold.errors import DigestInvalid

__all__ = [
    "DEFAULT_ALGORITHM",
    "EMPTY_JSON_SHA256",
    "EMPTY_SHA256",
    "EMPTY_SHA512",
    "SUPPORTED_ALGORITHMS",
    "Digest",
    "Digester",
    "Verifier",
    "digest_of",
]

DEFAULT_ALGORITHM: Final = "sha256"

#: Each supported algorithm and the number of hex characters of its encoded part.
SUPPORTED_ALGORITHMS: Final[Mapping[str, int]] = MappingProxyType(
    {"sha256": 64, "sha384": 96, "sha512": 128}
)


class _Hash(Protocol):
    def update(self, data: bytes | bytearray | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...
    def copy(self) -> _Hash: ...


# hashlib.sha256 and friends skip hashlib.new's name lookup, which shows on small blobs.
_HASHES: Final[Mapping[str, Callable[[], _Hash]]] = MappingProxyType(
    {"sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}
)

# The hot path: a single match decides validity for every supported algorithm at once.
_VALID = re.compile("|".join(f"{alg}:[0-9a-f]{{{n}}}" for alg, n in SUPPORTED_ALGORITHMS.items()))
# Only consulted after _VALID refused, to tell the client why.
_SHAPE = re.compile(r"([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)")

_QUOTE_LIMIT = 80


def _quote(text: str) -> str:
    # Error messages go back to clients and into logs: never echo an unbounded input.
    if len(text) > _QUOTE_LIMIT:
        return repr(text[:_QUOTE_LIMIT]) + "..."
    return repr(text)


def _why_invalid(text: str) -> str:
    shape = _SHAPE.fullmatch(text)
    if shape is None:
        return f"malformed digest {_quote(text)}: expected algorithm:encoded"
    algorithm, encoded = shape.groups()
    length = SUPPORTED_ALGORITHMS.get(algorithm)
    if length is None:
        return f"unsupported digest algorithm {_quote(algorithm)}"
    if len(encoded) != length:
        return f"wrong length for a {algorithm} digest: {len(encoded)} characters, not {length}"
    return f"invalid {algorithm} digest: encoded part is not lower-case hex"


class Digest(str):
    """A validated digest string such as ``sha256:e3b0c442…``.

    ``Digest(text)`` and ``Digest.parse(text)`` validate; ``Digest.trusted(text)`` does
    not and is meant for text cargohold computed itself.
    """

    __slots__ = ()

    def __new__(cls, text: str) -> Self:
        return cls.parse(text)

    @classmethod
    def parse(cls, text: str) -> Self:
        """Return ``text`` as a Digest, or raise DigestInvalid saying what is wrong."""
        if isinstance(text, cls):
            return text
        if _VALID.fullmatch(text) is None:
            raise DigestInvalid(_why_invalid(text))
        return str.__new__(cls, text)

    @classmethod
    def trusted(cls, text: str) -> Self:
        """Wrap ``text`` without checking it: only for digests cargohold computed."""
        return str.__new__(cls, text)

    @property
    def algorithm(self) -> str:
        return self[: self.index(":")]

    @property
    def encoded(self) -> str:
        """The hex part, after the colon."""
        return self[self.index(":") + 1 :]

    def __repr__(self) -> str:
        return f"Digest({str.__repr__(self)})"


class Digester:
    """Hashes content as it streams past and counts its bytes."""

    __slots__ = ("_algorithm", "_hash", "_size")

    def __init__(self, algorithm: str = DEFAULT_ALGORITHM) -> None:
        new = _HASHES.get(algorithm)
        if new is None:
            raise DigestInvalid(f"unsupported digest algorithm {_quote(algorithm)}")
        self._algorithm = algorithm
        self._hash = new()
        self._size = 0

    @property
    def algorithm(self) -> str:
        return self._algorithm

    @property
    def size(self) -> int:
        """The number of bytes hashed so far."""
        return self._size

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._hash.update(data)
        # len() of a memoryview counts items, which are not bytes for every format.
        self._size += data.nbytes if isinstance(data, memoryview) else len(data)

    def digest(self) -> Digest:
        return Digest.trusted(f"{self._algorithm}:{self._hash.hexdigest()}")

    def copy(self) -> Digester:
        """An independent Digester that continues from this one's state."""
        clone = Digester.__new__(Digester)
        clone._algorithm = self._algorithm
        clone._hash = self._hash.copy()
        clone._size = self._size
        return clone


class Verifier:
    """Tells whether the content streamed through it has the expected digest."""

    __slots__ = ("_digester", "_expected")

    def __init__(self, expected: Digest) -> None:
        self._expected = Digest.parse(expected)
        self._digester = Digester(self._expected.algorithm)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._digester.update(data)

    def verified(self) -> bool:
        return self._digester.digest() == self._expected


def digest_of(data: bytes | bytearray | memoryview, algorithm: str = DEFAULT_ALGORITHM) -> Digest:
    """The digest of ``data`` in one call."""
    digester = Digester(algorithm)
    digester.update(data)
    return digester.digest()


EMPTY_SHA256: Final = digest_of(b"")
EMPTY_SHA512: Final = digest_of(b"", "sha512")
#: The digest of ``{}``, the OCI empty descriptor's content (``application/vnd.oci.empty.v1+json``).
EMPTY_JSON_SHA256: Final = digest_of(b"{}")
