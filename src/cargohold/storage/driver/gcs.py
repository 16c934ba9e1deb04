"""A driver on a Google Cloud Storage bucket, on gcloud-aio-storage (aiohttp).

Distribution's ``gcs`` keys configure it: ``bucket``, ``keyfile`` (a service
account's JSON key) or ``credentials`` (the same key as a mapping), else
Google's application default credentials; ``rootdirectory``, ``chunksize``,
``useragent``, ``maxconcurrency``; and, as on S3, cargohold's
``redirectexpiry``. As Google's clients do, it sends every request to
``STORAGE_EMULATOR_HOST`` when that is set (``host:port`` or a URL), without
credentials; signed URLs then name that endpoint too, over http if it says so.

Layout, as Distribution's: the file at ``/a/b`` is the object
``<rootdirectory>/a/b`` (no leading ``/``); a directory is a prefix of names,
there while something is below it, without a time of its own (the epoch).

Writers, and how an upload resumes in another process. An uncommitted writer's
content lives in storage as two pieces:

- a *resumable upload session* for the file's own name, holding the leading
  bytes, in multiples of 256 KiB (GCS's granularity); finishing the session is
  the commit, atomic and server-side however large the file;
- a *pending object*, the sibling ``<dir>/.~<leaf>.pending``, holding the bytes
  after the session's (fewer than 256 KiB) and, in its metadata, the session's
  URI and the offset those bytes start at.

``writer(path, append=True)`` reads the pending object and asks the session
what it holds (a ``PUT`` with ``Content-Range: bytes */*``, answered ``308``
and a ``Range``); the session is the truth, so a process that died between
sending a chunk and rewriting the pending object leaves a consistent prefix,
never duplicated bytes. A writer holds at most ``chunksize`` bytes in memory
and sends whole chunks as they fill; closing it sends the whole 256 KiB
multiples it holds. The pending object has Distribution's content type of an
upload session (``application/x-docker-upload-session``), which Distribution's
listings skip, and its name contains ``~``, which no valid driver path can, so
``list`` and ``walk`` hide it; an object of that type (a Go registry's upload in
progress) is no file here either. Distribution keeps that state in an object at
the file's own name instead: an upload changes hands between the two programs
only once it is committed.

``move`` is a server-side rewrite (GCS's ``rewriteTo``); appending to committed
content reads it back into the new session, since a session cannot start from
an object. ``list`` and ``walk`` read one level per delimiter listing.

Signed URLs (``redirects``) are GOOG4-RSA-SHA256 URLs signed with the service
account's key (``gcssign.py``); without a key there are none and the registry
serves blobs itself.

Every provider error becomes a driver error (``errors.py``): a missing object
is ``PathNotFound``; a refused, failed or unreachable request is
``StorageUnavailable`` with a short reason. Requests that may be repeated are,
on 408, 429, 5xx and transport failures (``ATTEMPTS`` in all), as Google's
clients do; the chunks of a session are not: the next writer resumes instead.
"""

from __future__ import annotations

import asyncio
import builtins
import io
import json
import os
import random
import re
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from urllib.parse import quote, urlsplit

import aiohttp
from gcloud.aio.auth import Token
from gcloud.aio.storage import Storage

from cargohold.errors import (
    ConfigError,
    InvalidOffset,
    PathNotFound,
    StorageDriverError,
    StorageUnavailable,
)
from cargohold.socketbody import Relayable
from cargohold.storage.driver import httpsocket
from cargohold.storage.driver.base import (
    Descend,
    FileInfo,
    FileWriter,
    RedirectURLs,
    StorageDriver,
    join,
)
from cargohold.storage.driver.gcssign import MAX_EXPIRY, ServiceAccount, service_account, signed_url

KiB = 1 << 10
MiB = 1 << 20
#: GCS takes the chunks of a resumable upload in multiples of this, but the last.
QUANTUM = 256 * KiB
#: Distribution's default chunk size.
DEFAULT_CHUNK = 16 * MiB
#: The most objects one listing page holds.
LIST_MAX = 1000
#: Tries of a request that may be repeated.
ATTEMPTS = 3
#: Requests ``delete`` has under way at once.
DELETE_CONCURRENCY = 8
#: How long ``check`` waits for the endpoint, in seconds.
CHECK_TIMEOUT = 5.0
#: Where Google's JSON API and signed URLs are served.
GOOGLE = "https://storage.googleapis.com"
#: The environment variable Google's clients read an emulator's address from.
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
SCOPE = "https://www.googleapis.com/auth/devstorage.full_control"

