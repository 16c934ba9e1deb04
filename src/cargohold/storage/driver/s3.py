"""A driver on an S3 bucket (AWS or any S3-compatible server).

Layout, as Distribution's s3 driver has it: the file at ``/a/b`` is the object
with key ``<rootdirectory>/a/b`` (no leading ``/``). S3 has no directories: a
directory is a common prefix of keys, so it exists while something is below it,
and it has no modification time (``FileInfo.modtime`` is the epoch for them).

Writers, and how an upload resumes in another process. S3 cannot append, and
every part of a multipart upload but the last must be at least 5 MiB. So an
uncommitted writer's content lives in storage as two pieces:

- a multipart upload *at the file's own key*, whose parts (each at least
  5 MiB) hold the leading bytes; completing it is the commit, atomic and
  server-side however large the file;
- a *pending object*, the sibling ``<dir>/.~<leaf>.pending``, holding the
  bytes after the parts (fewer than 5 MiB) and, in its metadata, the upload's
  id and the offset it starts at.

``writer(path, append=True)`` reads the pending object and lists the upload's
parts back; it trusts the pending bytes only when they start where the parts
end, so a process that died between uploading a part and rewriting the pending
object leaves a consistent prefix, never duplicated bytes. A writer holds at
most one part (``chunksize``) in memory, in a mapping of its own that goes
back to the kernel once the part is sent (``_PartBuffer``). The pending name
contains ``~``,
which no valid driver path can, so ``list`` and ``walk`` hide it.

Bytes never travel through the driver to be copied: ``move`` is a CopyObject,
or above ``multipartcopythresholdsize`` parallel UploadPartCopy requests of
``multipartcopychunksize``; appending to committed content copies it into the
upload the same way. ``list`` and ``walk`` read one level per delimiter listing.

Every request goes through ``s3objects.py``, which sends it without
botocore's per-call cost (``Objects``). On a path-style S3-compatible server
(``forcepathstyle``) that needs no botocore client at all, so no process
loads the client or S3's models (a tenth of a second, twenty-odd MiB); where
botocore's endpoint rules decide, its client is made once to ask them, and
``v4auth: false`` keeps everything on it.
``delimited_lists`` is one ListObjectsV2 cut at any delimiter: on AWS the
catalog lists every repository folder with it, cut at ``/_``; S3-compatible
servers are walked a folder at a time (``DELIMITED_ON_COMPATIBLE`` says why).

``delete`` costs four requests for a file (a HEAD, two listings for what is
below it and for uploads, a DeleteObjects); ``batch_deletes`` deletes files
``LIST_MAX // 2`` to a DeleteObjects, each with its pending object.

Every provider error becomes a driver error (``errors.py``): a missing key is
``PathNotFound``; a refused, failed or unreachable request is
``StorageUnavailable`` with a short reason.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import mmap
import os
import ssl
import urllib.request
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp

# Only botocore's exceptions at import: the client and its models (a tenth of a second
# and twenty-odd MiB) are loaded when a request first needs them (``_s3``).
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from cargohold.errors import (
    ConfigError,
    FileChanged,
    InvalidOffset,
    PathNotFound,
    StorageDriverError,
    StorageUnavailable,
)
from cargohold.socketbody import Relayable
from cargohold.storage.driver import s3spans
from cargohold.storage.driver.base import (
    BatchDeletes,
    DelimitedLists,
    DelimitedPage,
    Descend,
    FileInfo,
    FileVersion,
    FileWriter,
    GuardedMoves,
    RedirectURLs,
    StorageDriver,
    join,
)
from cargohold.storage.driver.s3objects import (
    ATTEMPTS,
    KEEPALIVE,
    RECEIVE,
    TRANSPORT_FAILURES,
    BotoObjects,
    Download,
    Head,
    HTTPObjects,
    Location,
    Objects,
    Part,
    Pieces,
    error_code,
    error_status,
    path_style,
    probe,
    put_headers,
    verifying_context,
)
from cargohold.storage.driver.sigv4 import Credentials

if TYPE_CHECKING:
    from aiobotocore.config import AioConfig
    from aiobotocore.session import AioSession
    from types_aiobotocore_s3 import S3Client

MiB = 1 << 20
#: S3's smallest part, except for the last part of an upload.
MIN_PART = 5 * MiB
#: S3's largest part, and the largest object one CopyObject can copy.
MAX_PART = 5 << 30
#: The most keys one list or delete request handles.
LIST_MAX = 1000
#: Keys a delimited listing asks for: S3 answers at most ``LIST_MAX`` whatever is asked, and
#: SeaweedFS, which continues a listing cut at a delimiter other than ``/`` at the wrong
#: place, answers up to this many in one page.
DELIMITED_ASK = 65535
#: DeleteObjects requests ``delete_files`` has under way at once.
DELETE_CONCURRENCY = 4
#: The longest a SigV4 presigned URL may stay valid (7 days); it must be at least 1 s.
MAX_EXPIRY = 7 * 24 * 3600

_HIDDEN = "~"  # in every bookkeeping key; never in a valid driver path
_UPLOAD_ID = "cargohold-upload-id"  # pending-object metadata: the upload it follows
_OFFSET = "cargohold-offset"  # ...and the byte offset at which its content starts
_NO_TIME = datetime.fromtimestamp(0, UTC)  # directories have no times in S3
_CONTENT_TYPE = "application/octet-stream"  # what Distribution stores objects as

# NoSuchUpload: an upload completed or aborted elsewhere is gone like a deleted key.
_NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchUpload"})
_DENIED = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
    }
)
# Raised by the transport under botocore; BotoCoreError covers botocore's own wrappers.
_TRANSPORT_ERRORS = (BotoCoreError, *TRANSPORT_FAILURES)


def _pending_key(key: str) -> str:
    head, slash, leaf = key.rpartition("/")
    return f"{head}{slash}.{_HIDDEN}{leaf}.pending"


def _copy_ranges(size: int, chunk: int) -> list[tuple[int, int]]:
    """Inclusive byte ranges of ``chunk`` bytes covering ``size``.

    A remainder shorter than S3's minimum part is folded into the range before
    it, so every range is a valid non-final part when ``size >= MIN_PART``.
    """
    chunk = min(chunk, MAX_PART - MIN_PART)
    ranges, start = [], 0
    while start < size:
        end = min(start + chunk, size)
        if size - end < MIN_PART:
            end = size
        ranges.append((start, end - 1))
        start = end
    return ranges


@contextmanager
def _first_error() -> Iterator[None]:
    """Raise the first error of a task group as itself, for the error mapping."""
    try:
        yield
    except BaseExceptionGroup as group_error:
        raise group_error.exceptions[0] from None


async def _bounded(jobs: Iterable[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run ``jobs`` with at most ``limit`` at a time; the first failure cancels the rest."""
    pending = list(jobs)
    queue = iter(pending)

    async def worker() -> None:
        for job in queue:
            await job()

    with _first_error():
        async with asyncio.TaskGroup() as group:
            for _ in range(min(limit, len(pending))):
                group.create_task(worker())


