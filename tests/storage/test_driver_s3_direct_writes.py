"""Copies, deletes and multipart uploads on the S3 driver's direct path do what botocore does.

As in ``test_driver_s3_direct.py``: each operation runs both ways, on the
direct path and through aiobotocore, against one scripted S3 server, and the
test compares the requests (where they go, their query, headers, body and
signed headers), what came back, and how a failure is retried. S3 may answer
200 and say in the body that a copy or a completion failed: botocore retries
that as a 500, and so must the direct path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import pytest

from cargohold.storage.driver import s3objects
from tests.storage.test_driver_s3_direct import (
    COMPARED,
    ERRORS,
    Answer,
    Backoffs,
    ScriptedS3,
    Seen,
    backoffs,
    both_ways,
    client_errors,
    counted_both_ways,
    driver_on,
    error_of,
    s3_error,
    scripted,
)

__all__ = ["backoffs", "scripted"]  # fixtures, used by name

Operation = Callable[[s3objects.Objects], Awaitable[Any]]

SOURCE = "root/a b+~:é/&<data>"
KEY = "root/uploads/a b+~:é"
UPLOAD_ID = "2~id/+=&x"
PARTS = [s3objects.Part(1, '"etag-1"', 5 << 20), s3objects.Part(2, '"etag&2"', 3)]
XML = '<?xml version="1.0" encoding="UTF-8"?>\n'
NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def xml(body: str) -> bytes:
    return (XML + body).encode()


async def copy(objects: s3objects.Objects) -> None:
    await objects.copy(SOURCE, KEY)


async def delete(objects: s3objects.Objects) -> list[tuple[str, str]]:
    return await objects.delete([SOURCE, KEY, "root/plain"])


async def start_upload(objects: s3objects.Objects) -> str:
    return await objects.start_upload(KEY)


async def upload_part(objects: s3objects.Objects) -> str:
    return await objects.upload_part(KEY, UPLOAD_ID, 7, [b"part ", memoryview(b"content")])


async def upload_large_part(objects: s3objects.Objects) -> str:
    pieces = [bytes(range(256)) * 4096, memoryview(bytes(range(255, -1, -1)) * 4097), b"!"]
    return await objects.upload_part(KEY, UPLOAD_ID, 2, pieces)


async def copy_part(objects: s3objects.Objects) -> str:
    return await objects.copy_part(SOURCE, KEY, UPLOAD_ID, 3, 5 << 20, (10 << 20) - 1)


async def complete_upload(objects: s3objects.Objects) -> None:
    await objects.complete_upload(KEY, UPLOAD_ID, PARTS)


async def abort_upload(objects: s3objects.Objects) -> None:
    await objects.abort_upload(KEY, UPLOAD_ID)


async def parts(objects: s3objects.Objects) -> list[s3objects.Part]:
    return await objects.parts(KEY, UPLOAD_ID)


async def uploads(objects: s3objects.Objects) -> list[tuple[str, str]]:
    return await objects.uploads("root/uploads/")


async def list_all(objects: s3objects.Objects) -> s3objects.Listed:
    return await objects.list("root/", "", 1000, None)


COPIED = Answer(
    200,
    xml(
        f"<CopyObjectResult {NS}><LastModified>2015-10-21T07:28:00.000Z</LastModified>"
        '<ETag>"copied"</ETag></CopyObjectResult>'
    ),
)
COPIED_PART = Answer(
    200,
    xml(
        f"<CopyPartResult {NS}><LastModified>2015-10-21T07:28:00.000Z</LastModified>"
        "<ETag>&quot;copied-part&quot;</ETag></CopyPartResult>"
    ),
)
COMPLETED = Answer(
    200,
    xml(
        f"<CompleteMultipartUploadResult {NS}><Bucket>bkt</Bucket><Key>k</Key>"
        '<ETag>"done-2"</ETag></CompleteMultipartUploadResult>'
    ),
)
STARTED = Answer(
    200,
    xml(
        f"<InitiateMultipartUploadResult {NS}><Bucket>bkt</Bucket><Key>k</Key>"
        f"<UploadId>{UPLOAD_ID.replace('&', '&amp;')}</UploadId>"
        "</InitiateMultipartUploadResult>"
    ),
)
DELETED = Answer(
    200,
    xml(
        f"<DeleteResult {NS}><Error><Key>{SOURCE.replace('&', '&amp;').replace('<', '&lt;')}"
        "</Key><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
        "</DeleteResult>"
    ),
)
PART_LIST = Answer(
    200,
    xml(
        f"<ListPartsResult {NS}><Bucket>bkt</Bucket><Key>k</Key><UploadId>u</UploadId>"
        "<IsTruncated>false</IsTruncated>"
        '<Part><PartNumber>2</PartNumber><ETag>"b"</ETag><Size>3</Size></Part>'
        '<Part><PartNumber>1</PartNumber><ETag>"a"</ETag><Size>5242880</Size></Part>'
        "</ListPartsResult>"
    ),
)
UPLOAD_LIST = Answer(
    200,
    xml(
        f"<ListMultipartUploadsResult {NS}><Bucket>bkt</Bucket><IsTruncated>false</IsTruncated>"
        "<Upload><Key>root/uploads/a</Key><UploadId>u1</UploadId></Upload>"
        "<Upload><Key>root/uploads/a &amp; b</Key><UploadId>u2</UploadId></Upload>"
        "</ListMultipartUploadsResult>"
    ),
)
KEY_LIST = Answer(
    200,
    xml(
        f"<ListBucketResult {NS}><Name>bkt</Name><Prefix>root/</Prefix><KeyCount>1</KeyCount>"
        "<MaxKeys>1000</MaxKeys><EncodingType>url</EncodingType><IsTruncated>false</IsTruncated>"
        "<Contents><Key>root/a+b%2Fc</Key><LastModified>2015-10-21T07:28:00.000Z</LastModified>"
        "<Size>3</Size></Contents></ListBucketResult>"
    ),
)

OPERATIONS: list[tuple[Operation, Answer]] = [
    (copy, COPIED),
    (delete, DELETED),
    (start_upload, STARTED),
    (upload_part, Answer(200, b"", {"ETag": '"part-7"'})),
    (upload_large_part, Answer(200, b"", {"ETag": '"part-2"'})),
    (copy_part, COPIED_PART),
    (complete_upload, COMPLETED),
    (abort_upload, Answer(204)),
    (parts, PART_LIST),
    (uploads, UPLOAD_LIST),
    (list_all, KEY_LIST),
]


def request_of(seen: Seen) -> tuple[str, str, list[tuple[str, str]], dict[str, str], bytes, str]:
    """What S3 reads of a request: the order of the query's parameters is not part of it."""
    headers = {name: value for name, value in seen.headers.items() if COMPARED.fullmatch(name)}
    signed = [part for part in seen.headers["authorization"].split(", ") if "SignedHeaders" in part]
    path, _, query = seen.path.partition("?")
    # A bare subresource (``?uploads``) is kept as sent: ``uploads`` and ``uploads=`` differ.
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    bare = sorted(pair for pair in query.split("&") if pair and "=" not in pair)
    return (
        seen.method,
        path,
        [*pairs, *((name, "<bare>") for name in bare)],
        headers,
        seen.body,
        signed[0],
    )


