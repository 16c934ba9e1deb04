"""Side by side with CNCF Distribution 2.8.2: the same config file, the same credentials.

Debian's ``docker-registry`` and ``cargohold serve`` read one ``config.yml``
(token auth trusting a CA this test makes, or one htpasswd file). Every token
and credential below goes to both; both must take the good ones and refuse the
bad ones, with the same status, challenge and error body. Where cargohold takes
more than 2.8.2 (what Distribution 3 added), the test says so.
"""

from __future__ import annotations

import base64
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from cargohold.auth.token import jwk_thumbprint, libtrust_key_id
from tests.auth.conftest import ISSUER, REALM, SERVICE, Keys, config_yaml, write_htpasswd
from tests.auth.pki import (
    Authority,
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
from tests.support.http import Reply, request
from tests.support.servers import cargohold_argv, free_port, running

PULL = [repository("team/app", "pull")]
DER = Encoding.DER


@dataclass(frozen=True)
class Pair:
    distribution: str
    cargohold: str

    def both(self, method: str, path: str, authorization: str | None) -> tuple[Reply, Reply]:
        headers = {"Authorization": authorization} if authorization is not None else {}
        return (
            request(method, self.distribution + path, headers=headers),
            request(method, self.cargohold + path, headers=headers),
        )


@pytest.fixture(scope="module")
def rsa_root(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return Authority("an RSA root", "rsa")


def start_pair(folder: Path, auth: dict[str, Any]) -> Iterator[Pair]:
    """Both registries, each on its own storage, from one config file."""
    executable = shutil.which("docker-registry")
    if executable is None:
        pytest.fail("docker-registry is not installed (Debian package docker-registry)")
    go_port, our_port = free_port(), free_port()
    config = folder / "config.yml"
    text = config_yaml(folder / "go-root", {"auth": auth})
    # What the Go registry listens on; cargohold gets its own address from the environment.
    config.write_text(text.replace("127.0.0.1:5000", f"127.0.0.1:{go_port}"))
    go_url, our_url = f"http://127.0.0.1:{go_port}", f"http://127.0.0.1:{our_port}"
    env = {
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{our_port}",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(folder / "our-root"),
        "REGISTRY_LOG_LEVEL": "warn",
    }
    with (
        running([executable, "serve", str(config)], f"{go_url}/v2/", log=folder / "go.log"),
        running(
            cargohold_argv("serve", str(config), "--workers", "1"),
            f"{our_url}/v2/",
            env=env,
            log=folder / "cargohold.log",
        ),
    ):
        yield Pair(go_url, our_url)


@pytest.fixture(scope="module")
def token_pair(
    tmp_path_factory: pytest.TempPathFactory, keys: Keys, rsa_root: Authority
) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp("token-pair")
    bundle = folder / "bundle.crt"
    bundle.write_bytes(keys.ca.pem() + rsa_root.pem())
    auth = {
        "token": {
            "realm": REALM,
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(bundle),
        }
    }
    yield from start_pair(folder, auth)


USERS = {"alice": "wonderland", "bob": "builder"}


@pytest.fixture(scope="module")
def htpasswd_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    folder = tmp_path_factory.mktemp("htpasswd-pair")
    htpasswd = write_htpasswd(folder / "htpasswd", USERS)
    yield from start_pair(folder, {"htpasswd": {"realm": "both", "path": str(htpasswd)}})


def assert_same(pair: Pair, method: str, path: str, authorization: str | None) -> Reply:
    """Both answer alike: status, challenge and error body. Returns cargohold's reply."""
    go, ours = pair.both(method, path, authorization)
    assert ours.status == go.status, (go.body, ours.body)
    assert ours.headers.get("WWW-Authenticate") == go.headers.get("WWW-Authenticate")
    if go.status == 401:
        assert json.loads(ours.body) == json.loads(go.body)
    return ours


# -- tokens ---------------------------------------------------------------------------------

Make = Callable[[Keys, Authority], str]


def _body(**fields: Any) -> dict[str, Any]:
    return claims(**{"issuer": ISSUER, "service": SERVICE, "access": PULL, **fields})


def _x5c(signer: Any, **fields: Any) -> str:
    return mint(signer.key, _body(**fields), x5c=signer.x5c)


GOOD: dict[str, Make] = {
    "ES256 with x5c": lambda k, r: _x5c(k.signer),
    "RS256 with x5c": lambda k, r: _x5c(k.ca.issue("rsa", "rsa")),
    "ES384 with x5c": lambda k, r: _x5c(k.ca.issue("p384", "p384")),
    "ES512 with x5c": lambda k, r: _x5c(k.ca.issue("p521", "p521")),
    "RS512 with x5c": lambda k, r: mint(
        (s := r.issue("rsa512", "rsa")).key, _body(), x5c=s.x5c, algorithm="RS512"
    ),
    "x5c through an intermediate": lambda k, r: _x5c(k.ca.intermediate().issue("deep")),
    "x5c of a self-signed root in the bundle": lambda k, r: mint(
        r.key, _body(), x5c=[base64.b64encode(r.certificate.public_bytes(DER)).decode()]
    ),
    "kid: libtrust ID of an EC root": lambda k, r: mint(
        k.ca.key, _body(), kid=libtrust_key_id(k.ca.key.public_key())
    ),
    "kid: libtrust ID of an RSA root": lambda k, r: mint(
        r.key, _body(), kid=libtrust_key_id(r.key.public_key())
    ),
    "jwk of a trusted root": lambda k, r: mint(
        k.ca.key,
        _body(),
        jwk=json.loads(jwt.algorithms.ECAlgorithm.to_jwk(k.ca.key.public_key())),
    ),
    "expired 30 s ago (leeway)": lambda k, r: _x5c(k.signer, lifetime=-30),
    "valid in 30 s (leeway)": lambda k, r: _x5c(k.signer, not_before=time.time() + 30),
    "the star action": lambda k, r: _x5c(k.signer, access=[repository("team/app", "*")]),
    "a class in the access entry": lambda k, r: _x5c(
        k.signer, access=[{**repository("team/app", "pull"), "class": "image"}]
    ),
}

BAD: dict[str, Make] = {
    "expired": lambda k, r: _x5c(k.signer, lifetime=-3600),
    "not yet valid": lambda k, r: _x5c(k.signer, not_before=time.time() + 3600),
    "without exp": lambda k, r: _x5c(k.signer, exp=None),
    "with a float exp": lambda k, r: _x5c(k.signer, exp=time.time() + 300.5),
    "for another service": lambda k, r: _x5c(k.signer, service="elsewhere"),
    "from another issuer": lambda k, r: _x5c(k.signer, issuer="someone-else"),
    "signed by an unknown CA": lambda k, r: _x5c(k.stranger),
    "with an unknown kid": lambda k, r: mint(
        new_key(), _body(), kid=libtrust_key_id(new_key().public_key())
    ),
    "naming no key": lambda k, r: mint(k.ca.key, _body()),
    "with alg none": lambda k, r: forge({"alg": "none", "x5c": k.signer.x5c}, _body()),
    "HMAC with the signer's public key": lambda k, r: forge_hmac(
        public_pem(k.signer.key), {"x5c": k.signer.x5c}, _body()
    ),
    "HMAC with the root's public key": lambda k, r: forge_hmac(
        public_pem(k.ca.key), {"kid": libtrust_key_id(k.ca.key.public_key())}, _body()
    ),
    "signed by a key other than its x5c's": lambda k, r: mint(new_key(), _body(), x5c=k.signer.x5c),
    "x5c whose certificate expired": lambda k, r: _x5c(expired_signer(k.ca)),
    "x5c through a certificate that is no CA": lambda k, r: _x5c(signed_by_a_leaf(k.ca)),
    "x5c without its intermediate": lambda k, r: mint(
        (s := k.ca.intermediate().issue("deep")).key, _body(), x5c=s.x5c[:1]
    ),
    "an untrusted jwk": lambda k, r: mint(
        (key := new_key()),
        _body(),
        jwk=json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())),
    ),
    "with tampered claims": lambda k, r: ".".join(
        [
            _x5c(k.signer).split(".")[0],
            forge({}, _body(access=[repository("team/app", "*")])).split(".")[1],
            _x5c(k.signer).split(".")[2],
        ]
    ),
    "garbage": lambda k, r: "garbage",
    "three garbage parts": lambda k, r: "a.b.c",
}


