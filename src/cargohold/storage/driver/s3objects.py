"""The S3 driver's requests, without botocore.

Every request the driver makes (GetObject, HeadObject and PutObject, the
listings, copies, deletes and the requests of a multipart upload) can skip
botocore: botocore spends about a millisecond of CPU on each call (event
hooks, response parsing, endpoint rules), ten times what the HTTP request
costs, and parsing a listing of a thousand names costs it ten more; and a
process that loads it holds S3's models, twenty-odd MiB. They go over one
aiohttp session of the driver's, signed by ``sigv4.py``, to where botocore
would send them, with the headers and bodies botocore sends, retried as
botocore's standard mode retries, and their failures become the
``ClientError`` botocore would raise. Presigned URLs for a configured
``regionendpoint`` are signed here too. Presigned URLs for AWS's own
endpoints (which botocore presigns for the global one) stay on aiobotocore,
and so does everything when the configuration asks for what only botocore
does (``v4auth: false``) or the bucket turns out to be in another region.

Where botocore would send them: for a path-style S3-compatible server
(``regionendpoint`` with ``forcepathstyle``) that is the endpoint followed by
the bucket (``path_style``), and neither botocore nor its models are ever
loaded; anywhere else botocore's endpoint rules decide, asked once (``probe``).

A GetObject body is handed on in the pieces its socket gave, ``RECEIVE``
bytes at most, never joined into pieces of a size: a streamed pull relays
them to its client as they are. A body sent is ``Pieces`` too, sent one
after another and never joined: a writer's part is the pieces it was
written in.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import hashlib
import http.client
import io
import logging
import random
import re
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast
from urllib.parse import unquote_plus, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import aiohttp
from botocore.exceptions import ClientError
from yarl import URL

from cargohold.socketbody import SocketBody
from cargohold.storage.driver import httpsocket, s3spans
from cargohold.storage.driver.base import READ_CHUNK
from cargohold.storage.driver.sigv4 import (
    EMPTY_SHA256,
    Credentials,
    Signer,
    canonical_query,
    uri_encode,
)

#: The lean path's requests, at debug (``storage.s3.loglevel``).
log = logging.getLogger("cargohold.s3")

#: A body as the pieces it came in, sent one after another, never joined.
Pieces = Sequence[bytes | bytearray | memoryview]

_T = TypeVar("_T")

#: Runs a blocking call on the driver's threads (``StorageDriver.in_thread``).
InThread = Callable[[Callable[[Pieces], str], Pieces], Awaitable[str]]

if TYPE_CHECKING:
    from botocore.awsrequest import AWSPreparedRequest
    from botocore.exceptions import _ClientErrorResponseError, _ClientErrorResponseTypeDef
    from types_aiobotocore_s3 import S3Client

MiB = 1 << 20

#: Total attempts of a request when neither AWS_MAX_ATTEMPTS nor the shared config sets it.
ATTEMPTS = 3
#: Seconds an idle pooled connection is kept: AWS closes them after 20 (aiobotocore keeps 12).
KEEPALIVE = 12
#: What one read of a GetObject body from its socket asks for (asyncio's own is 256 KiB), and
#: what aiohttp buffers of a body before it stops reading the socket: a reader's chunk. Every
#: piece received costs a pass through aiohttp's parser and two turns of the event loop: at
#: 256 KiB a piece, a streamed pull took 1.4 times the CPU per byte.
RECEIVE = READ_CHUNK
#: Bodies up to this size go to aiohttp whole and are hashed in the loop; larger ones in slices
#: (see ``body``) and hashed in a thread.
_INLINE_BODY = MiB
_META = "x-amz-meta-"
# What botocore's standard retry mode retries besides transport failures and 500/502/503/504.
_TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
)
_TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
_THROTTLED_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
TRANSPORT_FAILURES = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
#: The namespace of S3's XML, in the bodies sent.
_XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
#: Query parameters without a value that name what a request is about.
_SUBRESOURCES = frozenset({"uploads", "delete"})
_UPLOADS = {"uploads": ""}
_PROBE_KEY = "~cargohold-probe"  # never stored: the probe is never sent
_CREDENTIAL_SCOPE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request"
)


@dataclass(frozen=True, slots=True)
class Head:
    """What HeadObject tells the driver."""

    size: int
    modified: datetime
    #: The object's user metadata (``x-amz-meta-*``), by lower-case name.
    metadata: Mapping[str, str] = field(default_factory=dict)
    #: The ETag, quotes included, as a copy's ``x-amz-copy-source-if-match`` takes it.
    etag: str = ""


@dataclass(frozen=True, slots=True)
class Listed:
    """One page of a ListObjectsV2: the objects and the common prefixes, keys as stored."""

    #: (key, size, last modified) of each object, in S3's order.
    objects: list[tuple[str, int, datetime]]
    #: Each common prefix, ending with the delimiter.
    prefixes: list[str]
    #: Where the next page starts; None on the last page.
    next_token: str | None


@dataclass(frozen=True, slots=True)
class Part:
    """One part of a multipart upload, as ListParts and CompleteMultipartUpload name it."""

    number: int
    etag: str
    size: int


#: Where requests go: the origin (``scheme://host[:port]``), the path before a key, and
#: the signer of the region they are signed for.
Location = tuple[str, str, Signer]


class Download(Protocol):
    """An object's content as it arrives (GetObject); ``close`` when done with it."""

    @property
    def metadata(self) -> Mapping[str, str]:
        """The object's user metadata (``x-amz-meta-*``), by lower-case name."""
        ...

    async def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes, as they arrive (all that is left when negative); ``b""`` at
        the end."""
        ...

    def socket_body(self, most: int) -> SocketBody | None:
        """The rest of the content with the socket it arrives on, before any read; or None
        (``socketbody.InSocket``)."""
        ...

    def close(self) -> None: ...


class Objects(Protocol):
    """The requests of every pull and push. Failures raise botocore's ``ClientError``
    (the service answered) or a transport error, for ``S3Driver._errors``."""

    async def get(self, key: str, offset: int = 0) -> Download: ...

    async def head(self, key: str) -> Head: ...

    async def put(self, key: str, content: Pieces, metadata: Mapping[str, str]) -> None:
        """Create or replace the object, with the driver's object arguments."""
        ...

    async def copy(self, source: str, key: str, if_match: str = "") -> None:
        """Copy the object at ``source`` to ``key`` (CopyObject), with the object arguments;
        with ``if_match``, only while ``source``'s ETag is that (``PreconditionFailed``)."""
        ...

    async def delete(self, keys: Sequence[str]) -> builtins.list[tuple[str, str]]:
        """Delete up to 1000 keys at once (DeleteObjects, quiet): (key, error code) of each
        that S3 could not delete; a key that is not there counts as deleted."""
        ...

    async def start_upload(self, key: str) -> str:
        """A new multipart upload at ``key``, with the object arguments: its upload id."""
        ...

    async def upload_part(self, key: str, upload_id: str, number: int, content: Pieces) -> str:
        """Part ``number`` of the upload: its ETag."""
        ...

    async def copy_part(
        self,
        source: str,
        key: str,
        upload_id: str,
        number: int,
        first: int,
        last: int,
        if_match: str = "",
    ) -> str:
        """Part ``number`` of the upload, copied from bytes ``first``-``last`` (inclusive) of
        ``source`` (UploadPartCopy), only while its ETag is ``if_match`` if given: its ETag."""
        ...

    async def complete_upload(self, key: str, upload_id: str, parts: Sequence[Part]) -> None:
        """The object at ``key`` becomes the upload's ``parts``, in order."""
        ...

    async def abort_upload(self, key: str, upload_id: str) -> None: ...

    async def parts(self, key: str, upload_id: str) -> builtins.list[Part]:
        """Every part of the upload (ListParts, all pages), by number."""
        ...

    async def uploads(self, prefix: str) -> builtins.list[tuple[str, str]]:
        """(key, upload id) of every upload in progress under ``prefix`` (all pages)."""
        ...

    async def list(
        self,
        prefix: str,
        delimiter: str,
        max_keys: int,
        token: str | None,
        start_after: str | None = None,
    ) -> Listed:
        """One page of the keys under ``prefix`` (after ``start_after``, if given); ``token``
        from the page before, if any."""
        ...

    async def bucket(self) -> None:
        """Whether the bucket is there to be used (HeadBucket): raises if not."""
        ...

    async def presign(self, key: str, method: str, expires: int) -> str:
        """A URL that GETs or HEADs the object for ``expires`` seconds, signed with SigV4."""
        ...

    async def close(self) -> None: ...


