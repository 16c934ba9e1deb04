"""Distribution's pure proxy, and cargohold's mirrors beside ordinary repositories.

With ``proxy.remoteurl`` every repository mirrors the upstream and a push or
delete answers 405 UNSUPPORTED, as in Distribution. With ``proxy.upstreams``
the repositories under each prefix are mirrors and the others are ordinary,
unless ``proxy.local`` is false; containerd's ``?ns=`` names the upstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cargohold.api.app import create_app
from cargohold.config import parse_config
from cargohold.errors import ConfigError
from cargohold.manifest import OCI_INDEX
from tests.api.conftest import OCI_MANIFEST, Registry, assert_error, random_blob
from tests.proxy.conftest import MakeMirror, mirror_config
from tests.proxy.relay import Relay

ACCEPT = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}


async def test_a_pure_proxy_serves_every_repository_and_refuses_writes(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    image = await upstream.push_image("library/alpine", "3.20")
    mirror = await make_mirror(None, settings={"storage": {"delete": {"enabled": True}}})
    status, body = await mirror.request_anew(
        "GET", "/v2/library/alpine/manifests/3.20", headers=ACCEPT
    )
    assert (status, body) == (200, image.payload)

    writes = [
        ("POST", "/v2/library/alpine/blobs/uploads/"),
        ("POST", f"/v2/library/alpine/blobs/uploads/?mount={image.digest}&from=other"),
        ("PUT", "/v2/library/alpine/manifests/3.21"),
        ("DELETE", f"/v2/library/alpine/manifests/{image.digest}"),
        ("DELETE", "/v2/library/alpine/manifests/3.20"),
        ("DELETE", f"/v2/elsewhere/blobs/{random_blob().digest}"),
    ]
    for method, path in writes:
        response = await mirror.request(
            method, path, data=image.payload, headers={"Content-Type": OCI_MANIFEST}
        )
        await assert_error(response, 405, "UNSUPPORTED")
    # Nothing reached the upstream but the reads.
    assert relay.count("POST") + relay.count("PUT") + relay.count("DELETE") == 0


async def test_repositories_no_upstream_owns_are_ordinary_beside_the_mirrors(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    image = await upstream.push_image("app", "v1")
    mirror = await make_mirror("docker.io/")
    own = await mirror.push_image("team/service", "1.0")
    status, body = await mirror.request_anew(
        "GET", "/v2/team/service/manifests/1.0", headers=ACCEPT
    )
    assert (status, body) == (200, own.payload)
    status, body = await mirror.request_anew(
        "GET", "/v2/docker.io/app/manifests/v1", headers=ACCEPT
    )
    assert (status, body) == (200, image.payload)
    push = await mirror.request("POST", "/v2/docker.io/app/blobs/uploads/")
    await assert_error(push, 405, "UNSUPPORTED")
    # The upstream never heard of the local repository.
    assert relay.count("GET", "team/service") + relay.count("HEAD", "team/service") == 0


async def test_with_local_off_a_repository_no_upstream_owns_is_unknown(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    mirror = await make_mirror("docker.io/", settings={"proxy": {"local": False}})
    for method, path in [
        ("GET", "/v2/team/service/manifests/1.0"),
        ("POST", "/v2/team/service/blobs/uploads/"),
        ("GET", "/v2/team/service/tags/list"),
    ]:
        response = await mirror.request(method, path, headers=ACCEPT)
        await assert_error(response, 404, "NAME_UNKNOWN")


async def test_containerds_ns_parameter_routes_to_its_upstream(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    image = await upstream.push_image("library/alpine", "3.20")
    mirror = await make_mirror("docker.io/", hosts=["docker.io", "registry-1.docker.io"])
    for ns in ("docker.io", "registry-1.docker.io"):
        response = await mirror.request(
            "GET", f"/v2/library/alpine/manifests/3.20?ns={ns}", headers=ACCEPT
        )
        assert response.status == 200
        assert await response.read() == image.payload
    assert image.layers
    layer = image.layers[0]
    response = await mirror.request("GET", f"/v2/library/alpine/blobs/{layer.digest}?ns=docker.io")
    assert (response.status, await response.read()) == (200, layer.data)
    # Kept under the prefix, where a request without ?ns= finds it too.
    status, body = await mirror.request_anew(
        "GET", "/v2/docker.io/library/alpine/manifests/3.20", headers=ACCEPT
    )
    assert (status, body) == (200, image.payload)
    # A host no upstream claims means this registry's own repository.
    response = await mirror.request(
        "GET", "/v2/library/alpine/manifests/3.20?ns=quay.io", headers=ACCEPT
    )
    await assert_error(response, 404, "MANIFEST_UNKNOWN")


async def test_tags_are_listed_as_the_upstream_has_them(
    upstream: Registry, relay: Relay, make_mirror: MakeMirror
) -> None:
    for tag in ("1", "2", "3"):
        await upstream.push_image("app", tag)
    mirror = await make_mirror()
    assert await mirror.tags("docker.io/app") == ["1", "2", "3"]


@pytest.mark.parametrize(
    ("proxy", "key"),
    [
        ({"remoteurl": "https://127.0.0.1:1", "tls": {"ca": "/missing/ca.pem"}}, "proxy.tls"),
        (
            {
                "upstreams": [
                    {
                        "prefix": "a/",
                        "remoteurl": "https://127.0.0.1:1",
                        "tls": {"certificate": "/missing.pem"},
                    }
                ]
            },
            "proxy.upstreams.0.tls",
        ),
        ({"remoteurl": "https://127.0.0.1:1", "tls": {"key": "/k.pem"}}, "proxy.tls"),
        ({"ttl": "1h"}, "proxy"),
        ({"remoteurl": "ftp://example.com"}, "proxy.remoteurl"),
        ({"remoteurl": "https://example.com/v2"}, "proxy.remoteurl"),
        (
            {"upstreams": [{"prefix": "docker.io", "remoteurl": "https://example.com"}]},
            "proxy.upstreams.0.prefix",
        ),
        (
            {
                "upstreams": [
                    {"prefix": "a/", "remoteurl": "https://a.example"},
                    {"prefix": "a/", "remoteurl": "https://b.example"},
                ]
            },
            "proxy",
        ),
    ],
    ids=[
        "missing-ca",
        "missing-certificate",
        "key-alone",
        "no-upstream",
        "not-http",
        "a-path",
        "prefix-without-slash",
        "same-prefix-twice",
    ],
)
def test_a_proxy_setting_that_cannot_work_stops_the_start_naming_it(
    tmp_path: Path, proxy: dict[str, Any], key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        create_app(parse_config(mirror_config(tmp_path, proxy), environ={}))
    assert caught.value.key == key, caught.value
