"""The conformance suite every blob descriptor cache passes.

A cache's test module subclasses ``BlobDescriptorCacheSuite`` and provides a
``cache`` fixture holding an empty cache; every test below then runs against it,
as Distribution's ``registry/storage/cache/cachecheck`` does for its caches.

Only descriptors with a media type, digest and size are used: that is all a cache
promises to keep (Distribution's Redis layout has no room for more).
"""

from __future__ import annotations

import asyncio
import secrets

import pytest

from cargohold.descriptor import OCTET_STREAM, Descriptor
from cargohold.digest import SUPPORTED_ALGORITHMS, Digest, digest_of
from cargohold.errors import NameInvalid
from cargohold.storage.cache import BlobDescriptorCache

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"

INVALID_NAMES = [
    "",
    "Upper/case",
    "foo/",
    "/foo",
    "foo//bar",
    "foo::blobs",
    "with space",
    "a" * 256,
]


def random_digest(algorithm: str = "sha256") -> Digest:
    return digest_of(secrets.token_bytes(16), algorithm)


def descriptor(
    media_type: str = OCTET_STREAM, size: int = 10, digest: Digest | None = None
) -> Descriptor:
    return Descriptor(media_type, digest or random_digest(), size)


class BlobDescriptorCacheSuite:
    """Tests shared by all caches; subclasses supply the ``cache`` fixture."""

    def test_shared_is_declared(self, cache: BlobDescriptorCache) -> None:
        assert isinstance(cache.shared, bool)

    # -- empty ----------------------------------------------------------------------------

    async def test_get_of_an_unknown_digest_is_none(self, cache: BlobDescriptorCache) -> None:
        assert await cache.get(random_digest()) is None
        assert await cache.get_linked("foo/bar", random_digest()) is None

    async def test_clearing_what_is_not_there_is_a_no_op(self, cache: BlobDescriptorCache) -> None:
        digest = random_digest()
        await cache.clear(digest)
        await cache.clear_linked("foo/bar", digest)
        assert await cache.get(digest) is None
        assert await cache.get_linked("foo/bar", digest) is None

    # -- global ---------------------------------------------------------------------------

    @pytest.mark.parametrize("algorithm", sorted(SUPPORTED_ALGORITHMS))
    @pytest.mark.parametrize("size", [0, 1, 71, 5 << 40])
    async def test_set_then_get_returns_an_equal_descriptor(
        self, cache: BlobDescriptorCache, algorithm: str, size: int
    ) -> None:
        expected = descriptor(LAYER, size, random_digest(algorithm))
        await cache.set(expected)
        assert await cache.get(expected.digest) == expected

    async def test_set_overwrites(self, cache: BlobDescriptorCache) -> None:
        first = descriptor(OCTET_STREAM, 10)
        second = Descriptor(LAYER, first.digest, 10)
        await cache.set(first)
        await cache.set(second)
        assert await cache.get(first.digest) == second

    async def test_set_alone_links_the_blob_nowhere(self, cache: BlobDescriptorCache) -> None:
        known = descriptor()
        await cache.set(known)
        assert await cache.get_linked("foo/bar", known.digest) is None

    async def test_digests_of_other_algorithms_are_other_entries(
        self, cache: BlobDescriptorCache
    ) -> None:
        content = secrets.token_bytes(32)
        sha256 = descriptor(LAYER, 32, digest_of(content, "sha256"))
        sha512 = descriptor(CONFIG, 32, digest_of(content, "sha512"))
        await cache.set(sha256)
        assert await cache.get(sha512.digest) is None
        await cache.set(sha512)
        assert await cache.get(sha256.digest) == sha256
        assert await cache.get(sha512.digest) == sha512

    async def test_clear_forgets_only_that_digest(self, cache: BlobDescriptorCache) -> None:
        gone, kept = descriptor(), descriptor()
        await cache.set(gone)
        await cache.set(kept)
        await cache.clear(gone.digest)
        assert await cache.get(gone.digest) is None
        assert await cache.get(kept.digest) == kept

    # -- per repository -------------------------------------------------------------------

    async def test_set_linked_then_get_linked_returns_an_equal_descriptor(
        self, cache: BlobDescriptorCache
    ) -> None:
        expected = descriptor(LAYER, 1234)
        await cache.set_linked("foo/bar", expected)
        assert await cache.get_linked("foo/bar", expected.digest) == expected

    async def test_set_linked_also_makes_the_blob_known_globally(
        self, cache: BlobDescriptorCache
    ) -> None:
        expected = descriptor(LAYER, 1234)
        await cache.set_linked("foo/bar", expected)
        assert await cache.get(expected.digest) == expected

    async def test_set_linked_is_invisible_in_another_repository(
        self, cache: BlobDescriptorCache
    ) -> None:
        linked = descriptor()
        await cache.set_linked("foo/bar", linked)
        for other in ["foo/baz", "foo", "foo/bar/baz", "bar", "foo-bar", "foo/bar2"]:
            assert await cache.get_linked(other, linked.digest) is None, other

    async def test_clear_linked_removes_only_that_repository(
        self, cache: BlobDescriptorCache
    ) -> None:
        linked, neighbour = descriptor(), descriptor()
        for repository in ("foo/bar", "foo/baz"):
            await cache.set_linked(repository, linked)
        await cache.set_linked("foo/bar", neighbour)
        await cache.clear_linked("foo/bar", linked.digest)
        assert await cache.get_linked("foo/bar", linked.digest) is None
        assert await cache.get_linked("foo/baz", linked.digest) == linked
        assert await cache.get_linked("foo/bar", neighbour.digest) == neighbour
        assert await cache.get(linked.digest) == linked, "the blob itself still exists"

    async def test_linking_again_after_clear_linked(self, cache: BlobDescriptorCache) -> None:
        linked = descriptor()
        await cache.set_linked("foo/bar", linked)
        await cache.clear_linked("foo/bar", linked.digest)
        await cache.set_linked("foo/bar", linked)
        assert await cache.get_linked("foo/bar", linked.digest) == linked

    async def test_clear_makes_every_repository_miss(self, cache: BlobDescriptorCache) -> None:
        # Garbage collection deleted the content: no repository may still claim it.
        gone, kept = descriptor(), descriptor()
        for repository in ("foo/bar", "foo/baz"):
            await cache.set_linked(repository, gone)
            await cache.set_linked(repository, kept)
        await cache.clear(gone.digest)
        assert await cache.get(gone.digest) is None
        for repository in ("foo/bar", "foo/baz"):
            assert await cache.get_linked(repository, gone.digest) is None
            assert await cache.get_linked(repository, kept.digest) == kept

    async def test_repository_media_type_is_kept_apart_from_the_global_one(
        self, cache: BlobDescriptorCache
    ) -> None:
        # cachecheck's SetAndRead: the global entry keeps the first media type it saw.
        first = descriptor(OCTET_STREAM, 10)
        await cache.set_linked("foo/bar", first)
        again = Descriptor(CONFIG, first.digest, 10)
        await cache.set_linked("foo/bar", again)
        assert await cache.get_linked("foo/bar", first.digest) == again
        assert await cache.get(first.digest) == first

    async def test_each_repository_has_its_own_media_type(self, cache: BlobDescriptorCache) -> None:
        digest = random_digest()
        per_repository = {"foo/bar": LAYER, "foo/baz": CONFIG, "other": OCTET_STREAM}
        for repository, media_type in per_repository.items():
            await cache.set_linked(repository, Descriptor(media_type, digest, 10))
        for repository, media_type in per_repository.items():
            assert await cache.get_linked(repository, digest) == Descriptor(media_type, digest, 10)

    async def test_global_set_leaves_repository_media_types_alone(
        self, cache: BlobDescriptorCache
    ) -> None:
        linked = descriptor(CONFIG)
        await cache.set_linked("foo/bar", linked)
        await cache.set(Descriptor(OCTET_STREAM, linked.digest, linked.size))
        assert await cache.get_linked("foo/bar", linked.digest) == linked

    async def test_set_linked_overwrites_the_repository_entry(
        self, cache: BlobDescriptorCache
    ) -> None:
        digest = random_digest()
        for media_type in (OCTET_STREAM, LAYER, CONFIG):
            await cache.set_linked("foo/bar", Descriptor(media_type, digest, 10))
            assert await cache.get_linked("foo/bar", digest) == Descriptor(media_type, digest, 10)

    # -- volume ---------------------------------------------------------------------------

    async def test_many_digests(self, cache: BlobDescriptorCache) -> None:
        repositories = ["a", "b/c", "d/e/f"]
        descriptors = [descriptor(LAYER, i) for i in range(300)]
        for i, known in enumerate(descriptors):
            await cache.set_linked(repositories[i % 3], known)
        for i, known in enumerate(descriptors[::2]):
            await cache.clear_linked(repositories[(2 * i) % 3], known.digest)
        for i, known in enumerate(descriptors):
            expected = None if i % 2 == 0 else known
            assert await cache.get_linked(repositories[i % 3], known.digest) == expected
            assert await cache.get_linked(repositories[(i + 1) % 3], known.digest) is None
            assert await cache.get(known.digest) == known

    async def test_concurrent_writers_and_readers(self, cache: BlobDescriptorCache) -> None:
        descriptors = [descriptor(LAYER, i) for i in range(100)]
        await asyncio.gather(*(cache.set_linked("foo/bar", known) for known in descriptors))
        found = await asyncio.gather(
            *(cache.get_linked("foo/bar", known.digest) for known in descriptors)
        )
        assert found == descriptors

    # -- invalid input --------------------------------------------------------------------

    @pytest.mark.parametrize("name", INVALID_NAMES)
    async def test_a_repository_name_outside_the_grammar_is_refused(
        self, cache: BlobDescriptorCache, name: str
    ) -> None:
        # Names are validated before they reach a cache; one that gets here is a bug
        # upstream (and, in Redis, would be spliced into a key), so it is loud.
        known = descriptor()
        with pytest.raises(NameInvalid):
            await cache.set_linked(name, known)
        with pytest.raises(NameInvalid):
            await cache.get_linked(name, known.digest)
        with pytest.raises(NameInvalid):
            await cache.clear_linked(name, known.digest)
        assert await cache.get(known.digest) is None, "a refused set leaves nothing behind"
