"""Storage middleware (``middleware.storage``): ``cloudfront`` and ``redirect``, as Distribution's.

A blob download is answered ``307`` to a CloudFront signed URL (canned
policy, RSA-SHA1, CloudFront's base64) or to ``baseurl`` + the blob's storage
path, on a local disk too. With ``ipfilteredby``, a client inside AWS's ranges
(fetched from ``iprangesurl``: here a server of the test's own on loopback)
gets the storage's own answer. Registries are served with the fast path on, as
``cargohold serve`` serves them: it must leave redirected downloads to aiohttp.
Anything else under ``middleware`` is refused at start with one line.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.signers import CloudFrontSigner as BotocoreSigner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from cargohold.api.app import create_app
from cargohold.config import parse_config
from cargohold.errors import ConfigError
from cargohold.storage.middleware import DriverRedirects
from cargohold.storage.middleware.awsips import AWSRanges, Intervals, prefix_span
from cargohold.storage.middleware.cloudfront import CloudFront, CloudFrontSigner, canned_policy
from cargohold.storage.middleware.redirect import Redirect
from cargohold.testing import serve
from tests.support.cloudfront import (
    KEY_PAIR,
    Keys,
    RangesServer,
    make_keys,
    serving_ranges,
    verified_policy,
)
from tests.support.http import request
from tests.support.servers import cargohold_argv
from tests.support.waiting import eventually

NAME = "team/app"
CDN = "https://d111111abcdef8.cloudfront.net/"


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    return make_keys(tmp_path_factory.mktemp("cloudfront"))


@pytest.fixture
def ranges() -> Iterator[RangesServer]:
    with serving_ranges() as served:
        yield served


def cloudfront(keys: Keys, **options: Any) -> dict[str, Any]:
    """``config.yml``'s ``middleware`` section with a cloudfront entry."""
    entry = {"baseurl": CDN, "privatekey": str(keys.pem), "keypairid": KEY_PAIR, **options}
    return {"middleware": {"storage": [{"name": "cloudfront", "options": entry}]}}


def push_blob(url: str, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    reply = request("POST", f"{url}/v2/{NAME}/blobs/uploads/?digest={digest}", data)
    assert reply.status == 201, reply.body
    return digest


def blob_path(digest: str) -> str:
    hex_ = digest.removeprefix("sha256:")
    return f"docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data"


# --- the signed URL ----------------------------------------------------------------------


def test_a_signed_url_carries_the_canned_policys_signature(keys: Keys) -> None:
    signer = CloudFrontSigner(keys.private, KEY_PAIR)
    resource = CDN + "docker/registry/v2/blobs/sha256/ab/ab12/data"
    url = signer.sign(resource, 1_900_000_000)
    assert url.startswith(resource + "?Expires=1900000000&Signature=")
    policy = verified_policy(keys, url)
    assert policy == {
        "Statement": [
            {"Resource": resource, "Condition": {"DateLessThan": {"AWS:EpochTime": 1_900_000_000}}}
        ]
    }
    assert (
        canned_policy(resource, 1_900_000_000) == json.dumps(policy, separators=(",", ":")).encode()
    )


def test_the_signed_url_is_the_one_awss_sdk_makes(keys: Keys) -> None:
    """botocore's CloudFrontSigner, given the same key and time, writes the same URL."""

    def rsa_signer(message: bytes) -> bytes:
        return keys.private.sign(message, padding.PKCS1v15(), hashes.SHA1())

    resource = "https://cdn.example.com/registry/docker/registry/v2/blobs/sha256/0f/0f1e/data"
    expires = 1_800_000_123
    theirs = BotocoreSigner(KEY_PAIR, rsa_signer).generate_presigned_url(
        resource, date_less_than=datetime.fromtimestamp(expires, UTC)
    )
    assert CloudFrontSigner(keys.private, KEY_PAIR).sign(resource, expires) == theirs


async def test_the_url_names_the_object_key_and_expires_after_the_duration(keys: Keys) -> None:
    """On S3 the key carries the root directory, as Distribution's S3BucketKey does."""
    signer = CloudFrontSigner(keys.private, KEY_PAIR)
    middleware = CloudFront(
        DriverRedirects(_NoDriver()),  # type: ignore[arg-type]
        signer,
        CDN,
        key_root="/registry/",
        duration=3000,
    )
    path = "/docker/registry/v2/blobs/sha256/ab/ab12/data"
    before = int(time.time())
    url = await middleware.redirect_url(path, "GET", "192.0.2.1")
    assert url is not None
    assert url.startswith(CDN + "registry/docker/registry/v2/blobs/sha256/ab/ab12/data?")
    policy = verified_policy(keys, url)
    epoch = policy["Statement"][0]["Condition"]["DateLessThan"]["AWS:EpochTime"]
    assert before + 3000 <= epoch <= int(time.time()) + 3000


class _NoDriver:
    """A driver without redirects, for ``DriverRedirects``."""

    redirects = None


# --- redirect ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("baseurl", "expected"),
    [
        ("https://example.com", "https://example.com/docker/registry/v2/x/data"),
        ("https://example.com/", "https://example.com/docker/registry/v2/x/data"),
        (
            "HTTPS://user:pw@example.com:5443/a//b/?q=1#f",
            "https://example.com:5443/a/b/docker/registry/v2/x/data",
        ),
        ("http://[::1]:8080/my layers/", "http://[::1]:8080/my%20layers/docker/registry/v2/x/data"),
    ],
)
async def test_redirect_puts_the_storage_path_under_the_base_url(
    baseurl: str, expected: str
) -> None:
    middleware = Redirect(DriverRedirects(_NoDriver()), baseurl)  # type: ignore[arg-type]
    assert await middleware.redirect_url("/docker/registry/v2/x/data", "GET", None) == expected


