"""The storage layout is CNCF Distribution's, byte for byte."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cargohold.digest import Digest, digest_of
from cargohold.storage import paths
from cargohold.storage.paths import path_for

D = digest_of(b"some content")
H = D.encoded
S512 = digest_of(b"x", "sha512")
R = "/docker/registry/v2/repositories/library/ubuntu"
UUID = "4f6d3b5c-1b6f-4c31-9d7e-2a8f0e6b9c10"


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (paths.BlobsRoot(), "/docker/registry/v2/blobs"),
        (paths.BlobDir(D), f"/docker/registry/v2/blobs/sha256/{H[:2]}/{H}"),
        (paths.BlobData(D), f"/docker/registry/v2/blobs/sha256/{H[:2]}/{H}/data"),
        (
            paths.BlobData(S512),
            f"/docker/registry/v2/blobs/sha512/{S512.encoded[:2]}/{S512.encoded}/data",
        ),
        (paths.RepositoriesRoot(), "/docker/registry/v2/repositories"),
        (paths.RepositoryDir("library/ubuntu"), R),
        (paths.LayersDir("library/ubuntu"), f"{R}/_layers"),
        (paths.LayerLink("library/ubuntu", D), f"{R}/_layers/sha256/{H}/link"),
        (paths.ManifestRevisionsDir("library/ubuntu"), f"{R}/_manifests/revisions"),
        (paths.ManifestRevisionDir("library/ubuntu", D), f"{R}/_manifests/revisions/sha256/{H}"),
        (
            paths.ManifestRevisionLink("library/ubuntu", D),
            f"{R}/_manifests/revisions/sha256/{H}/link",
        ),
        (
            paths.ManifestSignaturesDir("library/ubuntu", D),
            f"{R}/_manifests/revisions/sha256/{H}/signatures",
        ),
        (
            paths.ManifestSignatureLink("library/ubuntu", D, S512),
            f"{R}/_manifests/revisions/sha256/{H}/signatures/sha512/{S512.encoded}/link",
        ),
        (paths.TagsDir("library/ubuntu"), f"{R}/_manifests/tags"),
        (paths.TagDir("library/ubuntu", "22.04"), f"{R}/_manifests/tags/22.04"),
        (
            paths.TagCurrentLink("library/ubuntu", "22.04"),
            f"{R}/_manifests/tags/22.04/current/link",
        ),
        (paths.TagIndexDir("library/ubuntu", "22.04"), f"{R}/_manifests/tags/22.04/index"),
        (
            paths.TagIndexLink("library/ubuntu", "22.04", D),
            f"{R}/_manifests/tags/22.04/index/sha256/{H}/link",
        ),
        (paths.UploadsDir("library/ubuntu"), f"{R}/_uploads"),
        (paths.UploadDir("library/ubuntu", UUID), f"{R}/_uploads/{UUID}"),
        (paths.UploadData("library/ubuntu", UUID), f"{R}/_uploads/{UUID}/data"),
        (paths.UploadStartedAt("library/ubuntu", UUID), f"{R}/_uploads/{UUID}/startedat"),
        (
            paths.UploadHashState("library/ubuntu", UUID, "sha256", 1024),
            f"{R}/_uploads/{UUID}/hashstates/sha256/1024",
        ),
        (paths.ReferrersDir("library/ubuntu", D), f"{R}/_referrers/sha256/{H}"),
        (
            paths.ReferrerDescriptor("library/ubuntu", D, S512),
            f"{R}/_referrers/sha256/{H}/sha512/{S512.encoded}/descriptor",
        ),
    ],
)
def test_every_path_is_distributions(spec: paths.PathSpec, expected: str) -> None:
    assert path_for(spec) == expected


def test_algorithm_separators_become_folders_as_in_distribution() -> None:
    # Only the registered algorithms reach a path today, but the rule is Distribution's.
    digest = Digest.trusted("sha256+b64u.x;y:" + H)
    assert path_for(paths.LayerLink("a", digest)) == (
        f"/docker/registry/v2/repositories/a/_layers/sha256/b64u/x/y/{H}/link"
    )


def test_a_link_is_the_digest_in_71_bytes_without_newline() -> None:
    content = paths.link_content(D)
    assert content == f"sha256:{H}".encode()
    assert len(content) == 71


def test_startedat_is_rfc3339_utc_in_20_bytes_without_newline() -> None:
    when = datetime(2026, 11, 22, 4, 14, 39, 123456, tzinfo=UTC)
    assert paths.startedat_content(when) == b"2026-11-22T04:14:39Z"
    assert paths.parse_startedat(b"2026-11-22T04:14:39Z") == when.replace(microsecond=0)


def test_startedat_as_go_writes_it_with_nanoseconds_and_offsets_is_read() -> None:
    expected = datetime(2026, 11, 22, 4, 14, 39, tzinfo=UTC)
    assert paths.parse_startedat(b"2026-11-22T05:14:39+01:00") == expected
    assert (
        paths.parse_startedat(b"2026-11-22T04:14:39.123456789Z").replace(microsecond=0) == expected
    )


@pytest.mark.parametrize(
    "path",
    [
        f"/docker/registry/v2/blobs/sha256/{H[:2]}/{H}/data",
        f"/docker/registry/v2/blobs/sha256/{H[:2]}/{H}",
        f"{R}/_layers/sha256/{H}/link",
        f"{R}/_manifests/revisions/sha256/{H}",
    ],
)
def test_digests_are_read_back_from_paths(path: str) -> None:
    assert paths.digest_from_path(path) == D


def test_repository_names_are_read_back_from_paths() -> None:
    assert paths.repository_name(f"{R}/_manifests") == "library/ubuntu"
    assert paths.repository_name(f"{R}/_layers/sha256/{H}/link") == "library/ubuntu"