class BotoObjects:
    """The operations on aiobotocore: where the HTTP path does not go."""

    def __init__(self, client: S3Client, bucket: str, object_args: dict[str, Any]) -> None:
        self._client = client
        self._bucket = bucket
        self._object_args = object_args

    async def get(self, key: str, offset: int = 0) -> Download:
        ranged: dict[str, Any] = {"Range": f"bytes={offset}-"} if offset else {}
        response = await self._client.get_object(Bucket=self._bucket, Key=key, **ranged)
        return _BotoDownload(response.get("Metadata", {}), response["Body"])

    async def head(self, key: str) -> Head:
        response = await self._client.head_object(Bucket=self._bucket, Key=key)
        metadata = {name.lower(): value for name, value in response.get("Metadata", {}).items()}
        return Head(
            response["ContentLength"], response["LastModified"], metadata, response.get("ETag", "")
        )

    async def put(self, key: str, content: Pieces, metadata: Mapping[str, str]) -> None:
        await self._client.put_object(
            Bucket=self._bucket,
            Key=key,
            Body=sliced_body(b"".join(content)),
            Metadata=dict(metadata),
            **self._object_args,
        )

    async def copy(self, source: str, key: str, if_match: str = "") -> None:
        await self._client.copy_object(
            Bucket=self._bucket,
            Key=key,
            CopySource={"Bucket": self._bucket, "Key": source},
            **_if_match(if_match),
            **self._object_args,
        )

    async def delete(self, keys: Sequence[str]) -> builtins.list[tuple[str, str]]:
        result = await self._client.delete_objects(
            Bucket=self._bucket,
            Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
        )
        return [(error.get("Key", ""), error.get("Code", "")) for error in result.get("Errors", [])]

    async def start_upload(self, key: str) -> str:
        upload = await self._client.create_multipart_upload(
            Bucket=self._bucket, Key=key, **self._object_args
        )
        return upload["UploadId"]

    async def upload_part(self, key: str, upload_id: str, number: int, content: Pieces) -> str:
        result = await self._client.upload_part(
            Bucket=self._bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=sliced_body(b"".join(content)),
        )
        return result["ETag"]

    async def copy_part(
        self,
        source: str,
        key: str,
        upload_id: str,
        number: int,
        first: int,
        last: int,
        if_match: str = "",
    ) -> str:
        result = await self._client.upload_part_copy(
            Bucket=self._bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            CopySource={"Bucket": self._bucket, "Key": source},
            CopySourceRange=f"bytes={first}-{last}",
            **_if_match(if_match),
        )
        return result["CopyPartResult"]["ETag"]

    async def complete_upload(self, key: str, upload_id: str, parts: Sequence[Part]) -> None:
        await self._client.complete_multipart_upload(
            Bucket=self._bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": part.number, "ETag": part.etag} for part in parts]
            },
        )

    async def abort_upload(self, key: str, upload_id: str) -> None:
        await self._client.abort_multipart_upload(Bucket=self._bucket, Key=key, UploadId=upload_id)

    async def parts(self, key: str, upload_id: str) -> builtins.list[Part]:
        found: builtins.list[Part] = []
        pages = self._client.get_paginator("list_parts").paginate(
            Bucket=self._bucket, Key=key, UploadId=upload_id
        )
        async for page in pages:
            for part in page.get("Parts", []):
                found.append(Part(part["PartNumber"], part["ETag"], part["Size"]))
        return sorted(found, key=lambda part: part.number)

    async def uploads(self, prefix: str) -> builtins.list[tuple[str, str]]:
        found: builtins.list[tuple[str, str]] = []
        pages = self._client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self._bucket, Prefix=prefix
        )
        async for page in pages:
            for upload in page.get("Uploads", []):
                found.append((upload.get("Key", ""), upload.get("UploadId", "")))
        return found

    async def list(
        self,
        prefix: str,
        delimiter: str,
        max_keys: int,
        token: str | None,
        start_after: str | None = None,
    ) -> Listed:
        more: dict[str, Any] = {"ContinuationToken": token} if token else {}
        if start_after:
            more["StartAfter"] = start_after
        if delimiter:
            more["Delimiter"] = delimiter
        page = await self._client.list_objects_v2(
            Bucket=self._bucket, Prefix=prefix, MaxKeys=max_keys, **more
        )
        return Listed(
            [(o["Key"], o["Size"], o["LastModified"]) for o in page.get("Contents", [])],
            [common["Prefix"] for common in page.get("CommonPrefixes", [])],
            page.get("NextContinuationToken") if page.get("IsTruncated") else None,
        )

    async def bucket(self) -> None:
        await self._client.head_bucket(Bucket=self._bucket)

    async def presign(self, key: str, method: str, expires: int) -> str:
        operation = {"GET": "get_object", "HEAD": "head_object"}[method]
        return await self._client.generate_presigned_url(
            operation, Params={"Bucket": self._bucket, "Key": key}, ExpiresIn=expires
        )

    async def close(self) -> None:
        pass  # the client is the driver's


