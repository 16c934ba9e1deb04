"""``cargohold push REF FILE...`` and ``pull REF -o DIR``: files as an OCI artifact,
compatible with oras (oras-py pulls what cargohold pushes, and the other way round), on
cargohold and on the Go registry."""

from __future__ import annotations

import json
from pathlib import Path

import oras.client
import pytest
from typer.testing import CliRunner, Result

from cargohold.cli import app
from cargohold.testing import ExternalRegistry, Registry, serve
from tests.testing.test_serve import fetch


def cargohold(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def registry(cargohold_or_go: Registry | ExternalRegistry) -> Registry | ExternalRegistry:
    return cargohold_or_go


def files(folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    made = {"notes.txt": b"hello\n", "data.json": b'{"a": 1}', "empty": b""}
    for name, data in made.items():
        (folder / name).write_bytes(data)
    return made


def test_oras_pulls_what_cargohold_pushes(
    registry: Registry | ExternalRegistry, tmp_path: Path
) -> None:
    made = files(tmp_path / "in")
    pushed = cargohold(
        "push",
        f"{registry.host}/team/files:v1",
        str(tmp_path / "in/notes.txt"),
        f"{tmp_path / 'in/data.json'}:application/json",
        str(tmp_path / "in/empty"),
        "--artifact-type",
        "application/vnd.example.bundle",
        "-a",
        "purpose=test",
    )
    assert pushed.exit_code == 0, pushed.output
    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    pulled = client.pull(target=f"{registry.host}/team/files:v1", outdir=str(tmp_path / "out"))
    assert {Path(p).name: Path(p).read_bytes() for p in pulled} == made
    manifest = client.get_manifest(f"{registry.host}/team/files:v1")
    assert manifest["artifactType"] == "application/vnd.example.bundle"
    assert manifest["annotations"] == {"purpose": "test"}
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    types = {
        layer["annotations"]["org.opencontainers.image.title"]: layer["mediaType"]
        for layer in manifest["layers"]
    }
    assert types["data.json"] == "application/json"
    assert types["notes.txt"] == "application/vnd.oci.image.layer.v1.tar"
    assert pushed.stdout.strip().startswith("sha256:")


def test_cargohold_pulls_what_oras_pushes(
    registry: Registry | ExternalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = files(tmp_path / "in")
    monkeypatch.chdir(tmp_path / "in")  # oras-py pushes files of the current folder only
    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    client.push(files=list(made), target=f"{registry.host}/team/files:v2")
    pulled = cargohold("pull", f"{registry.host}/team/files:v2", "-o", str(tmp_path / "out"))
    assert pulled.exit_code == 0, pulled.output
    assert sorted(Path(line).name for line in pulled.stdout.splitlines()) == sorted(made)
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == made


def test_a_title_that_leaves_the_folder_is_refused(tmp_path: Path) -> None:
    with serve() as registry:
        layer = registry.push_artifact("team/evil", "v1", artifact_type="x/y", files={"f": b"x"})
        # Rewrite the title as a path out of the folder.
        _, _, raw = fetch(registry, "GET", f"/v2/team/evil/manifests/{layer.digest}")
        body = json.loads(raw)
        body["layers"][0]["annotations"]["org.opencontainers.image.title"] = "../evil"
        registry.call(
            lambda client: client.repository("team/evil").manifests.put(
                json.dumps(body).encode(), body["mediaType"], ["v2"]
            )
        )
        pulled = cargohold("pull", f"{registry.host}/team/evil:v2", "-o", str(tmp_path / "out"))
    assert pulled.exit_code == 1
    assert "MANIFEST_INVALID" in pulled.stderr
    assert "not a plain file name" in pulled.stderr
    assert not (tmp_path / "evil").exists()


def test_push_refuses_what_is_no_file(tmp_path: Path) -> None:
    result = cargohold("push", "127.0.0.1:1/a:b", str(tmp_path / "missing"))
    assert result.exit_code == 2
    assert "not a file" in result.stderr
