"""The suite every ``registry.Repository`` passes: storage-backed, or the client over HTTP.

A test module subclasses :class:`RepositorySuite` and provides two fixtures:
``namespace`` (a ``registry.Namespace``) and ``implementation``, one of
``"storage"`` (the storage-backed registry on the in-memory driver),
``"cargohold"`` (the client against a running cargohold) or ``"distribution"``
(the client against Debian's Distribution 2.8.2). Every test goes through the
Protocols only, so the client is held to the storage layer's behaviour.

Where Distribution 2.8.2 lacks a feature, the test says so with an explicit
expectation for ``"distribution"`` and a comment, never a skip:

- no referrers API: the client falls back to the OCI 1.1 referrers tag schema;
- deletes manifests by digest only: removing a tag is ``OperationUnsupported``;
- no manifests by sha512 digest (sha512 *blobs* work);
- resuming an upload by its bare UUID is refused (it needs the signed ``_state``);
- ``"tags": null`` for a repository whose tags were all deleted (the client reads []).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest

from cargohold.digest import EMPTY_SHA256, Digest, digest_of
from cargohold.errors import (
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    OperationUnsupported,
    RangeInvalid,
    SizeInvalid,
    TagInvalid,
)
from cargohold.manifest import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)
from cargohold.registry import Namespace, Repository, StoredManifest
from tests.client.conftest import unique_name

MiB = 1 << 20


def descriptor(media_type: str, content: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": str(digest_of(content)), "size": len(content)}


async def push_image(
    repository: Repository,
    *,
    layers: int = 2,
    docker: bool = False,
    tags: tuple[str, ...] = (),
    **fields: Any,
) -> StoredManifest:
    """Push random layers, a config and a manifest naming them (OCI, or Docker schema2)."""
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "nonce": secrets.token_hex(8)}
    ).encode()
    contents = [secrets.token_bytes(700 + i) for i in range(layers)]
    for content in [config, *contents]:
        await repository.blobs.put(content)
    media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": descriptor(DOCKER_CONFIG if docker else OCI_CONFIG, config),
        "layers": [descriptor(DOCKER_LAYER if docker else OCI_LAYER_GZIP, c) for c in contents],
    }
    body.update(fields)
    # Indented, with a trailing newline: bytes a registry would change if it re-encoded them.
    payload = json.dumps(body, indent=3).encode() + b"\n"
    return await repository.manifests.put(payload, media_type, tags)


async def push_artifact(
    repository: Repository, subject: StoredManifest, artifact_type: str
) -> StoredManifest:
    """An OCI 1.1 artifact whose ``subject`` is ``subject``."""
    await repository.blobs.put(b"{}")
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": descriptor(OCI_EMPTY, b"{}"),
        "layers": [descriptor(OCI_EMPTY, b"{}")],
        "subject": {
            "mediaType": subject.media_type,
            "digest": str(subject.digest),
            "size": len(subject.payload),
        },
        "annotations": {"nonce": secrets.token_hex(4)},
    }
    return await repository.manifests.put(json.dumps(body).encode(), OCI_MANIFEST)


async def read(
    repository: Repository, digest: Digest, offset: int = 0, length: int | None = None
) -> bytes:
    return b"".join([chunk async for chunk in await repository.blobs.open(digest, offset, length)])


class RepositorySuite:
    """Tests shared by every Repository; subclasses supply ``namespace`` and ``implementation``."""

    @pytest.fixture
    def repository(self, namespace: Namespace) -> Repository:
        return namespace.repository(unique_name("suite"))

    # -- blobs: in and out ----------------------------------------------------------------

    @pytest.mark.parametrize("size", [0, 1, 4096, 3 * MiB + 17])
    async def test_a_put_blob_comes_back_the_same(self, repository: Repository, size: int) -> None:
        content = secrets.token_bytes(size)
        stored = await repository.blobs.put(content)
        assert stored.digest == digest_of(content)
        assert stored.size == size
        stat = await repository.blobs.stat(stored.digest)
        assert (stat.digest, stat.size) == (stored.digest, size)
        assert await repository.blobs.get(stored.digest) == content
        assert await read(repository, stored.digest) == content

    async def test_the_empty_blob_has_the_well_known_digest(self, repository: Repository) -> None:
        assert (await repository.blobs.put(b"")).digest == EMPTY_SHA256

    async def test_open_reads_a_range(self, repository: Repository) -> None:
        content = secrets.token_bytes(10_000)
        digest = (await repository.blobs.put(content)).digest
        assert await read(repository, digest, 100, 50) == content[100:150]
        assert await read(repository, digest, 9_990) == content[9_990:]

    async def test_a_range_past_the_end_is_range_invalid(self, repository: Repository) -> None:
        digest = (await repository.blobs.put(b"0123456789")).digest
        with pytest.raises(RangeInvalid):
            await read(repository, digest, 11)

    async def test_an_unknown_blob_is_blob_unknown(self, repository: Repository) -> None:
        missing = digest_of(secrets.token_bytes(8))
        with pytest.raises(BlobUnknown) as stat_error:
            await repository.blobs.stat(missing)
        assert stat_error.value.digest == missing
        with pytest.raises(BlobUnknown):
            await repository.blobs.get(missing)
        with pytest.raises(BlobUnknown):
            await repository.blobs.open(missing)

    async def test_a_blob_of_another_repository_is_not_visible(
        self, namespace: Namespace, repository: Repository
    ) -> None:
        digest = (await repository.blobs.put(secrets.token_bytes(100))).digest
        other = namespace.repository(unique_name("suite"))
        with pytest.raises(BlobUnknown):
            await other.blobs.stat(digest)

    async def test_a_deleted_blob_is_gone(self, repository: Repository) -> None:
        digest = (await repository.blobs.put(secrets.token_bytes(100))).digest
        await repository.blobs.delete(digest)
        with pytest.raises(BlobUnknown):
            await repository.blobs.stat(digest)
        with pytest.raises(BlobUnknown):
            await repository.blobs.delete(digest)

    async def test_mount_links_a_blob_of_another_repository(
        self, namespace: Namespace, repository: Repository
    ) -> None:
        content = secrets.token_bytes(2000)
        digest = (await repository.blobs.put(content)).digest
        other = namespace.repository(unique_name("suite"))
        mounted = await other.blobs.mount(repository.name, digest)
        assert (mounted.digest, mounted.size) == (digest, 2000)
        assert await other.blobs.get(digest) == content

    async def test_mount_from_a_repository_without_the_blob_is_blob_unknown(
        self, namespace: Namespace, repository: Repository
    ) -> None:
        other = namespace.repository(unique_name("suite"))
        with pytest.raises(BlobUnknown):
            await other.blobs.mount(repository.name, digest_of(b"nowhere"))

    # -- uploads ----------------------------------------------------------------------------

    async def test_an_upload_resumes_by_id_and_commits(self, repository: Repository) -> None:
        content = secrets.token_bytes(300_000)
        upload = await repository.blobs.create_upload()
        await upload.write(content[:100_000])
        await upload.write(content[100_000:120_000])
        assert upload.size == 120_000
        await upload.close()

        resumed = await repository.blobs.resume_upload(upload.id)
        assert resumed.size == 120_000
        await resumed.write(content[120_000:])
        committed = await resumed.commit(digest_of(content), len(content))
        assert committed.digest == digest_of(content)
        assert await repository.blobs.get(committed.digest) == content

    async def test_a_commit_with_the_wrong_digest_stores_nothing(
        self, repository: Repository
    ) -> None:
        upload = await repository.blobs.create_upload()
        await upload.write(b"the content")
        wrong = digest_of(b"other content")
        with pytest.raises(DigestInvalid):
            await upload.commit(wrong)
        with pytest.raises(BlobUnknown):
            await repository.blobs.stat(wrong)
        with pytest.raises(BlobUnknown):
            await repository.blobs.stat(digest_of(b"the content"))

    async def test_a_commit_with_the_wrong_size_is_size_invalid(
        self, repository: Repository
    ) -> None:
        upload = await repository.blobs.create_upload()
        await upload.write(b"twelve bytes")
        with pytest.raises(SizeInvalid):
            await upload.commit(digest_of(b"twelve bytes"), 13)

    async def test_a_cancelled_upload_cannot_resume(self, repository: Repository) -> None:
        upload = await repository.blobs.create_upload()
        await upload.write(b"abandoned")
        await upload.close()
        resumed = await repository.blobs.resume_upload(upload.id)
        await resumed.cancel()
        with pytest.raises(BlobUploadUnknown):
            await repository.blobs.resume_upload(resumed.id)

    async def test_an_unknown_upload_is_blob_upload_unknown(
        self, repository: Repository, implementation: str
    ) -> None:
        upload_id = "0f8c7b5e-4d1a-4c47-9a6e-2b1f0e9d8c7a"
        # Distribution needs the signed _state of a Location; a bare UUID is "invalid".
        expected = BlobUploadInvalid if implementation == "distribution" else BlobUploadUnknown
        with pytest.raises(expected):
            await repository.blobs.resume_upload(upload_id)

    async def test_a_sha512_blob_is_stored_and_found(self, repository: Repository) -> None:
        content = secrets.token_bytes(5000)
        digest = digest_of(content, "sha512")
        upload = await repository.blobs.create_upload("sha512")
        await upload.write(content)
        assert (await upload.commit(digest)).digest == digest
        assert (await repository.blobs.stat(digest)).size == 5000
        assert await repository.blobs.get(digest) == content

    # -- manifests --------------------------------------------------------------------------

    async def test_a_manifest_comes_back_byte_for_byte(self, repository: Repository) -> None:
        pushed = await push_image(repository)
        assert pushed.digest == digest_of(pushed.payload)
        assert await repository.manifests.exists(pushed.digest)
        got = await repository.manifests.get(pushed.digest)
        assert (got.digest, got.media_type, got.payload) == (
            pushed.digest,
            OCI_MANIFEST,
            pushed.payload,
        )

    async def test_a_docker_schema2_manifest_keeps_its_media_type(
        self, repository: Repository
    ) -> None:
        pushed = await push_image(repository, docker=True)
        got = await repository.manifests.get(pushed.digest)
        assert (got.media_type, got.payload) == (DOCKER_MANIFEST, pushed.payload)

    async def test_an_unknown_manifest_is_manifest_unknown(self, repository: Repository) -> None:
        missing = digest_of(b"no manifest")
        assert not await repository.manifests.exists(missing)
        with pytest.raises(ManifestUnknown):
            await repository.manifests.get(missing)

    async def test_a_manifest_with_missing_blobs_is_refused(self, repository: Repository) -> None:
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_CONFIG, b'{"never": "pushed"}'),
            "layers": [],
        }
        with pytest.raises(ManifestBlobUnknown):
            await repository.manifests.put(json.dumps(body).encode(), OCI_MANIFEST, ["t"])

    async def test_an_index_with_missing_children_is_refused(self, repository: Repository) -> None:
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [descriptor(OCI_MANIFEST, b'{"never": "pushed"}')],
        }
        with pytest.raises(ManifestBlobUnknown):
            await repository.manifests.put(json.dumps(body).encode(), OCI_INDEX, ["t"])

    async def test_a_malformed_manifest_is_manifest_invalid(self, repository: Repository) -> None:
        with pytest.raises(ManifestInvalid):
            await repository.manifests.put(b'{"schemaVersion": 2, "mediaType": ', OCI_MANIFEST)

    async def test_a_digest_that_does_not_match_is_digest_invalid(
        self, repository: Repository
    ) -> None:
        pushed = await push_image(repository)
        with pytest.raises(DigestInvalid):
            await repository.manifests.put(
                pushed.payload + b" ", OCI_MANIFEST, digest=pushed.digest
            )

    async def test_an_index_comes_back_with_its_children(self, repository: Repository) -> None:
        children = [await push_image(repository) for _ in range(2)]
        body = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    **descriptor(OCI_MANIFEST, child.payload),
                    "platform": {"os": "linux", "architecture": arch},
                }
                for child, arch in zip(children, ("amd64", "arm64"), strict=True)
            ],
        }
        stored = await repository.manifests.put(json.dumps(body).encode(), OCI_INDEX, ["multi"])
        got = await repository.manifests.get(await repository.tags.get("multi"))
        assert (got.digest, got.media_type) == (stored.digest, OCI_INDEX)

    async def test_a_manifest_by_sha512_digest(
        self, repository: Repository, implementation: str
    ) -> None:
        pushed = await push_image(repository)
        sha512 = digest_of(pushed.payload, "sha512")
        if implementation == "distribution":
            # Distribution 2.8.2 addresses manifests by their sha256 digest only.
            with pytest.raises(DigestInvalid):
                await repository.manifests.put(pushed.payload, OCI_MANIFEST, digest=sha512)
            return
        stored = await repository.manifests.put(pushed.payload, OCI_MANIFEST, digest=sha512)
        assert stored.digest == sha512
        assert (await repository.manifests.get(sha512)).payload == pushed.payload

    async def test_a_deleted_manifest_is_gone_with_its_tags(self, repository: Repository) -> None:
        keep = await push_image(repository, tags=("keep",))
        doomed = await push_image(repository, tags=("a", "b"))
        await repository.manifests.delete(doomed.digest)
        assert not await repository.manifests.exists(doomed.digest)
        with pytest.raises(ManifestUnknown):
            await repository.manifests.get(doomed.digest)
        with pytest.raises(ManifestUnknown):
            await repository.tags.get("a")
        assert await repository.tags.all() == ["keep"]
        assert await repository.tags.get("keep") == keep.digest
        with pytest.raises(ManifestUnknown):
            await repository.manifests.delete(doomed.digest)

    # -- tags -------------------------------------------------------------------------------

    async def test_tags_point_at_manifests_and_list_sorted(self, repository: Repository) -> None:
        first = await push_image(repository, tags=("v2", "latest"))
        second = await push_image(repository, tags=("v10",))
        await repository.tags.tag("alias", first.digest)
        assert await repository.tags.get("v2") == first.digest
        assert await repository.tags.get("alias") == first.digest
        assert await repository.tags.get("v10") == second.digest
        assert await repository.tags.all() == ["alias", "latest", "v10", "v2"]
        assert sorted(await repository.tags.lookup(first.digest)) == ["alias", "latest", "v2"]

    async def test_a_tag_moves_to_the_manifest_pushed_last(self, repository: Repository) -> None:
        await push_image(repository, tags=("moving",))
        second = await push_image(repository, tags=("moving",))
        assert await repository.tags.get("moving") == second.digest

    async def test_an_unknown_tag_is_manifest_unknown(self, repository: Repository) -> None:
        await push_image(repository, tags=("there",))
        with pytest.raises(ManifestUnknown):
            await repository.tags.get("not-there")

    async def test_a_malformed_tag_is_tag_invalid(self, repository: Repository) -> None:
        pushed = await push_image(repository)
        with pytest.raises(TagInvalid):
            await repository.tags.tag("-starts-with-a-dash", pushed.digest)
        with pytest.raises(TagInvalid):
            await repository.tags.get("has space")

    async def test_untag_keeps_the_manifest(
        self, repository: Repository, implementation: str
    ) -> None:
        pushed = await push_image(repository, tags=("gone", "kept"))
        if implementation == "distribution":
            # Distribution 2.8.2 deletes manifests by digest only (tag deletion came in v3).
            with pytest.raises(OperationUnsupported):
                await repository.tags.untag("gone")
            return
        await repository.tags.untag("gone")
        assert await repository.tags.all() == ["kept"]
        assert await repository.manifests.exists(pushed.digest)
        with pytest.raises(ManifestUnknown):
            await repository.tags.untag("gone")

    async def test_the_tags_of_an_unknown_repository_are_name_unknown(
        self, namespace: Namespace
    ) -> None:
        with pytest.raises(NameUnknown):
            await namespace.repository(unique_name("nowhere")).tags.all()

    async def test_a_repository_whose_tags_were_deleted_lists_none(
        self, repository: Repository
    ) -> None:
        pushed = await push_image(repository, tags=("only",))
        await repository.manifests.delete(pushed.digest)
        # Distribution 2.8.2 answers "tags": null here, cargohold []; the client reads both as [].
        assert await repository.tags.all() == []

    # -- referrers --------------------------------------------------------------------------

    async def test_referrers_list_the_manifests_naming_a_subject(
        self, repository: Repository, implementation: str
    ) -> None:
        subject = await push_image(repository, tags=("subject",))
        signature = await push_artifact(repository, subject, "application/vnd.example.signature")
        sbom = await push_artifact(repository, subject, "application/vnd.example.sbom")
        assert signature.subject == subject.digest

        found = await repository.referrers(subject.digest)
        assert sorted(d.digest for d in found) == sorted([signature.digest, sbom.digest])
        by_digest = {d.digest: d for d in found}
        assert by_digest[signature.digest].artifact_type == "application/vnd.example.signature"
        assert by_digest[sbom.digest].size == len(sbom.payload)

        only = await repository.referrers(subject.digest, "application/vnd.example.sbom")
        assert [d.digest for d in only] == [sbom.digest]
        assert await repository.referrers(digest_of(b"no subject")) == []

        fallback = f"sha256-{subject.digest.encoded}"
        if implementation == "distribution":
            # Distribution 2.8.2 has no referrers API: the client kept the OCI 1.1
            # referrers tag schema's index under the fallback tag instead.
            assert fallback in await repository.tags.all()
        else:
            assert await repository.tags.all() == ["subject"]

    # -- the namespace ----------------------------------------------------------------------

    async def test_the_catalog_lists_repositories_in_order_and_pages(
        self, namespace: Namespace
    ) -> None:
        prefix = unique_name("catalog")
        names = [f"{prefix}/{leaf}" for leaf in ("c", "a", "b")]
        for name in names:
            await push_image(namespace.repository(name), layers=0, tags=("t",))
        everything = await namespace.catalog()
        assert [name for name in everything if name.startswith(prefix)] == sorted(names)
        assert everything == sorted(everything)
        # Names under the prefix sort together, so a page after the prefix holds them.
        assert await namespace.catalog(2, prefix) == sorted(names)[:2]
        assert (
            await namespace.catalog(5, f"{prefix}/a")
            == sorted(names)[1:] + [name for name in everything if name > f"{prefix}/c"][:3]
        )
