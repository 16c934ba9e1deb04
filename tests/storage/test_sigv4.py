"""The SigV4 signer of the S3 driver's direct path: AWS's examples, and botocore's signer.

AWS's examples are the worked requests of the S3 API reference ("Signature
Calculations for the Authorization Header", examplebucket, 2013-05-24) and the
signing-key example of the IAM guide. botocore's ``S3SigV4Auth`` then signs
the requests the driver sends, for the same credentials and time, and the
headers must match to the byte.
"""

from __future__ import annotations

import calendar
import hashlib
from datetime import UTC, datetime
from typing import Any

import botocore.auth
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from cargohold.storage.driver.sigv4 import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    Credentials,
    Signer,
    amz_date,
    canonical_query,
    uri_encode,
)

EXAMPLE = Credentials("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
EXAMPLE_TIME = calendar.timegm((2013, 5, 24, 0, 0, 0))
EXAMPLE_HOST = "examplebucket.s3.amazonaws.com"
SCOPE = "AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request"


def authorization(signed_names: str, signature: str) -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential={SCOPE}, SignedHeaders={signed_names}, Signature={signature}"
    )


# -- AWS's worked examples ---------------------------------------------------------------


def test_aws_example_get_object_with_a_range() -> None:
    signed = Signer("us-east-1").sign(
        "GET",
        "/test.txt",
        {"Host": EXAMPLE_HOST, "Range": "bytes=0-9"},
        EXAMPLE,
        when=EXAMPLE_TIME,
    )
    assert signed["x-amz-date"] == "20130524T000000Z"
    assert signed["x-amz-content-sha256"] == EMPTY_SHA256
    assert signed["authorization"] == authorization(
        "host;range;x-amz-content-sha256;x-amz-date",
        "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41",
    )


def test_aws_example_put_object_with_a_storage_class() -> None:
    body = b"Welcome to Amazon S3."
    signed = Signer("us-east-1").sign(
        "PUT",
        "/" + uri_encode("test$file.text", keep_slash=True),
        {
            "Host": EXAMPLE_HOST,
            "Date": "Fri, 24 May 2013 00:00:00 GMT",
            "x-amz-storage-class": "REDUCED_REDUNDANCY",
        },
        EXAMPLE,
        payload_hash=hashlib.sha256(body).hexdigest(),
        when=EXAMPLE_TIME,
    )
    assert signed["x-amz-content-sha256"] == (
        "44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072"
    )
    assert signed["authorization"] == authorization(
        "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class",
        "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd",
    )


