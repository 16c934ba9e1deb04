"""A driver on an Azure Blob Storage container, on azure-storage-blob's asyncio client.

Layout, as Distribution's azure driver has it: the file at ``/a/b`` is the blob
named ``<rootdirectory>/a/b`` (no leading ``/``) in the container. Blob names
are flat: a directory is a common prefix of names, so it exists while something
is below it, and it has no modification time (the epoch in ``FileInfo``).

Writers, and how an upload resumes in another process. Distribution's driver
appends to append blobs, whose content shows at the path before the commit.
This one stages the blocks of a *block blob* (Put Block) and commits them with
one Put Block List, which replaces the blob atomically however large it is.
Staged blocks live in the service, under the blob's name, uncommitted, until a
commit (or a Put Blob) at that name drops the ones it does not list, or for 7
days: they are the writer's whole state, so nothing else is kept.

Each block id is chosen here, deterministically: ``cargohold<seq:08d><kind>``
(base64), the block's place in the file and whether it holds bytes written
(``w``) or committed content copied in to be appended to (``c``). A writer
stages a block per ``BLOCK`` bytes and the rest as a short block when closed
(Azure has no smallest block); ``writer(path, append=True)``, in any process,
reads the uncommitted block list back (Get Block List) and continues after the
run of blocks numbered from 0. Staging a block is atomic, and staging one id
again replaces it, so a process that died mid-write leaves a consistent prefix.
``written_size`` is the sum of those blocks' sizes: one request.

A writer started afresh (``append=False``) and ``cancel`` drop what earlier
writers staged at the path: committed content there is kept as it was (its
copied blocks committed again, or its bytes put again), and where nothing was
committed the blocks go with a commit of nothing and a delete.

``move`` is a server-side Copy Blob (synchronous within one account; polled
``max_retries`` times, ``retry_delay`` apart, when the service reports it
pending), then a delete. ``list`` and ``walk`` read one level per delimiter
listing; ``delete`` lists what is below the path, uncommitted blobs included.

Every service error becomes a driver error (``errors.py``): a missing blob is
``PathNotFound``; a refused, failed or unreachable request is
``StorageUnavailable`` with a short reason.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
import io
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline.transport import AioHttpTransport
from azure.storage.blob import BlobBlock, BlobSasPermissions, generate_blob_sas
from azure.storage.blob.aio import (
    BlobClient,
    BlobPrefix,
    BlobServiceClient,
    ContainerClient,
    ExponentialRetry,
)

from cargohold.errors import (
    ConfigError,
    InvalidOffset,
    PathNotFound,
    StorageDriverError,
    StorageUnavailable,
)
from cargohold.storage.driver.base import (
    Descend,
    ExclusiveCreates,
    FileInfo,
    FileWriter,
    RedirectURLs,
    StorageDriver,
    join,
)

MiB = 1 << 20
#: Bytes a writer stages per block (and holds in memory at most).
BLOCK = 8 * MiB
#: Bytes per ranged GET of a reader.
READ_RANGE = 4 * MiB
#: The largest Put Blob (``put_content`` is always one request).
MAX_PUT = 5000 * MiB
#: Request bodies above this go to aiohttp as a file, which it sends in slices.
SLICED_BODY = 1 * MiB
#: Deletes ``delete`` has under way at once.
DELETE_CONCURRENCY = 16
#: How long ``check`` waits for the endpoint, in seconds (the SDK's own read timeout is 60).
CHECK_TIMEOUT = 5.0
#: The longest a redirect URL stays valid (as for S3's presigned URLs: 7 days).
MAX_EXPIRY = 7 * 24 * 3600
#: Distribution's defaults for these parameters.
DEFAULT_REALM = "core.windows.net"
CREDENTIAL_TYPES = ("shared_key", "client_secret", "default_credentials")

_NO_TIME = datetime.fromtimestamp(0, UTC)  # directories have no times
_BLOCK_ID = re.compile(r"cargohold(\d{8})([cw])")
_NOT_FOUND = frozenset({"BlobNotFound", "ResourceNotFound", "CannotVerifyCopySource"})

# azure-core logs every request and response at INFO: too much for a registry's log.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)


def _code(exc: HttpResponseError) -> str:
    code = getattr(exc, "error_code", None)
    if isinstance(code, Enum):
        return str(code.value)
    return str(code or "")


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _message(exc: HttpResponseError) -> str:
    """The service's message without the request id and time lines Azure appends."""
    message = str(getattr(exc, "reason", "") or "")
    return _one_line(message.split("RequestId:")[0]) if message else ""