CONTENT_TYPE = "application/octet-stream"  # what Distribution stores objects as
SESSION_TYPE = "application/x-docker-upload-session"  # Distribution's uploads in progress
_HIDDEN = "~"  # in every bookkeeping name; never in a valid driver path
_SESSION = "cargohold-session"  # pending-object metadata: the session it follows
_OFFSET = "cargohold-offset"  # ...and the byte offset at which its content starts
_NO_TIME = datetime.fromtimestamp(0, UTC)
_RETRIED = frozenset({408, 429, 500, 502, 503, 504})
_RANGE = re.compile(r"bytes=0-([0-9]+)")
_NO_BUCKET = "the specified bucket does not exist"  # GCS's 404 for a bucket, not an object
# Seconds a request of the library may take: small ones, and those that move content.
_SHORT, _LONG = 60, 600
_STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=60)

_T = TypeVar("_T")
#: A resumable upload session: open (taking bytes), done (the object is written), or gone.
_State = Literal["open", "done", "gone"]


def _pending_name(key: str) -> str:
    head, slash, leaf = key.rpartition("/")
    return f"{head}{slash}.{_HIDDEN}{leaf}.pending"


def _emulator() -> str | None:
    """The emulator's URL from ``STORAGE_EMULATOR_HOST`` (``host:port`` means http), or None."""
    host = os.environ.get(EMULATOR_ENV, "").strip().rstrip("/")
    if not host:
        return None
    return host if "://" in host else f"http://{host}"


def _time(text: str | None) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else _NO_TIME


@dataclass(frozen=True, slots=True)
class _Object:
    """What the JSON API says of an object that matters here."""

    size: int
    updated: datetime
    content_type: str
    generation: str
    metadata: Mapping[str, str]

    @classmethod
    def of(cls, resource: Mapping[str, Any]) -> _Object:
        return cls(
            int(resource.get("size") or 0),
            _time(resource.get("updated")),
            str(resource.get("contentType") or ""),
            str(resource.get("generation") or ""),
            resource.get("metadata") or {},
        )


def _load_key(keyfile: str, credentials: Mapping[str, Any]) -> ServiceAccount | None:
    """The service account of ``keyfile`` (which wins, as in Distribution) or ``credentials``."""
    if keyfile:
        try:
            info = json.loads(Path(keyfile).read_text())
        except OSError as exc:
            reason = f"cannot read {keyfile}: {exc.strerror}"
            raise ConfigError("storage.gcs.keyfile", reason) from None
        except ValueError:
            raise ConfigError("storage.gcs.keyfile", f"{keyfile} is not JSON") from None
        if not isinstance(info, dict):
            raise ConfigError("storage.gcs.keyfile", f"{keyfile} is not a JSON object")
        try:
            return service_account(info, keyfile)
        except ValueError as exc:
            raise ConfigError("storage.gcs.keyfile", str(exc)) from None
    if credentials:
        try:
            return service_account(credentials, "the key")
        except ValueError as exc:
            raise ConfigError("storage.gcs.credentials", str(exc)) from None
    return None


