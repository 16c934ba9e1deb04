"""The smaller corners of the ``auth`` section: ``silly``, no auth at all, and token options."""

from __future__ import annotations

import pytest

from tests.auth.conftest import SERVICE, Keys, MakeRegistry, token_auth
from tests.auth.pki import forge_hmac, public_pem, repository


async def test_silly_lets_any_authorization_through_and_challenges_without(
    make_registry: MakeRegistry,
) -> None:
    registry = await make_registry({"auth": {"silly": {"realm": "silly-realm", "service": "s"}}})
    before = registry.snapshot()
    response = await registry.request("POST", "/v2/team/app/blobs/uploads/")
    assert response.status == 401
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="silly-realm",service="s",scope="repository:team/app:pull,push"'
    )
    assert registry.snapshot() == before
    response = await registry.request("GET", "/v2/")
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="silly-realm",service="s"'
    await registry.push_image("team/app", "v1", authorization="anything at all")


async def test_without_auth_nothing_is_asked(make_registry: MakeRegistry) -> None:
    registry = await make_registry({})
    await registry.push_image("team/app", "v1")
    assert (await registry.request("GET", "/v2/_catalog")).status == 200


async def test_autoredirect_points_the_realm_at_the_host_asked(
    make_registry: MakeRegistry, keys: Keys
) -> None:
    registry = await make_registry(
        token_auth(keys, autoredirect=True, autoredirectpath="/auth/token")
    )
    response = await registry.request(
        "GET", "/v2/team/app/tags/list", headers={"Host": "registry.example.com:5000"}
    )
    assert response.headers["WWW-Authenticate"].startswith(
        f'Bearer realm="https://registry.example.com:5000/auth/token",service="{SERVICE}"'
    )
    response = await registry.request(
        "GET",
        "/v2/",
        headers={"Host": "registry.example.com", "X-Forwarded-Proto": "http"},
    )
    assert response.headers["WWW-Authenticate"].startswith(
        'Bearer realm="http://registry.example.com/auth/token"'
    )


@pytest.mark.parametrize("algorithms", [["HS256", "ES256"], ["HS256"]])
async def test_hmac_stays_refused_even_when_configured(
    make_registry: MakeRegistry, keys: Keys, algorithms: list[str]
) -> None:
    # Distribution 3 lists HS256 among its defaults; with public keys only, it can only be a trap.
    registry = await make_registry(token_auth(keys, signingalgorithms=algorithms))
    forged = forge_hmac(
        public_pem(keys.signer.key),
        {"x5c": keys.signer.x5c},
        {"iss": "cargohold-test-issuer", "aud": SERVICE, "exp": 2**40, "access": []},
    )
    response = await registry.request("GET", "/v2/", token=forged)
    assert response.status == 401
    if algorithms == ["HS256", "ES256"]:
        good = keys.token([repository("team/app", "pull")])
        assert (await registry.request("GET", "/v2/", token=good)).status == 200