class S3Driver(StorageDriver):
    """Distribution's ``s3`` storage driver; parameters are its configuration names."""

    #: Distribution's name for it, in errors, metric labels and spans (configured as ``s3``).
    name = "s3aws"

    def __init__(
        self,
        *,
        bucket: str,
        region: str = "",
        regionendpoint: str = "",
        accesskey: str = "",
        secretkey: str = "",
        sessiontoken: str = "",
        forcepathstyle: bool = False,
        encrypt: bool = False,
        keyid: str = "",
        secure: bool = True,
        skipverify: bool = False,
        v4auth: bool = True,
        chunksize: int = 10 * MiB,
        multipartcopychunksize: int = 32 * MiB,
        multipartcopymaxconcurrency: int = 100,
        multipartcopythresholdsize: int = 32 * MiB,
        rootdirectory: str = "",
        storageclass: str = "STANDARD",
        useragent: str = "",
        usedualstack: bool = False,
        usefipsendpoint: bool = False,
        accelerate: bool = False,
        objectacl: str = "private",
        loglevel: str = "off",
        redirectexpiry: float = 1200,
    ) -> None:
        if not bucket:
            raise ConfigError("storage.s3.bucket", "required")
        for key, value in (
            ("chunksize", chunksize),
            ("multipartcopychunksize", multipartcopychunksize),
        ):
            if not MIN_PART <= value <= MAX_PART:
                raise ConfigError(f"storage.s3.{key}", f"must be between {MIN_PART} and {MAX_PART}")
        if not 1 <= redirectexpiry <= MAX_EXPIRY:
            # A URL signed for 0 s is refused by the object store, so every pull would fail.
            # The usual way to get there: config.yml's `redirectexpiry: 600` is a Go duration,
            # and a bare number is nanoseconds.
            raise ConfigError(
                "storage.s3.redirectexpiry",
                f"must be between 1s and 168h, not {redirectexpiry:g} s "
                "(a bare number is nanoseconds: write 20m)",
            )
        if loglevel != "off":
            # Distribution's AWS SDK log levels all come down to the SDK's debug log here:
            # botocore logs every request, its signing and its retries at debug.
            for sdk in ("botocore", "aiobotocore"):
                logging.getLogger(sdk).setLevel(logging.DEBUG)
            logging.getLogger("cargohold.s3").setLevel(logging.DEBUG)
        self.bucket = bucket
        self.chunksize = chunksize
        self.copy_chunksize = multipartcopychunksize
        self.copy_concurrency = max(1, multipartcopymaxconcurrency)
        self.copy_threshold = multipartcopythresholdsize
        self.redirect_expiry = redirectexpiry
        self._root = rootdirectory.rstrip("/")
        self._object_args = _object_args(encrypt, keyid, storageclass, objectacl)
        self.endpoint = _endpoint_url(regionendpoint, secure)
        region = region or "us-east-1"  # S3-compatible servers take any; signing needs one
        self._region = region
        self._pool = max(32, self.copy_concurrency)
        #: A path-style S3-compatible server, signed with SigV4: where requests go needs no
        #: endpoint rules (``path_style``), so the HTTP path needs no botocore client.
        self._path_style = (
            self.endpoint is not None
            and forcepathstyle
            and v4auth
            and not (usedualstack or usefipsendpoint or accelerate)
        )
        self._client_args: dict[str, Any] = {
            "region_name": region,
            "endpoint_url": self.endpoint,
            "use_ssl": secure,
            "verify": False if skipverify else None,
        }
        # Made into an AioConfig with the client (``_s3``), to import aiobotocore only then.
        self._config_args: dict[str, Any] = {
            "forcepathstyle": forcepathstyle,
            "v4auth": v4auth,
            "useragent": useragent,
            "usedualstack": usedualstack,
            "usefipsendpoint": usefipsendpoint,
            "accelerate": accelerate,
            "pool": self._pool,
        }
        # None: botocore's standard chain (environment, shared files, instance role)
        self._credentials: Credentials | None = None
        if accesskey and secretkey:
            self._credentials = Credentials(accesskey, secretkey, sessiontoken or None)
            self._client_args.update(
                aws_access_key_id=accesskey,
                aws_secret_access_key=secretkey,
                aws_session_token=sessiontoken or None,
            )
        self._skipverify = skipverify
        self._useragent = useragent or "cargohold"
        self._session: AioSession | None = None
        self._client: S3Client | None = None
        self._exit_stack: AsyncExitStack | None = None
        self._objects_io: Objects | None = None
        self._lock = asyncio.Lock()

    # -- the client ---------------------------------------------------------------------

    async def _s3(self) -> S3Client:
        """The client, created on first use and kept for the driver's life."""
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    stack = AsyncExitStack()
                    self._session = _shared_session()
                    config = _client_config(self._region, **self._config_args)
                    creator = self._session.create_client("s3", **self._client_args, config=config)
                    self._client = await stack.enter_async_context(creator)
                    s3spans.instrument(self._client.meta.events)
                    self._exit_stack = stack
        return self._client

    async def _objects(self) -> Objects:
        """The driver's requests: over HTTP where botocore would sign them with SigV4."""
        if self._objects_io is None:
            located = self._located()
            client = None if located is not None else await self._s3()
            async with self._lock:
                if self._objects_io is None:
                    self._objects_io = await self._open_objects(client, located)
        return self._objects_io

    def _located(self) -> tuple[Location, BotocoreSettings] | None:
        """Where requests go and with which settings, when that needs no botocore client: a
        path-style S3-compatible server, and nothing in botocore's files to add."""
        if not self._path_style or self.endpoint is None:
            return None
        settings = BotocoreSettings.implied(self._pool)
        if settings is None:
            return None
        return path_style(self.endpoint, self.bucket, self._region), settings

    async def _botocore_objects(self) -> Objects:
        return BotoObjects(await self._s3(), self.bucket, self._object_args)

    async def _open_objects(
        self, client: S3Client | None, located: tuple[Location, BotocoreSettings] | None
    ) -> Objects:
        """The HTTP path: where ``located`` says, else where the ``client`` sends requests."""
        if located is not None:
            (origin, prefix, signer), settings = located
        else:
            assert client is not None
            probed = await probe(client, self.bucket)
            if probed is None:
                # Not SigV4 (v4auth: false), or something probe does not know.
                return BotoObjects(client, self.bucket, self._object_args)
            origin, prefix, signer = probed
            settings = BotocoreSettings.of(client, self._session)
        ssl_context: ssl.SSLContext | bool = False
        if origin.startswith("https:") and not self._skipverify:
            ssl_context = await self.in_thread(verifying_context, settings.ca_bundle)
        connector = aiohttp.TCPConnector(
            limit=settings.pool,
            ssl=ssl_context,
            keepalive_timeout=KEEPALIVE,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
            ),
            auto_decompress=False,
            skip_auto_headers=("Content-Type",),
            # A streamed body is read ahead by up to twice this, as a reader's chunk asks.
            read_bufsize=RECEIVE,
        )
        return HTTPObjects(
            session=session,
            bucket=self.bucket,
            origin=origin,
            prefix=prefix,
            signer=signer,
            credentials=self._credentials_source(),
            attempts=settings.attempts,
            put_headers=put_headers(self._object_args),
            useragent=self._useragent,
            proxy=environment_proxy(origin),
            botocore=self._botocore_objects,
            in_thread=self.in_thread,
            presigns=self.endpoint is not None,
        )

    def _credentials_source(self) -> Callable[[], Awaitable[Credentials]]:
        """Credentials for each request: the configured keys, or the chain's, refreshed as due."""
        if (fixed := self._credentials) is not None:

            async def configured() -> Credentials:
                return fixed

            return configured

        async def resolved() -> Credentials:
            # The chain needs botocore's session, not the S3 client or its models.
            session = self._session = self._session or _shared_session()
            chain = await session.get_credentials()  # resolved once, cached by the session
            if chain is None:
                raise NoCredentialsError()
            frozen = await chain.get_frozen_credentials()
            return Credentials(frozen.access_key or "", frozen.secret_key or "", frozen.token)

        return resolved

    async def close(self) -> None:
        objects, self._objects_io = self._objects_io, None
        if objects is not None:
            await objects.close()
        stack, self._exit_stack, self._client = self._exit_stack, None, None
        if stack is not None:
            await stack.aclose()
        await super().close()

    async def check(self) -> None:
        """Raise ``StorageUnavailable`` with one line when the bucket cannot be used."""
        where = f"bucket {self.bucket!r} at {self.endpoint or 'AWS'}"
        try:
            await (await self._objects()).bucket()
        except ClientError as exc:
            if error_code(exc) in _NOT_FOUND or error_code(exc) == "NoSuchBucket":
                reason = f"{where} does not exist"
            elif error_code(exc) in _DENIED:
                reason = f"access to {where} denied: check accesskey and secretkey"
            else:
                reason = f"{where}: {error_code(exc) or error_status(exc)}"
            raise StorageUnavailable("/", self.name, reason) from exc
        except _TRANSPORT_ERRORS as exc:
            raise StorageUnavailable("/", self.name, f"cannot reach {where}: {exc}") from exc

    @contextmanager
    def _errors(self, path: str) -> Iterator[None]:
        """Turn the provider's errors into driver errors."""
        try:
            yield
        except ClientError as exc:
            raise self._client_error(path, exc) from exc
        except _TRANSPORT_ERRORS as exc:
            raise StorageUnavailable(path, self.name, f"{type(exc).__name__}: {exc}") from exc

    def _client_error(self, path: str, exc: ClientError) -> StorageDriverError:
        code, status = error_code(exc), error_status(exc)
        if code in _NOT_FOUND:
            return PathNotFound(path, self.name)
        if code == "PreconditionFailed":
            return FileChanged(path, self.name, "it changed while it was copied")
        if code == "NoSuchBucket":
            return StorageUnavailable(path, self.name, f"bucket {self.bucket!r} does not exist")
        if code in _DENIED:
            return StorageUnavailable(path, self.name, f"access denied ({code})")
        message = exc.response.get("Error", {}).get("Message", "")
        return StorageUnavailable(path, self.name, f"{code or status}: {message}".rstrip(": "))

    # -- keys -----------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        """The object key of ``path``; for the root, the prefix of every key."""
        return (self._root + path).lstrip("/")

    def _prefix(self, path: str) -> str:
        """The prefix of every key below the directory ``path``."""
        key = self._key(path)
        return key if path == "/" else key + "/"

    async def _head(self, path: str, key: str) -> Head | None:
        """The object's size and time, or None when there is no such object."""
        with self._errors(path):
            objects = await self._objects()
            try:
                return await objects.head(key)
            except ClientError as exc:
                if error_code(exc) in _NOT_FOUND:
                    return None
                raise

    # -- the driver -----------------------------------------------------------------------

    async def _get_content(self, path: str) -> bytes:
        with self._errors(path):
            download = await (await self._objects()).get(self._key(path))
            try:
                return await download.read()
            finally:
                download.close()

    async def _put_content(self, path: str, content: bytes) -> None:
        await self._put(path, self._key(path), [content])

    async def _put(
        self,
        path: str,
        key: str,
        content: Pieces,
        metadata: dict[str, str] | None = None,
    ) -> None:
        with self._errors(path):
            await (await self._objects()).put(key, content, metadata or {})

    async def _reader(self, path: str, offset: int, chunk_size: int) -> AsyncIterator[bytes]:
        key = self._key(path)
        # One GET from the offset, streamed: a single response is one version of
        # the object, where a series of ranged GETs could mix two.
        with self._errors(path):
            objects = await self._objects()
            try:
                download = await objects.get(key, offset)
            except ClientError as exc:
                if error_code(exc) != "InvalidRange":
                    raise
                size = (await objects.head(key)).size
                if offset != size:
                    raise InvalidOffset(path, self.name, offset, f"beyond the size {size}") from exc
                return _nothing()
        return Relayable(self._chunks(path, download, chunk_size), download.socket_body)

    async def _chunks(
        self, path: str, body: Download, chunk_size: int
    ) -> AsyncGenerator[bytes, None]:
        """The content as it arrives, at most ``chunk_size`` bytes per chunk."""
        try:
            while True:
                with self._errors(path):
                    chunk = await body.read(chunk_size)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def _writer(self, path: str, append: bool) -> FileWriter:
        key = self._key(path)
        writer = _S3Writer(self, path, key)
        if append:
            await writer.resume()
        else:
            await self._delete_keys(path, [_pending_key(key)])
        return writer

    async def _stat(self, path: str) -> FileInfo:
        if path == "/":
            # The root is a directory even when empty, but the answer still comes from S3:
            # the storage health check stats it to learn whether S3 can be reached.
            with self._errors(path):
                await (await self._objects()).list(self._prefix(path), "/", 1, None)
            return FileInfo(path, 0, _NO_TIME, is_dir=True)
        key = self._key(path)
        if head := await self._head(path, key):
            return FileInfo(path, head.size, head.modified, is_dir=False)
        with self._errors(path):
            below = await (await self._objects()).list(key + "/", "/", 1, None)
        if not (below.objects or below.prefixes):
            raise PathNotFound(path, self.name)
        return FileInfo(path, 0, _NO_TIME, is_dir=True)

    async def _written_size(self, path: str) -> int:
        key = self._key(path)
        # A writer's saved state: its parts, whose bytes are the pending object's
        # offset, then the pending object's own; one HEAD, where resuming would read
        # the pending object and list the parts.
        pending = await self._head(path, _pending_key(key))
        if pending is not None:
            return int(pending.metadata.get(_OFFSET, "0")) + pending.size
        head = await self._head(path, key)
        if head is None:
            raise PathNotFound(path, self.name)
        return head.size

    async def _list(self, path: str) -> builtins.list[str]:
        entries, listed = await self._level(path)
        if not listed and path != "/":
            raise PathNotFound(path, self.name)
        return [entry.path for entry in entries]

    async def _level(self, path: str) -> tuple[builtins.list[FileInfo], bool]:
        """The visible direct children of ``path`` in lexical order, and whether S3 listed any key.

        One delimiter listing (paginated) reads one level, never the objects below it.
        """
        prefix = self._prefix(path)
        entries: list[FileInfo] = []
        listed = False
        token: str | None = None
        with self._errors(path):
            objects = await self._objects()
            while True:
                page = await objects.list(prefix, "/", LIST_MAX, token)
                for key, size, modified in page.objects:
                    listed = True
                    name = key[len(prefix) :]
                    if name and _HIDDEN not in name:
                        entries.append(FileInfo(join(path, name), size, modified, False))
                for common in page.prefixes:
                    listed = True
                    name = common[len(prefix) :].rstrip("/")
                    if name and _HIDDEN not in name:
                        entries.append(FileInfo(join(path, name), 0, _NO_TIME, is_dir=True))
                if page.next_token is None:
                    break
                token = page.next_token
        # Keys sort "a-b" before "a/", names sort "a" before "a-b": sort by name.
        entries.sort(key=lambda entry: entry.path)
        return entries, listed

    #: Whether an S3-compatible server (``regionendpoint``) is given ``delimited_lists`` too.
    #: Off: SeaweedFS and MinIO keep keys as files and answer a delimiter other than ``/``
    #: by walking every key below the prefix, so the catalog cut at ``/_`` cost SeaweedFS
    #: a walk of every repository's every file (0.3 catalogs a second against the Go
    #: registry's 1.0 at 1,000 repositories, and falling as they filled), where a listing
    #: per folder costs it little. AWS's index answers any delimiter in one range.
    DELIMITED_ON_COMPATIBLE = False

    @property
    def delimited_lists(self) -> DelimitedLists | None:
        if self.endpoint is not None and not self.DELIMITED_ON_COMPATIBLE:
            return None
        return self._checked_listings(self._list_delimited)

    async def _list_delimited(
        self, path: str, delimiter: str, prefix: str, after: str, token: str | None
    ) -> DelimitedPage:
        """One ListObjectsV2 page, its objects and common prefixes merged in key order."""
        folder = self._prefix(path)
        with self._errors(path):
            objects = await self._objects()
            page = await objects.list(
                folder + prefix, delimiter, DELIMITED_ASK, token, folder + after if after else None
            )
        names = [key[len(folder) :] for key, _, _ in page.objects]
        names += [common[len(folder) :] for common in page.prefixes]
        names = [name for name in names if name and _HIDDEN not in name]
        names.sort()  # str order is UTF-8 byte order: S3's
        return DelimitedPage(names, page.next_token)

    async def _move(self, source: str, dest: str) -> None:
        head = await self._head(source, self._key(source))
        if head is None:
            raise PathNotFound(source, self.name)
        await self._copy_then_delete(source, dest, head.size, "")

    @property
    def guarded_moves(self) -> GuardedMoves:
        return self._checked_moves(self._version, self._move_unchanged)

    async def _version(self, path: str) -> FileVersion:
        head = await self._head(path, self._key(path))
        if head is None:
            raise PathNotFound(path, self.name)
        return FileVersion(head.etag, head.size)

    async def _move_unchanged(self, source: str, dest: str, version: FileVersion) -> None:
        if not version.tag:
            raise FileChanged(source, self.name, "the object store gave no ETag to copy it by")
        await self._copy_then_delete(source, dest, version.size, version.tag)

    async def _copy_then_delete(self, source: str, dest: str, size: int, if_match: str) -> None:
        """Copy ``size`` bytes server-side (only while the ETag is ``if_match``, if given),
        then delete the source."""
        if source == dest:
            return  # copying then deleting would lose the file
        if size <= self.copy_threshold:
            with self._errors(source):
                await (await self._objects()).copy(self._key(source), self._key(dest), if_match)
        else:
            await self._multipart_copy(source, dest, size, if_match)
        await self._delete_keys(source, [self._key(source)])

    async def _multipart_copy(self, source: str, dest: str, size: int, if_match: str) -> None:
        """Copy a large object server-side, in parallel ranges (UploadPartCopy)."""
        objects, dest_key = await self._objects(), self._key(dest)
        with self._errors(dest):
            upload_id = await objects.start_upload(dest_key)
        try:
            parts = await self._copy_parts(
                source, dest_key, upload_id, size, first_number=1, if_match=if_match
            )
            with self._errors(dest):
                await objects.complete_upload(dest_key, upload_id, parts)
        except BaseException:
            await self._abort(dest, dest_key, upload_id)
            raise

    async def _copy_parts(
        self,
        source: str,
        dest_key: str,
        upload_id: str,
        size: int,
        first_number: int,
        if_match: str = "",
    ) -> builtins.list[Part]:
        """Copy all of ``source`` into parts of an upload; returns them in order."""
        objects, source_key = await self._objects(), self._key(source)
        ranges = _copy_ranges(size, self.copy_chunksize)
        parts: list[Part | None] = [None] * len(ranges)

        def job(index: int, first: int, last: int) -> Callable[[], Awaitable[None]]:
            async def copy() -> None:
                number = first_number + index
                with self._errors(source):
                    etag = await objects.copy_part(
                        source_key, dest_key, upload_id, number, first, last, if_match
                    )
                parts[index] = Part(number, etag, last - first + 1)

            return copy

        jobs = [job(i, first, last) for i, (first, last) in enumerate(ranges)]
        await _bounded(jobs, self.copy_concurrency)
        return [part for part in parts if part is not None]

    async def _delete(self, path: str) -> None:
        key = self._key(path)
        with _first_error():
            async with asyncio.TaskGroup() as group:
                head = group.create_task(self._head(path, key))
                below = group.create_task(self._keys_below(path))
                uploads = group.create_task(self._uploads(path, key, subtree=True))
        found = head.result() is not None
        if not found and not below.result():
            raise PathNotFound(path, self.name)
        for upload_key, upload_id in uploads.result():
            await self._abort(path, upload_key, upload_id)
        keys = [key, _pending_key(key)] if found else []
        markers = _directory_markers(key, below.result())
        await self._delete_keys(path, [*keys, *below.result(), *markers])

    @property
    def batch_deletes(self) -> BatchDeletes:
        return self._checked_deletes(self._delete_files)

    async def _delete_files(self, paths: builtins.list[str]) -> None:
        """Each file's key and its pending object's in DeleteObjects requests, a few at once.

        What ``delete`` does to a file but abort its multipart uploads: finding
        them takes a listing per file, and without the pending object that
        points at one, nothing resumes it (the next commit at the key aborts
        it; a bucket lifecycle rule may too). Without a HEAD per file, a
        pending object goes whether or not a file was committed. A key that is
        a directory's prefix names no object, so deleting it deletes nothing
        below it.
        """
        # A file's two keys go in one request: the path a failed request names is then
        # one whose keys it held.
        per_request = LIST_MAX // 2

        def job(batch: builtins.list[str]) -> Callable[[], Awaitable[None]]:
            keys = [k for key in map(self._key, batch) for k in (key, _pending_key(key))]
            return lambda: self._delete_keys(batch[0], keys)

        batches = [paths[at : at + per_request] for at in range(0, len(paths), per_request)]
        await _bounded(map(job, batches), DELETE_CONCURRENCY)

    async def _keys_below(self, path: str) -> builtins.list[str]:
        prefix = self._key(path) + "/"
        keys: list[str] = []
        token: str | None = None
        with self._errors(path):
            objects = await self._objects()
            while True:
                page = await objects.list(prefix, "", LIST_MAX, token)
                keys.extend(key for key, _, _ in page.objects)
                if page.next_token is None:
                    return keys
                token = page.next_token

    async def _delete_keys(self, path: str, keys: builtins.list[str]) -> None:
        for start in range(0, len(keys), LIST_MAX):
            with self._errors(path):
                failed = await (await self._objects()).delete(keys[start : start + LIST_MAX])
            if failed:
                key, code = failed[0]
                raise StorageUnavailable(path, self.name, f"cannot delete {key}: {code}")

    async def _uploads(self, path: str, key: str, subtree: bool) -> builtins.list[tuple[str, str]]:
        """(key, upload id) of the multipart uploads in progress at ``key`` (and below it)."""
        with self._errors(path):
            uploads = await (await self._objects()).uploads(key)
        return [
            (upload_key, upload_id)
            for upload_key, upload_id in uploads
            if upload_key == key or (subtree and upload_key.startswith(key + "/"))
        ]

    async def _abort(self, path: str, key: str, upload_id: str) -> None:
        try:
            with self._errors(path):
                await (await self._objects()).abort_upload(key, upload_id)
        except PathNotFound:
            pass  # already completed or aborted

    async def _walk(self, path: str, descend: Descend | None) -> AsyncIterator[FileInfo]:
        entries, listed = await self._level(path)
        if not listed and path != "/":
            raise PathNotFound(path, self.name)
        for entry in entries:
            yield entry
            if entry.is_dir and (descend is None or descend(entry)):
                async for below in self._walk_below(entry.path, descend):
                    yield below

    async def _walk_below(self, path: str, descend: Descend | None) -> AsyncIterator[FileInfo]:
        try:
            walk = self._walk(path, descend)
            async for info in walk:
                yield info
        except PathNotFound as exc:
            if exc.path != path:
                raise
            # emptied while we walked

    @property
    def redirects(self) -> RedirectURLs:
        return self

    async def redirect_url(self, path: str, method: str = "GET") -> str | None:
        """A presigned GET or HEAD URL valid for ``redirect_expiry`` seconds."""
        self._file_path(path)
        method = method.upper()
        if method not in ("GET", "HEAD"):
            return None
        with self._errors(path):
            objects = await self._objects()
            return await objects.presign(self._key(path), method, int(self.redirect_expiry))


