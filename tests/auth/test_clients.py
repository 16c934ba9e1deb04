"""Real clients log in: skopeo, oras-py, python-dxf and cargohold's own client.

Two registries serve the module, each in its own process:

- ``basic``: plain HTTP on loopback, ``auth: htpasswd`` (Basic on every request);
- ``secured``: HTTPS with a certificate from the test's CA, ``auth: token``
  trusting the built-in token server at ``https://…/auth/token`` (Basic to the
  token server, then Bearer to the registry), with an ACL:

  - alice is an admin: everything, everywhere;
  - bob may pull and push ``team/*`` and anything under his own name;
  - carol only has her own namespace;
  - anyone may pull ``public/**``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oras.provider
import pytest
import requests
from dxf import DXF
from dxf.exceptions import DXFUnauthorizedError

from cargohold.client import Credentials, OciLayout, RemoteRegistry, copy_image
from cargohold.errors import Unauthorized
from tests.auth.conftest import ISSUER, SERVICE, Keys, serve, write_htpasswd
from tests.support.accesslog import ACCESS_LOG_ENV
from tests.support.accesslog import requests as logged_requests
from tests.support.images import build_image, sha256
from tests.support.skopeo import SkopeoError, skopeo

USERS = {"alice": "wonderland", "bob": "builder", "carol": "singer"}


@dataclass(frozen=True)
class Server:
    url: str
    root: Path
    log: Path

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1]

    def docker(self, reference: str) -> str:
        return f"docker://{self.host}/{reference}"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    layout = tmp_path_factory.mktemp("images") / "layout"
    build_image(layout, "v1", (2000, 30_000))
    return layout


@pytest.fixture(scope="module")
def basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("basic")
    htpasswd = write_htpasswd(folder / "htpasswd", USERS)
    settings = {"auth": {"htpasswd": {"realm": "cargohold", "path": str(htpasswd)}}}
    with serve(folder, settings, log=folder / "log") as url:
        yield Server(url, folder / "root", folder / "log")


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("secured")
    htpasswd = write_htpasswd(folder / "htpasswd", USERS)
    settings: dict[str, Any] = {
        "auth": {
            "token": {
                "realm": "{url}/auth/token",
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(keys.signer_cert),
            }
        },
        "tokenserver": {
            "enabled": True,
            "key": str(keys.signer_key),
            "certificate": str(keys.signer_cert),
            "htpasswd": {"path": str(htpasswd)},
            "groups": {"admins": ["alice"]},
            "acl": [
                {"name": "**", "groups": ["admins"], "actions": ["*"]},
                {"type": "registry", "name": "catalog", "groups": ["admins"], "actions": ["*"]},
                {"name": "team/*", "users": ["bob"], "actions": ["pull", "push"]},
                {"name": "${account}/**", "users": ["*"], "actions": ["pull", "push", "delete"]},
            ],
            "anonymous": [{"name": "public/**", "actions": ["pull"]}],
        },
    }
    log = folder / "log"
    with serve(folder, settings, tls=keys, env=ACCESS_LOG_ENV, log=log) as url:
        yield Server(url, folder / "root", log)


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory, keys: Keys) -> Path:
    """A folder as skopeo's ``--cert-dir`` wants it: the CA as ``ca.crt``."""
    folder = tmp_path_factory.mktemp("certs")
    shutil.copy(keys.bundle, folder / "ca.crt")
    return folder


def creds(user: str) -> str:
    return f"{user}:{USERS[user]}"


def manifest_digest(server: Server, name: str, tag: str, *options: str) -> str:
    raw = skopeo("inspect", "--raw", *options, server.docker(f"{name}:{tag}"))
    return sha256(raw)


# -- skopeo ---------------------------------------------------------------------------------


