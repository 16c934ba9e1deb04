"""Authentication as clients do it: challenges, tokens per scope set, refresh tokens, credentials.

cargohold's own auth comes later; here the client meets a tiny aiohttp
registry written for the test, which challenges like Distribution's token
auth (``Bearer realm,service,scope``, ``error="insufficient_scope"``) or with
``Basic``, and a token server beside it that records every request.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cargohold.client import Credentials, RemoteRegistry
from cargohold.client.auth import (
    Challenge,
    docker_credentials,
    find_credentials,
    merge_scopes,
    parse_challenges,
)
from cargohold.digest import digest_of
from cargohold.errors import Unauthorized
from cargohold.manifest import OCI_MANIFEST

ServerFactory = Callable[[web.Application], Awaitable[TestServer]]

USER, PASSWORD = "alice", "s3cret:with:colons"
SERVICE = "fake-registry"
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": str(digest_of(b"{}")),
            "size": 2,
        },
        "layers": [],
    }
).encode()

# -- parsing ------------------------------------------------------------------------------


def test_a_bearer_challenge_gives_realm_service_and_scopes() -> None:
    (challenge,) = parse_challenges(
        [
            'Bearer realm="https://auth.example.com/token",service="registry.example.com",'
            'scope="repository:a/b:pull,push repository:c:pull",error="insufficient_scope"'
        ]
    )
    assert challenge.scheme == "bearer"
    assert challenge.realm == "https://auth.example.com/token"
    assert challenge.service == "registry.example.com"
    assert challenge.scopes == ["repository:a/b:pull,push", "repository:c:pull"]
    assert challenge.params["error"] == "insufficient_scope"


def test_several_challenges_in_one_header_and_escapes() -> None:
    challenges = parse_challenges(
        ['Basic realm="say \\"hi\\"", Bearer realm="https://t", service=bare-token', "Negotiate"]
    )
    assert challenges == [
        Challenge("basic", {"realm": 'say "hi"'}),
        Challenge("bearer", {"realm": "https://t", "service": "bare-token"}),
        Challenge("negotiate", {}),
    ]


def test_garbage_ends_a_header_without_failing() -> None:
    assert parse_challenges(["", "  ,, ", '=oops "x"']) == []


def test_scopes_of_one_resource_merge_into_one_sorted_scope() -> None:
    merged = merge_scopes(
        ["repository:a:pull", "registry:catalog:*"], ["repository:a:push,pull", "repository:b:pull"]
    )
    assert merged == ("registry:catalog:*", "repository:a:pull,push", "repository:b:pull")
    assert merge_scopes(["not-a-scope"]) == ()


# -- credentials ------------------------------------------------------------------------------


def write_docker_config(folder: Path, auths: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"auths": auths}))
    return folder


def encoded(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_come_from_the_argument_then_the_environment_then_docker(
    tmp_path: Path,
) -> None:
    config = write_docker_config(
        tmp_path / "docker", {"r.example:5000": {"auth": encoded("d", "p")}}
    )
    environ = {"DOCKER_CONFIG": str(config), "CARGOHOLD_USERNAME": "e", "CARGOHOLD_PASSWORD": "q"}
    given = Credentials("a", "b")
    assert find_credentials("r.example:5000", given, environ) == given
    assert find_credentials("r.example:5000", None, environ) == Credentials("e", "q")
    del environ["CARGOHOLD_USERNAME"]
    assert find_credentials("r.example:5000", None, environ) == Credentials("d", "p")
    assert find_credentials("other.example", None, environ) is None


def test_docker_config_keys_may_be_urls_and_entries_may_hold_tokens(tmp_path: Path) -> None:
    config = write_docker_config(
        tmp_path / "docker",
        {
            "https://legacy.example/v1/": {"auth": encoded("old", "pw")},
            "split.example": {"username": "u", "password": "p"},
            "token.example": {"auth": "", "identitytoken": "refresh-me"},
            "broken.example": {"auth": "not base64!"},
        },
    )
    environ = {"DOCKER_CONFIG": str(config)}
    assert docker_credentials("legacy.example", environ) == Credentials("old", "pw")
    assert docker_credentials("split.example", environ) == Credentials("u", "p")
    assert docker_credentials("token.example", environ) == Credentials("", "", "refresh-me")
    assert docker_credentials("broken.example", environ) is None


def test_docker_config_defaults_to_home(tmp_path: Path) -> None:
    write_docker_config(tmp_path / ".docker", {"h.example": {"auth": encoded("x", "y")}})
    assert docker_credentials("h.example", {"HOME": str(tmp_path)}) == Credentials("x", "y")
    assert docker_credentials("h.example", {"HOME": str(tmp_path / "nowhere")}) is None


def test_credentials_parse_user_colon_password() -> None:
    assert Credentials.parse("me:a:b") == Credentials("me", "a:b")
    with pytest.raises(ValueError, match="USERNAME:PASSWORD"):
        Credentials.parse("no-colon")


# -- a registry with token auth ---------------------------------------------------------------


@dataclass
class TokenAuth:
    """A fake registry and its token server; tokens name the scopes they grant."""

    #: Scopes the registry asks for on top of a request's own (to test widening).
    extra_scopes: list[str] = field(default_factory=list)
    expires_in: int = 300
    refresh_token: str = "refresh-alice"
    token_requests: list[dict[str, Any]] = field(default_factory=list)
    granted: dict[str, set[str]] = field(default_factory=dict)
    registry_requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/token", self.token)
        app.router.add_get("/v2/", self.base)
        app.router.add_get("/v2/_catalog", self.catalog)
        app.router.add_get("/v2/{name:.+}/tags/list", self.tags)
        app.router.add_put("/v2/{name:.+}/manifests/{reference}", self.put_manifest)
        return app

    # -- the token server ----------------------------------------------------------------

    async def token(self, request: web.Request) -> web.Response:
        form = {k: str(v) for k, v in (await request.post()).items()}
        scopes: list[str] = request.query.getall("scope", []) or form.get("scope", "").split()
        record: dict[str, Any] = {
            "method": request.method,
            "scope": scopes,
            "service": request.query.get("service") or form.get("service"),
            "authorization": request.headers.get("Authorization"),
            "offline_token": request.query.get("offline_token"),
            "grant_type": form.get("grant_type"),
            "refresh_token": form.get("refresh_token"),
        }
        self.token_requests.append(record)
        assert record["service"] == SERVICE
        user = None
        if request.method == "POST":
            if (
                form.get("grant_type") != "refresh_token"
                or form.get("refresh_token") != self.refresh_token
            ):
                return web.json_response({"error": "invalid_grant"}, status=400)
            user = USER
        elif record["authorization"] is not None:
            if record["authorization"] != f"Basic {encoded(USER, PASSWORD)}":
                return web.json_response({"details": "bad credentials"}, status=401)
            user = USER
        granted: set[str] = set()
        for scope in scopes:
            kind, name, actions = scope.split(":")
            allowed = actions.split(",") if user else [a for a in actions.split(",") if a == "pull"]
            granted.update(f"{kind}:{name}:{action}" for action in allowed)
        token = f"token-{len(self.token_requests)}"
        self.granted[token] = granted
        body: dict[str, Any] = {"token": token, "expires_in": self.expires_in}
        if user and record["offline_token"] == "true":
            body["refresh_token"] = self.refresh_token
        return web.json_response(body)

    # -- the registry --------------------------------------------------------------------

    def _check(self, request: web.Request, required: list[str]) -> None:
        header = request.headers.get("Authorization")
        self.registry_requests.append((request.method, request.path, header))
        required = required + (self.extra_scopes if required else [])
        token = header.removeprefix("Bearer ") if header and header.startswith("Bearer ") else None
        if token in self.granted and all(
            f"{kind}:{name}:{action}" in self.granted[token]
            for kind, name, actions in (s.split(":") for s in required)
            for action in actions.split(",")
        ):
            return
        challenge = f'Bearer realm="{self.url}/token",service="{SERVICE}"'
        if required:
            challenge += f',scope="{" ".join(required)}"'
        if token is not None:
            challenge += ',error="insufficient_scope"'
        raise web.HTTPUnauthorized(
            headers={"WWW-Authenticate": challenge, "Content-Type": "application/json"},
            text=json.dumps(
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
            ),
        )

    async def base(self, request: web.Request) -> web.Response:
        self._check(request, [])
        return web.json_response({})

    async def catalog(self, request: web.Request) -> web.Response:
        self._check(request, ["registry:catalog:*"])
        return web.json_response({"repositories": ["a/b"]})

    async def tags(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self._check(request, [f"repository:{name}:pull"])
        return web.json_response({"name": name, "tags": ["v1"]})

    async def put_manifest(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self._check(request, [f"repository:{name}:pull,push"])
        body = await request.read()
        return web.Response(status=201, headers={"Docker-Content-Digest": str(digest_of(body))})


@pytest.fixture
async def token_auth(aiohttp_server: ServerFactory) -> TokenAuth:
    auth = TokenAuth()
    server = await aiohttp_server(auth.app())
    auth.url = str(server.make_url("")).rstrip("/")
    return auth


def remote(
    auth: TokenAuth, credentials: Credentials | None = None, **environ: str
) -> RemoteRegistry:
    # environ={} keeps the developer's own docker login out of the test.
    return RemoteRegistry(auth.url, credentials=credentials, environ=environ)


async def test_anonymous_pulls_get_a_pull_token_without_credentials(token_auth: TokenAuth) -> None:
    async with remote(token_auth) as registry:
        assert await registry.repository("a/b").tags.all() == ["v1"]
        assert await registry.repository("a/b").tags.all() == ["v1"]
        (request,) = token_auth.token_requests
        assert request["method"] == "GET"
        assert request["authorization"] is None
        assert request["scope"] == ["repository:a/b:pull"]
        # Anonymous: no push, whatever the client asks for.
        with pytest.raises(Unauthorized):
            await registry.repository("a/b").manifests.put(MANIFEST, OCI_MANIFEST, ["t"])


async def test_one_token_per_scope_set_and_refresh_tokens_replace_the_password(
    token_auth: TokenAuth,
) -> None:
    async with remote(token_auth, Credentials(USER, PASSWORD)) as registry:
        repository = registry.repository("a/b")
        assert await repository.tags.all() == ["v1"]
        await repository.manifests.put(MANIFEST, OCI_MANIFEST, ["t"])
        assert await repository.tags.all() == ["v1"]
        await repository.manifests.put(MANIFEST, OCI_MANIFEST, ["u"])
        assert await registry.catalog() == ["a/b"]

    first, push, catalog = token_auth.token_requests
    # The password goes once, with a request for a refresh token...
    assert first["method"] == "GET"
    assert first["authorization"] == f"Basic {encoded(USER, PASSWORD)}"
    assert first["offline_token"] == "true"
    assert first["scope"] == ["repository:a/b:pull"]
    # ...and later tokens come from the OAuth2 refresh grant, one per new scope set.
    assert push["method"] == "POST"
    assert (push["grant_type"], push["refresh_token"]) == ("refresh_token", "refresh-alice")
    assert push["authorization"] is None
    assert push["scope"] == ["repository:a/b:pull,push"]
    assert catalog["scope"] == ["registry:catalog:*"]


async def test_an_insufficient_scope_challenge_widens_the_scope_set(token_auth: TokenAuth) -> None:
    token_auth.extra_scopes = ["repository:shared/base:pull"]
    async with remote(token_auth, Credentials(USER, PASSWORD)) as registry:
        assert await registry.repository("a/b").tags.all() == ["v1"]
    scopes = [request["scope"] for request in token_auth.token_requests]
    assert scopes == [
        ["repository:a/b:pull"],
        ["repository:a/b:pull", "repository:shared/base:pull"],
    ]
    statuses = [
        header is not None for _, path, header in token_auth.registry_requests if "tags" in path
    ]
    assert statuses == [True, True]  # one refusal, one success: both carried a token


async def test_a_refused_refresh_token_falls_back_to_the_password(token_auth: TokenAuth) -> None:
    async with remote(token_auth, Credentials(USER, PASSWORD, identity_token="stale")) as registry:
        assert await registry.repository("a/b").tags.all() == ["v1"]
        await registry.repository("a/b").manifests.put(MANIFEST, OCI_MANIFEST, ["t"])
    refused, fallback, push = token_auth.token_requests
    # The stale token is not offered again; the fresh refresh token is used instead.
    assert (push["method"], push["refresh_token"]) == ("POST", "refresh-alice")
    assert (refused["method"], refused["refresh_token"]) == ("POST", "stale")
    assert (fallback["method"], fallback["authorization"]) == (
        "GET",
        f"Basic {encoded(USER, PASSWORD)}",
    )


async def test_a_docker_identity_token_is_used_as_a_refresh_token(
    token_auth: TokenAuth, tmp_path: Path
) -> None:
    host = token_auth.url.removeprefix("http://")
    config = write_docker_config(tmp_path / "d", {host: {"identitytoken": "refresh-alice"}})
    async with remote(token_auth, DOCKER_CONFIG=str(config)) as registry:
        await registry.repository("a/b").manifests.put(MANIFEST, OCI_MANIFEST, ["t"])
    (request,) = token_auth.token_requests
    assert (request["method"], request["refresh_token"]) == ("POST", "refresh-alice")


async def test_short_lived_tokens_are_not_reused(token_auth: TokenAuth) -> None:
    token_auth.expires_in = 1
    async with remote(token_auth) as registry:
        for _ in range(3):
            await registry.repository("a/b").tags.all()
    assert len(token_auth.token_requests) == 3


async def test_wrong_credentials_are_unauthorized(token_auth: TokenAuth) -> None:
    async with remote(token_auth, Credentials(USER, "wrong")) as registry:
        with pytest.raises(Unauthorized, match="refused the credentials"):
            await registry.repository("a/b").tags.all()


# -- a registry with Basic auth ---------------------------------------------------------------


@pytest.fixture
async def basic_url(aiohttp_server: ServerFactory) -> str:
    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Basic {encoded(USER, PASSWORD)}":
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="fake"'})
        if request.path == "/v2/":
            return web.json_response({})
        return web.json_response({"name": "a/b", "tags": ["basic"]})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("")).rstrip("/")


async def test_basic_auth_sends_the_credentials(basic_url: str) -> None:
    async with RemoteRegistry(basic_url, credentials=Credentials(USER, PASSWORD), environ={}) as r:
        assert await r.repository("a/b").tags.all() == ["basic"]


async def test_basic_auth_takes_credentials_from_the_environment(basic_url: str) -> None:
    environ = {"CARGOHOLD_USERNAME": USER, "CARGOHOLD_PASSWORD": PASSWORD}
    async with RemoteRegistry(basic_url, environ=environ) as registry:
        assert await registry.repository("a/b").tags.all() == ["basic"]


async def test_basic_auth_takes_credentials_from_docker_config(
    basic_url: str, tmp_path: Path
) -> None:
    host = basic_url.removeprefix("http://")
    config = write_docker_config(tmp_path / "d", {host: {"auth": encoded(USER, PASSWORD)}})
    async with RemoteRegistry(basic_url, environ={"DOCKER_CONFIG": str(config)}) as registry:
        assert await registry.repository("a/b").tags.all() == ["basic"]


async def test_basic_auth_without_or_with_wrong_credentials_is_unauthorized(basic_url: str) -> None:
    async with RemoteRegistry(basic_url, environ={}) as registry:
        with pytest.raises(Unauthorized, match="CARGOHOLD_USERNAME"):
            await registry.repository("a/b").tags.all()
    async with RemoteRegistry(basic_url, credentials=Credentials(USER, "no"), environ={}) as r:
        with pytest.raises(Unauthorized):
            await r.repository("a/b").tags.all()
