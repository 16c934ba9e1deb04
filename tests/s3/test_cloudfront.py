"""``cloudfront`` on S3: the object key (``rootdirectory`` included) is signed, and clients
inside AWS get S3's presigned URL instead, as with Distribution's middleware."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from yarl import URL

from tests.s3.conftest import AiohttpClient, app_client, registry_config
from tests.s3.test_redirects import NAME, fetch, push
from tests.support.cloudfront import KEY_PAIR, make_keys, serving_ranges, verified_policy
from tests.support.seaweed import SeaweedS3

CDN = "https://d111111abcdef8.cloudfront.net/"


async def test_clients_outside_aws_get_cloudfront_and_those_inside_get_s3(
    aiohttp_client: AiohttpClient,
    seaweedfs: SeaweedS3,
    s3_parameters: dict[str, Any],
    tmp_path: Path,
) -> None:
    keys = make_keys(tmp_path)
    with serving_ranges() as ranges:
        document = registry_config(s3_parameters)
        options = {
            "baseurl": CDN,
            "privatekey": str(keys.pem),
            "keypairid": KEY_PAIR,
            "ipfilteredby": "aws",
            "iprangesurl": ranges.url,
        }
        document["middleware"] = {"storage": [{"name": "cloudfront", "options": options}]}
        client = await app_client(aiohttp_client, document)
        data = os.urandom(1000)
        digest = await push(client, data)
        blob = f"/v2/{NAME}/blobs/{digest}"
        outside = await client.get(
            blob, headers={"X-Forwarded-For": "192.0.2.7"}, allow_redirects=False
        )
        inside = await client.get(blob, allow_redirects=False)  # from 127.0.0.1: listed

    hex_ = digest.removeprefix("sha256:")
    root = s3_parameters["rootdirectory"].strip("/")
    key = f"{root}/docker/registry/v2/blobs/sha256/{hex_[:2]}/{hex_}/data"
    assert outside.status == 307
    location = outside.headers["Location"]
    assert location.startswith(f"{CDN}{key}?Expires=")
    verified_policy(keys, location)
    assert inside.status == 307
    presigned = URL(inside.headers["Location"], encoded=True)
    assert str(presigned.origin()) == seaweedfs.endpoint
    assert presigned.path == f"/{seaweedfs.bucket}/{key}"
    assert await fetch(str(presigned)) == (200, data)