class _S3Writer(FileWriter):
    """Appends to an upload whose state lives in storage (see the module docstring)."""

    def __init__(self, driver: S3Driver, path: str, key: str) -> None:
        self._driver = driver
        self._path = path
        self._key = key
        self._upload_id: str | None = None
        self._parts: list[Part] = []
        self._buffer = _PartBuffer(driver.chunksize)  # the bytes after the parts
        self._size = 0
        self._committed_size = 0  # committed content resumed but not yet copied into the upload
        self._saved = False  # storage holds everything written so far
        self._broken = False  # a write failed half-way
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    # -- resuming -------------------------------------------------------------------------

    async def resume(self) -> None:
        """Load what earlier writers left: pending state, else the committed file."""
        if await self._load_pending():
            return
        head = await self._driver._head(self._path, self._key)
        # Committed content is copied into an upload only once something is appended.
        self._committed_size = self._size = head.size if head else 0
        self._saved = True

    async def _load_pending(self) -> bool:
        driver = self._driver
        with driver._errors(self._path):
            try:
                download = await (await driver._objects()).get(_pending_key(self._key))
            except ClientError as exc:
                if error_code(exc) in _NOT_FOUND:
                    return False
                raise
            try:
                async for piece in _pieces_of(download):
                    self._buffer.append(memoryview(piece))
            finally:
                download.close()
        metadata = download.metadata
        self._upload_id = metadata.get(_UPLOAD_ID) or None
        offset = int(metadata.get(_OFFSET, "0"))
        self._parts = await self._list_parts() if self._upload_id else []
        stored = sum(part.size for part in self._parts)
        if stored == offset:
            self._saved = True
        elif stored > offset:
            # A part holding the tail was uploaded, then the process died before
            # rewriting the pending object: the tail is already in the parts.
            self._buffer.take()
            self._saved = False
        else:
            # The upload lost parts (aborted elsewhere): only the empty prefix is sure.
            self._upload_id, self._parts, self._saved = None, [], False
            self._buffer.take()
        self._size = sum(part.size for part in self._parts) + self._buffer.size
        return True

    async def _list_parts(self) -> list[Part]:
        assert self._upload_id is not None
        driver = self._driver
        try:
            with driver._errors(self._path):
                return await (await driver._objects()).parts(self._key, self._upload_id)
        except PathNotFound:
            return []  # NoSuchUpload: handled as lost parts by the caller

    async def _continue_committed(self) -> None:
        """Before appending to committed content, make it the start of this upload."""
        size, self._committed_size = self._committed_size, 0
        if size < MIN_PART:
            # Too small to be a part: it becomes what is buffered (less than one part).
            self._buffer.append(memoryview(await self._driver._get_content(self._path)))
            return
        await self._start_upload()
        assert self._upload_id is not None
        self._parts = await self._driver._copy_parts(
            self._path, self._key, self._upload_id, size, first_number=1
        )

    # -- writing --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._done:
            raise StorageDriverError(self._path, self._driver.name, "writer is closed")

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check_open()
        try:
            if self._committed_size:
                await self._continue_committed()
            self._saved = False
            view = memoryview(data).cast("B")
            while view:
                view = self._buffer.append(view)
                if self._buffer.full:
                    await self._upload_part()
        except BaseException:
            # What is buffered no longer matches what was stored: keep the last
            # saved state (a prefix of what was sent) rather than save this one.
            self._broken = True
            raise
        self._size += len(data)
        return len(data)

    async def _start_upload(self) -> None:
        driver = self._driver
        with driver._errors(self._path):
            self._upload_id = await (await driver._objects()).start_upload(self._key)

    async def _upload_part(self) -> None:
        """Send everything buffered as the next part."""
        if self._upload_id is None:
            await self._start_upload()
        assert self._upload_id is not None
        driver = self._driver
        pieces, size = self._buffer.take()
        number = len(self._parts) + 1
        with driver._errors(self._path):
            objects = await driver._objects()
            etag = await objects.upload_part(self._key, self._upload_id, number, pieces)
        self._parts.append(Part(number, etag, size))

    async def _save(self) -> None:
        """Store what is buffered so that another writer can resume it."""
        if self._buffer.size >= MIN_PART:
            await self._upload_part()
        metadata = {
            _UPLOAD_ID: self._upload_id or "",
            _OFFSET: str(sum(part.size for part in self._parts)),
        }
        pending = _pending_key(self._key)
        await self._driver._put(self._path, pending, self._buffer.pieces(), metadata)
        self._saved = True

    # -- finishing ------------------------------------------------------------------------

    async def commit(self) -> None:
        self._check_open()
        if self._broken:
            raise StorageDriverError(self._path, self._driver.name, "an earlier write failed")
        driver = self._driver
        if self._committed_size:
            pass  # resumed committed content and appended nothing: it is in place
        elif self._upload_id is None or not self._parts:
            await driver._put(self._path, self._key, self._buffer.pieces())
        else:
            await self._complete()
        self._done = True
        await driver._delete_keys(self._path, [_pending_key(self._key)])
        await self._abort_all()  # uploads that died before saving their state

    async def _complete(self) -> None:
        if self._buffer.size:
            await self._upload_part()  # the last part may be small
        assert self._upload_id is not None
        driver = self._driver
        with driver._errors(self._path):
            objects = await driver._objects()
            await objects.complete_upload(self._key, self._upload_id, self._parts)
        self._upload_id = None

    async def cancel(self) -> None:
        self._check_open()
        self._done = True
        await self._driver._delete_keys(self._path, [_pending_key(self._key)])
        await self._abort_all()

    async def _abort_all(self) -> None:
        driver = self._driver
        for key, upload_id in await driver._uploads(self._path, self._key, subtree=False):
            await driver._abort(self._path, key, upload_id)

    async def close(self) -> None:
        if self._done:
            return
        self._done = True
        if not self._saved and not self._broken:
            await self._save()


