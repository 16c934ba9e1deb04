"""``cargohold login``/``logout``, ``tag`` and ``referrers``, against cargohold and the Go registry.

- ``login`` checks the credentials with the registry, then keeps them in docker's
  ``config.json`` (``$DOCKER_CONFIG``), owner-only, the rest of the file as it
  was: the other commands, and skopeo, sign in with them; ``logout`` forgets them.
- ``tag REF NEWTAG...`` points more tags at a manifest; ``referrers REF`` lists
  the manifests whose subject it is (from the Go registry, which has no
  referrers API, through the referrers tag the client keeps).
- A failure is one line with the registry's error code, exit status 1.
"""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest
from typer.testing import CliRunner, Result

from cargohold.cli import app
from cargohold.testing import ExternalRegistry, Registry, serve
from tests.support.distribution import distribution
from tests.support.skopeo import skopeo

USER, PASSWORD = "ci", "s3cret"


def cargohold(docker_config: Path, *args: str, stdin: str | None = None) -> Result:
    environment = {"DOCKER_CONFIG": str(docker_config), "CARGOHOLD_USERNAME": ""}
    return CliRunner().invoke(app, list(args), env=environment, input=stdin)


@pytest.fixture(params=["cargohold", "go"])
def registry(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Registry | ExternalRegistry]:
    """A registry that asks for ``USER``'s password: cargohold's, or the Go registry."""
    if request.param == "cargohold":
        with serve(users={USER: PASSWORD}) as served:
            yield served
        return
    htpasswd = tmp_path / "htpasswd"
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"{USER}:{hashed}\n")
    with distribution(tmp_path / "go", htpasswd=htpasswd) as url:
        from cargohold.client.auth import Credentials

        yield ExternalRegistry(url, credentials=Credentials(USER, PASSWORD))


def test_login_keeps_the_credentials_where_docker_does(
    registry: Registry | ExternalRegistry, tmp_path: Path
) -> None:
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"credsStore": "", "proxies": {"x": 1}}))
    registry.push_image("team/app", "v1")

    wrong = cargohold(config, "login", registry.host, "-u", USER, "-p", "wrong")
    assert wrong.exit_code == 1, wrong.output
    assert wrong.stderr.count("\n") == 1
    assert "UNAUTHORIZED" in wrong.stderr
    assert "auths" not in json.loads((config / "config.json").read_text())

    right = cargohold(
        config, "login", registry.host, "-u", USER, "--password-stdin", stdin=f"{PASSWORD}\n"
    )
    assert (right.exit_code, right.stdout) == (0, "Login Succeeded\n"), right.output
    document = json.loads((config / "config.json").read_text())
    assert document["proxies"] == {"x": 1}  # the rest as it was
    entry = document["auths"][registry.host]
    assert base64.b64decode(entry["auth"]).decode() == f"{USER}:{PASSWORD}"
    assert stat.S_IMODE((config / "config.json").stat().st_mode) == 0o600

    listed = cargohold(config, "tags", f"{registry.host}/team/app")  # signed in from the file
    assert (listed.exit_code, listed.stdout) == (0, "v1\n"), listed.output
    raw = skopeo(
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--authfile",
        str(config / "config.json"),
        f"docker://{registry.host}/team/app:v1",
    )
    assert json.loads(raw)["schemaVersion"] == 2

    out = cargohold(config, "logout", registry.host)
    assert out.stdout == f"Removing login credentials for {registry.host}\n"
    assert registry.host not in json.loads((config / "config.json").read_text())["auths"]
    again = cargohold(config, "logout", registry.host)
    assert (again.exit_code, again.stdout) == (0, f"Not logged in to {registry.host}\n")
    refused = cargohold(config, "tags", f"{registry.host}/team/app")
    assert refused.exit_code == 1
    assert "UNAUTHORIZED" in refused.stderr


def test_tag_points_more_tags_at_a_manifest(
    registry: Registry | ExternalRegistry, tmp_path: Path
) -> None:
    pushed = registry.push_image("team/app", "v1")
    creds = f"--creds={USER}:{PASSWORD}"
    result = cargohold(tmp_path, "tag", f"{registry.host}/team/app:v1", "v2", "stable", creds)
    assert (result.exit_code, result.stdout) == (0, f"{pushed.digest}\n"), result.output
    listed = cargohold(tmp_path, "tags", f"{registry.host}/team/app", creds)
    assert listed.stdout.split() == ["stable", "v1", "v2"]
    missing = cargohold(tmp_path, "tag", f"{registry.host}/team/app:nope", "v3", creds)
    assert missing.exit_code == 1
    assert missing.stderr.count("\n") == 1
    assert "MANIFEST_UNKNOWN" in missing.stderr
    bad = cargohold(tmp_path, "tag", f"{registry.host}/team/app:v1", "-bad-", creds)
    assert bad.exit_code == 2


def test_referrers_lists_what_refers_to_an_image(
    registry: Registry | ExternalRegistry, tmp_path: Path
) -> None:
    image = registry.push_image("team/app", "v1")
    signature = registry.push_artifact(
        "team/app",
        artifact_type="application/vnd.example.sig",
        subject=image,
        files={"sig": b"signed"},
    )
    sbom = registry.push_artifact(
        "team/app", artifact_type="application/spdx+json", subject=image, files={"sbom": b"{}"}
    )
    creds = f"--creds={USER}:{PASSWORD}"
    listed = cargohold(tmp_path, "referrers", f"{registry.host}/team/app:v1", creds)
    assert listed.exit_code == 0, listed.output
    rows = sorted(line.split()[:2] for line in listed.stdout.splitlines())
    assert rows == sorted(
        [[signature.digest, "application/vnd.example.sig"], [sbom.digest, "application/spdx+json"]]
    )
    only = cargohold(
        tmp_path,
        "referrers",
        f"{registry.host}/team/app:v1",
        creds,
        "--artifact-type",
        "application/spdx+json",
        "--json",
    )
    index = json.loads(only.stdout)
    assert [m["digest"] for m in index["manifests"]] == [sbom.digest]
