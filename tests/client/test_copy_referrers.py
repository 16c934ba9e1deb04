"""``cargohold copy`` carries an image's referrers (signatures, SBOMs, and theirs) unless
``--no-referrers``, to cargohold and to the Go registry (which lists them through the
referrers tag the client keeps there)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cargohold.cli import app
from cargohold.client.registry import RemoteRegistry
from cargohold.descriptor import Descriptor
from cargohold.testing import ExternalRegistry, Registry, serve


@pytest.fixture
def destination(cargohold_or_go: Registry | ExternalRegistry) -> Registry | ExternalRegistry:
    return cargohold_or_go


def referrers_of(registry: Registry | ExternalRegistry, name: str, subject: str) -> set[str]:
    async def listed(client: RemoteRegistry) -> set[str]:
        return {d.digest for d in await client.repository(name).referrers(subject)}

    return registry.call(listed)


def signed_image(source: Registry) -> dict[str, Descriptor]:
    image = source.push_image("team/app", "v1", layers=2)
    sig = source.push_artifact(
        "team/app", artifact_type="application/vnd.example.sig", subject=image, files={"s": b"1"}
    )
    sbom = source.push_artifact(
        "team/app", artifact_type="application/spdx+json", subject=image, files={"b": b"{}"}
    )
    sbom_sig = source.push_artifact(
        "team/app", artifact_type="application/vnd.example.sig", subject=sbom, files={"s": b"2"}
    )
    return {"image": image, "sig": sig, "sbom": sbom, "sbom_sig": sbom_sig}


def test_copy_carries_referrers_and_theirs(destination: Registry | ExternalRegistry) -> None:
    with serve() as source:
        pushed = signed_image(source)
        result = CliRunner().invoke(
            app, ["copy", "-q", f"{source.host}/team/app:v1", f"{destination.host}/team/app:v1"]
        )
    assert (result.exit_code, result.stdout) == (0, f"{pushed['image'].digest}\n"), result.output
    image, sbom = pushed["image"].digest, pushed["sbom"].digest
    assert referrers_of(destination, "team/app", image) == {pushed["sig"].digest, sbom}
    assert referrers_of(destination, "team/app", sbom) == {pushed["sbom_sig"].digest}


def test_no_referrers_copies_the_image_alone(destination: Registry | ExternalRegistry) -> None:
    with serve() as source:
        pushed = signed_image(source)
        result = CliRunner().invoke(
            app,
            [
                "copy",
                "-q",
                "--no-referrers",
                f"{source.host}/team/app:v1",
                f"{destination.host}/team/app:v1",
            ],
        )
    assert result.exit_code == 0, result.output
    assert referrers_of(destination, "team/app", pushed["image"].digest) == set()