def test_skopeo_pushes_and_pulls_with_basic_credentials(basic: Server, layout: Path) -> None:
    plain = "--dest-tls-verify=false"
    skopeo(
        "copy", plain, "--dest-creds", creds("bob"), f"oci:{layout}:v1", basic.docker("team/app:v1")
    )
    tags = json.loads(
        skopeo(
            "list-tags", "--tls-verify=false", "--creds", creds("alice"), basic.docker("team/app")
        )
    )
    assert tags["Tags"] == ["v1"]
    with pytest.raises(SkopeoError) as refused:
        skopeo("inspect", "--tls-verify=false", "--creds", "bob:wrong", basic.docker("team/app:v1"))
    assert "401" in refused.value.stderr or "unauthorized" in refused.value.stderr.lower()
    with pytest.raises(SkopeoError):
        skopeo("inspect", "--tls-verify=false", basic.docker("team/app:v1"))


def test_skopeo_goes_through_the_token_server_over_tls(
    secured: Server, layout: Path, cert_dir: Path, tmp_path: Path
) -> None:
    tls = ("--dest-cert-dir", str(cert_dir))
    skopeo(
        "copy",
        *tls,
        "--dest-creds",
        creds("alice"),
        f"oci:{layout}:v1",
        secured.docker("team/app:v1"),
    )
    # bob reads team/app and writes his own namespace: a mount he may make.
    skopeo(
        "copy",
        "--src-cert-dir",
        str(cert_dir),
        "--src-creds",
        creds("bob"),
        *tls,
        "--dest-creds",
        creds("bob"),
        secured.docker("team/app:v1"),
        secured.docker("bob/app:v1"),
    )
    # carol may not read team/app, whose blobs skopeo knows: she pushes them all herself.
    skopeo(
        "copy",
        *tls,
        "--dest-creds",
        creds("carol"),
        f"oci:{layout}:v1",
        secured.docker("carol/app:v1"),
    )
    # skopeo asked whether the blobs were where it had seen them (team/app, bob/app):
    # refused, it uploaded them instead, and nothing was mounted into carol/app.
    seen = logged_requests(secured.log)
    assert any(r.path.startswith("/v2/team/app/blobs/") and r.status == 401 for r in seen)
    assert not any(
        r.path == "/v2/carol/app/blobs/uploads/" and r.param("mount") and r.status == 201
        for r in seen
    )
    inspect = ("--cert-dir", str(cert_dir))
    digests = {
        name: manifest_digest(secured, name, "v1", *inspect, "--creds", creds("alice"))
        for name in ("team/app", "bob/app", "carol/app")
    }
    assert len(set(digests.values())) == 1
    # carol cannot read team/app, nor push to it.
    with pytest.raises(SkopeoError):
        skopeo("inspect", *inspect, "--creds", creds("carol"), secured.docker("team/app:v1"))
    with pytest.raises(SkopeoError):
        skopeo(
            "copy",
            *tls,
            "--dest-creds",
            creds("carol"),
            f"oci:{layout}:v1",
            secured.docker("team/app:v2"),
        )
    skopeo(
        "copy",
        "--src-cert-dir",
        str(cert_dir),
        "--src-creds",
        creds("bob"),
        secured.docker("team/app:v1"),
        f"dir:{tmp_path / 'pulled'}",
    )
    assert sha256((tmp_path / "pulled" / "manifest.json").read_bytes()) == digests["team/app"]


def test_skopeo_refuses_the_registry_without_the_ca(secured: Server) -> None:
    with pytest.raises(SkopeoError) as refused:
        skopeo("inspect", "--creds", creds("alice"), secured.docker("team/app:v1"))
    assert "certificate" in refused.value.stderr


# -- oras-py --------------------------------------------------------------------------------