class GCSDriver(StorageDriver):
    """Distribution's ``gcs`` storage driver; parameters are its configuration names."""

    name = "gcs"

    def __init__(
        self,
        *,
        bucket: str,
        keyfile: str = "",
        credentials: Mapping[str, Any] | None = None,
        rootdirectory: str = "",
        chunksize: int = DEFAULT_CHUNK,
        useragent: str = "",
        maxconcurrency: int = 50,
        redirectexpiry: float = 1200,
    ) -> None:
        if not bucket:
            raise ConfigError("storage.gcs.bucket", "required")
        if chunksize < QUANTUM or chunksize % QUANTUM:
            raise ConfigError("storage.gcs.chunksize", f"must be a positive multiple of {QUANTUM}")
        if not 1 <= redirectexpiry <= MAX_EXPIRY:
            raise ConfigError(
                "storage.gcs.redirectexpiry",
                f"must be between 1s and 168h, not {redirectexpiry:g} s "
                "(a bare number is nanoseconds: write 20m)",
            )
        self.bucket = bucket
        self.chunksize = chunksize
        self.redirect_expiry = redirectexpiry
        self.account = _load_key(keyfile, credentials or {})
        #: The emulator's URL, or None for Google's service.
        self.endpoint = _emulator()
        self._api_root = self.endpoint or GOOGLE
        self._root = rootdirectory.strip().rstrip("/")
        self._useragent = useragent or "cargohold"
        self._connections = max(1, maxconcurrency)
        self._http: aiohttp.ClientSession | None = None
        self._storage: Storage | None = None
        self._token: Token | None = None

    # -- the client ---------------------------------------------------------------------

    async def _client(self) -> Storage:
        """The library's client, made on first use (it needs the running loop)."""
        if self._storage is None:
            http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections),
                headers={"User-Agent": self._useragent},
                auto_decompress=False,
            )
            token = None
            if self.endpoint is None:  # an emulator takes no credentials, as with Google's clients
                try:
                    token = self._make_token(http)
                except (OSError, ValueError, KeyError) as exc:
                    await http.close()
                    reason = f"no credentials: {type(exc).__name__}: {exc}".splitlines()[0]
                    raise StorageUnavailable("/", self.name, reason) from exc
            self._http, self._token = http, token
            self._storage = Storage(
                session=cast(Any, http),
                token=token,
                api_root=self._api_root,
                api_is_dev=token is None,
            )
        return self._storage

    def _make_token(self, http: aiohttp.ClientSession) -> Token:
        """OAuth tokens for the key, else for Google's application default credentials
        (``GOOGLE_APPLICATION_CREDENTIALS``, gcloud's, the metadata server's)."""
        service = json.dumps(dict(self.account.info)) if self.account else None
        return Token(
            service_file=io.StringIO(service) if service else None,
            # The library's stubs name requests' Session; at run time it is aiohttp's.
            session=cast(Any, http),
            scopes=[SCOPE],
        )

    async def _session(self) -> aiohttp.ClientSession:
        await self._client()
        assert self._http is not None
        return self._http

    async def _auth(self) -> dict[str, str]:
        """The headers of a request sent without the library."""
        await self._client()
        if self._token is None:
            return {}
        return {"Authorization": f"Bearer {await self._token.get()}"}

    async def close(self) -> None:
        http, self._http, self._storage, self._token = self._http, None, None, None
        if http is not None:
            await http.close()
        await super().close()

    async def check(self) -> None:
        """Raise ``StorageUnavailable`` with one line when the bucket cannot be used."""
        where = f"bucket {self.bucket!r} at {self.endpoint or GOOGLE}"
        await self._client()
        http, token = await self._session(), self._token
        if token is not None:
            try:
                await token.refresh(timeout=int(CHECK_TIMEOUT))
            except aiohttp.ClientResponseError as exc:
                reason = f"credentials refused by {token.token_uri} ({exc.status})"
                raise StorageUnavailable("/", self.name, reason) from exc
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
                reason = f"cannot get a token from {token.token_uri}: {detail}"
                raise StorageUnavailable("/", self.name, reason) from exc
        url = f"{self._api_root}/storage/v1/b/{quote(self.bucket, safe='')}/o"
        params = {"maxResults": "1", "prefix": self._prefix("/")}
        try:
            async with http.get(
                url,
                params=params,
                headers=await self._auth(),
                timeout=aiohttp.ClientTimeout(total=CHECK_TIMEOUT),
            ) as response:
                status, text = response.status, await response.text(errors="replace")
        except (aiohttp.ClientError, TimeoutError) as exc:
            detail = f"{type(exc).__name__}: {exc}".splitlines()[0] if str(exc) else "no answer"
            raise StorageUnavailable("/", self.name, f"cannot reach {where}: {detail}") from exc
        if status == 404:
            raise StorageUnavailable("/", self.name, f"{where} does not exist")
        if status in (401, 403):
            reason = f"access to {where} denied: check keyfile or credentials"
            raise StorageUnavailable("/", self.name, reason)
        if status != 200:
            raise StorageUnavailable("/", self.name, f"{where}: {status} {_message(text)}")

    # -- errors and retries ---------------------------------------------------------------

    def _status_error(self, path: str, status: int, message: str) -> StorageDriverError:
        if status == 404 and _NO_BUCKET in message.lower():
            return StorageUnavailable(path, self.name, f"bucket {self.bucket!r} does not exist")
        if status == 404:
            return PathNotFound(path, self.name)
        if status in (401, 403):
            return StorageUnavailable(path, self.name, f"access denied ({status})")
        return StorageUnavailable(path, self.name, f"{status}: {_message(message)}".rstrip(": "))

    async def _call(
        self, path: str, request: Callable[[], Awaitable[_T]], retry: bool = True
    ) -> _T:
        """``request()``, tried again on a passing failure; its errors as driver errors."""
        attempts = ATTEMPTS if retry else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                return await request()
            except aiohttp.ClientResponseError as exc:
                if last or exc.status not in _RETRIED:
                    raise self._status_error(path, exc.status, exc.message) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                if last:
                    detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    raise StorageUnavailable(path, self.name, detail) from exc
            await asyncio.sleep(0.25 * 2**attempt * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    # -- names ----------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        """The object name of ``path``; for the root, the prefix of every name."""
        return (self._root + path).lstrip("/")

    def _prefix(self, path: str) -> str:
        """The prefix of every name below the directory ``path``."""
        key = self._key(path)
        return key if path == "/" or not key else key + "/"

    def _object_url(self, key: str) -> str:
        bucket = quote(self.bucket, safe="")
        return f"{self._api_root}/storage/v1/b/{bucket}/o/{quote(key, safe='')}"

    # -- object requests ------------------------------------------------------------------

    async def _object(self, path: str, key: str) -> _Object | None:
        """The object's metadata, or None when there is none."""
        storage = await self._client()
        try:
            resource = await self._call(
                path, lambda: storage.download_metadata(self.bucket, key, timeout=_SHORT)
            )
        except PathNotFound:
            return None
        return _Object.of(resource)

    async def _file(self, path: str, key: str) -> _Object | None:
        """The committed file's metadata: not a Go registry's upload in progress."""
        found = await self._object(path, key)
        return None if found is None or found.content_type == SESSION_TYPE else found

    async def _upload(
        self,
        path: str,
        key: str,
        content: bytes | bytearray,
        content_type: str = CONTENT_TYPE,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Replace the object ``key`` with ``content``, atomically.

        An object with metadata, or an empty one, goes as a multipart upload
        (metadata and content in one request; some servers refuse an empty
        media upload); others as a plain media upload.
        """
        storage = await self._client()
        extra: dict[str, Any] | None = None
        if metadata is not None or not content:
            extra = {"Content-Type": content_type, "metadata": dict(metadata or {})}
        body = bytes(content)

        async def upload() -> None:
            await storage.upload(
                self.bucket,
                key,
                io.BytesIO(body),
                content_type=content_type,
                metadata=extra,
                timeout=_LONG,
            )

        await self._call(path, upload)

    async def _delete_object(self, path: str, key: str) -> bool:
        """Delete the object ``key``; whether there was one."""
        storage = await self._client()
        try:
            await self._call(path, lambda: storage.delete(self.bucket, key, timeout=_SHORT))
        except PathNotFound:
            return False
        return True

    async def _media(
        self, path: str, key: str, offset: int = 0, generation: str = "", pending: bool = False
    ) -> aiohttp.ClientResponse | None:
        """A response streaming the object from ``offset``; None when that is its end.

        An upload session's object is no file, but for reading a ``pending`` object.
        """
        http = await self._session()
        params = {"alt": "media", **({"generation": generation} if generation else {})}

        async def get() -> aiohttp.ClientResponse:
            headers = await self._auth()
            if offset:
                headers["Range"] = f"bytes={offset}-"
            response = await http.get(
                self._object_url(key), params=params, headers=headers, timeout=_STREAM_TIMEOUT
            )
            if response.status >= 400 and response.status != 416:
                await _raise_for(response)
            return response

        response = await self._call(path, get)
        if response.status == 416:  # GCS: the offset is at or beyond the end
            response.release()
            found = await self._file(path, key)
            if found is None:
                raise PathNotFound(path, self.name)
            if offset != found.size:
                raise InvalidOffset(path, self.name, offset, f"beyond the size {found.size}")
            return None
        if not pending and response.headers.get("Content-Type", "").startswith(SESSION_TYPE):
            response.release()
            raise PathNotFound(path, self.name)
        total = _total(response.headers.get("Content-Range", ""))
        if offset and response.status == 206 and total is not None and offset > total:
            response.release()  # a server that answers 206 with nothing rather than 416
            raise InvalidOffset(path, self.name, offset, f"beyond the size {total}")
        if offset and response.status == 200:
            await response.content.readexactly(offset)  # a server that ignored the range
        return response

    # -- the driver -----------------------------------------------------------------------

    async def _get_content(self, path: str) -> bytes:
        response = await self._media(path, self._key(path))
        assert response is not None
        try:
            return await self._call(path, response.read, retry=False)
        finally:
            response.release()

    async def _put_content(self, path: str, content: bytes) -> None:
        await self._upload(path, self._key(path), content)

    async def _reader(self, path: str, offset: int, chunk_size: int) -> AsyncIterator[bytes]:
        # One GET from the offset, streamed: one response is one generation of the object.
        response = await self._media(path, self._key(path), offset)
        if response is None:
            return _nothing()
        return Relayable(
            self._chunks(path, response, chunk_size),
            lambda most: httpsocket.socket_body(response, most),
        )

    async def _chunks(
        self, path: str, response: aiohttp.ClientResponse, chunk_size: int
    ) -> AsyncGenerator[bytes, None]:
        """Exactly ``chunk_size`` bytes per chunk (the last may be shorter)."""
        try:
            while True:
                try:
                    piece = await response.content.readexactly(chunk_size)
                except asyncio.IncompleteReadError as short:
                    if short.partial:
                        yield short.partial
                    break
                except (aiohttp.ClientError, TimeoutError) as exc:
                    detail = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    raise StorageUnavailable(path, self.name, detail) from exc
                yield piece
        finally:
            response.release()

    async def _writer(self, path: str, append: bool) -> FileWriter:
        key = self._key(path)
        writer = _GCSWriter(self, path, key)
        if append:
            await writer.resume()
        else:
            await self._delete_object(path, _pending_name(key))
        return writer

    async def _stat(self, path: str) -> FileInfo:
        if path == "/":
            return FileInfo(path, 0, _NO_TIME, is_dir=True)
        if found := await self._file(path, self._key(path)):
            return FileInfo(path, found.size, found.updated, is_dir=False)
        page = await self._page(path, self._prefix(path), "", max_results=1)
        if not page.get("items") and not page.get("prefixes"):
            raise PathNotFound(path, self.name)
        return FileInfo(path, 0, _NO_TIME, is_dir=True)

    async def _written_size(self, path: str) -> int:
        key = self._key(path)
        # A writer's saved state: its session's bytes, the pending object's offset, then
        # the pending object's own; one request, where resuming would also ask the session.
        pending = await self._object(path, _pending_name(key))
        if pending is not None:
            return int(pending.metadata.get(_OFFSET) or 0) + pending.size
        found = await self._file(path, key)
        if found is None:
            raise PathNotFound(path, self.name)
        return found.size

    async def _page(
        self,
        path: str,
        prefix: str,
        delimiter: str,
        token: str = "",
        max_results: int | None = None,
    ) -> dict[str, Any]:
        """One page of the objects whose names start with ``prefix``."""
        storage = await self._client()
        params = {"prefix": prefix, "maxResults": str(max_results or LIST_MAX)}
        if delimiter:
            params["delimiter"] = delimiter
        if token:
            params["pageToken"] = token
        return await self._call(
            path, lambda: storage.list_objects(self.bucket, params=params, timeout=_SHORT)
        )

    async def _pages(self, path: str, prefix: str, delimiter: str) -> AsyncIterator[dict[str, Any]]:
        token = ""
        while True:
            page = await self._page(path, prefix, delimiter, token)
            yield page
            token = str(page.get("nextPageToken") or "")
            if not token:
                return

    async def _list(self, path: str) -> builtins.list[str]:
        entries, listed = await self._level(path)
        if not listed and path != "/":
            raise PathNotFound(path, self.name)
        return [entry.path for entry in entries]

    async def _level(self, path: str) -> tuple[builtins.list[FileInfo], bool]:
        """The visible direct children of ``path`` in lexical order, and whether anything
        (hidden or not) is below it."""
        prefix = self._prefix(path)
        entries: list[FileInfo] = []
        listed = False
        async for page in self._pages(path, prefix, "/"):
            for item in page.get("items") or []:
                listed = True
                name = str(item["name"])[len(prefix) :]
                found = _Object.of(item)
                if name and _HIDDEN not in name and found.content_type != SESSION_TYPE:
                    entries.append(FileInfo(join(path, name), found.size, found.updated, False))
            for common in page.get("prefixes") or []:
                listed = True
                name = str(common)[len(prefix) :].rstrip("/")
                if name and _HIDDEN not in name:
                    entries.append(FileInfo(join(path, name), 0, _NO_TIME, is_dir=True))
        # Names sort "a-b/" before "a/"; paths sort "a" first: sort by path.
        entries.sort(key=lambda entry: entry.path)
        return entries, listed

    async def _names_below(self, path: str) -> builtins.list[str]:
        names: list[str] = []
        async for page in self._pages(path, self._key(path) + "/", ""):
            names.extend(str(item["name"]) for item in page.get("items") or [])
        return names

    async def _move(self, source: str, dest: str) -> None:
        source_key, dest_key = self._key(source), self._key(dest)
        if source == dest:
            if await self._file(source, source_key) is None:
                raise PathNotFound(source, self.name)
            return  # copying then deleting would lose the file
        storage = await self._client()

        async def rewrite() -> None:
            await storage.copy(
                self.bucket, source_key, self.bucket, new_name=dest_key, timeout=_LONG
            )

        await self._call(source, rewrite)
        await self._delete_object(source, source_key)

    async def _delete(self, path: str) -> None:
        key = self._key(path)
        found, below = await asyncio.gather(self._object(path, key), self._names_below(path))
        if found is None and not below:
            raise PathNotFound(path, self.name)
        names = [key, _pending_name(key)] if found is not None else []
        names += reversed(below)  # deepest first, as Distribution deletes

        def job(name: str) -> Callable[[], Awaitable[bool]]:
            return lambda: self._delete_object(path, name)

        await _bounded(map(job, names))

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

    # -- redirects ------------------------------------------------------------------------

    @property
    def redirects(self) -> RedirectURLs | None:
        # Without a key nothing signs: the registry serves the content itself.
        return self if self.account is not None else None

    async def redirect_url(self, path: str, method: str = "GET") -> str | None:
        """A V4 signed GET or HEAD URL valid for ``redirect_expiry`` seconds."""
        self._file_path(path)
        if self.account is None or method.upper() not in ("GET", "HEAD"):
            return None
        where = urlsplit(self._api_root)
        return signed_url(
            self.account,
            method.upper(),
            where.scheme,
            where.netloc,
            f"/{self.bucket}/{self._key(path)}",
            expires=int(self.redirect_expiry),
            now=datetime.now(UTC),
        )

    # -- resumable upload sessions ----------------------------------------------------------

    async def _start_session(self, path: str, key: str) -> str:
        """A new resumable upload session for the object ``key``; its URI."""
        http = await self._session()
        url = f"{self._api_root}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o"
        body = json.dumps({"name": key, "contentType": CONTENT_TYPE})

        async def start() -> str:
            headers = {
                **await self._auth(),
                "Content-Type": "application/json; charset=UTF-8",
                "X-Upload-Content-Type": CONTENT_TYPE,
            }
            async with http.post(
                url,
                params={"uploadType": "resumable", "name": key},
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=_SHORT),
            ) as response:
                await _raise_for(response)
                location = response.headers.get("Location")
            if not location:
                raise StorageUnavailable(path, self.name, "no session URI in the answer")
            return location

        return await self._call(path, start)

    async def _send(
        self, path: str, uri: str, data: bytes, start: int, total: int | None
    ) -> int | None:
        """Send ``data`` as the bytes from ``start`` of the session at ``uri``.

        With ``total`` the upload ends there (``data`` is its last piece); the
        answer is then None. Otherwise it is how many bytes the session holds,
        which may be fewer than were sent (send the rest again).
        """
        http = await self._session()
        size = "*" if total is None else str(total)
        span = f"{start}-{start + len(data) - 1}" if data else "*"
        headers = {
            **await self._auth(),
            "Content-Range": f"bytes {span}/{size}",
            "Content-Type": CONTENT_TYPE,
        }

        async def put() -> int | None:
            async with http.put(
                uri, data=io.BytesIO(data), headers=headers, timeout=_STREAM_TIMEOUT
            ) as response:
                if response.status == 308:
                    return _held(response.headers.get("Range"))
                await _raise_for(response)
                if total is None:
                    raise StorageUnavailable(path, self.name, "the session ended unasked")
                return None

        return await self._call(path, put, retry=False)

    async def _session_state(
        self, path: str, uri: str
    ) -> tuple[Literal["open", "done", "gone"], int]:
        """Whether the session is open (and how many bytes it holds), finished, or gone."""
        http = await self._session()

        async def query() -> tuple[_State, int]:
            headers = {**await self._auth(), "Content-Range": "bytes */*"}
            async with http.put(
                uri, data=b"", headers=headers, timeout=aiohttp.ClientTimeout(total=_SHORT)
            ) as response:
                if response.status == 308:
                    return "open", _held(response.headers.get("Range"))
                if response.status in (200, 201):
                    return "done", 0
                if response.status in (404, 410):
                    return "gone", 0
                await _raise_for(response)
                return "gone", 0

        return await self._call(path, query)

    async def _cancel_session(self, uri: str) -> None:
        """Cancel the session (GCS answers 499); what fails is left to expire in a week."""
        http = await self._session()
        try:
            async with http.delete(
                uri, headers=await self._auth(), timeout=aiohttp.ClientTimeout(total=_SHORT)
            ):
                pass
        except (aiohttp.ClientError, TimeoutError):
            pass


class _GCSWriter(FileWriter):
    """Appends to an upload whose state lives in storage (see the module docstring)."""

    def __init__(self, driver: GCSDriver, path: str, key: str) -> None:
        self._driver = driver
        self._path = path
        self._key = key
        self._session: str | None = None
        self._offset = 0  # bytes the session holds
        self._buffer = bytearray()  # the bytes after the session's; less than a chunk
        self._size = 0
        self._committed_size = 0  # committed content resumed but not yet part of the session
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
        found = await self._driver._file(self._path, self._key)
        # Committed content becomes part of a session only once something is appended.
        self._committed_size = self._size = found.size if found else 0
        self._saved = True

    async def _load_pending(self) -> bool:
        driver, path, name = self._driver, self._path, _pending_name(self._key)
        pending = await driver._object(path, name)
        if pending is None:
            return False
        response = await driver._media(path, name, generation=pending.generation, pending=True)
        tail = b""
        if response is not None:
            try:
                tail = await driver._call(path, response.read, retry=False)
            finally:
                response.release()
        self._session = pending.metadata.get(_SESSION) or None
        offset = int(pending.metadata.get(_OFFSET) or 0)
        self._buffer, self._offset, self._saved = bytearray(tail), 0, True
        if self._session is not None:
            state, held = await driver._session_state(path, self._session)
            if state == "done":
                # Committed, then the process died before removing the pending object.
                await driver._delete_object(path, name)
                return False
            if state == "gone" or held < offset:
                # The session expired or lost bytes: only the empty prefix is sure.
                self._session, self._buffer, self._saved = None, bytearray(), False
            elif held > offset:
                # A chunk holding some of the tail was sent, then the process died
                # before rewriting the pending object: the session is the truth.
                del self._buffer[: held - offset]
                self._offset, self._saved = held, False
            else:
                self._offset = held
        self._size = self._offset + len(self._buffer)
        return True

    async def _continue_committed(self) -> None:
        """Before appending to committed content, make it the start of this upload."""
        self._committed_size = 0
        async for piece in await self._driver.reader(self._path):
            self._buffer += piece
            await self._send_full_chunks()

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
                room = self._driver.chunksize - len(self._buffer)
                self._buffer += view[:room]
                view = view[room:]
                await self._send_full_chunks()
        except BaseException:
            # What is buffered no longer matches what was stored: keep the last
            # saved state (a prefix of what was sent) rather than save this one.
            self._broken = True
            raise
        self._size += len(data)
        return len(data)

    async def _send_full_chunks(self) -> None:
        while len(self._buffer) >= self._driver.chunksize:
            await self._send(self._driver.chunksize)

    async def _send(self, count: int) -> None:
        """Send the first ``count`` buffered bytes (a multiple of 256 KiB) into the session."""
        driver = self._driver
        if self._session is None:
            self._session = await driver._start_session(self._path, self._key)
        held = await driver._send(
            self._path, self._session, bytes(self._buffer[:count]), self._offset, None
        )
        assert held is not None
        taken = held - self._offset
        if not 0 < taken <= count:
            detail = f"the session holds {held} bytes after {self._offset} + {count} were sent"
            raise StorageUnavailable(self._path, driver.name, detail)
        del self._buffer[:taken]
        self._offset = held

    async def _save(self) -> None:
        """Store what is buffered so that another writer can resume it."""
        whole = len(self._buffer) - len(self._buffer) % QUANTUM
        while whole:
            before = len(self._buffer)
            await self._send(whole)
            whole -= before - len(self._buffer)
        metadata = {_SESSION: self._session or "", _OFFSET: str(self._offset)}
        await self._driver._upload(
            self._path, _pending_name(self._key), self._buffer, SESSION_TYPE, metadata
        )
        self._saved = True

    # -- finishing ------------------------------------------------------------------------

    async def commit(self) -> None:
        self._check_open()
        if self._broken:
            raise StorageDriverError(self._path, self._driver.name, "an earlier write failed")
        driver = self._driver
        if self._committed_size:
            pass  # resumed committed content and appended nothing: it is in place
        elif self._session is None:
            await driver._upload(self._path, self._key, self._buffer)
        else:
            total = self._offset + len(self._buffer)
            await driver._send(self._path, self._session, bytes(self._buffer), self._offset, total)
            self._session = None
        self._done = True
        await driver._delete_object(self._path, _pending_name(self._key))

    async def cancel(self) -> None:
        self._check_open()
        self._done = True
        await self._driver._delete_object(self._path, _pending_name(self._key))
        if self._session is not None:
            await self._driver._cancel_session(self._session)

    async def close(self) -> None:
        if self._done:
            return
        self._done = True
        if not self._saved and not self._broken:
            await self._save()


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover - makes this an async generator


async def _bounded(jobs: Iterable[Callable[[], Awaitable[object]]]) -> None:
    """Run ``jobs``, ``DELETE_CONCURRENCY`` at a time; the first failure is raised."""
    queue = iter(list(jobs))

    async def worker() -> None:
        for job in queue:
            await job()

    results = await asyncio.gather(
        *(worker() for _ in range(DELETE_CONCURRENCY)), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _raise_for(response: aiohttp.ClientResponse) -> None:
    """Raise the library's error for a failed response (as gcloud-aio's own requests do)."""
    if response.status < 400:
        return
    body = await response.text(errors="replace")
    raise aiohttp.ClientResponseError(
        response.request_info,
        response.history,
        status=response.status,
        message=f"{response.reason}: {body}",
        headers=response.headers,
    )


def _message(text: str) -> str:
    """The message of a JSON API error body (alone, or after the library's ``reason: ``),
    or the text's first line."""
    for candidate in (text, text.partition(": ")[2]):
        try:
            return str(json.loads(candidate)["error"]["message"])
        except (ValueError, KeyError, TypeError):
            pass
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def _held(header: str | None) -> int:
    """The bytes a session holds, from its ``Range: bytes=0-N`` (none: nothing)."""
    found = _RANGE.fullmatch((header or "").strip())
    return int(found[1]) + 1 if found else 0


def _total(header: str) -> int | None:
    """The full size a ``Content-Range: bytes a-b/total`` names."""
    size = header.rpartition("/")[2]
    return int(size) if size.isdigit() else None
