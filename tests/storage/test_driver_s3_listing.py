"""ListObjectsV2 on the S3 driver's direct path is the request botocore sends, read as it reads it.

Like ``test_driver_s3_direct.py``: each test lists both ways, on the direct path
and through aiobotocore (``BotoObjects``), against a scripted S3 server, and
compares the requests and what came back. SeaweedFS, which checks signatures,
runs the driver suite's listings in ``test_driver_s3.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from botocore.exceptions import ClientError

from cargohold.storage.driver import s3objects
from tests.storage.test_driver_s3_direct import Answer, ScriptedS3, both_ways, compared, serve

PAGE = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bkt</Name><Prefix>root%2Fa+b%2F</Prefix><KeyCount>3</KeyCount><MaxKeys>2</MaxKeys>
  <Delimiter>%2F</Delimiter><EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>
  <NextContinuationToken>next/token+=</NextContinuationToken>
  <Contents><Key>root%2Fa+b%2Fdata%2B%7E%C3%A9</Key><LastModified>2015-10-21T07:28:00.123Z</LastModified>
    <ETag>"e"</ETag><Size>42</Size><StorageClass>STANDARD</StorageClass></Contents>
  <Contents><Key>root%2Fa+b%2Fempty</Key><LastModified>2016-01-02T03:04:05.000Z</LastModified>
    <ETag>"f"</ETag><Size>0</Size><StorageClass>STANDARD</StorageClass></Contents>
  <CommonPrefixes><Prefix>root%2Fa+b%2Fsub%3Adir%2F</Prefix></CommonPrefixes>
</ListBucketResult>
"""
LAST = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bkt</Name><Prefix>root/</Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys>
  <Delimiter>/</Delimiter><IsTruncated>false</IsTruncated>
  <CommonPrefixes><Prefix>root/plain/</Prefix></CommonPrefixes>
</ListBucketResult>
"""
NO_BUCKET = b"""<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message>
<BucketName>bkt</BucketName><RequestId>r</RequestId></Error>
"""


@pytest.fixture
async def scripted() -> AsyncIterator[ScriptedS3]:
    server = ScriptedS3()
    runner, server.url = await serve(server.handle)
    yield server
    await runner.cleanup()


def query_of(path: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(path).query, keep_blank_values=True)


async def test_a_page_is_sent_and_read_as_botocore_does(scripted: ScriptedS3) -> None:
    scripted.script = [Answer(body=PAGE), Answer(body=PAGE)]

    async def first(objects: s3objects.Objects) -> s3objects.Listed:
        return await objects.list("root/a b/", "/", 2, None)

    outcomes = await both_ways(scripted.url, first)
    assert outcomes["direct"] == outcomes["botocore"]
    assert outcomes["direct"] == s3objects.Listed(
        [
            ("root/a b/data+~é", 42, datetime(2015, 10, 21, 7, 28, 0, 123000, UTC)),
            ("root/a b/empty", 0, datetime(2016, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ],
        ["root/a b/sub:dir/"],
        "next/token+=",
    )
    direct, botocore = scripted.seen
    assert urlsplit(direct.path).path == urlsplit(botocore.path).path == "/bkt"
    assert query_of(direct.path) == query_of(botocore.path)
    assert query_of(direct.path)["prefix"] == ["root/a b/"]
    assert compared(direct)[2:] == compared(botocore)[2:], "headers, body and what is signed"


async def test_the_next_page_carries_the_token_and_the_last_has_none(scripted: ScriptedS3) -> None:
    scripted.script = [Answer(body=LAST), Answer(body=LAST)]

    async def following(objects: s3objects.Objects) -> s3objects.Listed:
        return await objects.list("root/", "/", 1000, "next/token+=")

    outcomes = await both_ways(scripted.url, following)
    assert outcomes["direct"] == outcomes["botocore"]
    assert outcomes["direct"] == s3objects.Listed([], ["root/plain/"], None)
    direct, botocore = scripted.seen
    assert query_of(direct.path) == query_of(botocore.path)
    assert query_of(direct.path)["continuation-token"] == ["next/token+="]


async def test_an_error_answer_is_botocores_client_error(scripted: ScriptedS3) -> None:
    scripted.script = [Answer(404, NO_BUCKET), Answer(404, NO_BUCKET)]

    async def failing(objects: s3objects.Objects) -> s3objects.Listed:
        return await objects.list("root/", "/", 1000, None)

    outcomes = await both_ways(scripted.url, failing)
    for outcome in outcomes.values():
        assert isinstance(outcome, ClientError)
        assert outcome.response["Error"]["Code"] == "NoSuchBucket"
        assert outcome.operation_name == "ListObjectsV2"
    assert len(scripted.seen) == 2, "not retried"