class _PartBuffer:
    """A part's bytes as they are written, in an anonymous mapping of the part's size.

    Its pages come from the kernel as they are first written and go back to it
    once the part is sent and its mapping dropped. Kept as the pieces they were
    written in, or in a bytearray, a part's bytes stayed in glibc's heap after
    it was sent: a worker that had pushed held 16 MiB more for good, and
    another 3 MiB while it pushed. Copying them here costs a pass over the
    bytes, a hundredth of the time a part takes to send.
    """

    __slots__ = ("_capacity", "_map", "size")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._map: mmap.mmap | None = None
        self.size = 0

    @property
    def full(self) -> bool:
        return self.size >= self._capacity

    def append(self, view: memoryview) -> memoryview:
        """Add what fits of ``view``; returns the rest."""
        if not view:
            return view
        if self._map is None:
            self._map = mmap.mmap(-1, self._capacity)
        taken = min(self._capacity - self.size, len(view))
        self._map[self.size : self.size + taken] = view[:taken]
        self.size += taken
        return view[taken:]

    def pieces(self) -> Pieces:
        """What is buffered, as a body: a view of the mapping, no copy."""
        if self._map is None or not self.size:
            return []
        return [memoryview(self._map)[: self.size]]

    def take(self) -> tuple[Pieces, int]:
        """What is buffered and its size, emptying the buffer: the mapping goes with the body."""
        taken = self.pieces(), self.size
        self._map, self.size = None, 0
        return taken


