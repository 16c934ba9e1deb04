from __future__ import annotations

import pytest

from cargohold.errors import ConfigError, ManifestInvalid
from cargohold.manifest import (
    DOCKER_FOREIGN_LAYER,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_LAYER_GZIP,
    OCI_LAYER_NONDISTRIBUTABLE,
    OCI_MANIFEST,
    URLPolicy,
    parse_manifest,
)
from tests.manifest.builders import descriptor, docker_manifest, encode, oci_manifest

ANY = URLPolicy()
MICROSOFT_ONLY = URLPolicy.compile(allow=[r"^https://mcr\.microsoft\.com/"])
NO_INTERNAL = URLPolicy.compile(deny=[r"\.internal(/|$)", r"^http://"])


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/layer",
        "https://example.com/layer.tar.gz?sig=abc%20d",
        "HTTPS://EXAMPLE.COM/x",  # Go lower-cases the scheme before comparing it
    ],
)
def test_http_and_https_urls_pass_an_empty_policy(url: str) -> None:
    assert ANY.refusal(url) is None
    assert ANY.permits(url)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/layer", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("example.com/layer", "scheme"),
        ("https://example.com/layer#part", "fragment"),
        ("https://example.com/a b", "not a valid URL"),
        ("https://example.com/\x00", "not a valid URL"),
        ("https://example.com/%zz", "not a valid URL"),
        ("https://[::1/", "not a valid URL"),
    ],
)
def test_malformed_or_unsafe_urls_are_refused(url: str, reason: str) -> None:
    refusal = ANY.refusal(url)
    assert refusal is not None
    assert reason in refusal
    assert not ANY.permits(url)


def test_allow_list_must_match_when_given() -> None:
    assert MICROSOFT_ONLY.permits("https://mcr.microsoft.com/v2/windows/blobs/sha256:1")
    refusal = MICROSOFT_ONLY.refusal("https://evil.example/mcr.microsoft.com/")
    assert refusal is not None
    assert "allow" in refusal


def test_any_one_allow_expression_suffices() -> None:
    policy = URLPolicy.compile(allow=[r"^https://a\.example/", r"^https://b\.example/"])
    assert policy.permits("https://b.example/x")
    assert not policy.permits("https://c.example/x")


def test_expressions_are_searched_not_anchored() -> None:
    # As Go's MatchString: "internal" anywhere in the URL is enough to be denied.
    assert not NO_INTERNAL.permits("https://cache.internal/layer")
    assert NO_INTERNAL.permits("https://cache.example/layer")


def test_deny_wins_over_allow() -> None:
    policy = URLPolicy.compile(allow=[r"^https://"], deny=[r"secret"])
    assert policy.permits("https://example.com/public")
    refusal = policy.refusal("https://example.com/secret")
    assert refusal is not None
    assert "deny" in refusal


def test_bad_expression_is_a_config_error_naming_the_setting() -> None:
    with pytest.raises(ConfigError) as caught:
        URLPolicy.compile(allow=["ok", "(unclosed"])
    assert caught.value.key == "validation.manifests.urls.allow[1]"


def test_check_urls_names_the_refused_layer_url() -> None:
    foreign = descriptor(
        OCI_LAYER_NONDISTRIBUTABLE,
        "win",
        urls=["https://mcr.microsoft.com/ok", "https://evil.example/x"],
    )
    manifest = parse_manifest(
        encode(oci_manifest(layers=[descriptor(OCI_LAYER_GZIP, "a"), foreign])), OCI_MANIFEST
    )

    manifest.check_urls(ANY)
    with pytest.raises(ManifestInvalid) as caught:
        manifest.check_urls(MICROSOFT_ONLY)
    assert caught.value.message.startswith("layers[1].urls[1]: not allowed")


def test_check_urls_covers_ordinary_oci_layers_too() -> None:
    layer = descriptor(OCI_LAYER_GZIP, "a", urls=["ftp://mirror.example/a"])
    manifest = parse_manifest(encode(oci_manifest(layers=[layer])), OCI_MANIFEST)
    with pytest.raises(ManifestInvalid, match=r"layers\[0\]\.urls\[0\]: scheme"):
        manifest.check_urls(ANY)


def test_check_urls_ignores_urls_outside_layers() -> None:
    # Distribution vets only layer URLs; a config's urls are not its business.
    config = descriptor(OCI_CONFIG, "c", urls=["ftp://x.example/c"])
    manifest = parse_manifest(encode(oci_manifest(config=config)), OCI_MANIFEST)
    manifest.check_urls(MICROSOFT_ONLY)


def test_check_urls_on_docker_foreign_layers() -> None:
    foreign = descriptor(DOCKER_FOREIGN_LAYER, "f", urls=["http://plain.example/f"])
    ordinary = descriptor(DOCKER_LAYER, "o", urls=["http://plain.example/o"])
    manifest = parse_manifest(encode(docker_manifest(layers=[ordinary, foreign])), DOCKER_MANIFEST)

    manifest.check_urls(ANY)
    with pytest.raises(ManifestInvalid) as caught:
        manifest.check_urls(NO_INTERNAL)
    # The ordinary layer's URL is not vetted (Distribution requires that blob instead).
    assert caught.value.message.startswith("layers[1].urls[0]: denied")