class _BotoDownload:
    def __init__(self, metadata: Mapping[str, str], body: Any) -> None:
        self.metadata = {name.lower(): value for name, value in metadata.items()}
        self._body = body

    async def read(self, size: int = -1) -> bytes:
        piece: bytes = await self._body.read(size if size >= 0 else None)
        return piece

    def socket_body(self, most: int) -> SocketBody | None:
        return None  # botocore's body reads its socket itself

    def close(self) -> None:
        self._body.close()


class _WrongRegion(Exception):
    """S3's answer may mean that the bucket is in another region: botocore knows what to do."""


class HTTPObjects:
    """Every operation of ``Objects`` over one aiohttp session, signed here.

    They go where botocore sends them (``path_style``, ``probe``), with the headers botocore
    sends, and are retried as botocore's standard retry mode does (attempts,
    what is retried, backoff, retry quota); an error answer becomes the
    ``ClientError`` botocore would raise. An answer that botocore takes for a
    wrong region hands the request to ``botocore`` (made when first asked for),
    which finds the bucket's region and follows it there; once S3 names another
    region, every request goes through ``botocore``.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        bucket: str,
        origin: str,
        prefix: str,
        signer: Signer,
        credentials: Callable[[], Awaitable[Credentials]],
        attempts: int,
        put_headers: Mapping[str, str],
        useragent: str,
        proxy: str | None,
        botocore: Callable[[], Awaitable[Objects]],
        in_thread: InThread,
        presigns: bool,
    ) -> None:
        self._in_thread = in_thread
        self._session = session
        self._bucket = bucket
        self._origin = origin  # scheme://host[:port]
        self._prefix = prefix  # the path before the key: "/" or "/<bucket>/"
        self._host = host_header(origin)
        self._signer = signer
        self._credentials = credentials
        self._attempts = max(1, attempts)
        self._put_headers = dict(put_headers)
        self._unsigned = {"user-agent": useragent, "accept-encoding": "identity"}
        self._proxy = proxy
        self._botocore = botocore
        # Whether presigned URLs go where requests go. To AWS's own endpoints botocore
        # presigns for the global one (bucket.s3.amazonaws.com): it presigns those itself.
        self._presigns = presigns
        self._redirected = False
        self._quota = _RetryQuota()

    async def get(self, key: str, offset: int = 0) -> Download:
        async def http() -> Download:
            headers = {"range": f"bytes={offset}-"} if offset else {}
            return _HTTPDownload(await self._send("GetObject", "GET", key, headers))

        return await self._either(http, lambda objects: objects.get(key, offset))

    async def head(self, key: str) -> Head:
        async def http() -> Head:
            response = await self._send("HeadObject", "HEAD", key, {})
            response.release()
            return Head(
                int(response.headers["Content-Length"]),
                _http_date(response.headers["Last-Modified"]),
                _metadata(response.headers),
                response.headers.get("ETag", ""),
            )

        return await self._either(http, lambda objects: objects.head(key))

    async def put(self, key: str, content: Pieces, metadata: Mapping[str, str]) -> None:
        async def http() -> None:
            headers = dict(self._put_headers)
            headers.update((_META + name, value) for name, value in metadata.items())
            (await self._send("PutObject", "PUT", key, headers, content)).release()

        await self._either(http, lambda objects: objects.put(key, content, metadata))

    async def list(
        self,
        prefix: str,
        delimiter: str,
        max_keys: int,
        token: str | None,
        start_after: str | None = None,
    ) -> Listed:
        async def http() -> Listed:
            query = {
                "list-type": "2",
                "prefix": prefix,
                "max-keys": str(max_keys),
                # As botocore asks: keys travel URL-encoded, so that any byte survives XML.
                "encoding-type": "url",
            }
            if delimiter:
                query["delimiter"] = delimiter
            if token:
                query["continuation-token"] = token
            if start_after:
                query["start-after"] = start_after
            return listed(*await self._xml("ListObjectsV2", "GET", "", {}, query=query))

        return await self._either(
            http, lambda objects: objects.list(prefix, delimiter, max_keys, token, start_after)
        )

    async def bucket(self) -> None:
        async def http() -> None:
            (await self._send("HeadBucket", "HEAD", "", {})).release()

        await self._either(http, lambda objects: objects.bucket())

    async def copy(self, source: str, key: str, if_match: str = "") -> None:
        async def http() -> None:
            headers = {**self._put_headers, **self._copy_headers(source, if_match)}
            await self._xml("CopyObject", "PUT", key, headers)

        await self._either(http, lambda objects: objects.copy(source, key, if_match))

    async def delete(self, keys: Sequence[str]) -> builtins.list[tuple[str, str]]:
        async def http() -> builtins.list[tuple[str, str]]:
            objects = "".join(f"<Object><Key>{escape(key)}</Key></Object>" for key in keys)
            body = f'<Delete xmlns="{_XMLNS}">{objects}<Quiet>true</Quiet></Delete>'.encode()
            # S3 demands a checksum of a DeleteObjects: botocore sends a CRC32.
            checksum = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
            headers = {"x-amz-checksum-crc32": checksum, "x-amz-sdk-checksum-algorithm": "CRC32"}
            query = {"delete": ""}
            root, ns = await self._xml("DeleteObjects", "POST", "", headers, [body], query)
            return [
                (error.findtext(f"{ns}Key") or "", error.findtext(f"{ns}Code") or "")
                for error in root.iterfind(f"{ns}Error")
            ]

        return await self._either(http, lambda objects: objects.delete(keys))

    async def start_upload(self, key: str) -> str:
        async def http() -> str:
            headers = dict(self._put_headers)
            root, ns = await self._xml(
                "CreateMultipartUpload", "POST", key, headers, query=_UPLOADS
            )
            return root.findtext(f"{ns}UploadId") or ""

        return await self._either(http, lambda objects: objects.start_upload(key))

    async def upload_part(self, key: str, upload_id: str, number: int, content: Pieces) -> str:
        async def http() -> str:
            query = {"partNumber": str(number), "uploadId": upload_id}
            response = await self._send("UploadPart", "PUT", key, {}, content, query=query)
            response.release()
            return response.headers.get("ETag", "")

        return await self._either(
            http, lambda objects: objects.upload_part(key, upload_id, number, content)
        )

    async def copy_part(
        self,
        source: str,
        key: str,
        upload_id: str,
        number: int,
        first: int,
        last: int,
        if_match: str = "",
    ) -> str:
        async def http() -> str:
            headers = {
                **self._copy_headers(source, if_match),
                "x-amz-copy-source-range": f"bytes={first}-{last}",
            }
            query = {"partNumber": str(number), "uploadId": upload_id}
            root, ns = await self._xml("UploadPartCopy", "PUT", key, headers, query=query)
            return root.findtext(f"{ns}ETag") or ""

        return await self._either(
            http,
            lambda objects: objects.copy_part(
                source, key, upload_id, number, first, last, if_match
            ),
        )

    async def complete_upload(self, key: str, upload_id: str, parts: Sequence[Part]) -> None:
        async def http() -> None:
            named = "".join(
                f"<Part><PartNumber>{part.number}</PartNumber><ETag>{escape(part.etag)}</ETag></Part>"
                for part in parts
            )
            body = f'<CompleteMultipartUpload xmlns="{_XMLNS}">{named}</CompleteMultipartUpload>'
            query = {"uploadId": upload_id}
            await self._xml("CompleteMultipartUpload", "POST", key, {}, [body.encode()], query)

        await self._either(http, lambda objects: objects.complete_upload(key, upload_id, parts))

    async def abort_upload(self, key: str, upload_id: str) -> None:
        async def http() -> None:
            query = {"uploadId": upload_id}
            (await self._send("AbortMultipartUpload", "DELETE", key, {}, query=query)).release()

        await self._either(http, lambda objects: objects.abort_upload(key, upload_id))

    async def parts(self, key: str, upload_id: str) -> builtins.list[Part]:
        async def http() -> builtins.list[Part]:
            found: builtins.list[Part] = []
            query = {"uploadId": upload_id}
            while True:
                root, ns = await self._xml("ListParts", "GET", key, {}, query=query)
                found.extend(
                    Part(
                        int(part.findtext(f"{ns}PartNumber") or 0),
                        part.findtext(f"{ns}ETag") or "",
                        int(part.findtext(f"{ns}Size") or 0),
                    )
                    for part in root.iterfind(f"{ns}Part")
                )
                marker = root.findtext(f"{ns}NextPartNumberMarker")
                if not _truncated(root, ns) or not marker:
                    return sorted(found, key=lambda part: part.number)
                query = {"uploadId": upload_id, "part-number-marker": marker}

        return await self._either(http, lambda objects: objects.parts(key, upload_id))

    async def uploads(self, prefix: str) -> builtins.list[tuple[str, str]]:
        async def http() -> builtins.list[tuple[str, str]]:
            found: builtins.list[tuple[str, str]] = []
            query = {**_UPLOADS, "prefix": prefix}
            while True:
                root, ns = await self._xml("ListMultipartUploads", "GET", "", {}, query=query)
                found.extend(
                    (upload.findtext(f"{ns}Key") or "", upload.findtext(f"{ns}UploadId") or "")
                    for upload in root.iterfind(f"{ns}Upload")
                )
                key_marker = root.findtext(f"{ns}NextKeyMarker")
                if not _truncated(root, ns) or not key_marker:
                    return found
                query = {**_UPLOADS, "prefix": prefix, "key-marker": key_marker}
                if id_marker := root.findtext(f"{ns}NextUploadIdMarker"):
                    query["upload-id-marker"] = id_marker

        return await self._either(http, lambda objects: objects.uploads(prefix))

    async def _either(
        self, http: Callable[[], Awaitable[_T]], botocore: Callable[[Objects], Awaitable[_T]]
    ) -> _T:
        """Over HTTP, unless the bucket is elsewhere: then through botocore, which follows."""
        if not self._redirected:
            try:
                return await http()
            except _WrongRegion:
                pass
        return await botocore(await self._botocore())

    def _copy_headers(self, source: str, if_match: str) -> dict[str, str]:
        """``x-amz-copy-source`` (the bucket and the key, encoded as botocore encodes them),
        and with ``if_match`` the ETag the source must still have."""
        headers = {"x-amz-copy-source": f"{self._bucket}/{uri_encode(source, keep_slash=True)}"}
        if if_match:
            headers["x-amz-copy-source-if-match"] = if_match
        return headers

    async def presign(self, key: str, method: str, expires: int) -> str:
        if self._redirected or not self._presigns:
            return await (await self._botocore()).presign(key, method, expires)
        path = self.path(key)
        credentials = await self._credentials()
        query = self._signer.presign(method, path, self._host, credentials, expires)
        return f"{self._origin}{path}?{query}"

    async def close(self) -> None:
        await self._session.close()

    def path(self, key: str) -> str:
        """The object's path in the request (and in the canonical request); the bucket's
        for ``""``."""
        if not key:
            return self._prefix.rstrip("/") or "/"  # "/bucket", as botocore sends a listing
        return self._prefix + uri_encode(key, keep_slash=True)

    @property
    def origin(self) -> str:
        return self._origin

    @property
    def region(self) -> str:
        return self._signer.region

    async def _sha256(self, content: Pieces) -> str:
        if _size(content) <= _INLINE_BODY:
            return _hex_sha256(content)
        # hashlib lets go of the GIL: a large body does not stall the loop while it is hashed.
        return await self._in_thread(_hex_sha256, content)

    async def _xml(
        self,
        operation: str,
        method: str,
        key: str,
        headers: dict[str, str],
        content: Pieces | None = None,
        query: Mapping[str, str] | None = None,
    ) -> tuple[ElementTree.Element, str]:
        """A successful answer that S3 writes in XML: its root and namespace (``_parsed``),
        parsed once, where ``_send`` checked it."""
        answer: builtins.list[tuple[ElementTree.Element, str]] = []
        await self._send(operation, method, key, headers, content, query=query, parsed=answer)
        return answer[0]

    async def _send(
        self,
        operation: str,
        method: str,
        key: str,
        headers: dict[str, str],
        content: Pieces | None = None,
        *,
        query: Mapping[str, str] | None = None,
        parsed: builtins.list[tuple[ElementTree.Element, str]] | None = None,
    ) -> aiohttp.ClientResponse:
        """A successful response, its body unread unless ``parsed``; the caller releases it.

        ``parsed``: the body is read, parsed as XML and checked, as botocore
        checks the answer of an operation that has no streamed output, and its
        root and namespace are appended. S3 may answer 200 and say in the body
        that it failed (a CopyObject or a CompleteMultipartUpload that failed
        after it started answering), or the body may break off: either is a 500
        then, and retried.
        """
        span = s3spans.start(operation, method)
        args = (operation, method, key, headers, content, query, parsed)
        if span is None:
            return await self._attempts_of(*args)
        try:
            response = await self._attempts_of(*args)
        except BaseException as exc:
            status = None
            if isinstance(exc, ClientError):
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            s3spans.finish(span, status, exc)
            raise
        s3spans.finish(span, response.status)
        return response

    async def _attempts_of(
        self,
        operation: str,
        method: str,
        key: str,
        headers: dict[str, str],
        content: Pieces | None,
        query: Mapping[str, str] | None,
        parsed: builtins.list[tuple[ElementTree.Element, str]] | None,
    ) -> aiohttp.ClientResponse:
        path = self.path(key)
        canonical = canonical_query(query) if query else ""
        # Sent as signed: the canonical query string is a valid, fully encoded one.
        sent = f"?{_sent_query(canonical)}" if canonical else ""
        url = URL(self._origin + path + sent, encoded=True)
        headers["host"] = self._host
        payload_hash = EMPTY_SHA256 if content is None else await self._sha256(content)
        unsigned = dict(self._unsigned)
        if content is not None:
            unsigned["content-length"] = str(_size(content))
        attempt = drawn = 0  # drawn: from the retry quota, by the last retry
        while True:
            attempt += 1
            credentials = await self._credentials()
            signed = self._signer.sign(
                method, path, headers, credentials, query=canonical, payload_hash=payload_hash
            )
            signed.update(unsigned)
            try:
                response = await self._session.request(
                    method,
                    url,
                    headers=signed,
                    data=_payload(content),
                    proxy=self._proxy,
                    allow_redirects=False,
                )
                body = (
                    await response.read() if parsed is not None and response.status < 300 else None
                )
            except TRANSPORT_FAILURES as exc:
                log.debug("%s %s: %s (attempt %d)", operation, path, exc, attempt)
                timeout = isinstance(exc, asyncio.TimeoutError)
                drawn = self._quota.timeout if timeout else self._quota.error
                if not self._retry(attempt, drawn):
                    raise
                await asyncio.sleep(backoff(attempt))
                continue
            log.debug("%s %s: %d (attempt %d)", operation, path, response.status, attempt)
            answer = None if body is None else _answer_of(body)
            if response.status < 300 and (body is None or answer is not None):
                self._quota.succeeded(drawn)
                if parsed is not None and answer is not None:
                    parsed.append(answer)
                return response
            if body is not None:
                error = _error_of(operation, 500, response.headers, body)
            else:
                error = await _error(operation, method, response)
            if _maybe_wrong_region(error):
                self._redirected = _elsewhere(error, self._signer.region)
                raise _WrongRegion
            code = error_code(error)
            retryable = (
                code in _THROTTLED_CODES
                or code in _TRANSIENT_CODES
                or error_status(error) in _TRANSIENT_STATUS
            )
            drawn = self._quota.error
            if not (retryable and self._retry(attempt, drawn)):
                raise error
            await asyncio.sleep(backoff(attempt))

    def _retry(self, attempt: int, cost: int) -> bool:
        return attempt < self._attempts and self._quota.acquire(cost)


class _RetryQuota:
    """botocore's retry quota: retries draw on a bucket of 500, successes refill it.

    While an object store keeps failing, requests soon stop being retried, so
    retries do not multiply the load on it.
    """

    error = 5
    timeout = 10
    _capacity = 500

    def __init__(self) -> None:
        self._available = self._capacity

    def acquire(self, cost: int) -> bool:
        if cost > self._available:
            return False
        self._available -= cost
        return True

    def succeeded(self, drawn: int) -> None:
        """A request succeeded: it gives back what its last retry drew, or 1 if not retried."""
        self._available = min(self._capacity, self._available + (drawn or 1))


def _if_match(etag: str) -> dict[str, Any]:
    """botocore's argument for ``x-amz-copy-source-if-match``, when there is a condition."""
    return {"CopySourceIfMatch": etag} if etag else {}