# Raised by the transport when the SDK does not wrap it (a stream cut mid-read).
_TRANSPORT_ERRORS = (AzureError, aiohttp.ClientError, OSError, asyncio.TimeoutError)


class _SlicedBodies(AioHttpTransport):  # type: ignore[misc]  # imported lazily: Any
    """azure-core's aiohttp transport, handing large bodies over as a file.

    The SDK reads a Put Blob's or a Put Block's body into bytes; aiohttp writes
    bytes over 1 MiB in one go, warning that it stalls the event loop, and sends
    a file object in slices between other tasks.
    """

    async def send(self, request: Any, **config: Any) -> Any:
        data = request.data
        if not isinstance(data, bytes | bytearray) or len(data) <= SLICED_BODY:
            return await super().send(request, **config)
        request.data = io.BytesIO(data)
        try:
            return await super().send(request, **config)
        finally:
            request.data = data  # as it was, for a retry


@dataclass(frozen=True, slots=True)
class _Block:
    seq: int
    kind: str  # "w": bytes written; "c": committed content copied in
    size: int

    @property
    def id(self) -> str:
        return base64.b64encode(f"cargohold{self.seq:08d}{self.kind}".encode()).decode()


def _parse_blocks(blocks: Iterable[BlobBlock]) -> list[_Block]:
    """Our blocks among ``blocks``, the run numbered from 0, in order."""
    found: dict[int, _Block] = {}
    for block in blocks:
        try:
            text = base64.b64decode(block.id, validate=True).decode("ascii")
        except (binascii.Error, ValueError):
            continue  # someone else's block: dropped at the next commit
        if (match := _BLOCK_ID.fullmatch(text)) is not None:
            seq = int(match[1])
            found[seq] = _Block(seq, match[2], int(block.size or 0))
    run: list[_Block] = []
    while len(run) in found:
        run.append(found[len(run)])
    return run


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


def service_url(accountname: str, realm: str = DEFAULT_REALM, serviceurl: str = "") -> str:
    """Where the account's blob service answers: ``serviceurl``, else Azure's in ``realm``."""
    if serviceurl:
        return serviceurl.rstrip("/")
    return f"https://{accountname}.blob.{realm or DEFAULT_REALM}"


def credentials_type(credentials: Mapping[str, Any] | None, accountkey: str) -> str:
    """The credentials' type: as configured, else ``shared_key`` (Distribution 2's keys)."""
    kind = str((credentials or {}).get("type") or "")
    if not kind:
        if not accountkey:
            raise ConfigError("storage.azure.credentials.type", "required (shared_key)")
        return "shared_key"
    if kind not in CREDENTIAL_TYPES:
        raise ConfigError(
            "storage.azure.credentials.type",
            f"expected {', '.join(CREDENTIAL_TYPES)}, got {kind!r}",
        )
    return kind