def fetch_token(server: Server, keys: Keys, user: str | None, scope: str) -> str:
    """A token from the server's token endpoint, asked for as docker asks."""
    response = requests.get(
        f"{server.url}/auth/token",
        params={"service": SERVICE, "scope": scope},
        auth=(user, USERS[user]) if user else None,
        verify=str(keys.bundle),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def oras_client(server: Server, keys: Keys, user: str | None = None) -> oras.provider.Registry:
    client = oras.provider.Registry(server.host, tls_verify=str(keys.bundle))
    if user is not None:
        client.auth.set_basic_auth(user, USERS[user])
    return client


def test_oras_pulls_with_the_tokens_it_fetches(secured: Server, keys: Keys, tmp_path: Path) -> None:
    """oras-py reads through the token flow, anonymously or with a password.

    oras-py keeps its first token for every later request and asks for another
    only after a 403. A push starts with a HEAD (a pull scope), and Distribution,
    as cargohold, answers the POST that follows with 401 ``insufficient_scope``:
    oras-py cannot widen its token there, against either registry. So the pushes
    here start from a token for pull and push, fetched as docker would.
    """
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"carol's notes\n")
    for user, name in [("carol", "carol/notes"), ("alice", "public/notes")]:
        pusher = oras_client(secured, keys)
        pusher.auth.set_token_auth(fetch_token(secured, keys, user, f"repository:{name}:pull,push"))
        target = f"{secured.host}/{name}:v1"
        response = pusher.push(target=target, files=[str(notes)], disable_path_validation=True)
        assert response.status_code == 201

    pulled = oras_client(secured, keys, "carol").pull(
        target=f"{secured.host}/carol/notes:v1", outdir=str(tmp_path / "carol")
    )
    assert [Path(path).read_bytes() for path in pulled] == [b"carol's notes\n"]
    pulled = oras_client(secured, keys).pull(
        target=f"{secured.host}/public/notes:v1", outdir=str(tmp_path / "anyone")
    )
    assert [Path(path).read_bytes() for path in pulled] == [b"carol's notes\n"]
    with pytest.raises((ValueError, requests.HTTPError)):
        oras_client(secured, keys, "bob").pull(
            target=f"{secured.host}/carol/notes:v1", outdir=str(tmp_path / "bob")
        )
    assert not (tmp_path / "bob").exists() or not any((tmp_path / "bob").iterdir())


# -- python-dxf -----------------------------------------------------------------------------


def test_dxf_authenticates_for_each_repository_with_tokens(secured: Server, keys: Keys) -> None:
    def login(user: str) -> Any:
        def auth(dxf: DXF, response: requests.Response) -> None:
            dxf.authenticate(user, USERS[user], response=response)

        return auth

    bob = DXF(secured.host, "bob/blobs", login("bob"), tlsverify=str(keys.bundle))
    data = b"a blob of bob's" * 100
    digest = bob.push_blob(data=data, digest=sha256(data))
    bob.set_alias("latest", digest)
    assert b"".join(bob.pull_blob(digest)) == data

    carol = DXF(secured.host, "bob/blobs", login("carol"), tlsverify=str(keys.bundle))
    with pytest.raises(DXFUnauthorizedError):
        carol.pull_blob(digest)
    # Anyone may pull public/**, nobody may push there without a password.
    anonymous = DXF(secured.host, "public/blobs", None, tlsverify=str(keys.bundle))
    with pytest.raises(DXFUnauthorizedError):
        anonymous.push_blob(data=data, digest=sha256(data))


# -- cargohold's client ---------------------------------------------------------------------


async def test_the_cargohold_client_logs_in_with_basic_and_with_tokens(
    basic: Server, secured: Server, layout: Path, keys: Keys
) -> None:
    source = OciLayout(layout)
    async with RemoteRegistry(
        basic.url, credentials=Credentials("carol", USERS["carol"]), insecure=True
    ) as remote:
        result = await copy_image(source, "v1", remote.repository("client/app"), "v1")
        assert await remote.repository("client/app").tags.get("v1") == result.digest
    async with RemoteRegistry(
        secured.url, credentials=Credentials("bob", USERS["bob"]), ca_file=str(keys.bundle)
    ) as remote:
        result = await copy_image(source, "v1", remote.repository("bob/client"), "v1")
        assert await remote.repository("bob/client").tags.get("v1") == result.digest
        # The token server gave a refresh token (offline_token=true), which the client
        # now uses for new scopes instead of the password: reading team/app needs one.
        assert remote.transport.auth._refresh
        assert await remote.repository("team/app").tags.all() == ["v1"]
        assert remote.transport.auth._refused == set()
        with pytest.raises(Unauthorized):
            await remote.repository("carol/app").tags.get("v1")
    async with RemoteRegistry(
        secured.url, credentials=Credentials("bob", "wrong"), ca_file=str(keys.bundle)
    ) as remote:
        with pytest.raises(Unauthorized):
            await remote.repository("bob/client").tags.get("v1")
