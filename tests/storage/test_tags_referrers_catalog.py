"""Tags, referrers and the catalog."""

from __future__ import annotations

import asyncio
import json

import pytest

from cargohold.digest import digest_of
from cargohold.errors import ManifestUnknown, NameUnknown, TagInvalid
from cargohold.manifest import OCI_MANIFEST
from cargohold.storage.catalog import WalkedCatalog
from cargohold.storage.driver.base import StorageDriver
from cargohold.storage.driver.inmemory import InMemoryDriver
from cargohold.storage.paths import ManifestRevisionLink, TagCurrentLink, TagIndexLink, path_for
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from tests.storage.conftest import fresh
from tests.storage.images import image_manifest, subject_json

# -- tags -----------------------------------------------------------------------------


async def test_tags_resolve_list_sorted_and_untag(registry: StorageRegistry) -> None:
    repo = registry.repository("a")
    stored = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST)
    for tag in ["v2", "latest", "v10", "1.0"]:
        await repo.tags.tag(tag, stored.digest)
    assert await repo.tags.all() == ["1.0", "latest", "v10", "v2"]
    assert await repo.tags.get("latest") == stored.digest
    assert sorted(await repo.tags.lookup(stored.digest)) == ["1.0", "latest", "v10", "v2"]
    await repo.tags.untag("v10")
    assert await repo.tags.all() == ["1.0", "latest", "v2"]
    assert await repo.manifests.exists(stored.digest), "untag keeps the manifest"
    with pytest.raises(ManifestUnknown):
        await repo.tags.get("v10")
    with pytest.raises(ManifestUnknown):
        await repo.tags.untag("v10")


async def test_moving_a_tag_rewrites_current_and_keeps_the_old_index_entry(
    registry: StorageRegistry,
) -> None:
    repo = registry.repository("a")
    first = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["t"])
    second = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["t"])
    driver = registry.driver
    current = await driver.get_content(path_for(TagCurrentLink("a", "t")))
    assert current == str(second.digest).encode()
    for digest in (first.digest, second.digest):
        entry = await driver.get_content(path_for(TagIndexLink("a", "t", digest)))
        assert entry == str(digest).encode()
    assert await repo.tags.lookup(first.digest) == []


class SlowTagReads(InMemoryDriver):
    """Holds every tag read open until released, counting how many are open at once."""

    def __init__(self) -> None:
        super().__init__()
        self.open = 0
        self.most_open = 0
        self.release = asyncio.Event()

    async def _get_content(self, path: str) -> bytes:
        if not path.endswith("/current/link"):
            return await super()._get_content(path)
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.release.wait()
            return await super()._get_content(path)
        finally:
            self.open -= 1


async def test_lookup_reads_at_most_concurrencylimit_tags_at_once() -> None:
    driver = SlowTagReads()
    registry = StorageRegistry(driver, options=RegistryOptions(tag_lookup_limit=3))
    repo = registry.repository("a")
    stored = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST)
    tags = [f"t{n:02d}" for n in range(10)]
    for tag in tags:
        await repo.tags.tag(tag, stored.digest)

    lookup = asyncio.ensure_future(repo.tags.lookup(stored.digest))
    for _ in range(100):
        if driver.open == 3:
            break
        await asyncio.sleep(0)
    assert driver.open == 3, "three reads are held open"
    driver.release.set()
    assert sorted(await lookup) == tags
    assert driver.most_open == 3


async def test_tags_of_an_unknown_repository(registry: StorageRegistry) -> None:
    with pytest.raises(NameUnknown):
        await registry.repository("nobody/here").tags.all()


async def test_a_repository_with_blobs_but_no_tags_has_an_empty_list(
    registry: StorageRegistry,
) -> None:
    repo = registry.repository("a")
    await repo.blobs.put(b"a layer")
    assert await repo.tags.all() == []


@pytest.mark.parametrize("tag", ["-leading", ".dot", "a" * 129, "sp ace", "sl/ash", ""])
async def test_invalid_tags_are_refused(registry: StorageRegistry, tag: str) -> None:
    repo = registry.repository("a")
    with pytest.raises(TagInvalid):
        await repo.tags.tag(tag, digest_of(b"x"))
    with pytest.raises(TagInvalid):
        await repo.tags.get(tag)


# -- referrers ------------------------------------------------------------------------


async def referrer(registry: StorageRegistry, subject: bytes, artifact_type: str) -> bytes:
    repo = registry.repository("a")
    return await image_manifest(
        repo,
        layers=1,
        artifactType=artifact_type,
        subject=subject_json(subject),
        annotations={"org.example.kind": artifact_type},
    )


async def test_referrers_are_listed_as_descriptors_and_filtered(
    registry: StorageRegistry,
) -> None:
    repo = registry.repository("a")
    subject = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["app"])
    sbom = await referrer(registry, subject.payload, "application/vnd.example.sbom")
    sig = await referrer(registry, subject.payload, "application/vnd.example.signature")
    stored_sbom = await repo.manifests.put(sbom, OCI_MANIFEST)
    stored_sig = await repo.manifests.put(sig, OCI_MANIFEST)
    assert stored_sbom.subject == subject.digest

    listed = await fresh(registry).repository("a").referrers(subject.digest)
    assert {d.digest for d in listed} == {stored_sbom.digest, stored_sig.digest}
    by_digest = {d.digest: d for d in listed}
    sbom_descriptor = by_digest[stored_sbom.digest]
    assert sbom_descriptor.media_type == OCI_MANIFEST
    assert sbom_descriptor.size == len(sbom)
    assert sbom_descriptor.artifact_type == "application/vnd.example.sbom"
    assert sbom_descriptor.annotations == {"org.example.kind": "application/vnd.example.sbom"}

    only = await repo.referrers(subject.digest, "application/vnd.example.signature")
    assert [d.digest for d in only] == [stored_sig.digest]
    assert await repo.referrers(subject.digest, "application/none") == []


