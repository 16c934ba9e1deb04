"""``cargohold.testing.serve``: a real registry in process, for other projects' tests.

It starts in well under a second on a free loopback port, in a ``with`` or an
``async with`` block; its options (storage, deletes, read-only, users, TLS, a
config overlay) do what ``config.yml`` would; it never reads the process
environment nor touches the current directory; conflicting options fail
before anything starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from cargohold.errors import ConfigError, ManifestUnknown
from cargohold.testing import Registry, serve
from tests.support.skopeo import skopeo


def fetch(
    registry: Registry, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Message, bytes]:
    """One request to ``registry``: status, headers, body (an error status is an answer)."""
    request = urllib.request.Request(registry.url + path, method=method, headers=headers or {})
    context = None
    if registry.ca_file is not None:
        context = ssl.create_default_context(cafile=str(registry.ca_file))
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def codes(body: bytes) -> list[str]:
    return [e["code"] for e in json.loads(body)["errors"]]


def test_it_starts_at_once_on_a_free_loopback_port() -> None:
    with serve() as registry:
        # Measured here at about 40 ms in process; the bound leaves room for a busy machine.
        assert registry.startup_seconds < 1.0, registry.startup_seconds
        assert registry.url == f"http://127.0.0.1:{registry.port}"
        assert registry.host == f"127.0.0.1:{registry.port}"
        status, headers, _ = fetch(registry, "GET", "/v2/")
        assert (status, headers["Docker-Distribution-Api-Version"]) == (200, "registry/2.0")
    with pytest.raises(ConnectionRefusedError):  # stopped: nothing listens there any more
        socket.create_connection(("127.0.0.1", registry.port), timeout=1).close()


async def test_async_with_and_a_client_for_the_callers_loop() -> None:
    async with serve() as registry:
        pushed = registry.push_image("team/app", "v1")
        async with registry.client() as client:
            repository = client.repository("team/app")
            assert await repository.tags.get("v1") == pushed.digest
            with pytest.raises(ManifestUnknown):
                await repository.tags.get("v2")


def test_storage_in_memory_or_in_a_folder(tmp_path: Path) -> None:
    with serve(root=tmp_path) as registry:
        pushed = registry.push_image("team/app", "v1")
    link = tmp_path / "docker/registry/v2/repositories/team/app/_manifests/tags/v1/current/link"
    assert link.read_text() == pushed.digest
    with serve(root=tmp_path) as again:  # the same storage, served anew
        status, _, body = fetch(again, "GET", "/v2/team/app/tags/list")
        assert (status, json.loads(body)["tags"]) == (200, ["v1"])
    with serve() as fresh:
        status, _, body = fetch(fresh, "GET", "/v2/team/app/tags/list")
        assert (status, codes(body)) == (404, ["NAME_UNKNOWN"])


def test_deletes_are_on_unless_turned_off_and_read_only_refuses_writes() -> None:
    with serve() as registry:
        pushed = registry.push_image("a", "t")
        status, _, _ = fetch(registry, "DELETE", f"/v2/a/manifests/{pushed.digest}")
        assert status == 202
    with serve(delete=False) as registry:
        pushed = registry.push_image("a", "t")
        status, _, body = fetch(registry, "DELETE", f"/v2/a/manifests/{pushed.digest}")
        assert (status, codes(body)) == (405, ["UNSUPPORTED"])
    with serve(read_only=True) as registry:
        status, _, body = fetch(registry, "POST", "/v2/a/blobs/uploads/")
        assert (status, codes(body)) == (405, ["UNSUPPORTED"])


def test_users_are_asked_for_and_the_first_ones_credentials_given() -> None:
    with serve(users={"ci": "s3cret", "other": "pw"}) as registry:
        status, headers, body = fetch(registry, "GET", "/v2/")
        assert (status, codes(body)) == (401, ["UNAUTHORIZED"])
        assert headers["WWW-Authenticate"] == 'Basic realm="cargohold.testing"'
        assert registry.credentials is not None
        assert registry.credentials.username == "ci"
        assert fetch(registry, "GET", "/v2/", registry.basic_auth())[0] == 200
        pushed = registry.push_image("team/app", "v1")  # its helpers sign in
        status, _, body = fetch(registry, "GET", "/v2/team/app/tags/list", registry.basic_auth())
        assert (status, json.loads(body)["tags"]) == (200, ["v1"])
        assert pushed.size > 0


def test_tls_with_an_authority_made_for_it() -> None:
    with serve(tls=True) as registry:
        assert registry.url.startswith("https://127.0.0.1:")
        assert registry.ca_file is not None
        assert "BEGIN CERTIFICATE" in registry.ca_file.read_text()
        assert fetch(registry, "GET", "/v2/")[0] == 200
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            urllib.request.urlopen(registry.url + "/v2/", timeout=10)
        registry.push_image("team/app", "v1")  # its client trusts the authority
        folder = registry.ca_file.parent
    assert not folder.exists()  # the authority's files go with the registry


def test_a_config_overlay_is_laid_over_the_options() -> None:
    with serve(config={"catalog": {"maxentries": 2}}) as registry:
        for name in ("a", "b", "c"):
            registry.push_image(name, "t")
        status, headers, body = fetch(registry, "GET", "/v2/_catalog")
        assert (status, json.loads(body)["repositories"]) == (200, ["a", "b"])
        assert "Link" in headers


def test_the_overlay_reaches_the_listener_too() -> None:
    """``http.maxheaderbytes`` bounds the embedded server's heads as it does ``serve``'s."""
    with serve(config={"http": {"maxheaderbytes": 1024}}) as registry:
        status, _, _ = fetch(registry, "GET", "/v2/", {"X-Pad": "p" * 600})
        assert status == 200
        status, _, body = fetch(registry, "GET", "/v2/", {"X-Pad": "p" * 1100})
        assert status == 431
        assert b"http.maxheaderbytes" in body


def test_neither_the_environment_nor_the_current_directory_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REGISTRY_STORAGE_DELETE_ENABLED", "false")
    monkeypatch.setenv("REGISTRY_AUTH", "silly")
    with serve() as registry:
        pushed = registry.push_image("a", "t")
        assert fetch(registry, "DELETE", f"/v2/a/manifests/{pushed.digest}")[0] == 202
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"root": "x", "config": {"storage": {"filesystem": {}}}}, "storage.filesystem"),
        ({"users": {"a": "b"}, "config": {"auth": {"silly": {}}}}, "auth.htpasswd"),
        ({"tls": True, "config": {"http": {"tls": {"certificate": "c"}}}}, "http.tls"),
        ({"users": {}}, "at least one user"),
    ],
)
def test_conflicting_options_fail_before_anything_starts(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        serve(**options)


def test_a_bad_setting_in_the_overlay_is_a_config_error() -> None:
    with (
        pytest.raises(ConfigError, match=r"catalog\.maxentries"),
        serve(config={"catalog": {"maxentries": "many"}}),
    ):
        pass


def test_a_port_that_cannot_be_bound_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: socket.socket, address: Any) -> None:
        raise OSError(99, "Cannot assign requested address")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1"), serve():
        pass


async def test_two_registries_at_once_are_apart() -> None:
    async with serve() as one, serve() as two:
        assert one.port != two.port
        one.push_image("only/here", "t")
        status = await asyncio.to_thread(fetch, two, "GET", "/v2/only/here/tags/list")
        assert status[0] == 404


def test_token_authentication_from_its_own_token_server() -> None:
    with serve(users={"ci": "s3cret"}, token=True) as registry:
        status, headers, body = fetch(registry, "GET", "/v2/")
        assert (status, codes(body)) == (401, ["UNAUTHORIZED"])
        realm = f"http://{registry.host}/auth/token"
        assert headers["WWW-Authenticate"] == (
            f'Bearer realm="{realm}",service="cargohold.testing"'
        )
        query = "/auth/token?service=cargohold.testing&scope=repository:team/app:pull,push"
        status, _, body = fetch(registry, "GET", query, registry.basic_auth())
        assert status == 200
        token = json.loads(body)["token"]
        assert fetch(registry, "GET", "/v2/", {"Authorization": f"Bearer {token}"})[0] == 200
        pushed = registry.push_image("team/app", "v1")  # its client follows the challenge
        raw = skopeo(
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "ci:s3cret",
            f"docker://{registry.host}/team/app:v1",
        )
        assert json.loads(raw)["layers"][0]["size"] > 0
        assert pushed.size > 0
    with pytest.raises(ValueError, match="needs users"):
        serve(token=True)