def _metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """The user metadata in an answer's headers (``x-amz-meta-*``), by lower-case name."""
    return {
        name.lower()[len(_META) :]: value
        for name, value in headers.items()
        if name.lower().startswith(_META)
    }


class _HTTPDownload:
    """The body in the pieces its socket gave, never joined: joining them into chunks of a
    size copied every byte of a pull once more, for nothing the caller needs."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        #: The rest of a piece larger than the last read asked for.
        self._left = b""
        self._read = False
        _receive_whole_chunks(response)

    @property
    def metadata(self) -> dict[str, str]:
        return _metadata(self._response.headers)

    async def read(self, size: int = -1) -> bytes:
        self._read = True
        if size < 0:
            left, self._left = self._left, b""
            return left + await self._response.read()  # and gives the connection back
        piece = self._left or await self._piece()
        if len(piece) <= size:
            self._left = b""
            return piece
        self._left = piece[size:]
        return piece[:size]

    def socket_body(self, most: int) -> SocketBody | None:
        return None if self._read else httpsocket.socket_body(self._response, most)

    async def _piece(self) -> bytes:
        """The next piece as received; ``b""`` at the end."""
        content = self._response.content
        while True:
            # Empty before the end only at a chunk boundary of a chunked body.
            piece, _ = await content.readchunk()
            if piece or content.at_eof():
                return piece

    def close(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # the connection goes back to the pool
        else:
            self._response.close()  # unread bytes are in the way: drop the connection


def _receive_whole_chunks(response: aiohttp.ClientResponse) -> None:
    """Have the response's connection read its socket ``RECEIVE`` bytes at a time.

    asyncio's socket transport reads at most its ``max_size`` per call, an
    attribute it gives no way to set; a transport without it (TLS, another loop)
    reads as it does.
    """
    connection = response.connection
    transport: Any = connection.transport if connection is not None else None
    if transport is not None and getattr(transport, "max_size", RECEIVE) < RECEIVE:
        transport.max_size = RECEIVE


async def probe(client: S3Client, bucket: str) -> Location | None:
    """Where botocore sends a GetObject of ``bucket``, and for which region it signs.

    botocore's endpoint rules weigh ``regionendpoint``, ``region``,
    ``forcepathstyle``, ``secure``, dual-stack, FIPS, acceleration, the bucket's
    name and the AWS_* settings; asking them once is the one way to agree with
    them. The request is stopped before it is sent. Returns the origin, the path
    before the key, and a signer; None when botocore would not sign with SigV4.
    """
    probed: list[AWSPreparedRequest] = []

    def stop(request: AWSPreparedRequest, **_: Any) -> None:
        if request.url is not None and request.url.endswith(uri_encode(_PROBE_KEY)):
            probed.append(request)
            raise _Probed

    event = "before-send.s3.GetObject"
    client.meta.events.register_first(event, stop, unique_id="cargohold-probe")
    try:
        with s3spans.untraced():  # it is stopped before it is sent: no request to trace
            await client.get_object(Bucket=bucket, Key=_PROBE_KEY)
    except _Probed:
        pass
    except ClientError:
        return None  # sent after all: the key is not where probe looks for it
    finally:
        client.meta.events.unregister(event, unique_id="cargohold-probe")
    if not probed or probed[0].url is None:
        return None
    request = probed[0]
    assert request.url is not None
    authorization = request.headers.get("Authorization", "")
    if isinstance(authorization, bytes):
        authorization = authorization.decode()
    scope = _CREDENTIAL_SCOPE.match(str(authorization))
    parts = urlsplit(request.url[: -len(uri_encode(_PROBE_KEY))])
    unexpected = {name.lower() for name in request.headers} - _PROBE_HEADERS
    if scope is None or parts.query or parts.fragment or unexpected:
        return None
    return f"{parts.scheme}://{parts.netloc}", parts.path, Signer(scope.group(1), scope.group(2))


# The headers of botocore's probe GetObject that the HTTP path sends as well (others, such
# as an S3 Express session token, it does not know how to send: botocore keeps those).
_PROBE_HEADERS = frozenset(
    {
        "authorization",
        "x-amz-date",
        "x-amz-content-sha256",
        "x-amz-security-token",
        "user-agent",
        "amz-sdk-invocation-id",
        "amz-sdk-request",
        "host",
    }
)


class _Probed(Exception):
    """Stops botocore's probe request before it is sent."""