# --- through a served registry, on a local disk -----------------------------------------


def test_cloudfront_redirects_blob_downloads_from_a_local_disk(keys: Keys, tmp_path: Path) -> None:
    config = cloudfront(keys, duration="90s")
    with serve(root=tmp_path, config=config, fast_path=True) as registry:
        data = os.urandom(2000)
        digest = push_blob(registry.url, data)
        reply = request("GET", f"{registry.url}/v2/{NAME}/blobs/{digest}")
        head = request("HEAD", f"{registry.url}/v2/{NAME}/blobs/{digest}")
    assert reply.status == 307
    assert reply.headers["Docker-Content-Digest"] == digest
    location = reply.headers["Location"]
    assert location.startswith(f"{CDN}{blob_path(digest)}?Expires=")
    (statement,) = verified_policy(keys, location)["Statement"]
    assert statement["Resource"] == CDN + blob_path(digest)
    assert 0 < statement["Condition"]["DateLessThan"]["AWS:EpochTime"] - time.time() <= 90
    assert (head.status, head.headers["Content-Length"]) == (200, "2000")


def test_redirect_sends_blob_downloads_under_its_base_url(tmp_path: Path) -> None:
    entry = {"name": "redirect", "options": {"baseurl": "https://layers.example.com:5443/base/"}}
    config = {"middleware": {"storage": [entry]}}
    with serve(root=tmp_path, config=config, fast_path=True) as registry:
        digest = push_blob(registry.url, b"layer")
        reply = request("GET", f"{registry.url}/v2/{NAME}/blobs/{digest}")
        unknown = request("GET", f"{registry.url}/v2/{NAME}/blobs/sha256:{'0' * 64}")
    assert reply.status == 307
    assert reply.headers["Location"] == f"https://layers.example.com:5443/base/{blob_path(digest)}"
    assert unknown.status == 404, "only a blob linked in the repository is redirected"


def test_a_disabled_middleware_changes_nothing(keys: Keys, tmp_path: Path) -> None:
    config = cloudfront(keys)
    config["middleware"]["storage"][0]["disabled"] = True
    with serve(root=tmp_path, config=config, fast_path=True) as registry:
        digest = push_blob(registry.url, b"served here")
        reply = request("GET", f"{registry.url}/v2/{NAME}/blobs/{digest}")
    assert (reply.status, reply.body) == (200, b"served here")


