"""Blob uploads: ``POST``, ``PATCH``, ``PUT``, ``GET``, ``DELETE`` on ``/v2/<name>/blobs/uploads/``.

Every reply tells the client where to go next (``Location``) and how much has
arrived (``Range``). Nothing about an upload lives in this process: the next
request may reach any worker on any host.
"""

from __future__ import annotations

from urllib.parse import quote

from aiohttp import web

from cargohold.api.auth import may
from cargohold.api.context import Api
from cargohold.api.events import MOUNT, PUSH, Event
from cargohold.api.http import parse_content_range, upload_range
from cargohold.api.pipeline import respond
from cargohold.api.reply import Reply
from cargohold.api.uploadstate import pack_upload_state
from cargohold.auth.access import PULL, Access
from cargohold.descriptor import Descriptor
from cargohold.digest import DEFAULT_ALGORITHM, Digest
from cargohold.errors import (
    BlobUnknown,
    BlobUploadInvalid,
    DigestInvalid,
    NameInvalid,
    RangeInvalid,
)
from cargohold.reference import validate_name
from cargohold.registry import BlobWriter, Repository

#: Bytes read from the request body per write to storage.
BODY_CHUNK = 1 << 20


def _upload_reply(
    api: Api, request: web.Request, repo: Repository, upload: BlobWriter, status: int
) -> web.Response:
    location = api.url(request, f"/v2/{repo.name}/blobs/uploads/{upload.id}")
    if api.upload_secret:
        # For a Go registry sharing the storage: it continues only uploads whose URL it can verify.
        state = pack_upload_state(
            api.upload_secret, repo.name, upload.id, upload.size, upload.started_at
        )
        location += f"?_state={quote(state, safe='')}"
    return web.Response(
        status=status,
        headers=api.headers(
            {
                "Location": location,
                "Docker-Upload-UUID": upload.id,
                "Range": upload_range(upload.size),
                "Content-Length": "0",
            }
        ),
    )


def _blob_reply(
    api: Api, request: web.Request, repo: Repository, descriptor: Descriptor, event: Event
) -> web.Response:
    digest = descriptor.digest
    headers = api.headers(
        {
            "Location": api.url(request, f"/v2/{repo.name}/blobs/{digest}"),
            "Docker-Content-Digest": digest,
            "Content-Length": "0",
        }
    )
    return respond(request, Reply(201, headers, event=event))


def _pushed(
    api: Api, request: web.Request, repo: Repository, descriptor: Descriptor
) -> web.Response:
    return _blob_reply(api, request, repo, descriptor, Event.of(PUSH, repo.name, descriptor))


def _digest_param(request: web.Request) -> Digest:
    text = request.query.get("digest")
    if not text:
        raise DigestInvalid("the digest parameter is required")
    return Digest.parse(text)


async def _receive(request: web.Request, upload: BlobWriter) -> None:
    """Append the request body to the upload, checking ``Content-Range`` if sent.

    A body that turns out longer or shorter than its ``Content-Range`` (only
    knowable at the end of a chunked body) discards the whole upload: what
    arrived cannot be trusted, and there is no taking back an append.
    """
    content_range = request.headers.get("Content-Range")
    if not content_range:
        async for data in request.content.iter_chunked(BODY_CHUNK):
            await upload.write(data)
        return
    chunk = parse_content_range(content_range)
    if chunk.start != upload.size:
        raise RangeInvalid(
            f"chunk starts at {chunk.start} but the upload has {upload.size} bytes",
            {"offset": upload.size},
        )
    declared = request.content_length
    if declared is not None and declared != chunk.length:
        raise RangeInvalid(
            f"Content-Range covers {chunk.length} bytes but Content-Length is {declared}"
        )
    received = 0
    async for data in request.content.iter_chunked(BODY_CHUNK):
        received += len(data)
        if received > chunk.length:
            break
        await upload.write(data)
    if received != chunk.length:
        await upload.cancel()
        raise BlobUploadInvalid(
            f"Content-Range covers {chunk.length} bytes but the body had "
            f"{'more' if received > chunk.length else received}; the upload is discarded"
        )