@pytest.mark.parametrize("make", GOOD.values(), ids=GOOD.keys())
def test_both_take_a_good_token(
    token_pair: Pair, keys: Keys, rsa_root: Authority, make: Make
) -> None:
    reply = assert_same(
        token_pair, "GET", "/v2/team/app/tags/list", f"Bearer {make(keys, rsa_root)}"
    )
    assert reply.status == 404  # past authorization: the repository is simply not there


@pytest.mark.parametrize("make", BAD.values(), ids=BAD.keys())
def test_both_refuse_a_bad_token_alike(
    token_pair: Pair, keys: Keys, rsa_root: Authority, make: Make
) -> None:
    reply = assert_same(
        token_pair, "GET", "/v2/team/app/tags/list", f"Bearer {make(keys, rsa_root)}"
    )
    assert reply.status == 401
    assert reply.headers["WWW-Authenticate"].endswith('error="invalid_token"')


def test_both_refuse_missing_and_malformed_credentials_alike(token_pair: Pair) -> None:
    for authorization in [None, "", "Basic YWxpY2U6c2VjcmV0", "Bearer", "bearer x.y.z"]:
        reply = assert_same(token_pair, "GET", "/v2/team/app/tags/list", authorization)
        assert reply.status == 401


def test_both_refuse_a_token_that_lacks_the_scope_alike(token_pair: Pair, keys: Keys) -> None:
    other = f"Bearer {_x5c(keys.signer, access=[repository('team/other', 'pull', 'push')])}"
    pull = f"Bearer {_x5c(keys.signer)}"
    for method, path, authorization in [
        ("GET", "/v2/team/app/tags/list", other),
        ("GET", "/v2/_catalog", pull),
        ("DELETE", "/v2/team/app/manifests/sha256:" + "a" * 64, pull),
    ]:
        reply = assert_same(token_pair, method, path, authorization)
        assert reply.status == 401
        assert reply.headers["WWW-Authenticate"].endswith('error="insufficient_scope"')
    # A push needs pull and push; Go lists the two actions in random order.
    go, ours = token_pair.both("POST", "/v2/team/app/blobs/uploads/", pull)
    assert go.status == ours.status == 401
    assert json.loads(go.body) == json.loads(ours.body)