# --- ipfilteredby ------------------------------------------------------------------------


def test_clients_inside_aws_get_the_storages_answer(
    keys: Keys, ranges: RangesServer, tmp_path: Path
) -> None:
    config = cloudfront(keys, ipfilteredby="aws", iprangesurl=ranges.url)
    with serve(root=tmp_path, config=config, fast_path=True) as registry:
        digest = push_blob(registry.url, b"from the disk")
        blob = f"{registry.url}/v2/{NAME}/blobs/{digest}"
        inside = request("GET", blob)  # from 127.0.0.1, listed
        outside = request("GET", blob, headers={"X-Forwarded-For": "192.0.2.7, 127.0.0.1"})
        proxied = request("GET", blob, headers={"X-Real-IP": "2001:db8::5"})
    assert (inside.status, inside.body) == (200, b"from the disk")
    assert outside.status == 307
    verified_policy(keys, outside.headers["Location"])
    assert (proxied.status, proxied.body) == (200, b"from the disk")
    assert len(ranges.hits) == 1, "fetched once, then every updatefrequency (12h)"


def test_with_awsregion_only_the_listed_regions_skip_cloudfront(
    keys: Keys, ranges: RangesServer, tmp_path: Path
) -> None:
    config = cloudfront(
        keys, ipfilteredby=" AWSRegion ", awsregion="EU-West-1, ap-south-1", iprangesurl=ranges.url
    )
    with serve(root=tmp_path, config=config, fast_path=True) as registry:
        digest = push_blob(registry.url, b"regional")
        blob = f"{registry.url}/v2/{NAME}/blobs/{digest}"
        us_east = request("GET", blob)  # 127.0.0.1: us-east-1, not listed
        eu_west = request("GET", blob, headers={"X-Forwarded-For": "10.1.2.3"})
    assert us_east.status == 307
    assert us_east.headers["Location"].startswith(CDN + blob_path(digest))
    assert (eu_west.status, eu_west.body) == (200, b"regional")


async def test_the_ranges_are_fetched_again_every_updatefrequency(ranges: RangesServer) -> None:
    aws = AWSRanges(ranges.url, every=0.05)
    try:
        assert await aws.contains("127.0.0.1")
        assert await aws.contains("::ffff:127.0.0.2"), "an IPv4-mapped address is its IPv4"
        assert not await aws.contains("not an address")
        ranges.document = {"prefixes": [], "ipv6_prefixes": []}

        async def dropped() -> bool:
            return not await aws.contains("127.0.0.1")

        await eventually(dropped, within=10, what="the new ranges were never fetched")
        assert len(ranges.hits) >= 2
    finally:
        await aws.close()


async def test_without_the_ranges_every_client_goes_to_cloudfront() -> None:
    """An unreachable ``iprangesurl`` is logged; no client is taken for AWS's."""
    aws = AWSRanges("http://127.0.0.1:9/ip-ranges.json", every=3600)
    try:
        assert not await aws.contains("127.0.0.1")
    finally:
        await aws.close()


def test_merged_intervals_answer_as_the_networks_do() -> None:
    prefixes = ("10.0.0.0/9", "10.128.0.0/9", "192.0.2.1/30")  # host bits set: as Go reads it
    intervals = Intervals(prefix_span(p, socket.AF_INET) for p in prefixes)
    assert len(intervals) == 2, "adjacent networks merge"
    networks = [ipaddress.ip_network(p, strict=False) for p in prefixes]
    for address in ("10.0.0.0", "10.255.255.255", "192.0.2.3", "9.255.255.255", "192.0.2.4"):
        ip = ipaddress.ip_address(address)
        assert (int(ip) in intervals) == any(ip in n for n in networks), address
    for bad in ("10.0.0.0", "10.0.0.0/33", "10.0.0/8", "2001:db8::/32"):
        with pytest.raises(ValueError, match="not a prefix"):
            prefix_span(bad, socket.AF_INET)
    first, last = prefix_span("2001:db8::1/32", socket.AF_INET6)
    assert (first, last) == (
        int(ipaddress.ip_address("2001:db8::")),
        int(ipaddress.ip_address("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff")),
    )