async def _pieces_of(download: Download) -> AsyncIterator[bytes]:
    """The content in the pieces it arrives in."""
    while piece := await download.read(RECEIVE):
        yield piece


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover - makes this an async generator


def _directory_markers(key: str, keys: builtins.list[str]) -> builtins.list[str]:
    """``d/`` for every directory from ``key`` down to each of ``keys``, deepest first.

    Servers that keep real directories (SeaweedFS) drop one when its marker is
    deleted, and only if it is empty; elsewhere these keys do not exist and
    deleting them is a no-op. Without it, deleted directories would linger in
    delimiter listings.
    """
    if not keys:
        return []
    directories = {key + "/"}
    for below in keys:
        head = below.rpartition("/")[0]
        while len(head) > len(key):
            directories.add(head + "/")
            head = head.rpartition("/")[0]
    return sorted(directories, key=lambda d: (-d.count("/"), d))


def _object_args(encrypt: bool, keyid: str, storageclass: str, objectacl: str) -> dict[str, Any]:
    """Arguments of every request that creates an object, as Distribution sends them."""
    args: dict[str, Any] = {"ContentType": _CONTENT_TYPE, "ACL": objectacl}
    if encrypt:
        args["ServerSideEncryption"] = "aws:kms" if keyid else "AES256"
        if keyid:
            args["SSEKMSKeyId"] = keyid
    if storageclass.upper() != "NONE":  # NONE: the server has no storage classes
        args["StorageClass"] = storageclass.upper()
    return args


