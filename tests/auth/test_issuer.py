"""The built-in token server (``tokenserver``): one process is a complete secured registry.

Users come from an htpasswd file, what a token grants is what was asked AND
what the ACL allows, and the registry beside it verifies the tokens as it
verifies anyone's.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import ClientResponse

from cargohold.auth.token import libtrust_key_id
from tests.auth.conftest import ISSUER, SERVICE, Keys, MakeRegistry, Registry, write_htpasswd

USERS = {"alice": "wonderland", "bob": "builder", "carol": "singer"}


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()


def issuer_settings(keys: Keys, htpasswd: Path) -> dict[str, Any]:
    """A registry that trusts its own token server, and that server's ACL."""
    return {
        "auth": {
            "token": {
                "realm": "http://registry.test/auth/token",
                "service": SERVICE,
                "issuer": ISSUER,
                # The signing certificate itself is the trusted root: no CA needed.
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


@pytest.fixture
def htpasswd(tmp_path: Path) -> Path:
    return write_htpasswd(tmp_path / "htpasswd", USERS)


@pytest.fixture
async def registry(make_registry: MakeRegistry, keys: Keys, htpasswd: Path) -> Registry:
    return await make_registry(issuer_settings(keys, htpasswd))


async def token_reply(
    registry: Registry, *scopes: str, user: str | None = None, **params: str
) -> ClientResponse:
    query = [("service", SERVICE), *(("scope", scope) for scope in scopes), *params.items()]
    return await registry.client.get(
        "/auth/token",
        params=query,
        headers={"Authorization": basic(user)} if user else {},
    )


async def token(registry: Registry, *scopes: str, user: str | None = None) -> str:
    response = await token_reply(registry, *scopes, user=user)
    assert response.status == 200, await response.text()
    value: str = (await response.json())["token"]
    return value


def granted(token: str) -> list[dict[str, Any]]:
    access: list[dict[str, Any]] = jwt.decode(token, options={"verify_signature": False})["access"]
    return access


# -- the answer -----------------------------------------------------------------------------


async def test_a_user_gets_a_token_the_registry_accepts(registry: Registry, keys: Keys) -> None:
    response = await token_reply(registry, "repository:team/app:pull,push", user="bob")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    assert set(body) == {"token", "access_token", "expires_in", "issued_at"}
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["issued_at"])
    header = jwt.get_unverified_header(body["token"])
    assert header["kid"] == libtrust_key_id(keys.signer.key.public_key())
    assert header["x5c"] == keys.signer.x5c
    claims = jwt.decode(body["token"], options={"verify_signature": False})
    assert (claims["iss"], claims["sub"], claims["aud"]) == (ISSUER, "bob", SERVICE)
    assert claims["exp"] - claims["iat"] == 300
    assert claims["access"] == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]}
    ]
    await registry.push_image("team/app", "v1", token=body["token"])


