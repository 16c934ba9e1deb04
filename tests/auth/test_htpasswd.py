"""``auth: htpasswd``: Basic credentials checked against a bcrypt htpasswd file.

As in Distribution, a valid user may do anything, and anything else gets 401
with ``WWW-Authenticate: Basic realm="…"``. Unlike Distribution, a file with
hashes other than bcrypt stops the start with one line naming the entry.
"""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cargohold.api.app import create_app
from cargohold.config import parse_config
from cargohold.errors import ConfigError
from tests.auth.conftest import MakeRegistry, Registry, config_yaml, write_htpasswd
from tests.support.servers import cargohold_argv

REALM = "cargohold tests"


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


ALICE = basic("alice", "wonderland")


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    return write_htpasswd(tmp_path / "htpasswd", {"alice": "wonderland", "bob": "builder"})


@pytest.fixture
async def registry(make_registry: MakeRegistry, htpasswd: Path) -> Registry:
    registry = await make_registry({"auth": {"htpasswd": {"realm": REALM, "path": str(htpasswd)}}})
    await registry.push_image("team/app", "v1", authorization=ALICE)
    return registry


async def assert_refused(registry: Registry, authorization: str | None) -> None:
    """Pushing with ``authorization`` gets Distribution's 401 and writes nothing."""
    before = registry.snapshot()
    response = await registry.request(
        "POST",
        "/v2/team/app/blobs/uploads/?digest=sha256:" + "0" * 64,
        data=os.urandom(64),
        authorization=authorization,
    )
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == f'Basic realm="{REALM}"'
    body = await response.json()
    assert body["errors"][0]["code"] == "UNAUTHORIZED"
    assert body["errors"][0]["message"] == "authentication required"
    assert registry.snapshot() == before


REFUSED = {
    "no credentials": None,
    "an empty header": "",
    "a wrong password": basic("alice", "looking-glass"),
    "an unknown user": basic("mallory", "wonderland"),
    "another user's password": basic("bob", "wonderland"),
    "an empty password": basic("alice", ""),
    "the password's first 8 characters": basic("alice", "wonderla"),
    "no colon": "Basic " + base64.b64encode(b"alicewonderland").decode(),
    "not base64": "Basic !!!not-base64!!!",
    "base64 without padding": "Basic " + base64.b64encode(b"alice:wonderland").decode()[:-2],
    "a Bearer token": "Bearer abc.def.ghi",
    "garbage": "\u00ff\u00fe garbage \u00e9",
    "a NUL in the password": basic("alice", "wonder\0land"),
    "the stored hash as the password": "hash",
}


@pytest.mark.parametrize("authorization", REFUSED.values(), ids=REFUSED.keys())
async def test_bad_credentials_get_a_basic_challenge_and_write_nothing(
    registry: Registry, htpasswd: Path, authorization: str | None
) -> None:
    if authorization == "hash":
        stored = htpasswd.read_text().splitlines()[0].partition(":")[2]
        authorization = basic("alice", stored)
    await assert_refused(registry, authorization)


async def test_a_valid_user_may_do_anything(registry: Registry) -> None:
    bob = basic("bob", "builder")
    digest = await registry.push_image("team/other", "v1", authorization=bob)
    for method, path, status in [
        ("GET", "/v2/", 200),
        ("GET", "/v2/_catalog", 200),
        ("GET", "/v2/team/app/tags/list", 200),
        ("HEAD", "/v2/team/app/manifests/v1", 200),
        ("DELETE", f"/v2/team/other/manifests/{digest}", 202),
    ]:
        response = await registry.request(method, path, authorization=bob)
        assert response.status == status, (method, path, await response.text())


async def test_the_scheme_is_read_in_any_case(registry: Registry) -> None:
    lower = "basic " + ALICE.split(" ", 1)[1]
    assert (await registry.request("GET", "/v2/", authorization=lower)).status == 200