def _endpoint_url(regionendpoint: str, secure: bool) -> str | None:
    if not regionendpoint:
        return None
    if "://" in regionendpoint:
        return regionendpoint
    return f"{'https' if secure else 'http'}://{regionendpoint}"


_SESSION: AioSession | None = None


def _shared_session() -> AioSession:
    """One botocore session per process, kept: it caches the service models it loads.

    Where ``serve``'s check of the storage needs a client (every configuration
    but a path-style S3-compatible server), it loads S3's models (a few
    megabytes of parsed JSON) into this session before the workers are forked,
    and the workers share those pages instead of each parsing its own copy.
    """
    from aiobotocore.session import get_session

    global _SESSION
    if _SESSION is None:
        _SESSION = get_session()
    return _SESSION


#: The connect and read timeouts (seconds) of a botocore Config that does not set them. A
#: client made with a Config takes them from it, whatever AWS_DEFAULTS_MODE says.
BOTOCORE_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class BotocoreSettings:
    """What the HTTP path takes from botocore's settings."""

    pool: int
    connect_timeout: float
    read_timeout: float
    #: Total attempts of a request.
    attempts: int
    #: The CA bundle to verify TLS with: a file, or True for botocore's own.
    ca_bundle: str | bool

    @classmethod
    def of(cls, client: S3Client, session: AioSession | None) -> BotocoreSettings:
        # Attributes botocore sets on its Config at run time (the stubs do not list them).
        config: Any = client.meta.config
        configured = session.get_config_variable("ca_bundle") if session is not None else None
        return cls(
            config.max_pool_connections or 10,
            config.connect_timeout,
            config.read_timeout,
            (config.retries or {}).get("total_max_attempts") or ATTEMPTS,
            str(configured or os.environ.get("REQUESTS_CA_BUNDLE") or "") or True,
        )

    @classmethod
    def implied(cls, pool: int) -> BotocoreSettings | None:
        """The settings botocore would make of the environment alone; None where the shared
        config file could add to them (attempts, CA bundle), which only botocore reads."""
        shared = os.environ.get("AWS_CONFIG_FILE") or os.path.expanduser("~/.aws/config")
        if os.path.exists(shared):
            return None
        attempts = os.environ.get("AWS_MAX_ATTEMPTS", str(ATTEMPTS))
        if not attempts.isdigit():
            return None  # botocore refuses it, with its own words
        bundle = os.environ.get("AWS_CA_BUNDLE") or os.environ.get("REQUESTS_CA_BUNDLE")
        return cls(pool, BOTOCORE_TIMEOUT, BOTOCORE_TIMEOUT, int(attempts), bundle or True)