def host_header(origin: str) -> str:
    """The Host of requests to ``origin``: lower case, without a default port, as signed."""
    parts = urlsplit(origin)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return host if parts.port in (None, default) else f"{host}:{parts.port}"


def path_style(endpoint: str, bucket: str, region: str) -> Location:
    """Where botocore sends a path-style request to the S3-compatible server at ``endpoint``:
    the origin, the path before the key, and a signer (``probe``'s answer, without botocore).

    The endpoint's own path, if any, comes before the bucket; its host and port
    stay as written, as botocore keeps them (``host_header`` is what is signed).
    """
    parts = urlsplit(endpoint)
    origin = f"{parts.scheme}://{parts.netloc}"
    prefix = f"{parts.path.rstrip('/')}/{uri_encode(bucket)}/"
    return origin, prefix, Signer(region)


def verifying_context(ca_bundle: str | bool) -> ssl.SSLContext:
    if isinstance(ca_bundle, str):
        return ssl.create_default_context(cafile=ca_bundle)
    from botocore.httpsession import get_cert_path  # botocore's own bundle, as it verifies

    return ssl.create_default_context(cafile=get_cert_path(True))


def put_headers(object_args: Mapping[str, Any]) -> dict[str, str]:
    """``_object_args`` as the headers of a PutObject."""
    names = {
        "ContentType": "content-type",
        "ACL": "x-amz-acl",
        "ServerSideEncryption": "x-amz-server-side-encryption",
        "SSEKMSKeyId": "x-amz-server-side-encryption-aws-kms-key-id",
        "StorageClass": "x-amz-storage-class",
    }
    return {names[name]: str(value) for name, value in object_args.items()}