class AzureDriver(StorageDriver):
    """Distribution's ``azure`` storage driver; parameters are its configuration names."""

    name = "azure"

    def __init__(
        self,
        *,
        accountname: str,
        container: str,
        accountkey: str = "",
        credentials: Mapping[str, Any] | None = None,
        connectionstring: str = "",
        realm: str = DEFAULT_REALM,
        rootdirectory: str = "",
        serviceurl: str = "",
        max_retries: int = 5,
        retry_delay: float = 0.1,
        skipverify: bool = False,
        redirectexpiry: float = 1200,
    ) -> None:
        if not accountname:
            raise ConfigError("storage.azure.accountname", "required")
        if not container:
            raise ConfigError("storage.azure.container", "required")
        if connectionstring:
            # Distribution reads the key and never uses it.
            raise ConfigError(
                "storage.azure.connectionstring",
                "not supported by cargohold; give accountname, accountkey and serviceurl",
            )
        kind = credentials_type(credentials, accountkey)
        if kind != "shared_key":
            raise ConfigError(
                "storage.azure.credentials",
                f"not supported by cargohold; type {kind} needs Azure's identity library, which "
                "cargohold does not include: use type shared_key with accountname and accountkey",
            )
        for field in ("clientid", "tenantid", "secret"):
            if (credentials or {}).get(field):
                raise ConfigError(
                    f"storage.azure.credentials.{field}",
                    "not supported by cargohold; it is for client_secret credentials: "
                    "use type shared_key with accountname and accountkey",
                )
        if not accountkey:
            raise ConfigError("storage.azure.accountkey", "required for shared_key credentials")
        try:
            base64.b64decode(accountkey, validate=True)
        except binascii.Error:
            raise ConfigError("storage.azure.accountkey", "not a base64 account key") from None
        if not 1 <= redirectexpiry <= MAX_EXPIRY:
            raise ConfigError(
                "storage.azure.redirectexpiry",
                f"must be between 1s and 168h, not {redirectexpiry:g} s "
                "(a bare number is nanoseconds: write 20m)",
            )
        self.accountname = accountname
        self.container = container
        self.endpoint = service_url(accountname, realm, serviceurl)
        if urlsplit(self.endpoint).scheme not in ("http", "https"):
            raise ConfigError("storage.azure.serviceurl", f"not an http(s) URL: {self.endpoint!r}")
        # Distribution: 0 means its default, 5; -1, no waiting for a copy the service left pending.
        self.max_retries = 5 if max_retries == 0 else max_retries
        self.retry_delay = retry_delay
        self.redirect_expiry = redirectexpiry
        self._accountkey = accountkey
        self._root = rootdirectory.rstrip("/")
        self._skipverify = skipverify
        self._service: BlobServiceClient | None = None
        self._container: ContainerClient | None = None

    # -- the client ---------------------------------------------------------------------

    def _client(self) -> ContainerClient:
        """The container's client, created on first use and kept for the driver's life."""
        if self._container is None:
            self._service = BlobServiceClient(
                self.endpoint,
                credential=AzureNamedKeyCredential(self.accountname, self._accountkey),
                retry_policy=ExponentialRetry(
                    initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1
                ),
                max_single_put_size=MAX_PUT,
                max_single_get_size=READ_RANGE,
                max_chunk_get_size=READ_RANGE,
                transport=_SlicedBodies(
                    connection_verify=not self._skipverify,
                    connection_timeout=20,  # the SDK's own defaults
                    read_timeout=60,
                    connection_data_block_size=256 * 1024,
                ),
                user_agent="cargohold",
            )
            self._container = self._service.get_container_client(self.container)
        return self._container

    def _blob(self, key: str) -> BlobClient:
        return self._client().get_blob_client(key)

    async def close(self) -> None:
        service, self._service, self._container = self._service, None, None
        if service is not None:
            await service.close()
        await super().close()

    async def check(self) -> None:
        """Raise ``StorageUnavailable`` with one line when the container cannot be used."""
        where = f"container {self.container!r} at {self.endpoint}"
        try:
            async with asyncio.timeout(CHECK_TIMEOUT):
                await self._client().get_container_properties(retry_total=0)
        except HttpResponseError as exc:
            code = _code(exc)
            if code == "ContainerNotFound" or exc.status_code == 404:
                reason = f"{where} does not exist"
            elif exc.status_code == 403:
                reason = f"access to {where} denied ({code}): check accountname and accountkey"
            else:
                reason = f"{where}: {code or exc.status_code}"
            raise StorageUnavailable("/", self.name, reason) from exc
        except TimeoutError as exc:
            reason = f"cannot reach {where}: no answer in {CHECK_TIMEOUT:g} s"
            raise StorageUnavailable("/", self.name, reason) from exc
        except _TRANSPORT_ERRORS as exc:
            detail = _one_line(str(exc)) or type(exc).__name__
            raise StorageUnavailable("/", self.name, f"cannot reach {where}: {detail}") from exc

    @contextmanager
    def _errors(self, path: str) -> Iterator[None]:
        """Turn the service's errors into driver errors."""
        try:
            yield
        except HttpResponseError as exc:
            raise self._service_error(path, exc) from exc
        except _TRANSPORT_ERRORS as exc:
            detail = _one_line(str(exc)) or type(exc).__name__
            raise StorageUnavailable(path, self.name, f"{type(exc).__name__}: {detail}") from exc

    def _service_error(self, path: str, exc: HttpResponseError) -> StorageDriverError:
        code = _code(exc)
        if code in _NOT_FOUND:
            return PathNotFound(path, self.name)
        if code == "ContainerNotFound":
            return StorageUnavailable(
                path, self.name, f"container {self.container!r} does not exist"
            )
        if exc.status_code == 403:
            return StorageUnavailable(path, self.name, f"access denied ({code or 403})")
        detail = f"{code or exc.status_code}: {_message(exc)}".rstrip(": ")
        return StorageUnavailable(path, self.name, detail)

    # -- names ----------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        """The blob name of ``path``; for the root, the prefix of every name."""
        return (self._root + path).lstrip("/")

    def _prefix(self, path: str) -> str:
        """The prefix of every name below the directory ``path``."""
        key = self._key(path)
        return key if path == "/" else key + "/"

    async def _properties(self, path: str, key: str) -> tuple[int, datetime] | None:
        """The committed blob's size and time, or None when there is none."""
        try:
            with self._errors(path):
                properties = await self._blob(key).get_blob_properties()
        except PathNotFound:
            return None
        return int(properties.size), properties.last_modified or _NO_TIME

    # -- the driver -----------------------------------------------------------------------

    async def _get_content(self, path: str) -> bytes:
        with self._errors(path):
            download = await self._blob(self._key(path)).download_blob()
            return await download.readall()

    async def _put_content(self, path: str, content: bytes) -> None:
        await self._put(path, self._key(path), content)

    async def _put(self, path: str, key: str, content: bytes | bytearray) -> None:
        """One Put Blob: the blob replaced whole, its staged blocks dropped."""
        blob = self._blob(key)
        with self._errors(path):
            try:
                await blob.upload_blob(bytes(content), overwrite=True)
            except HttpResponseError as exc:
                if _code(exc) != "InvalidBlobType":
                    raise
                # An append blob (Distribution's writers make them) is not replaced by a
                # block blob: it goes first, as Distribution's own driver does.
                await blob.delete_blob()
                await blob.upload_blob(bytes(content), overwrite=True)

    async def _reader(self, path: str, offset: int, chunk_size: int) -> AsyncIterator[bytes]:
        blob = self._blob(self._key(path))
        with self._errors(path):
            try:
                download = await blob.download_blob(offset=offset or None)
            except HttpResponseError as exc:
                if _code(exc) != "InvalidRange":
                    raise
                size = int((await blob.get_blob_properties()).size)
                if offset != size:
                    raise InvalidOffset(path, self.name, offset, f"beyond the size {size}") from exc
                return _nothing()
        # Later ranges are asked for on the first one's ETag: one version, never two mixed.
        return self._chunks(path, download.chunks(), chunk_size)

    async def _chunks(
        self, path: str, pieces: AsyncIterator[bytes], chunk_size: int
    ) -> AsyncIterator[bytes]:
        """Exactly ``chunk_size`` bytes per chunk (the last may be shorter)."""
        pending = bytearray()
        while True:
            with self._errors(path):
                piece = await anext(pieces, None)
            if piece is None:
                break
            view = memoryview(piece)
            while view:
                if not pending and len(view) >= chunk_size:
                    yield bytes(view[:chunk_size])
                    view = view[chunk_size:]
                    continue
                room = chunk_size - len(pending)
                pending += view[:room]
                view = view[room:]
                if len(pending) == chunk_size:
                    yield bytes(pending)
                    pending.clear()
        if pending:
            yield bytes(pending)

    async def _writer(self, path: str, append: bool) -> FileWriter:
        key = self._key(path)
        writer = _AzureWriter(self, path, key)
        if append:
            await writer.resume()
        else:
            await self._discard(path, key)
        return writer

    async def _stat(self, path: str) -> FileInfo:
        if path == "/":
            return FileInfo(path, 0, _NO_TIME, is_dir=True)
        found = await self._properties(path, self._key(path))
        if found is not None:
            return FileInfo(path, found[0], found[1], is_dir=False)
        with self._errors(path):
            below = self._client().list_blobs(
                name_starts_with=self._key(path) + "/", results_per_page=1
            )
            async for _ in below:
                return FileInfo(path, 0, _NO_TIME, is_dir=True)
        raise PathNotFound(path, self.name)

    async def _written_size(self, path: str) -> int:
        key = self._key(path)
        staged = await self._staged(path, key)
        if staged and any(block.kind == "w" for block in staged):
            return sum(block.size for block in staged)
        found = await self._properties(path, key)
        if found is None:
            raise PathNotFound(path, self.name)
        return found[0]

    async def _list(self, path: str) -> builtins.list[str]:
        entries, listed = await self._level(path)
        if not listed and path != "/":
            raise PathNotFound(path, self.name)
        return [entry.path for entry in entries]

    async def _level(self, path: str) -> tuple[builtins.list[FileInfo], bool]:
        """The direct children of ``path`` in lexical order, and whether anything was listed."""
        prefix = self._prefix(path)
        entries: list[FileInfo] = []
        listed = False
        with self._errors(path):
            async for item in self._client().walk_blobs(name_starts_with=prefix, delimiter="/"):
                listed = True
                name = item.name[len(prefix) :]
                if isinstance(item, BlobPrefix):
                    name = name.rstrip("/")
                    if name:
                        entries.append(FileInfo(join(path, name), 0, _NO_TIME, is_dir=True))
                elif name:
                    modified = item.last_modified or _NO_TIME
                    entries.append(FileInfo(join(path, name), int(item.size), modified, False))
        # Names sort "a-b" before "a/", paths "a" before "a-b": sort by path.
        entries.sort(key=lambda entry: entry.path)
        return entries, listed

    async def _move(self, source: str, dest: str) -> None:
        if source == dest:
            await self._stat_file(source)  # copying then deleting would lose the file
            return
        source_blob, dest_blob = self._blob(self._key(source)), self._blob(self._key(dest))
        with self._errors(source):
            try:
                copy = await dest_blob.start_copy_from_url(source_blob.url)
            except HttpResponseError as exc:
                if _code(exc) != "InvalidBlobType":
                    raise
                await dest_blob.delete_blob()  # an append blob is not replaced by a copy
                copy = await dest_blob.start_copy_from_url(source_blob.url)
        await self._copied(dest, dest_blob, str(copy.get("copy_status") or ""))
        await self._delete_blob(source, source_blob)

    async def _stat_file(self, path: str) -> None:
        if await self._properties(path, self._key(path)) is None:
            raise PathNotFound(path, self.name)

    async def _copied(self, path: str, blob: BlobClient, status: str) -> None:
        """Wait for a copy the service reports pending, as Distribution does."""
        attempt = 1
        while status == "pending":
            with self._errors(path):
                properties = await blob.get_blob_properties()
            copy = properties.copy
            status = str(copy.status or "")
            if status == "pending" and (self.max_retries < 0 or attempt >= self.max_retries):
                with self._errors(path):
                    await blob.abort_copy(str(copy.id))
                raise StorageUnavailable(
                    path, self.name, f"copy still pending after {max(attempt, 0)} checks: aborted"
                )
            if status == "pending":
                await asyncio.sleep(self.retry_delay * attempt)
                attempt += 1
        if status not in ("success", ""):
            raise StorageUnavailable(path, self.name, f"copy ended {status}")

    async def _delete(self, path: str) -> None:
        key = self._key(path)
        with _first_error():
            async with asyncio.TaskGroup() as group:
                deleted = group.create_task(self._delete_blob(path, self._blob(key)))
                below = group.create_task(self._names_below(path))
        if not deleted.result() and not below.result():
            raise PathNotFound(path, self.name)

        def job(name: str) -> Callable[[], Awaitable[None]]:
            async def delete() -> None:
                if not await self._delete_blob(path, self._blob(name)):
                    await self._discard_uncommitted(path, self._blob(name))

            return delete

        await _bounded(map(job, below.result()), DELETE_CONCURRENCY)

    async def _names_below(self, path: str) -> builtins.list[str]:
        """Every blob name below the directory ``path``, uncommitted blobs included."""
        with self._errors(path):
            return [
                item.name
                async for item in self._client().list_blobs(
                    name_starts_with=self._key(path) + "/", include=["uncommittedblobs"]
                )
            ]

    async def _delete_blob(self, path: str, blob: BlobClient) -> bool:
        """Delete the blob; whether there was one."""
        try:
            with self._errors(path):
                await blob.delete_blob()
        except PathNotFound:
            return False
        return True

    async def _discard_uncommitted(self, path: str, blob: BlobClient) -> None:
        """Drop the blocks staged where no blob was committed: commit nothing, delete that."""
        with self._errors(path):
            await blob.commit_block_list([])
        await self._delete_blob(path, blob)

    # -- staged blocks --------------------------------------------------------------------

    async def _uncommitted(self, path: str, key: str) -> builtins.list[BlobBlock]:
        """The blocks staged at ``key`` and not committed (none where there is no blob)."""
        with self._errors(path):
            try:
                _, uncommitted = await self._blob(key).get_block_list("uncommitted")
            except HttpResponseError as exc:
                # No blob at all, or an append or page blob: nothing staged.
                if _code(exc) in _NOT_FOUND or _code(exc) == "InvalidBlobType":
                    return []
                raise
        return uncommitted

    async def _staged(self, path: str, key: str) -> builtins.list[_Block]:
        """A writer's blocks at ``key``: the run numbered from 0, in order."""
        return _parse_blocks(await self._uncommitted(path, key))

    async def _stage(self, path: str, key: str, block: _Block, data: bytes) -> None:
        with self._errors(path):
            await self._blob(key).stage_block(block.id, data, length=len(data))

    async def _commit(self, path: str, key: str, blocks: builtins.list[_Block]) -> None:
        blob = self._blob(key)
        listed = [BlobBlock(block.id) for block in blocks]
        with self._errors(path):
            try:
                await blob.commit_block_list(listed)
            except HttpResponseError as exc:
                if _code(exc) != "InvalidBlobType" or blocks:
                    raise
                await blob.delete_blob()
                await blob.commit_block_list(listed)

    async def _discard(self, path: str, key: str) -> None:
        """Drop what writers staged at ``key``, keeping its committed content as it is."""
        uncommitted = await self._uncommitted(path, key)
        if not uncommitted:
            return
        committed = await self._properties(path, key)
        if committed is None:
            await self._discard_uncommitted(path, self._blob(key))
            return
        copied: list[_Block] = []
        for block in _parse_blocks(uncommitted):
            if block.kind != "c":
                break
            copied.append(block)
        if copied and sum(block.size for block in copied) == committed[0]:
            await self._commit(path, key, copied)  # the same bytes, committed again
            return
        # Committed by a Put Blob, so not made of blocks: its bytes are put again.
        content = await self._get_content(path)
        await self._put(path, key, content)

    # -- optional capabilities ------------------------------------------------------------

    @property
    def redirects(self) -> RedirectURLs:
        return self

    async def redirect_url(self, path: str, method: str = "GET") -> str | None:
        """A read-only SAS URL valid for ``redirect_expiry`` seconds, on the configured endpoint.

        Its protocol is the endpoint's: https only, or http too for an http endpoint
        (Distribution's driver signs https only, which an http endpoint refuses).
        """
        self._file_path(path)
        if method.upper() not in ("GET", "HEAD"):
            return None
        blob = self._blob(self._key(path))
        now = datetime.now(UTC)
        token = generate_blob_sas(
            self.accountname,
            self.container,
            blob.blob_name,
            account_key=self._accountkey,
            permission=BlobSasPermissions(read=True),
            start=now - timedelta(seconds=10),  # a little slack for clocks, as Distribution
            expiry=now + timedelta(seconds=self.redirect_expiry),
            protocol="https" if self.endpoint.startswith("https:") else "https,http",
        )
        return f"{blob.url}?{token}"

    @property
    def exclusive_creates(self) -> ExclusiveCreates:
        return self

    async def create(self, path: str, content: bytes) -> bool:
        """A Put Blob only where no blob is (``If-None-Match: *``)."""
        self._file_path(path)
        blob = self._blob(self._key(path))
        with self._errors(path):
            try:
                await blob.upload_blob(bytes(content), overwrite=False)
            except HttpResponseError as exc:
                if exc.status_code in (409, 412):  # BlobAlreadyExists, ConditionNotMet
                    return False
                raise
        return True

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
            async for info in self._walk(path, descend):
                yield info
        except PathNotFound as exc:
            if exc.path != path:
                raise
            # emptied while we walked