# --- refusals ----------------------------------------------------------------------------


def refusal(config: dict[str, Any]) -> ConfigError:
    document = {"version": "0.1", "storage": {"inmemory": {}}, **config}
    with pytest.raises(ConfigError) as caught:
        create_app(parse_config(yaml.safe_dump(document), environ={}))
    assert "\n" not in str(caught.value)
    return caught.value


def test_a_private_key_that_is_no_rsa_key_is_refused(keys: Keys, tmp_path: Path) -> None:
    missing = refusal(cloudfront(keys, privatekey=str(tmp_path / "absent.pem")))
    assert missing.key == "middleware.storage.0"
    assert "cloudfront option privatekey: cannot read" in missing.reason
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    assert (
        "not an unencrypted PEM private key"
        in refusal(cloudfront(keys, privatekey=str(garbage))).reason
    )
    ec_key = tmp_path / "ec.pem"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    assert "not an RSA private key" in refusal(cloudfront(keys, privatekey=str(ec_key))).reason


@pytest.mark.parametrize(
    ("options", "said"),
    [
        ({"baseurlx": "https://x/"}, "baseurlx: unknown setting"),
        ({"ipfilteredby": "gcp"}, "ipfilteredby: expected 'none', 'aws' or 'awsregion'"),
        ({"ipfilteredby": "awsregion"}, "awsregion: with ipfilteredby awsregion"),
        ({"baseurl": "ftp://cdn.example.com"}, "baseurl: not an http(s)://host[/path] URL"),
        ({"duration": "soon"}, "duration: not a duration"),
        ({"keypairid": None}, "keypairid: required"),
    ],
)
def test_bad_cloudfront_options_are_refused(keys: Keys, options: dict[str, Any], said: str) -> None:
    config = cloudfront(keys, **options)
    entry = config["middleware"]["storage"][0]["options"]
    for key in [key for key, value in options.items() if value is None]:
        del entry[key]
    error = refusal(config)
    assert error.key == "middleware.storage.0"
    assert said in error.reason


def test_a_bare_number_for_duration_keeps_distributions_default(keys: Keys) -> None:
    document = {"version": "0.1", "storage": "inmemory", **cloudfront(keys, duration=60)}
    config = parse_config(yaml.safe_dump(document), {})
    settings = config.middleware.storage[0].settings
    assert settings is not None
    assert settings.model_dump()["duration"] == 1200.0


@pytest.mark.parametrize(
    ("middleware", "key"),
    [
        (
            {"storage": [{"name": "rewrite", "options": {"scheme": "https"}}]},
            "middleware.storage.rewrite",
        ),
        ({"storage": [{"name": "nosuch"}]}, "middleware.storage.nosuch"),
        (
            {"registry": [{"name": "ARegistryMiddleware"}]},
            "middleware.registry.ARegistryMiddleware",
        ),
        (
            {"repository": [{"name": "ARepositoryMiddleware"}]},
            "middleware.repository.ARepositoryMiddleware",
        ),
    ],
)
def test_middleware_cargohold_lacks_is_refused(middleware: dict[str, Any], key: str) -> None:
    error = refusal({"middleware": middleware})
    assert error.key == key
    assert error.reason.startswith("not supported by cargohold; ")


def test_cargohold_serve_exits_2_on_a_bad_private_key(keys: Keys, tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    document = {
        "version": "0.1",
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "root")}},
        "http": {"addr": "127.0.0.1:0"},
        **cloudfront(keys, privatekey=str(tmp_path / "absent.pem")),
    }
    config.write_text(yaml.safe_dump(document))
    result = subprocess.run(
        cargohold_argv("serve", str(config)), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "cargohold: config: middleware.storage.0: cloudfront option privatekey: "
    )