def test_both_let_any_good_token_reach_the_base_and_a_catalog_token_the_catalog(
    token_pair: Pair, keys: Keys
) -> None:
    go, ours = token_pair.both("GET", "/v2/", None)
    assert go.status == ours.status == 401
    assert ours.headers["WWW-Authenticate"] == go.headers["WWW-Authenticate"]
    assert_same(token_pair, "GET", "/v2/", f"Bearer {_x5c(keys.signer, access=[])}")
    catalog = [{"type": "registry", "name": "catalog", "actions": ["*"]}]
    reply = assert_same(
        token_pair, "GET", "/v2/_catalog", f"Bearer {_x5c(keys.signer, access=catalog)}"
    )
    assert reply.status == 200


DISTRIBUTION_3: dict[str, Make] = {
    "an audience list": lambda k, r: _x5c(k.signer, service=["other", SERVICE]),
    "kid: JWK thumbprint of a root": lambda k, r: mint(
        k.ca.key, _body(), kid=jwk_thumbprint(k.ca.key.public_key())
    ),
    "PS256": lambda k, r: mint(
        (s := k.ca.issue("pss", "rsa")).key, _body(), x5c=s.x5c, algorithm="PS256"
    ),
    "EdDSA": lambda k, r: _x5c(k.ca.issue("ed25519", "ed25519")),
}


@pytest.mark.parametrize("make", DISTRIBUTION_3.values(), ids=DISTRIBUTION_3.keys())
def test_cargohold_also_takes_what_distribution_3_added(
    token_pair: Pair, keys: Keys, rsa_root: Authority, make: Make
) -> None:
    go, ours = token_pair.both("GET", "/v2/team/app/tags/list", f"Bearer {make(keys, rsa_root)}")
    assert (go.status, ours.status) == (401, 404)


def test_tokens_of_the_built_in_issuer_work_on_distribution(
    token_pair: Pair, keys: Keys, tmp_path: Path
) -> None:
    from tests.auth.conftest import serve

    htpasswd = write_htpasswd(tmp_path / "htpasswd", USERS)
    settings = {
        "tokenserver": {
            "enabled": True,
            "issuer": ISSUER,
            "service": SERVICE,
            "key": str(keys.signer_key),
            "certificate": str(keys.signer_cert),
            "htpasswd": {"path": str(htpasswd)},
            "acl": [{"name": "team/*", "users": ["alice"], "actions": ["pull"]}],
        }
    }
    with serve(tmp_path, settings) as issuer:
        credentials = base64.b64encode(b"alice:wonderland").decode()
        reply = request(
            "GET",
            f"{issuer}/auth/token?service={SERVICE}&scope=repository:team/app:pull",
            headers={"Authorization": f"Basic {credentials}"},
        )
        assert reply.status == 200
        token = json.loads(reply.body)["token"]
    assert assert_same(token_pair, "GET", "/v2/team/app/tags/list", f"Bearer {token}").status == 404
    reply = assert_same(token_pair, "GET", "/v2/team/other/tags/list", f"Bearer {token}")
    assert reply.status == 401  # the issuer granted team/app only


# -- htpasswd -------------------------------------------------------------------------------


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_both_check_htpasswd_credentials_alike(htpasswd_pair: Pair) -> None:
    for authorization, status in [
        (basic("alice", "wonderland"), 404),
        (basic("bob", "builder"), 404),
        ("basic " + basic("bob", "builder").split()[1], 404),
        (basic("alice", "builder"), 401),
        (basic("mallory", "wonderland"), 401),
        (None, 401),
        ("Basic !!!", 401),
        ("Bearer abc", 401),
    ]:
        for method, path in [
            ("GET", "/v2/team/app/tags/list"),
            ("GET", "/v2/"),
            ("DELETE", "/v2/team/app/manifests/sha256:" + "a" * 64),
        ]:
            reply = assert_same(htpasswd_pair, method, path, authorization)
            if path != "/v2/" and method == "GET":
                assert reply.status == status, authorization