def environment_proxy(url: str) -> str | None:
    """The proxy that HTTP_PROXY, HTTPS_PROXY and NO_PROXY name for ``url``, as botocore
    reads them."""
    parts = urlsplit(url)
    try:
        if urllib.request.proxy_bypass(parts.netloc):
            return None
    except (TypeError, OSError):
        pass  # an unresolvable NO_PROXY entry: botocore proxies then too
    return urllib.request.getproxies().get(parts.scheme)


def _client_config(
    region: str,
    *,
    forcepathstyle: bool,
    v4auth: bool,
    useragent: str,
    usedualstack: bool,
    usefipsendpoint: bool,
    accelerate: bool,
    pool: int,
) -> AioConfig:
    from aiobotocore.config import AioConfig

    return AioConfig(
        region_name=region,
        signature_version="s3v4" if v4auth else "s3",
        s3={
            "addressing_style": "path" if forcepathstyle else "auto",
            "use_accelerate_endpoint": accelerate,
            "use_dualstack_endpoint": usedualstack,
        },
        use_fips_endpoint=usefipsendpoint,
        user_agent=useragent or None,
        # Attempts (3 by default) come from AWS_MAX_ATTEMPTS or the shared config file.
        retries={"mode": "standard"},
        # Checksums only where S3 demands them, as Distribution's SDK sends:
        # S3-compatible servers vary in which newer checksum headers they take.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        max_pool_connections=pool,
    )