@pytest.mark.parametrize(
    ("params", "query", "signature"),
    [
        (
            {"lifecycle": ""},
            "lifecycle=",
            "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
        ),
        (
            {"prefix": "J", "max-keys": "2"},
            "max-keys=2&prefix=J",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    ],
    ids=["bucket-lifecycle", "list-objects"],
)
def test_aws_examples_with_a_query(params: dict[str, str], query: str, signature: str) -> None:
    assert canonical_query(params) == query
    signed = Signer("us-east-1").sign(
        "GET", "/", {"Host": EXAMPLE_HOST}, EXAMPLE, query=query, when=EXAMPLE_TIME
    )
    assert signed["authorization"] == authorization(
        "host;x-amz-content-sha256;x-amz-date", signature
    )


def test_aws_example_presigned_url() -> None:
    """AWS's example of a presigned GET ("Authenticating Requests: Using Query Parameters")."""
    query = Signer("us-east-1").presign(
        "GET", "/test.txt", EXAMPLE_HOST, EXAMPLE, 86400, when=EXAMPLE_TIME
    )
    assert query == (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )


def test_aws_example_signing_key() -> None:
    key = Signer("us-east-1", "iam").signing_key(
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215"
    )
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


# -- the pieces --------------------------------------------------------------------------


def test_keys_are_encoded_once_per_segment_keeping_only_unreserved_characters() -> None:
    assert uri_encode("a b+c~d:é/x_y-z.1", keep_slash=True) == "a%20b%2Bc~d%3A%C3%A9/x_y-z.1"
    assert uri_encode("a/b") == "a%2Fb"
    assert uri_encode("%41") == "%2541", "an escape in a key is a key's characters"


def test_amz_date_is_utc_basic_format() -> None:
    assert amz_date(EXAMPLE_TIME + 3661.9) == "20130524T010101Z"


def test_header_values_are_trimmed_and_inner_spaces_collapsed() -> None:
    signer = Signer("us-east-1")
    tidy = signer.sign("GET", "/k", {"host": "h", "x-amz-meta-a": "b c"}, EXAMPLE, when=0)
    messy = signer.sign("GET", "/k", {"Host": " h ", "X-Amz-Meta-A": "  b   c "}, EXAMPLE, when=0)
    assert messy["authorization"] == tidy["authorization"]


def test_the_cached_signing_key_follows_the_day_and_the_secret() -> None:
    signer = Signer("eu-west-1")
    other = Credentials(EXAMPLE.access_key, "another secret")
    for when, credentials in [(0, EXAMPLE), (86400, EXAMPLE), (86400, other), (0, EXAMPLE)]:
        reused = signer.sign("GET", "/k", {"host": "h"}, credentials, when=when)
        fresh = Signer("eu-west-1").sign("GET", "/k", {"host": "h"}, credentials, when=when)
        assert reused == fresh


def test_a_session_token_is_sent_and_signed() -> None:
    credentials = Credentials(EXAMPLE.access_key, EXAMPLE.secret_key, "the token")
    signed = Signer("us-east-1").sign("GET", "/k", {"host": "h"}, credentials, when=0)
    assert signed["x-amz-security-token"] == "the token"
    assert "x-amz-security-token" in signed["authorization"].split("SignedHeaders=")[1]


# -- the same as botocore's signer -----------------------------------------------------------

KEYS = [
    "docker/registry/v2/blobs/sha256/ab/ab12/data",
    "root/uploads/u/.~data.pending",  # the driver's bookkeeping keys contain "~"
    "with space/and+plus",
    "colon:and~tilde/semi;comma,equals=amp&",
    "unicode/é中文/🐳",
    "reserved/!'()*$@[]#?",
    "percent/%41%2F",
    "double//slash/",
]


def botocore_signed(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    credentials: Credentials,
    region: str,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """The headers botocore's S3 SigV4 signer adds to the request, at EXAMPLE_TIME."""
    at = datetime.fromtimestamp(EXAMPLE_TIME, UTC).replace(tzinfo=None)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: at)
    request = AWSRequest(method=method, url=url, headers=headers, data=body)
    boto_credentials = BotoCredentials(
        credentials.access_key, credentials.secret_key, credentials.token
    )
    S3SigV4Auth(boto_credentials, "s3", region).add_auth(request)
    return {name.lower(): str(value) for name, value in request.headers.items()}


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize(
    ("method", "body", "headers"),
    [
        ("GET", b"", {}),
        ("GET", b"", {"Range": "bytes=100-"}),
        ("HEAD", b"", {}),
        (
            "PUT",
            b'{"schemaVersion": 2}',
            {
                "Content-Type": "application/octet-stream",
                "x-amz-acl": "private",
                "x-amz-storage-class": "STANDARD",
                "x-amz-server-side-encryption": "aws:kms",
                "x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:key/1",
                "x-amz-meta-cargohold-upload-id": "2~abc.def",
                "x-amz-meta-cargohold-offset": "5242880",
            },
        ),
    ],
    ids=["get", "get-range", "head", "put"],
)
@pytest.mark.parametrize("token", [None, "FwoGZXIvYXdzEJr//////////token=="], ids=["keys", "token"])
def test_the_signature_is_botocores(
    key: str,
    method: str,
    body: bytes,
    headers: dict[str, str],
    token: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    path = "/bucket/" + uri_encode(key, keep_slash=True)
    url = "http://127.0.0.1:8333" + path
    expected = botocore_signed(method, url, headers, body, credentials, "eu-west-3", monkeypatch)
    payload_hash = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
    ours = Signer("eu-west-3").sign(
        method,
        path,
        {"host": "127.0.0.1:8333", **headers},
        credentials,
        payload_hash=payload_hash,
        when=EXAMPLE_TIME,
    )
    assert ours == {"host": "127.0.0.1:8333", **expected}


def test_an_unsigned_payload_is_botocores(monkeypatch: pytest.MonkeyPatch) -> None:
    # botocore signs UNSIGNED-PAYLOAD when told the body is not to be hashed.
    url = "https://bucket.s3.eu-west-3.amazonaws.com/" + uri_encode(KEYS[2], keep_slash=True)
    at = datetime.fromtimestamp(EXAMPLE_TIME, UTC).replace(tzinfo=None)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: at)
    request = AWSRequest(method="GET", url=url, headers={})
    request.context["payload_signing_enabled"] = False
    boto_credentials = BotoCredentials("AKIDEXAMPLE", "secret")

    class Unsigned(S3SigV4Auth):
        def _should_sha256_sign_payload(self, request: Any) -> bool:
            return False

    Unsigned(boto_credentials, "s3", "eu-west-3").add_auth(request)
    ours = Signer("eu-west-3").sign(
        "GET",
        url.split(".com", 1)[1],
        {"host": "bucket.s3.eu-west-3.amazonaws.com"},
        Credentials("AKIDEXAMPLE", "secret"),
        payload_hash=UNSIGNED_PAYLOAD,
        when=EXAMPLE_TIME,
    )
    assert ours["authorization"] == request.headers["Authorization"]
