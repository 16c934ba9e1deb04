"""Manifests: validated on put, stored as the exact pushed bytes, linked as revisions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from jwt.algorithms import ECAlgorithm

from cargohold.config import parse_config
from cargohold.digest import Digest, digest_of
from cargohold.errors import (
    ConfigError,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    ManifestUnverified,
    NameInvalid,
)
from cargohold.manifest import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, SCHEMA1_SIGNED
from cargohold.manifest.schema1 import SignedManifest, sign
from cargohold.manifest.urls import URLPolicy
from cargohold.storage.configured import registry_options
from cargohold.storage.driver.inmemory import InMemoryDriver
from cargohold.storage.paths import (
    BlobData,
    ManifestRevisionLink,
    ManifestSignaturesDir,
    TagDir,
    path_for,
)
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from tests.storage.conftest import fresh, stored_files
from tests.storage.images import descriptor_json, image_manifest, index_manifest, put_blobs


async def test_put_stores_the_exact_bytes_as_a_linked_revision(registry: StorageRegistry) -> None:
    repo = registry.repository("library/app")
    payload = await image_manifest(repo)
    stored = await repo.manifests.put(payload, OCI_MANIFEST, ["v1"])
    assert stored.digest == digest_of(payload)
    assert await registry.driver.get_content(path_for(BlobData(stored.digest))) == payload
    link = path_for(ManifestRevisionLink("library/app", stored.digest))
    assert await registry.driver.get_content(link) == str(stored.digest).encode()

    got = await fresh(registry).repository("library/app").manifests.get(stored.digest)
    assert (got.digest, got.media_type, got.payload) == (stored.digest, OCI_MANIFEST, payload)
    assert await repo.tags.get("v1") == stored.digest


@pytest.mark.parametrize("content_type", [DOCKER_MANIFEST, None, "application/json"])
async def test_docker_schema2_keeps_its_media_type(
    registry: StorageRegistry, content_type: str | None
) -> None:
    repo = registry.repository("a")
    payload = await image_manifest(repo, docker=True)
    stored = await repo.manifests.put(payload, content_type)
    assert (await repo.manifests.get(stored.digest)).media_type == DOCKER_MANIFEST


async def test_an_index_needs_its_children_in_the_repository(registry: StorageRegistry) -> None:
    repo = registry.repository("a")
    child = await image_manifest(repo)
    index = index_manifest(child)
    with pytest.raises(ManifestBlobUnknown) as caught:
        await repo.manifests.put(index, OCI_INDEX)
    assert caught.value.digests == [digest_of(child)]
    await repo.manifests.put(child, OCI_MANIFEST)
    stored = await repo.manifests.put(index, OCI_INDEX, ["multi"])
    assert (await repo.manifests.get(stored.digest)).media_type == OCI_INDEX


async def test_missing_blobs_are_all_named_and_nothing_is_written(
    registry: StorageRegistry,
) -> None:
    repo = registry.repository("a")
    payload = await image_manifest(repo, layers=3)
    body = json.loads(payload)
    missing = [
        descriptor_json("application/vnd.oci.image.layer.v1.tar", b"never pushed 1"),
        descriptor_json("application/vnd.oci.image.layer.v1.tar", b"never pushed 2"),
    ]
    body["layers"] += missing
    before = await stored_files(registry.driver)
    with pytest.raises(ManifestBlobUnknown) as caught:
        await repo.manifests.put(json.dumps(body).encode(), OCI_MANIFEST, ["t"])
    assert caught.value.digests == [m["digest"] for m in missing]
    assert caught.value.detail == {"digests": [m["digest"] for m in missing]}
    assert await stored_files(registry.driver) == before


async def test_blobs_of_another_repository_do_not_count(registry: StorageRegistry) -> None:
    payload = await image_manifest(registry.repository("other"))
    with pytest.raises(ManifestBlobUnknown):
        await registry.repository("a").manifests.put(payload, OCI_MANIFEST)


@pytest.mark.parametrize(
    ("payload", "content_type"),
    [
        (b"not json", OCI_MANIFEST),
        (b"[]", OCI_MANIFEST),
        (b'{"schemaVersion": 2, "mediaType": "%s"}' % OCI_INDEX.encode(), OCI_MANIFEST),
        (b'{"schemaVersion": 3, "config": {}}', OCI_MANIFEST),
        (b"{}", "text/plain"),
    ],
)
async def test_invalid_manifests_write_nothing(
    registry: StorageRegistry, payload: bytes, content_type: str
) -> None:
    before = await stored_files(registry.driver)
    with pytest.raises(ManifestInvalid):
        await registry.repository("a").manifests.put(payload, content_type, ["t"])
    assert await stored_files(registry.driver) == before


async def test_a_digest_reference_must_match_the_body(registry: StorageRegistry) -> None:
    repo = registry.repository("a")
    payload = await image_manifest(repo)
    with pytest.raises(DigestInvalid):
        await repo.manifests.put(payload, OCI_MANIFEST, digest=digest_of(b"other"))
    stored = await repo.manifests.put(payload, OCI_MANIFEST, digest=digest_of(payload))
    assert stored.digest == digest_of(payload)


async def test_a_sha512_reference_stores_the_manifest_under_sha512(
    registry: StorageRegistry,
) -> None:
    repo = registry.repository("a")
    payload = await image_manifest(repo)
    digest = digest_of(payload, "sha512")
    assert (await repo.manifests.put(payload, OCI_MANIFEST, ["t"], digest)).digest == digest
    assert (await repo.manifests.get(digest)).payload == payload
    assert await repo.tags.get("t") == digest


async def test_foreign_layers_are_not_required_but_their_urls_are_vetted(
    storage_driver: object,
) -> None:
    policy = URLPolicy.compile(allow=[r"^https://mirror\.example/"])
    registry = StorageRegistry(storage_driver, options=RegistryOptions(url_policy=policy))  # type: ignore[arg-type]
    repo = registry.repository("a")
    foreign = {
        "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
        "digest": str(digest_of(b"windows base layer")),
        "size": 18,
        "urls": ["https://mirror.example/base.tar.gz"],
    }
    payload = await image_manifest(repo, docker=True)
    body = json.loads(payload)
    body["layers"].insert(0, foreign)
    stored = await repo.manifests.put(json.dumps(body).encode(), DOCKER_MANIFEST)
    assert await repo.manifests.exists(stored.digest)
    foreign["urls"] = ["https://elsewhere.example/base.tar.gz"]
    with pytest.raises(ManifestInvalid):
        await repo.manifests.put(json.dumps(body).encode(), DOCKER_MANIFEST)


async def test_get_of_an_unknown_manifest(registry: StorageRegistry) -> None:
    with pytest.raises(ManifestUnknown):
        await registry.repository("a").manifests.get(digest_of(b"nothing"))


async def test_delete_removes_the_revision_and_every_tag_pointing_at_it(
    registry: StorageRegistry,
) -> None:
    repo = registry.repository("a")
    kept = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["kept"])
    doomed = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["x", "y"])
    await repo.manifests.delete(doomed.digest)
    with pytest.raises(ManifestUnknown):
        await repo.manifests.get(doomed.digest)
    assert await repo.tags.all() == ["kept"]
    assert await repo.manifests.exists(kept.digest)
    for tag in ("x", "y"):
        with pytest.raises(Exception):  # noqa: B017, PT011
            await registry.driver.list(path_for(TagDir("a", tag)))
    # the content stays for garbage collection
    assert await registry.driver.get_content(path_for(BlobData(doomed.digest)))
    with pytest.raises(ManifestUnknown):
        await repo.manifests.delete(doomed.digest)


# -- schema1 --------------------------------------------------------------------------


async def schema1(repo_name: str, registry: StorageRegistry) -> tuple[bytes, SignedManifest]:
    repo = registry.repository(repo_name)
    layer = (await put_blobs(repo, b"schema1 layer"))[0]
    body = {
        "schemaVersion": 1,
        "name": repo_name,
        "tag": "old",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": str(layer.digest)}],
        "history": [{"v1Compatibility": json.dumps({"id": "x" * 64})}],
    }
    signed = sign(body, ec.generate_private_key(ec.SECP256R1()))
    return signed, SignedManifest.parse(signed)


async def test_schema1_stores_the_canonical_payload_and_signatures_beside_it(
    registry: StorageRegistry,
) -> None:
    signed, parsed = await schema1("legacy", registry)
    repo = registry.repository("legacy")
    stored = await repo.manifests.put(signed, SCHEMA1_SIGNED, ["old"])
    assert stored.digest == digest_of(parsed.canonical)
    assert await registry.driver.get_content(path_for(BlobData(stored.digest))) == parsed.canonical
    signatures = [
        info.path
        async for info in registry.driver.walk(
            path_for(ManifestSignaturesDir("legacy", stored.digest))
        )
        if info.path.endswith("/link")
    ]
    assert len(signatures) == 1
    got = await fresh(registry).repository("legacy").manifests.get(stored.digest)
    assert got.media_type == SCHEMA1_SIGNED
    assert got.payload == signed
    assert SignedManifest.parse(got.payload).canonical == parsed.canonical


async def test_schema1_without_stored_signatures_is_signed_afresh(
    registry: StorageRegistry,
) -> None:
    """As Distribution 2.5+ stores it: the canonical payload alone."""
    _, parsed = await schema1("legacy", registry)
    repo = registry.repository("legacy")
    digest = (await registry.blobs.put(parsed.canonical)).digest
    await registry.driver.put_content(
        path_for(ManifestRevisionLink("legacy", digest)), str(digest).encode()
    )
    got = await repo.manifests.get(digest)
    assert got.media_type == SCHEMA1_SIGNED
    reparsed = SignedManifest.parse(got.payload)  # verifies the fresh signature
    assert reparsed.canonical == parsed.canonical


async def test_schema1_with_a_bad_signature_is_unverified(registry: StorageRegistry) -> None:
    signed, _ = await schema1("legacy", registry)
    tampered = signed.replace(b'"amd64"', b'"arm64"')
    with pytest.raises(ManifestUnverified):
        await registry.repository("legacy").manifests.put(tampered, SCHEMA1_SIGNED)


async def test_schema1_for_another_repository_is_refused(registry: StorageRegistry) -> None:
    signed, _ = await schema1("legacy", registry)
    with pytest.raises(NameInvalid):
        await registry.repository("other").manifests.put(signed, SCHEMA1_SIGNED)


async def test_manifests_of_oci_1_1_artifacts(registry: StorageRegistry) -> None:
    repo = registry.repository("a")
    await repo.blobs.put(b"{}")
    (blob,) = await put_blobs(repo, b"an sbom")
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.sbom",
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": str(digest_of(b"{}")),
            "size": 2,
        },
        "layers": [{"mediaType": "text/plain", "digest": str(blob.digest), "size": blob.size}],
    }
    stored = await repo.manifests.put(json.dumps(body).encode(), OCI_MANIFEST)
    assert isinstance(stored.digest, Digest)
    assert stored.subject is None


# -- compatibility.schema1 ---------------------------------------------------------------------


def registry_with(settings: dict[str, object]) -> StorageRegistry:
    text = yaml.safe_dump({"version": "0.1", "storage": "inmemory", **settings})
    return StorageRegistry(InMemoryDriver(), options=registry_options(parse_config(text, {})))


def key_file(path: Path, key: ec.EllipticCurvePrivateKey, form: str) -> Path:
    if form == "jwk":
        path.write_text(ECAlgorithm.to_jwk(key))
        return path
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())
    lines = pem.decode().splitlines()
    # libtrust writes its key ID as a PEM header inside the block.
    path.write_text("\n".join([lines[0], "keyID: ABCD:EFGH", *lines[1:]]) + "\n")
    return path


@pytest.mark.parametrize("form", ["pem", "jwk"])
async def test_signingkeyfile_signs_what_is_stored_without_signatures(
    tmp_path: Path, form: str
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = key_file(tmp_path / f"key.{form}", key, form)
    registry = registry_with({"compatibility": {"schema1": {"signingkeyfile": str(path)}}})
    _, parsed = await schema1("legacy", registry)
    digest = (await registry.blobs.put(parsed.canonical)).digest
    await registry.driver.put_content(
        path_for(ManifestRevisionLink("legacy", digest)), str(digest).encode()
    )
    got = await registry.repository("legacy").manifests.get(digest)
    (signature,) = json.loads(got.payload)["signatures"]
    numbers = key.public_key().public_numbers()
    jwk = signature["header"]["jwk"]
    assert ECAlgorithm.from_jwk(json.dumps(jwk)).public_numbers() == numbers  # type: ignore[union-attr]
    assert SignedManifest.parse(got.payload).canonical == parsed.canonical


def test_a_signingkeyfile_that_is_no_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_text("not a key")
    with pytest.raises(ConfigError) as caught:
        registry_with({"compatibility": {"schema1": {"signingkeyfile": str(path)}}})
    assert caught.value.key == "compatibility.schema1.signingkeyfile"


@pytest.mark.parametrize(("enabled", "accepted"), [(None, True), (True, True), (False, False)])
async def test_schema1_pushes_follow_compatibility_schema1_enabled(
    enabled: bool | None, accepted: bool
) -> None:
    settings = {} if enabled is None else {"compatibility": {"schema1": {"enabled": enabled}}}
    registry = registry_with(settings)
    signed, _ = await schema1("legacy", registry)
    manifests = registry.repository("legacy").manifests
    if accepted:
        assert (await manifests.put(signed, SCHEMA1_SIGNED, ["old"])).media_type == SCHEMA1_SIGNED
    else:
        with pytest.raises(ManifestInvalid, match=r"compatibility\.schema1\.enabled"):
            await manifests.put(signed, SCHEMA1_SIGNED, ["old"])
