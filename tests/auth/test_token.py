"""Bearer tokens: which ones a registry with ``auth: token`` takes, and what each one opens.

A refused token gets 401, a ``Bearer`` challenge (``error="invalid_token"`` for a
bad token, ``"insufficient_scope"`` for a good one that lacks the access) and an
``UNAUTHORIZED`` body, and the storage is left exactly as it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from cargohold.auth.token import jwk_thumbprint, libtrust_key_id
from tests.auth.conftest import ISSUER, REALM, SERVICE, Keys, MakeRegistry, Registry, token_auth
from tests.auth.pki import (
    claims,
    expired_signer,
    forge,
    forge_hmac,
    mint,
    new_key,
    public_pem,
    repository,
    signed_by_a_leaf,
)

PUSH = [repository("team/app", "pull", "push")]


async def assert_refused(
    registry: Registry,
    token: str | None,
    *,
    error: str | None = "invalid_token",
    scope: str = "repository:team/app:pull,push",
    authorization: str | None = None,
) -> None:
    """A push to ``team/app`` with ``token`` is refused as in Distribution; nothing is written."""
    before = registry.snapshot()
    data = os.urandom(100)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    response = await registry.request(
        "POST",
        f"/v2/team/app/blobs/uploads/?digest={digest}",
        data=data,
        token=token,
        authorization=authorization,
    )
    assert response.status == 401
    expected = f'Bearer realm="{REALM}",service="{SERVICE}",scope="{scope}"'
    if error is not None:
        expected += f',error="{error}"'
    assert response.headers["WWW-Authenticate"] == expected
    body = await response.json()
    assert body["errors"][0]["code"] == "UNAUTHORIZED"
    assert registry.snapshot() == before


async def assert_pulls(registry: Registry, token: str, name: str = "team/app") -> None:
    response = await registry.request("GET", f"/v2/{name}/manifests/v1", token=token)
    assert response.status == 200, await response.text()


# -- which tokens are good ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["p256", "p384", "p521", "rsa", "ed25519"])
async def test_a_token_whose_x5c_chain_leads_to_the_root_bundle_is_good(
    make_registry: MakeRegistry, keys: Keys, kind: Any
) -> None:
    registry = await make_registry(token_auth(keys))
    signer = keys.ca.issue(f"{kind} signer", kind)
    token = mint(signer.key, claims(issuer=ISSUER, service=SERVICE, access=PUSH), x5c=signer.x5c)
    await registry.push_image("team/app", "v1", token=token)
    await assert_pulls(registry, token)


async def test_a_chain_through_an_intermediate_is_good_and_needs_the_intermediate(
    token_registry: Registry, keys: Keys
) -> None:
    signer = keys.ca.intermediate().issue("deep signer")
    body = claims(issuer=ISSUER, service=SERVICE, access=PUSH)
    await assert_pulls(token_registry, mint(signer.key, body, x5c=signer.x5c))
    # Without the intermediate the leaf leads nowhere.
    await assert_refused(token_registry, mint(signer.key, body, x5c=signer.x5c[:1]))


@pytest.mark.parametrize("key_id", [libtrust_key_id, jwk_thumbprint])
async def test_a_kid_names_a_root_key_by_libtrust_id_or_jwk_thumbprint(
    token_registry: Registry, keys: Keys, key_id: Any
) -> None:
    # Distribution 2.x names trusted keys by libtrust ID, Distribution 3 by thumbprint.
    body = claims(issuer=ISSUER, service=SERVICE, access=PUSH)
    token = mint(keys.ca.key, body, kid=key_id(keys.ca.key.public_key()))
    await assert_pulls(token_registry, token)


async def test_an_embedded_jwk_is_good_only_when_it_is_a_trusted_key(
    token_registry: Registry, keys: Keys
) -> None:
    body = claims(issuer=ISSUER, service=SERVICE, access=PUSH)
    trusted = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(keys.ca.key.public_key()))
    await assert_pulls(token_registry, mint(keys.ca.key, body, jwk=trusted))
    mine = new_key("p256")
    untrusted = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(mine.public_key()))
    await assert_refused(token_registry, mint(mine, body, jwk=untrusted))


async def test_a_jwks_file_trusts_its_keys_by_kid(
    make_registry: MakeRegistry, keys: Keys, tmp_path: Path
) -> None:
    key = new_key("ed25519")
    jwk = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "signer-2026"}]}))
    settings = token_auth(keys, rootcertbundle="", jwks=str(jwks))
    registry = await make_registry(settings)
    body = claims(issuer=ISSUER, service=SERVICE, access=PUSH)
    await registry.push_image("team/app", "v1", token=mint(key, body, kid="signer-2026"))
    await assert_refused(registry, mint(key, body, kid="another-kid"))


async def test_exp_and_nbf_have_sixty_seconds_of_leeway(
    token_registry: Registry, keys: Keys
) -> None:
    now = time.time()
    await assert_pulls(token_registry, keys.token(PUSH, lifetime=-30))
    await assert_pulls(token_registry, keys.token(PUSH, not_before=now + 30))
    await assert_refused(token_registry, keys.token(PUSH, lifetime=-90))
    await assert_refused(token_registry, keys.token(PUSH, not_before=now + 90))


async def test_an_audience_list_must_contain_the_service(
    token_registry: Registry, keys: Keys
) -> None:
    # Distribution 3 takes a list (of at most 10); 2.8 takes only a string.
    await assert_pulls(token_registry, keys.token(PUSH, service=["other", SERVICE]))
    await assert_refused(token_registry, keys.token(PUSH, service=["other", "more"]))


# -- which tokens are refused ---------------------------------------------------------------


BAD_TOKENS: dict[str, Any] = {
    "expired": lambda k: k.token(PUSH, lifetime=-3600),
    "not yet valid": lambda k: k.token(PUSH, not_before=time.time() + 3600),
    "without exp": lambda k: k.token(PUSH, exp=None),
    "for another service": lambda k: k.token(PUSH, service="registry.elsewhere"),
    "from another issuer": lambda k: k.token(PUSH, issuer="someone-else"),
    "signed by an unknown key": lambda k: k.token(PUSH, signer=k.stranger),
    "with an unknown kid": lambda k: mint(
        new_key(), claims(issuer=ISSUER, service=SERVICE, access=PUSH), kid="ABCD:EFGH"
    ),
    "naming no key": lambda k: mint(k.ca.key, claims(issuer=ISSUER, service=SERVICE, access=PUSH)),
    "whose x5c certificate expired": lambda k: k.token(PUSH, signer=expired_signer(k.ca)),
    "whose chain goes through a non-CA": lambda k: k.token(PUSH, signer=signed_by_a_leaf(k.ca)),
    "with alg none": lambda k: forge(
        {"alg": "none", "typ": "JWT", "x5c": k.signer.x5c},
        claims(issuer=ISSUER, service=SERVICE, access=PUSH),
    ),
    "with alg none and a signature": lambda k: forge(
        {"alg": "none", "x5c": k.signer.x5c},
        claims(issuer=ISSUER, service=SERVICE, access=PUSH),
        b"x" * 64,
    ),
    "HMAC-signed with the signer's public key": lambda k: forge_hmac(
        public_pem(k.signer.key),
        {"x5c": k.signer.x5c},
        claims(issuer=ISSUER, service=SERVICE, access=PUSH),
    ),
    "HMAC-signed with the root's public key, by kid": lambda k: forge_hmac(
        public_pem(k.ca.key),
        {"kid": libtrust_key_id(k.ca.key.public_key())},
        claims(issuer=ISSUER, service=SERVICE, access=PUSH),
    ),
    "signed by another key than its x5c's": lambda k: mint(
        new_key(), claims(issuer=ISSUER, service=SERVICE, access=PUSH), x5c=k.signer.x5c
    ),
    "whose alg does not suit the key": lambda k: forge(
        {"alg": "RS256", "x5c": k.signer.x5c},
        claims(issuer=ISSUER, service=SERVICE, access=PUSH),
        b"\1" * 256,
    ),
    "whose claims were changed after signing": lambda k: _tampered(k),
    "with a float exp": lambda k: k.token(PUSH, exp=time.time() + 300.5),
    "with a malformed access claim": lambda k: k.token({"repository": "team/app"}),
    "with a critical header": lambda k: _with_crit(k),
}


def _tampered(keys: Keys) -> str:
    header, _, signature = keys.token([repository("team/app", "pull")]).split(".")
    body = claims(issuer=ISSUER, service=SERVICE, access=PUSH)
    forged = forge({}, body).split(".")[1]
    return f"{header}.{forged}.{signature}"


def _with_crit(keys: Keys) -> str:
    body = claims(issuer=ISSUER, service=SERVICE, access=PUSH)
    return jwt.encode(
        body,
        keys.signer.key,
        algorithm="ES256",
        headers={"x5c": keys.signer.x5c, "crit": ["exp"], "exp": 1},
    )


@pytest.mark.parametrize("make", BAD_TOKENS.values(), ids=BAD_TOKENS.keys())
async def test_a_bad_token_is_refused_and_nothing_is_written(
    token_registry: Registry, keys: Keys, make: Any
) -> None:
    await assert_refused(token_registry, make(keys))


MALFORMED = {
    "no credentials": None,
    "an empty Authorization": "",
    "a Basic credential": "Basic YWxpY2U6c2VjcmV0",
    "Bearer and nothing": "Bearer ",
    "Bearer with one part": "Bearer abc",
    "Bearer with two parts": "Bearer abc.def",
    "Bearer garbage": "Bearer !!!.@@@.###",
    "Bearer of four parts": "Bearer a.b.c.d",
    "Bearer of base64 that is not JSON": "Bearer YWJj.YWJj.YWJj",
    "a huge garbage header": "Bearer " + "A" * 7000,
}


@pytest.mark.parametrize("authorization", MALFORMED.values(), ids=MALFORMED.keys())
async def test_missing_malformed_and_garbage_credentials_are_refused(
    token_registry: Registry, authorization: str | None
) -> None:
    # No usable Bearer token at all: the challenge says what to get, with no error.
    scheme_ok = authorization is not None and authorization.lower().startswith("bearer ")
    error = "invalid_token" if scheme_ok and authorization.strip() != "Bearer" else None
    await assert_refused(token_registry, None, authorization=authorization, error=error)


# -- what a good token opens ----------------------------------------------------------------


async def test_a_token_for_one_repository_opens_no_other(
    token_registry: Registry, keys: Keys
) -> None:
    token = keys.token([repository("team/other", "pull", "push")])
    await assert_refused(token_registry, token, error="insufficient_scope")
    response = await token_registry.request("GET", "/v2/team/app/manifests/v1", token=token)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].endswith(
        'scope="repository:team/app:pull",error="insufficient_scope"'
    )
    # A name that merely starts the same is another repository.
    prefix = keys.token([repository("team/ap", "pull", "push"), repository("team", "push")])
    await assert_refused(token_registry, prefix, error="insufficient_scope")


async def test_a_pull_token_cannot_push_or_delete(token_registry: Registry, keys: Keys) -> None:
    pull = keys.token([repository("team/app", "pull")])
    await assert_pulls(token_registry, pull)
    await assert_refused(token_registry, pull, error="insufficient_scope")
    before = token_registry.snapshot()
    payload = b'{"schemaVersion": 2}'
    put = await token_registry.request("PUT", "/v2/team/app/manifests/v2", data=payload, token=pull)
    assert put.status == 401
    delete = await token_registry.request("DELETE", "/v2/team/app/manifests/v1", token=pull)
    assert delete.status == 401
    assert delete.headers["WWW-Authenticate"].endswith(
        'scope="repository:team/app:delete",error="insufficient_scope"'
    )
    assert token_registry.snapshot() == before


async def test_pushing_needs_pull_too_as_in_distribution(
    token_registry: Registry, keys: Keys
) -> None:
    await assert_refused(
        token_registry, keys.token([repository("team/app", "push")]), error="insufficient_scope"
    )


async def test_continuing_an_upload_needs_the_same_scope(
    token_registry: Registry, keys: Keys
) -> None:
    push = keys.token(PUSH)
    started = await token_registry.request("POST", "/v2/team/app/blobs/uploads/", token=push)
    assert started.status == 202
    location = started.headers["Location"].split("//", 1)[1].partition("/")[2]
    before = token_registry.snapshot()
    pull = keys.token([repository("team/app", "pull")])
    patch = await token_registry.request("PATCH", f"/{location}", data=b"x" * 10, token=pull)
    assert patch.status == 401
    cancel = await token_registry.request("DELETE", f"/{location}", token=push)
    assert cancel.status == 401  # cancelling needs delete, as in Distribution
    assert token_registry.snapshot() == before
    status = await token_registry.request("GET", f"/{location}", token=pull)
    assert status.status == 204


async def test_the_star_action_grants_every_action(token_registry: Registry, keys: Keys) -> None:
    star = keys.token([repository("team/app", "*")])
    digest = await token_registry.push_image("team/app", "v2", token=star)
    response = await token_registry.request(
        "DELETE", f"/v2/team/app/manifests/{digest}", token=star
    )
    assert response.status == 202


async def test_the_catalog_needs_registry_catalog_star(
    token_registry: Registry, keys: Keys
) -> None:
    response = await token_registry.request("GET", "/v2/_catalog", token=keys.token(PUSH))
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].endswith(
        'scope="registry:catalog:*",error="insufficient_scope"'
    )
    catalog = keys.token([{"type": "registry", "name": "catalog", "actions": ["*"]}])
    response = await token_registry.request("GET", "/v2/_catalog", token=catalog)
    assert response.status == 200
    assert await response.json() == {"repositories": ["team/app"]}


async def test_the_base_endpoint_needs_a_token_but_no_scope(
    token_registry: Registry, keys: Keys
) -> None:
    response = await token_registry.request("GET", "/v2/")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == f'Bearer realm="{REALM}",service="{SERVICE}"'
    assert (await token_registry.request("GET", "/v2/", token=keys.token([]))).status == 200


async def test_the_unauthorized_body_names_the_access_needed_as_distribution_does(
    token_registry: Registry,
) -> None:
    response = await token_registry.request("DELETE", "/v2/team/app/blobs/sha256:" + "a" * 64)
    assert response.status == 401
    assert await response.json() == {
        "errors": [
            {
                "code": "UNAUTHORIZED",
                "message": "authentication required",
                "detail": [
                    {"Type": "repository", "Class": "", "Name": "team/app", "Action": "delete"}
                ],
            }
        ]
    }


# -- mounts ---------------------------------------------------------------------------------


async def test_a_mount_without_pull_on_its_source_quietly_becomes_an_upload(
    token_registry: Registry, keys: Keys
) -> None:
    """Whether the blob exists in ``from`` must not show: both answers are the same upload."""
    secret = await token_registry.push_blob("team/app", b"secret layer", token=keys.token(PUSH))
    absent = "sha256:" + hashlib.sha256(b"no such layer").hexdigest()
    push_b = keys.token([repository("team/b", "pull", "push")])
    replies = []
    for digest in (secret, absent):
        response = await token_registry.request(
            "POST", f"/v2/team/b/blobs/uploads/?mount={digest}&from=team/app", token=push_b
        )
        replies.append((response.status, sorted(set(response.headers) - {"Date"})))
    assert replies[0] == replies[1]
    assert replies[0][0] == 202
    layers = token_registry.root / "docker/registry/v2/repositories/team/b/_layers"
    assert not layers.exists()
    head = await token_registry.request("HEAD", f"/v2/team/b/blobs/{secret}", token=push_b)
    assert head.status == 404

    # A source named with a detour is no repository: nothing to mount from.
    for source in ("team/b/../app", "team%2fapp", "team/./app"):
        detour = keys.token([repository("team/b", "pull", "push"), repository(source, "pull")])
        response = await token_registry.request(
            "POST", f"/v2/team/b/blobs/uploads/?mount={secret}&from={source}", token=detour
        )
        assert response.status == 202, source
    assert not layers.exists()

    # With pull on the source, the same request mounts.
    both = keys.token([repository("team/b", "pull", "push"), repository("team/app", "pull")])
    response = await token_registry.request(
        "POST", f"/v2/team/b/blobs/uploads/?mount={secret}&from=team/app", token=both
    )
    assert response.status == 201


# -- names ----------------------------------------------------------------------------------


TRAVERSALS = [
    "/v2/team/../other/blobs/uploads/",
    "/v2/team/app/../../other/blobs/uploads/",
    "/v2/team/%2e%2e/other/blobs/uploads/",
    "/v2/team%2fapp/blobs/uploads/",
    "/v2/team/app%2f..%2fother/blobs/uploads/",
    "/v2/%2e%2e/blobs/uploads/",
]


@pytest.mark.parametrize("path", TRAVERSALS)
async def test_path_traversal_in_names_is_refused_before_any_token_is_read(
    token_registry: Registry, keys: Keys, path: str
) -> None:
    before = token_registry.snapshot()
    # A token for everything the name could be taken to mean.
    names = ["team", "team/app", "other", "team/other", "..", "team/..", "team/../other"]
    token = keys.token([repository(name, "pull", "push") for name in names])
    status, body = await raw_request(token_registry, "POST", path, token)
    assert status == 400
    assert json.loads(body)["errors"][0]["code"] == "NAME_INVALID"
    assert token_registry.snapshot() == before


async def raw_request(
    registry: Registry, method: str, target: str, token: str
) -> tuple[int, bytes]:
    """A request written byte for byte: aiohttp's client would resolve ``..`` itself."""
    import asyncio

    reader, writer = await asyncio.open_connection(registry.client.host, registry.client.port)
    try:
        writer.write(
            f"{method} {target} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body