def _payload(
    content: Pieces | None,
) -> bytes | bytearray | memoryview | AsyncIterator[memoryview] | None:
    """A request body for aiohttp, new for each attempt (a sent body is used up).

    A large one goes in slices of at most ``_INLINE_BODY``, between other
    tasks: aiohttp writes raw bytes in one go, warning that this stalls the
    event loop, and the socket transport copies whatever the socket does not
    take at once.
    """
    if content is None:
        return None
    if len(content) == 1 and _size(content) <= _INLINE_BODY:
        return content[0]
    if _size(content) <= _INLINE_BODY:
        return b"".join(content)
    return _slices(content)


async def _slices(content: Pieces) -> AsyncIterator[memoryview]:
    for piece in content:
        view = memoryview(piece).cast("B")
        for at in range(0, len(view), _INLINE_BODY):
            yield view[at : at + _INLINE_BODY]


def _size(content: Pieces) -> int:
    return sum(memoryview(piece).nbytes for piece in content)


def _hex_sha256(content: Pieces) -> str:
    digest = hashlib.sha256()
    for piece in content:
        digest.update(piece)
    return digest.hexdigest()


def _sent_query(canonical: str) -> str:
    """The query as botocore sends it: a subresource without a value (``?uploads``,
    ``?delete``) bare, where the canonical query string has ``uploads=``."""
    return "&".join(
        pair[:-1] if pair[:-1] in _SUBRESOURCES and pair.endswith("=") else pair
        for pair in canonical.split("&")
    )