async def test_a_subject_need_not_exist_and_may_have_no_referrers(
    registry: StorageRegistry,
) -> None:
    repo = registry.repository("a")
    assert await repo.referrers(digest_of(b"nothing refers to me")) == []
    absent = json.dumps({"not": "pushed"}).encode()
    stored = await repo.manifests.put(
        await referrer(registry, absent, "application/x"), OCI_MANIFEST
    )
    assert [d.digest for d in await repo.referrers(digest_of(absent))] == [stored.digest]


async def test_deleting_a_referrer_removes_it_from_the_list(registry: StorageRegistry) -> None:
    repo = registry.repository("a")
    subject = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST)
    stored = await repo.manifests.put(
        await referrer(registry, subject.payload, "application/x"), OCI_MANIFEST
    )
    await repo.manifests.delete(stored.digest)
    assert await repo.referrers(subject.digest) == []


async def test_a_referrer_whose_revision_vanished_is_skipped(registry: StorageRegistry) -> None:
    """As when a Go registry sharing the storage deleted the manifest."""
    repo = registry.repository("a")
    subject = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST)
    stored = await repo.manifests.put(
        await referrer(registry, subject.payload, "application/x"), OCI_MANIFEST
    )
    await registry.driver.delete(path_for(ManifestRevisionLink("a", stored.digest)))
    assert await repo.referrers(subject.digest) == []


# -- catalog --------------------------------------------------------------------------


async def make_repositories(registry: StorageRegistry, names: list[str]) -> None:
    for name in names:
        await registry.repository(name).blobs.put(name.encode())


async def test_catalog_lists_every_repository_in_lexical_order(
    registry: StorageRegistry,
) -> None:
    names = ["b", "a/b/c", "a", "a-c", "z/y", "a/b", "library/ubuntu"]
    await make_repositories(registry, names)
    assert await registry.catalog() == sorted(names)


async def test_catalog_paginates_with_n_and_an_exclusive_last(registry: StorageRegistry) -> None:
    names = [f"repo{i:02d}" for i in range(10)]
    await make_repositories(registry, names)
    assert await registry.catalog(n=3) == names[:3]
    assert await registry.catalog(n=3, last="repo02") == names[3:6]
    assert await registry.catalog(last="repo08") == ["repo09"]
    assert await registry.catalog(n=0) == []


async def test_every_page_of_a_nested_catalog_is_in_name_order(registry: StorageRegistry) -> None:
    # "a-c" sorts between "a" and "a/b" ("-" < "/"), although it is not below "a".
    names = sorted(["b", "a/b/c", "a", "a-c", "z/y", "a/b", "a.b", "a/b-c", "library/ubuntu"])
    await make_repositories(registry, names)
    for size in (1, 2, 3):
        pages: list[str] = []
        last: str | None = None
        while page := await registry.catalog(n=size, last=last):
            assert len(page) <= size
            pages += page
            last = page[-1]
        assert pages == names
    assert await registry.catalog(last="a/b") == names[names.index("a/b") + 1 :]


class ListCounter(InMemoryDriver):
    """Counts directory listings: each one is a request on object storage."""

    def __init__(self) -> None:
        super().__init__()
        self.listings = 0

    async def _list(self, path: str) -> list[str]:
        self.listings += 1
        return await super()._list(path)


async def test_a_catalog_page_lists_only_as_far_as_it_needs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(WalkedCatalog, "LOOKAHEAD", 1)  # one listing at a time: exact counts
    driver = ListCounter()
    registry = StorageRegistry(driver)
    names = [f"team{t}/app{a:02d}" for t in range(4) for a in range(25)]  # 4 folders, 100 repos
    await make_repositories(registry, names)

    driver.listings = 0
    assert await registry.catalog(n=5) == sorted(names)[:5]
    # The root, team0, and team0's first five repositories: not all 105 folders.
    assert driver.listings == 7

    driver.listings = 0
    assert await registry.catalog(n=5, last="team2/app24") == sorted(names)[75:80]
    # The root, team2 (the marker is below it) and its last repository, team3 and its
    # first five; team0, team1 and team2's other repositories sort wholly before the
    # marker and are never listed.
    assert driver.listings == 9


async def test_catalog_recognises_repositories_by_their_folders(
    registry: StorageRegistry, storage_driver: StorageDriver
) -> None:
    root = "/docker/registry/v2/repositories"
    await storage_driver.put_content(f"{root}/uploading/_uploads/x/startedat", b"t")
    await storage_driver.put_content(f"{root}/manifested/_manifests/tags/x/current/link", b"t")
    await storage_driver.put_content(f"{root}/layered/_layers/sha256/x/link", b"t")
    await storage_driver.put_content(f"{root}/not-a-repo/stray-file", b"t")
    assert await registry.catalog() == ["layered", "manifested", "uploading"]


async def test_an_empty_storage_has_an_empty_catalog(registry: StorageRegistry) -> None:
    assert await registry.catalog() == []