async def test_the_file_is_read_again_when_it_changes(registry: Registry, htpasswd: Path) -> None:
    carol = basic("carol", "singer")
    await assert_refused(registry, carol)
    write_htpasswd(htpasswd, {"alice": "rabbit-hole", "carol": "singer"})
    assert (await registry.request("GET", "/v2/", authorization=carol)).status == 200
    # A changed password and a removed user take effect at once, cached checks or not.
    await assert_refused(registry, ALICE)
    await assert_refused(registry, basic("bob", "builder"))
    assert (
        await registry.request("GET", "/v2/", authorization=basic("alice", "rabbit-hole"))
    ).status == 200


async def test_an_entry_that_turns_bad_while_serving_is_skipped_alone(
    registry: Registry, htpasswd: Path
) -> None:
    text = htpasswd.read_text()
    htpasswd.write_text(text + "carol:$apr1$abc$0123456789abcdefghijkl\nnot-an-entry\n")
    assert (await registry.request("GET", "/v2/", authorization=ALICE)).status == 200
    await assert_refused(registry, basic("carol", "anything"))


# -- refused at start -----------------------------------------------------------------------

NOT_BCRYPT = {
    "an Apache MD5 hash": ("$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/", "an Apache MD5 ($apr1$)"),
    "a SHA-1 hash": ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "a SHA-1 ({SHA})"),
    "a crypt hash": ("rqXexS6ZhobKA", "a non-bcrypt"),
    "a plain password": ("wonderland", "a non-bcrypt"),
    "a SHA-512-crypt hash": ("$6$salt$" + "a" * 86, "a SHA-512-crypt ($6$)"),
}


@pytest.mark.parametrize(("stored", "named"), NOT_BCRYPT.values(), ids=NOT_BCRYPT.keys())
def test_a_file_with_other_hashes_is_refused_naming_the_entry(
    tmp_path: Path, stored: str, named: str
) -> None:
    htpasswd = write_htpasswd(tmp_path / "htpasswd", {"alice": "wonderland"})
    with htpasswd.open("a") as file:
        file.write(f"# a comment, and a blank line\n\nbob:{stored}\n")
    settings = {"auth": {"htpasswd": {"realm": REALM, "path": str(htpasswd)}}}
    with pytest.raises(ConfigError) as refused:
        create_app(parse_config(config_yaml(tmp_path / "root", settings), environ={}))
    assert str(refused.value) == (
        f"auth.htpasswd.path: {htpasswd} line 4: user 'bob' has {named} hash; "
        "only bcrypt is accepted (htpasswd -B)"
    )


def test_cargohold_serve_refuses_such_a_file_with_one_line_and_status_2(tmp_path: Path) -> None:
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n")
    # Two workers: the check happens in the parent, before any worker starts.
    result = serve_and_fail(tmp_path, {"htpasswd": {"realm": REALM, "path": str(htpasswd)}})
    assert result == (
        f"cargohold: config: auth.htpasswd.path: {htpasswd} line 1: user 'alice' has "
        "a SHA-1 ({SHA}) hash; only bcrypt is accepted (htpasswd -B)"
    )


def test_a_missing_file_stops_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = serve_and_fail(tmp_path, {"htpasswd": {"realm": REALM, "path": str(missing)}})
    assert result == (
        f"cargohold: config: auth.htpasswd.path: cannot read {missing}: No such file or directory"
    )


def serve_and_fail(tmp_path: Path, auth: dict[str, Any]) -> str:
    """``cargohold serve`` with ``auth``: it must exit 2 at once; its one line of stderr."""
    config = tmp_path / "config.yml"
    config.write_text(config_yaml(tmp_path / "root", {"auth": auth}))
    env = {**os.environ, "REGISTRY_HTTP_ADDR": "127.0.0.1:0"}
    result = subprocess.run(
        [*cargohold_argv("serve", str(config), "--workers", "2")],
        capture_output=True,
        env=env,
        timeout=30,
        text=True,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]