@pytest.mark.parametrize(
    ("operation", "answer"), OPERATIONS, ids=[operation.__name__ for operation, _ in OPERATIONS]
)
@pytest.mark.parametrize(
    "configuration",
    [
        {},
        {
            "encrypt": True,
            "keyid": "arn:aws:kms:us-east-1:1:key/k",
            "objectacl": "bucket-owner-full-control",
            "sessiontoken": "token/+=",
        },
        {"storageclass": "NONE", "region": "eu-west-3"},
    ],
    ids=["default", "sse-kms", "no-storage-class"],
)
async def test_writes_send_what_botocore_sends_and_read_what_it_reads(
    scripted: ScriptedS3, operation: Operation, answer: Answer, configuration: dict[str, Any]
) -> None:
    async def answered(objects: s3objects.Objects) -> Any:
        scripted.script[:] = [answer]
        return await operation(objects)

    outcomes = await both_ways(scripted.url, answered, **configuration)
    assert not any(isinstance(outcome, Exception) for outcome in outcomes.values()), outcomes
    assert outcomes["direct"] == outcomes["botocore"]
    direct_request, botocore_request = scripted.seen
    assert request_of(direct_request) == request_of(botocore_request)


def test_the_requests_compared_name_the_subresources_bare() -> None:
    """``request_of`` tells ``?uploads`` from ``?uploads=``, or the test above could not fail."""
    seen = [
        Seen("POST", f"/bkt/k?uploads{tail}", {"authorization": "a, SignedHeaders=host, b"}, b"")
        for tail in ("", "=")
    ]
    assert request_of(seen[0]) != request_of(seen[1])