async def start_upload(api: Api, request: web.Request, repo: Repository) -> web.StreamResponse:
    query = request.query
    mount, source = query.get("mount"), query.get("from")
    if mount and source:
        mounted = await _try_mount(request, repo, source, mount)
        if mounted is not None:
            event = Event.of(MOUNT, repo.name, mounted, from_repository=source)
            return _blob_reply(api, request, repo, mounted, event)
    if "digest" in query:
        with api.upload_slots.hold(_client(request)):
            return await _monolithic(api, request, repo, _digest_param(request))
    algorithm = query.get("digest-algorithm") or DEFAULT_ALGORITHM
    upload = await repo.blobs.create_upload(algorithm)
    await upload.close()
    return _upload_reply(api, request, repo, upload, 202)


async def _try_mount(
    request: web.Request, repo: Repository, source: str, mount: str
) -> Descriptor | None:
    """The blob mounted from ``source``, or None to fall back to a plain upload.

    A client that may not pull from ``source`` gets the plain upload too, without
    ``source`` ever being looked at: the reply must not tell whether the blob is there.
    """
    try:
        digest = Digest.parse(mount)
        validate_name(source)
        if not may(request, Access.of("repository", source, PULL)):
            return None
        return await repo.blobs.mount(source, digest)
    except (BlobUnknown, DigestInvalid, NameInvalid):
        return None


async def _monolithic(
    api: Api, request: web.Request, repo: Repository, digest: Digest
) -> web.StreamResponse:
    upload = await repo.blobs.create_upload(digest.algorithm)
    try:
        await _receive(request, upload)
    except BaseException:
        await upload.cancel()
        raise
    descriptor = await upload.commit(digest, _declared_length(request))
    return _pushed(api, request, repo, descriptor)


def _client(request: web.Request) -> str:
    """Whose upload slots a request takes (``limits.uploadsperclient``): its address."""
    return request.remote or ""


def _declared_length(request: web.Request) -> int | None:
    # With Content-Range the length covers only this chunk, not the blob.
    if request.headers.get("Content-Range"):
        return None
    return request.content_length


async def patch_upload(
    api: Api, request: web.Request, repo: Repository, upload_id: str
) -> web.StreamResponse:
    with api.upload_slots.hold(_client(request)):
        return await _patch(api, request, repo, upload_id)


async def _patch(
    api: Api, request: web.Request, repo: Repository, upload_id: str
) -> web.StreamResponse:
    upload = await repo.blobs.resume_upload(upload_id)
    try:
        await _receive(request, upload)
    except RangeInvalid as exc:
        # Tell the client where the upload stands, so it can resume from there.
        reply = _upload_reply(api, request, repo, upload, 416)
        return api.error(
            exc, {k: reply.headers[k] for k in ("Location", "Range", "Docker-Upload-UUID")}
        )
    finally:
        await upload.close()
    return _upload_reply(api, request, repo, upload, 202)


async def finish_upload(
    api: Api, request: web.Request, repo: Repository, upload_id: str
) -> web.StreamResponse:
    digest = _digest_param(request)
    with api.upload_slots.hold(_client(request)):
        upload = await repo.blobs.resume_upload(upload_id)
        try:
            await _receive(request, upload)
        except BaseException:
            await upload.close()
            raise
        descriptor = await upload.commit(digest)
    return _pushed(api, request, repo, descriptor)


async def upload_status(
    api: Api, request: web.Request, repo: Repository, upload_id: str
) -> web.StreamResponse:
    upload = await repo.blobs.resume_upload(upload_id)
    await upload.close()
    return _upload_reply(api, request, repo, upload, 204)


async def cancel_upload(
    api: Api, request: web.Request, repo: Repository, upload_id: str
) -> web.StreamResponse:
    upload = await repo.blobs.resume_upload(upload_id)
    await upload.cancel()
    return web.Response(status=204, headers=api.headers({"Content-Length": "0"}))