async def test_a_token_grants_what_was_asked_and_what_the_acl_allows(registry: Registry) -> None:
    bob = await token(
        registry,
        "repository:team/app:pull,push,delete",  # bob may not delete
        "repository:team/app/deeper:pull",  # team/* stops at one component
        "repository:teamx/app:pull",  # nor is teamx team
        "repository:bob/tools/x:pull,push,delete",  # his own namespace, all of it
        "repository:alice/tools:pull",  # not his
        "repository:public/base:pull,push",  # anyone may pull, nobody push
        "registry:catalog:*",
        user="bob",
    )
    assert granted(bob) == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]},
        {"type": "repository", "name": "bob/tools/x", "actions": ["pull", "push", "delete"]},
        {"type": "repository", "name": "public/base", "actions": ["pull"]},
    ]
    alice = await token(registry, "repository:team/app:delete", "registry:catalog:*", user="alice")
    assert granted(alice) == [
        {"type": "repository", "name": "team/app", "actions": ["delete"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]


async def test_without_credentials_only_anonymous_rules_apply(registry: Registry) -> None:
    anonymous = await token(
        registry, "repository:public/base:pull,push", "repository:team/app:pull"
    )
    assert granted(anonymous) == [
        {"type": "repository", "name": "public/base", "actions": ["pull"]}
    ]
    assert jwt.decode(anonymous, options={"verify_signature": False})["sub"] == ""


async def test_a_token_without_scope_only_logs_in(registry: Registry) -> None:
    login = await token(registry, user="carol")
    assert granted(login) == []
    assert (await registry.request("GET", "/v2/", token=login)).status == 200
    response = await registry.request("GET", "/v2/team/app/tags/list", token=login)
    assert response.status == 401


async def test_scopes_naming_no_valid_repository_grant_nothing(registry: Registry) -> None:
    alice = await token(
        registry,
        "repository:../etc:pull",
        "repository:team/%2e%2e/x:pull",
        "repository:team/../../x:pull",
        "repository:Team/App:pull",
        "repository:team/app:pull",
        user="alice",
    )
    assert granted(alice) == [{"type": "repository", "name": "team/app", "actions": ["pull"]}]


# -- refusals -------------------------------------------------------------------------------


async def test_wrong_credentials_are_refused_not_taken_for_anonymous(registry: Registry) -> None:
    for authorization in [
        "Basic " + base64.b64encode(b"bob:wrong").decode(),
        "Basic " + base64.b64encode(b"nobody:builder").decode(),
        "Basic garbage",
        "Bearer abc",
    ]:
        response = await registry.client.get(
            "/auth/token",
            params={"service": SERVICE, "scope": "repository:public/base:pull"},
            headers={"Authorization": authorization},
        )
        assert response.status == 401, authorization
        assert response.headers["WWW-Authenticate"] == f'Basic realm="{ISSUER}"'
        assert "token" not in await response.json()


async def test_a_token_for_another_service_or_account_is_refused(registry: Registry) -> None:
    response = await registry.client.get("/auth/token", params={"service": "elsewhere"})
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_request"
    response = await token_reply(registry, user="bob", account="alice")
    assert response.status == 400


# -- refresh tokens and OAuth2 --------------------------------------------------------------


async def test_offline_token_brings_a_refresh_token_for_the_oauth2_post(registry: Registry) -> None:
    response = await token_reply(
        registry, "repository:team/app:pull", user="bob", offline_token="true", client_id="docker"
    )
    refresh = (await response.json())["refresh_token"]
    response = await registry.client.post(
        "/auth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh,
            "service": SERVICE,
            "scope": "repository:team/app:pull,push repository:public/x:pull",
            "client_id": "docker",
        },
    )
    assert response.status == 200, await response.text()
    body = await response.json()
    assert granted(body["access_token"]) == [
        {"type": "repository", "name": "team/app", "actions": ["pull", "push"]},
        {"type": "repository", "name": "public/x", "actions": ["pull"]},
    ]
    # A refresh token is no access token: the registry refuses it.
    response = await registry.request("GET", "/v2/", token=refresh)
    assert response.status == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    # And anonymous requests never get one.
    anonymous = await token_reply(registry, offline_token="true")
    assert "refresh_token" not in await anonymous.json()


async def test_the_password_grant_checks_the_password(registry: Registry) -> None:
    form = {
        "grant_type": "password",
        "username": "bob",
        "password": "builder",
        "service": SERVICE,
        "scope": "repository:team/app:pull",
        "access_type": "offline",
        "client_id": "containerd",
    }
    response = await registry.client.post("/auth/token", data=form)
    assert response.status == 200
    assert {"access_token", "refresh_token"} <= set(await response.json())
    response = await registry.client.post("/auth/token", data={**form, "password": "wrong"})
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_grant"
    response = await registry.client.post("/auth/token", data={**form, "grant_type": "magic"})
    assert (await response.json())["error"] == "unsupported_grant_type"


async def test_a_refresh_token_dies_with_its_password_or_user(
    registry: Registry, htpasswd: Path
) -> None:
    async def refresh_token(user: str) -> str:
        response = await token_reply(registry, user=user, offline_token="true")
        value: str = (await response.json())["refresh_token"]
        return value

    async def refresh(value: str) -> int:
        form = {"grant_type": "refresh_token", "refresh_token": value, "service": SERVICE}
        return (await registry.client.post("/auth/token", data=form)).status

    bob, carol = await refresh_token("bob"), await refresh_token("carol")
    assert await refresh(bob) == 200
    write_htpasswd(htpasswd, {"alice": "wonderland", "bob": "new password"})
    assert await refresh(bob) == 400  # the password changed
    assert await refresh(carol) == 400  # the user is gone
    tampered = bob[:-4] + ("AAAA" if not bob.endswith("AAAA") else "BBBB")
    assert await refresh(tampered) == 400


async def test_an_access_token_is_no_refresh_token(registry: Registry) -> None:
    access = await token(registry, user="bob")
    form = {"grant_type": "refresh_token", "refresh_token": access, "service": SERVICE}
    response = await registry.client.post("/auth/token", data=form)
    assert response.status == 400


# -- configuration --------------------------------------------------------------------------


def test_the_token_server_is_configured_in_its_own_section() -> None:
    from cargohold.config import parse_config
    from cargohold.errors import ConfigError

    text = (
        "version: 0.1\nstorage: inmemory\n"
        "tokenserver:\n  enabled: true\n  key: /etc/cargohold/token.key\n"
        "  acl:\n    - {name: 'team/*', users: [bob], actions: [pull, push]}\n"
    )
    settings = parse_config(text, {}).tokenserver
    assert settings.path == "/auth/token"
    assert settings.acl[0].actions == ["pull", "push"]
    env = {"REGISTRY_TOKENSERVER_ANONYMOUS_0_NAME": "public/**"}
    assert parse_config(text, env).tokenserver.anonymous[0].actions == ["pull"]
    bad_action = text.replace("[pull, push]", "[pull, fly]")
    with pytest.raises(ConfigError, match=re.escape("tokenserver.acl.0.actions.1")):
        parse_config(bad_action, {})
    with pytest.raises(ConfigError, match="outside /v2/"):
        parse_config(text + "  path: /v2/token\n", {})
    assert not parse_config("version: 0.1\nstorage: inmemory\n", {}).tokenserver.enabled