async def test_every_page_of_parts_and_uploads_is_read_as_botocore_reads_them(
    scripted: ScriptedS3,
) -> None:
    part_pages = [
        Answer(
            200,
            xml(
                f"<ListPartsResult {NS}><IsTruncated>true</IsTruncated>"
                "<NextPartNumberMarker>1</NextPartNumberMarker>"
                '<Part><PartNumber>1</PartNumber><ETag>"a"</ETag><Size>5242880</Size></Part>'
                "</ListPartsResult>"
            ),
        ),
        Answer(
            200,
            xml(
                f"<ListPartsResult {NS}><IsTruncated>false</IsTruncated>"
                '<Part><PartNumber>2</PartNumber><ETag>"b"</ETag><Size>9</Size></Part>'
                "</ListPartsResult>"
            ),
        ),
    ]
    upload_pages = [
        Answer(
            200,
            xml(
                f"<ListMultipartUploadsResult {NS}><IsTruncated>true</IsTruncated>"
                "<NextKeyMarker>root/uploads/a</NextKeyMarker>"
                "<NextUploadIdMarker>u&amp;1</NextUploadIdMarker>"
                "<Upload><Key>root/uploads/a</Key><UploadId>u&amp;1</UploadId></Upload>"
                "</ListMultipartUploadsResult>"
            ),
        ),
        Answer(
            200,
            xml(
                f"<ListMultipartUploadsResult {NS}><IsTruncated>false</IsTruncated>"
                "<Upload><Key>root/uploads/b</Key><UploadId>u2</UploadId></Upload>"
                "</ListMultipartUploadsResult>"
            ),
        ),
    ]

    async def paged(objects: s3objects.Objects) -> Any:
        scripted.script[:] = [*part_pages, *upload_pages]
        return await parts(objects), await uploads(objects)

    outcomes = await both_ways(scripted.url, paged)
    assert (
        outcomes["direct"]
        == outcomes["botocore"]
        == (
            [s3objects.Part(1, '"a"', 5 << 20), s3objects.Part(2, '"b"', 9)],
            [("root/uploads/a", "u&1"), ("root/uploads/b", "u2")],
        )
    )
    assert len(scripted.seen) == 8
    direct, botocore = scripted.seen[:4], scripted.seen[4:]
    assert [request_of(seen) for seen in direct] == [request_of(seen) for seen in botocore]


FAILED_IN_BODY = Answer(
    200, xml("<Error><Code>InternalError</Code><Message>oops</Message></Error>")
)
BROKEN_OFF = Answer(200, xml(f"<CopyObjectResult {NS}><ETag>&quot;cop"))
ANSWERED_IN_BODY = [(copy, COPIED), (copy_part, COPIED_PART), (complete_upload, COMPLETED)]


@pytest.mark.parametrize("failure", [FAILED_IN_BODY, BROKEN_OFF], ids=["error", "broken-off"])
@pytest.mark.parametrize(
    ("operation", "success"),
    ANSWERED_IN_BODY,
    ids=[operation.__name__ for operation, _ in ANSWERED_IN_BODY],
)
@pytest.mark.parametrize("recovers", [True, False], ids=["then-ok", "always"])
async def test_a_200_that_failed_is_retried_as_botocore_retries_it(
    scripted: ScriptedS3,
    operation: Operation,
    success: Answer,
    failure: Answer,
    recovers: bool,
    backoffs: Backoffs,
) -> None:
    script = [failure, success] if recovers else [failure] * 3
    outcomes, requests = await counted_both_ways(scripted, operation, script)
    assert requests["HTTPObjects"] == requests["BotoObjects"] == (2 if recovers else 3)
    if recovers:
        assert outcomes["direct"] == outcomes["botocore"]
        assert not isinstance(outcomes["direct"], Exception)
    else:
        assert error_of(outcomes["direct"]) == error_of(outcomes["botocore"])
        assert error_of(outcomes["direct"])[2] == 500
    assert backoffs.direct == backoffs.botocore


@pytest.mark.parametrize(
    ("operation", "answer"),
    [
        (copy, ERRORS["no-such-key"]),
        (copy, ERRORS["slow-down"]),
        (abort_upload, Answer(404, s3_error("NoSuchUpload", "gone"))),
        (parts, Answer(404, s3_error("NoSuchUpload", "gone"))),
        (delete, ERRORS["access-denied"]),
        (complete_upload, ERRORS["garbage-500"]),
    ],
    ids=["copy-missing", "copy-slow-down", "abort_upload", "parts", "delete", "complete"],
)
async def test_their_error_answers_become_botocores_client_errors(
    scripted: ScriptedS3, operation: Operation, answer: Answer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert await client_errors(scripted, operation, answer)


async def test_the_body_of_a_large_part_is_sent_in_slices_never_joined() -> None:
    first, second = bytes(3 << 20), memoryview(bytearray(1 << 20))
    sent = s3objects._payload([first, second])
    assert sent is not None
    assert not isinstance(sent, bytes | bytearray | memoryview)
    slices = [piece async for piece in sent]
    assert [len(piece) for piece in slices] == [1 << 20] * 4
    # Each slice is a view of the piece it came from: no byte was copied.
    assert all(piece.obj is first for piece in slices[:3])
    assert slices[3].obj is second.obj


async def test_once_the_bucket_is_found_elsewhere_writes_go_through_botocore(
    scripted: ScriptedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    driver = driver_on(scripted.url)
    objects = await driver._objects()
    elsewhere = Answer(
        301, s3_error("PermanentRedirect", "elsewhere"), {"x-amz-bucket-region": "eu-west-1"}
    )
    scripted.script[:] = [elsewhere, COPIED, STARTED, Answer(200, xml(f"<DeleteResult {NS}/>"))]
    await objects.copy(SOURCE, KEY)
    assert await objects.start_upload(KEY) == UPLOAD_ID
    assert await objects.delete([KEY]) == []
    by_botocore = ["Botocore" in seen.headers["user-agent"] for seen in scripted.seen]
    assert by_botocore == [False, True, True, True], "the first answer, then botocore for all"
    await driver.close()
