"""Listings: ``/v2/<name>/tags/list``, ``/v2/_catalog`` and ``/v2/<name>/referrers/<digest>``."""

from __future__ import annotations

import bisect
import json

from aiohttp import web

from cargohold.api.context import Api
from cargohold.api.http import next_link, parse_page
from cargohold.api.reply import Reply
from cargohold.digest import Digest
from cargohold.manifest.mediatypes import OCI_INDEX
from cargohold.registry import Repository


def _json_reply(api: Api, body: object, headers: dict[str, str] | None = None) -> Reply:
    all_headers = api.headers(headers)
    all_headers["Content-Type"] = "application/json"
    return Reply(200, all_headers, json.dumps(body).encode())


def _json(api: Api, body: object, headers: dict[str, str] | None = None) -> web.Response:
    return _json_reply(api, body, headers).response()


def tags_reply(
    api: Api, name: str, tags: list[str], headers: dict[str, str] | None = None
) -> Reply:
    """The tags/list reply: ``tags`` is the page to show, ``headers`` its ``Link``, if any."""
    return _json_reply(api, {"name": name, "tags": tags}, headers)


def _paginate(
    api: Api, request: web.Request, items: list[str], n: int | None, path: str
) -> tuple[list[str], dict[str, str]]:
    """One page of ``items`` (already after ``last``) and the ``Link`` to the next."""
    if n is None or len(items) <= n:
        return items, {}
    page = items[:n]
    if not page:
        return page, {}
    return page, {"Link": next_link(api.url(request, path), n, page[-1])}


async def list_tags(api: Api, request: web.Request, repo: Repository) -> web.StreamResponse:
    page = parse_page(request)
    tags = await repo.tags.all()  # sorted
    # ``tags.maxtags`` caps a page asked for with ``n``, as Distribution 3 does; without
    # ``n`` every tag is listed.
    n = min(page.n, api.tags_max_entries) if page.n is not None else None
    # ``last`` is exclusive (Distribution 2.8 wrongly includes it). One slice of the page
    # and the one tag after it (is there a next page?), not a copy of every later tag.
    start = 0 if page.last is None else bisect.bisect_right(tags, page.last)
    tags = tags[start:] if n is None else tags[start : start + n + 1]
    shown, headers = _paginate(api, request, tags, n, f"/v2/{repo.name}/tags/list")
    return tags_reply(api, repo.name, shown, headers).response()


async def catalog(api: Api, request: web.Request) -> web.StreamResponse:
    page = parse_page(request, api.catalog_max_entries)
    # One more than asked for tells whether a next page exists.
    names = await api.registry.catalog(None if page.n is None else page.n + 1, page.last)
    shown, headers = _paginate(api, request, names, page.n, "/v2/_catalog")
    return _json(api, {"repositories": shown}, headers)


async def referrers(
    api: Api, request: web.Request, repo: Repository, digest: Digest
) -> web.StreamResponse:
    artifact_type = request.query.get("artifactType") or None
    found = await repo.referrers(digest, artifact_type)
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [descriptor.to_json() for descriptor in found],
    }
    headers = {"Content-Type": OCI_INDEX}
    if artifact_type is not None:
        headers["OCI-Filters-Applied"] = "artifactType"
    response = _json(api, body)
    response.headers.update(headers)
    return response
