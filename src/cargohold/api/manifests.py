"""``GET``/``HEAD``/``PUT``/``DELETE /v2/<name>/manifests/<reference>``.

The reference is a tag or a digest. Manifests are served exactly as they were
pushed, with the media type they were pushed as, whatever the Accept header
says (as Distribution 3 and the OCI specification do; Distribution 2 rewrote
schema2 into schema1 for old clients).
"""

from __future__ import annotations

from aiohttp import web

from cargohold.api.context import Api
from cargohold.api.events import DELETE, PULL, PUSH, Event
from cargohold.api.http import not_modified
from cargohold.api.pipeline import intend, respond
from cargohold.api.reply import Reply, RequestView
from cargohold.descriptor import Descriptor
from cargohold.digest import Digest, digest_of
from cargohold.errors import ManifestTooLarge, TagInvalid
from cargohold.manifest.base import check_nesting
from cargohold.reference import validate_tag
from cargohold.registry import Repository, StoredManifest

_MANIFEST_CHUNK = 64 * 1024


def _is_digest(reference: str) -> bool:
    return ":" in reference


async def _resolve(repo: Repository, reference: str) -> Digest:
    if _is_digest(reference):
        return Digest.parse(reference)
    return await repo.tags.get(validate_tag(reference))


def manifest_reply(
    api: Api, request: RequestView, repository: str, manifest: StoredManifest, tag: str | None
) -> Reply:
    """The reply to a GET or HEAD of ``manifest``, found by ``tag`` or by its digest."""
    digest = manifest.digest
    headers = api.headers(
        {
            "Docker-Content-Digest": digest,
            "ETag": f'"{digest}"',
            "Content-Type": manifest.media_type,
        }
    )
    if not_modified(request.headers, digest):
        return Reply(304, headers)
    size = len(manifest.payload)
    descriptor = Descriptor(manifest.media_type, digest, size)
    pulled = Event.of(PULL, repository, descriptor, tag=tag, payload=manifest.payload)
    if request.method == "HEAD":
        headers["Content-Length"] = str(size)
        return Reply(200, headers, event=pulled)
    return Reply(200, headers, manifest.payload, pulled)


async def get_manifest(
    api: Api, request: web.Request, repo: Repository, reference: str
) -> web.StreamResponse:
    digest = await _resolve(repo, reference)
    manifest = await repo.manifests.get(digest)
    tag = None if _is_digest(reference) else reference
    return respond(request, manifest_reply(api, request, repo.name, manifest, tag))


async def _read_body(api: Api, request: web.Request) -> bytes:
    limit = api.manifest_max_size
    declared = request.content_length
    if declared is not None and declared > limit:
        raise ManifestTooLarge(f"manifest of {declared} bytes is over the limit of {limit}")
    body = bytearray()
    async for chunk in request.content.iter_chunked(_MANIFEST_CHUNK):
        body += chunk
        if len(body) > limit:
            raise ManifestTooLarge(f"manifest is over the limit of {limit} bytes")
    return bytes(body)


async def put_manifest(
    api: Api, request: web.Request, repo: Repository, reference: str
) -> web.StreamResponse:
    extra_tags = request.query.getall("tag", [])
    if len(extra_tags) > api.tags_per_push:
        raise TagInvalid(
            f"{len(extra_tags)} tag parameters; at most {api.tags_per_push} (limits.tagsperpush)"
        )
    if _is_digest(reference):
        digest: Digest | None = Digest.parse(reference)
        tags = [validate_tag(tag) for tag in extra_tags]
    else:
        if extra_tags:
            raise TagInvalid("tag parameters need a digest reference")
        digest, tags = None, [validate_tag(reference)]
    payload = await _read_body(api, request)
    check_nesting(payload, api.json_depth)
    content_type = request.headers.get("Content-Type")
    # Its event is kept while the manifest is stored: their two fsyncs overlap.
    intent = intend(
        request,
        lambda: Event(
            PUSH,
            repo.name,
            digest or digest_of(payload),
            content_type,
            len(payload),
            tags[0] if tags else None,
        ),
    )
    try:
        stored = await repo.manifests.put(payload, content_type, tags, digest)
    except BaseException:
        if intent is not None:
            intent.abort()
        raise
    headers = api.headers(
        {
            "Location": api.url(request, f"/v2/{repo.name}/manifests/{stored.digest}"),
            "Docker-Content-Digest": stored.digest,
            "Content-Length": "0",
        }
    )
    if stored.subject is not None:
        # Tells the client the referrers API indexed it: no fallback tag needed.
        headers["OCI-Subject"] = stored.subject
    descriptor = Descriptor(stored.media_type, stored.digest, len(payload))
    pushed = Event.of(
        PUSH, repo.name, descriptor, tag=tags[0] if tags else None, payload=stored.payload
    )
    if intent is not None:
        intent.confirm(pushed)
    return respond(request, Reply(201, headers, event=pushed))


async def delete_manifest(
    api: Api, request: web.Request, repo: Repository, reference: str
) -> web.StreamResponse:
    if _is_digest(reference):
        digest = Digest.parse(reference)
        untagged = await repo.manifests.delete(digest)
        deleted = Event(DELETE, repo.name, digest, untagged=tuple(untagged))
    else:
        tag = validate_tag(reference)
        await repo.tags.untag(tag)
        deleted = Event(DELETE, repo.name, tag=tag)
    return respond(request, Reply(202, api.headers({"Content-Length": "0"}), event=deleted))