class _AzureWriter(FileWriter):
    """Stages blocks of a block blob; its state is the blob's uncommitted block list."""

    def __init__(self, driver: AzureDriver, path: str, key: str) -> None:
        self._driver = driver
        self._path = path
        self._key = key
        self._blocks: list[_Block] = []  # staged, in order
        self._buffer = bytearray()  # the bytes after the blocks; less than one block
        self._size = 0
        self._committed_size = 0  # committed content resumed but not yet copied into blocks
        self._broken = False  # a write failed half-way
        self._done = False

    @property
    def size(self) -> int:
        return self._size

    async def resume(self) -> None:
        """Load what earlier writers staged, else the committed file."""
        driver = self._driver
        staged = await driver._staged(self._path, self._key)
        # Copied committed content alone is no append yet (maybe cut short): start over from it.
        if any(block.kind == "w" for block in staged):
            self._blocks = staged
            self._size = sum(block.size for block in staged)
            return
        committed = await driver._properties(self._path, self._key)
        # Committed content is copied into blocks only once something is appended.
        self._committed_size = self._size = committed[0] if committed else 0

    async def _continue_committed(self) -> None:
        """Before appending to committed content, stage it as the first blocks."""
        self._committed_size = 0
        driver = self._driver
        async for chunk in await driver._reader(self._path, 0, BLOCK):
            await self._stage(chunk, "c")

    def _check_open(self) -> None:
        if self._done:
            raise StorageDriverError(self._path, self._driver.name, "writer is closed")

    async def write(self, data: bytes | bytearray | memoryview) -> int:
        self._check_open()
        try:
            if self._committed_size:
                await self._continue_committed()
            view = memoryview(data).cast("B")
            while view:
                room = BLOCK - len(self._buffer)
                self._buffer += view[:room]
                view = view[room:]
                if len(self._buffer) >= BLOCK:
                    await self._stage_buffer()
        except BaseException:
            # What is buffered no longer matches what was staged: keep the staged
            # blocks (a prefix of what was sent) rather than stage this buffer.
            self._broken = True
            raise
        self._size += len(data)
        return len(data)

    async def _stage_buffer(self) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        await self._stage(data, "w")

    async def _stage(self, data: bytes, kind: str) -> None:
        block = _Block(len(self._blocks), kind, len(data))
        await self._driver._stage(self._path, self._key, block, data)
        self._blocks.append(block)

    async def commit(self) -> None:
        self._check_open()
        if self._broken:
            raise StorageDriverError(self._path, self._driver.name, "an earlier write failed")
        if not self._committed_size:  # else resumed committed content, appended nothing
            if self._buffer:
                await self._stage_buffer()
            await self._driver._commit(self._path, self._key, self._blocks)
        self._done = True

    async def cancel(self) -> None:
        self._check_open()
        self._done = True
        await self._driver._discard(self._path, self._key)

    async def close(self) -> None:
        if self._done:
            return
        self._done = True
        if self._buffer and not self._broken:
            await self._stage_buffer()


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover - makes this an async generator
