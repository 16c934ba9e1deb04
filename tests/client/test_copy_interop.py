"""``cargohold copy`` between real peers: umoci builds, skopeo pushes to the Go registry,
cargohold copies on to cargohold and back to an OCI layout.

Everything compares byte for byte (manifests, configs, layers), and ``skopeo
inspect`` agrees with ``cargohold inspect`` on what both report. The cargohold
here runs without its fast path, which keeps skopeo waiting (see conftest).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cargohold.cli import app
from tests.client.conftest import SourceImages, unique_name
from tests.support import skopeo
from tests.support.images import assert_sound, descriptor_of, image_tree, read_blob

COMPARED = ("Name", "Digest", "Layers", "Architecture", "Os")


def cargohold(*args: str) -> bytes:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.stderr
    return result.stdout_bytes


def host(url: str) -> str:
    return url.removeprefix("http://")


@pytest.mark.parametrize(("tag", "options"), [("amd64", ()), ("multi", ("--all",))])
def test_an_image_goes_through_distribution_and_cargohold_unchanged(
    images: SourceImages,
    distribution_url: str,
    cargohold_for_skopeo_url: str,
    tmp_path: Path,
    tag: str,
    options: tuple[str, ...],
) -> None:
    name = unique_name("interop")
    on_distribution = f"{host(distribution_url)}/{name}:1.0"
    on_cargohold = f"{host(cargohold_for_skopeo_url)}/{name}:1.0"
    back = tmp_path / "back"

    skopeo.copy(images.oci(tag), f"docker://{on_distribution}", *options)
    digest = cargohold("copy", "-q", *options, on_distribution, on_cargohold).decode().strip()
    cargohold("copy", "-q", *options, on_cargohold, f"oci:{back}:1.0")

    source = descriptor_of(images.layout, tag)
    assert digest == source["digest"]
    pulled = image_tree(back, "1.0")
    assert_sound(pulled)
    assert pulled == image_tree(images.layout, tag)
    # Manifests, configs and layers: the very bytes umoci wrote, at every stop.
    for digest_, _ in pulled.items():
        assert read_blob(back, digest_) == read_blob(images.layout, digest_)
    expected_manifest = read_blob(images.layout, source["digest"])
    for reference in (on_distribution, on_cargohold):
        assert cargohold("inspect", "--raw", reference) == expected_manifest
        assert skopeo.inspect_raw(f"docker://{reference}") == expected_manifest


def test_skopeo_and_cargohold_inspect_agree(
    images: SourceImages, distribution_url: str, cargohold_for_skopeo_url: str
) -> None:
    name = unique_name("interop")
    on_distribution = f"{host(distribution_url)}/{name}:1.0"
    on_cargohold = f"{host(cargohold_for_skopeo_url)}/{name}:1.0"
    skopeo.copy(images.oci("amd64"), f"docker://{on_distribution}")
    cargohold("copy", "-q", on_distribution, on_cargohold)

    for reference in (on_distribution, on_cargohold):
        ours = json.loads(cargohold("inspect", reference))
        theirs = skopeo.inspect(f"docker://{reference}")
        assert {key: ours[key] for key in COMPARED} == {key: theirs[key] for key in COMPARED}
        assert ours["RepoTags"] == theirs["RepoTags"] == ["1.0"]
        assert ours["Created"] == theirs["Created"]
        assert [layer["Digest"] for layer in ours["LayersData"]] == theirs["Layers"]
    ours = json.loads(cargohold("inspect", images.oci("amd64")))
    theirs = skopeo.inspect(images.oci("amd64"))
    assert {key: ours[key] for key in COMPARED[1:]} == {key: theirs[key] for key in COMPARED[1:]}