def _answer_of(body: bytes) -> tuple[ElementTree.Element, str] | None:
    """A 200 answer's body parsed (``_parsed``); None where it says the request failed or
    breaks off (botocore's test). An empty body is an empty answer."""
    try:
        root, namespace = _parsed(body or b"<Empty/>")
    except ElementTree.ParseError:
        return None
    return None if root.tag == "Error" else (root, namespace)


def _parsed(body: bytes) -> tuple[ElementTree.Element, str]:
    """The root of an XML answer, and the namespace its names are in (``{...}`` or ``""``)."""
    root = ElementTree.fromstring(body)
    return root, root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""


def _truncated(root: ElementTree.Element, namespace: str) -> bool:
    return (root.findtext(f"{namespace}IsTruncated") or "").lower() == "true"


def backoff(attempt: int) -> float:
    """Seconds before the next attempt, as botocore's standard mode: jittered, doubling, <= 20."""
    return random.random() * min(2.0 ** (attempt - 1), 20.0)


def _maybe_wrong_region(error: ClientError) -> bool:
    """Whether botocore's S3 region redirector looks into this answer."""
    code, status = error_code(error), error_status(error)
    return (
        status in (301, 302, 307)
        or code in ("PermanentRedirect", "IllegalLocationConstraintException")
        or (code == "AuthorizationHeaderMalformed" and "Region" in error.response["Error"])
        or (code in ("301", "400") and error.operation_name == "HeadObject")
    )


def _elsewhere(error: ClientError, region: str) -> bool:
    """Whether the answer says the bucket is not in ``region``."""
    named = error.response["ResponseMetadata"].get("HTTPHeaders", {}).get("x-amz-bucket-region")
    named = named or error.response["Error"].get("Region")
    return error_status(error) in (301, 302, 307) or named not in (None, region)


async def _error(operation: str, method: str, response: aiohttp.ClientResponse) -> ClientError:
    """The ``ClientError`` botocore makes of an error answer; reads and releases the response."""
    try:
        body = b"" if method == "HEAD" else await response.read()
    finally:
        response.release()
    return _error_of(operation, response.status, response.headers, body)


def _error_of(operation: str, status: int, headers: Mapping[str, str], body: bytes) -> ClientError:
    """The ``ClientError`` botocore makes of an answer of ``status`` with ``body``."""
    fields = {"Code": str(status), "Message": http.client.responses.get(status, "")}
    if body and not (status >= 500 and body.lstrip().startswith(b"<html>")):
        try:
            root = ElementTree.fromstring(body)
        except ElementTree.ParseError:
            pass
        else:
            # S3's <Error> is the root; other services wrap it. Anything else has no code.
            error = root if root.tag == "Error" else root.find("Error")
            fields = {"Code": "", "Message": ""}
            if error is not None:
                fields.update((child.tag, child.text or "") for child in error if not len(child))
                for field in ("RequestId", "HostId"):
                    fields.pop(field, None)
    parsed: _ClientErrorResponseTypeDef = {
        "Error": cast("_ClientErrorResponseError", fields),  # botocore keeps every field
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "HTTPHeaders": {name.lower(): value for name, value in headers.items()},
            "RequestId": headers.get("x-amz-request-id", ""),
            "HostId": headers.get("x-amz-id-2", ""),
            "RetryAttempts": 0,
        },
    }
    return ClientError(parsed, operation)


def listed(root: ElementTree.Element, namespace: str) -> Listed:
    """A ListObjectsV2 answer's page (``_parsed``), its keys decoded if S3 URL-encoded them."""
    decode = (root.findtext(f"{namespace}EncodingType") or "").lower() == "url"

    def key(text: str | None) -> str:
        return unquote_plus(text or "") if decode else text or ""

    objects = [
        (
            key(item.findtext(f"{namespace}Key")),
            int(item.findtext(f"{namespace}Size") or 0),
            datetime.fromisoformat(item.findtext(f"{namespace}LastModified") or ""),
        )
        for item in root.iterfind(f"{namespace}Contents")
    ]
    prefixes = [
        key(item.findtext(f"{namespace}Prefix"))
        for item in root.iterfind(f"{namespace}CommonPrefixes")
    ]
    token = (
        root.findtext(f"{namespace}NextContinuationToken") if _truncated(root, namespace) else None
    )
    return Listed(objects, prefixes, token or None)


def _http_date(value: str) -> datetime:
    """``Last-Modified`` (``Wed, 21 Oct 2015 07:28:00 GMT``) as an aware datetime."""
    parsed = parsedate_to_datetime(value)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def sliced_body(content: bytes | bytearray) -> io.BytesIO:
    # aiohttp sends a file object in slices between other tasks; raw bytes
    # over 1 MiB it writes in one go, warning that this stalls the event loop.
    return io.BytesIO(content)


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
