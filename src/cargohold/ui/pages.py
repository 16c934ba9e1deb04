"""The pages of ``/ui/``: server-rendered HTML, one request per page.

::

    GET  /ui/                                  the catalog (?q= search, ?after= next page)
    GET  /ui/r/<name>                          a repository's tags (?page=)
    GET  /ui/r/<name>/-/manifest/<digest>      one manifest
    GET  /ui/r/<name>/-/delete?tag=|digest=    what a delete would remove, and the button
    POST /ui/r/<name>/-/delete                 the delete (form token required)
    GET  /ui/gc                                what garbage collection would remove now
    GET  /ui/login, POST /ui/login, POST /ui/logout
    GET  /ui/static/<file>                     the stylesheet and the script

A repository name never holds a ``-`` component (the grammar wants each to
start with a letter or digit), so ``/-/`` parts the name from the page.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import secrets
from collections.abc import Mapping
from importlib import resources
from typing import Any
from urllib.parse import quote, unquote, urlencode

import jinja2
from aiohttp import web

from cargohold.api.context import Api
from cargohold.api.events import DELETE, Event
from cargohold.api.pipeline import record
from cargohold.auth.access import CATALOG, Access, repository_access
from cargohold.digest import Digest
from cargohold.errors import (
    DigestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    RegistryError,
    StorageDriverError,
    TagInvalid,
)
from cargohold.reference import validate_name, validate_tag
from cargohold.ui.gate import Gate, SignInRefused, Viewer
from cargohold.ui.inventory import Inventory

__all__ = ["PATH", "Pages"]

log = logging.getLogger("cargohold.ui")

#: Where the UI is served.
PATH = "/ui/"
SESSION_COOKIE = "cargohold_session"
#: A visitor's random value when not signed in: what their form tokens derive from.
VISITOR_COOKIE = "cargohold_visitor"

_STATIC = {"ui.css": "text/css", "ui.js": "text/javascript"}
#: No framing by other sites, no scripts but ours, no requests elsewhere.
_SECURITY = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class Pages:
    def __init__(self, api: Api, gate: Gate, *, page_size: int = 50) -> None:
        self.api = api
        self.gate = gate
        self.page_size = page_size
        self.inventory = Inventory(api.registry)
        self._templates = jinja2.Environment(
            loader=jinja2.PackageLoader("cargohold.ui", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self._templates.filters["size"] = human_size
        self._templates.filters["short"] = short_digest
        self._templates.globals["repo_url"] = repo_url
        self._templates.globals["manifest_url"] = manifest_url
        self._collecting = asyncio.Lock()

    def serves(self, path: str) -> bool:
        return path == PATH.rstrip("/") or path.startswith(PATH)

    async def handle(self, request: web.Request, path: str) -> web.StreamResponse:
        if path == PATH.rstrip("/"):
            return _redirect(PATH, 302)
        # The path arrives still percent-encoded (routes.py); here it is only ever compared
        # and validated as a name, tag or digest, so decoding it is safe.
        rest = unquote(path[len(PATH) :])
        method = request.method
        viewer = self.gate.viewer(request.headers, request.cookies.get(SESSION_COOKIE))
        page = _Page(self, request, viewer)
        if rest.startswith("static/"):
            return self._static(page, rest[len("static/") :])
        try:
            if rest == "" and method in ("GET", "HEAD"):
                return await self.catalog(page)
            if rest == "login":
                return await (self.sign_in(page) if method == "POST" else self.login_form(page))
            if rest == "logout" and method == "POST":
                return await self.sign_out(page)
            if rest == "gc" and method in ("GET", "HEAD"):
                return await self.collection(page)
            if rest.startswith("r/"):
                return await self._repository_pages(page, rest[2:])
        except (StorageDriverError, RegistryError) as exc:
            log.warning("ui: %s %s: %s", method, path, exc)
            return page.problem(503, "The registry's storage did not answer", str(exc))
        except (ConnectionError, asyncio.CancelledError):
            raise  # the visitor went away, or the server is stopping
        except Exception:
            log.exception("ui: unexpected error on %s %s", method, path)  # a bug
            return page.problem(500, "Something went wrong", "The error is in the registry's log.")
        return page.not_found("There is no such page.")

    async def _repository_pages(self, page: _Page, rest: str) -> web.StreamResponse:
        name, _, tail = rest.partition("/-/")
        try:
            name = validate_name(name)
        except NameInvalid:
            return page.not_found("That is not a repository name.")
        method = page.request.method
        if not tail and method in ("GET", "HEAD"):
            return await self.repository(page, name)
        if tail.startswith("manifest/") and method in ("GET", "HEAD"):
            return await self.manifest(page, name, tail[len("manifest/") :])
        if tail == "delete" and method in ("GET", "HEAD"):
            return await self.confirm_delete(page, name)
        if tail == "delete" and method == "POST":
            return await self.delete(page, name)
        return page.not_found("There is no such page.")

    # -- the pages ---------------------------------------------------------------------

    async def catalog(self, page: _Page) -> web.StreamResponse:
        refused = await page.needs_sign_in()
        if refused is not None:
            return refused
        query = page.request.query
        search = query.get("q", "")[:200]
        after = query.get("after", "")
        names = await self.inventory.repositories(search)
        start = _position_after(names, after)
        shown: list[str] = []
        more = False
        # Repositories the visitor may not pull are not shown at all: asked in chunks, so
        # that a page costs what it shows, not what the registry holds.
        while start < len(names) and not more:
            chunk = names[start : start + self.page_size * 2]
            start += len(chunk)
            wanted = [repository_access("GET", name)[0] for name in chunk]
            for name, allowed in zip(chunk, await page.viewer.allowed(wanted), strict=True):
                if not allowed:
                    continue
                if len(shown) == self.page_size:
                    more = True
                    break
                shown.append(name)
        counts = await self.inventory.tag_counts(shown)
        next_url = None
        if more:
            next_url = (
                PATH
                + "?"
                + urlencode({"q": search, "after": shown[-1]} if search else {"after": shown[-1]})
            )
        return page.render(
            "catalog.html",
            title="Repositories",
            search=search,
            repositories=[(name, counts[name]) for name in shown],
            after=after,
            next_url=next_url,
            first_url=PATH + ("?" + urlencode({"q": search}) if search else "") if after else None,
        )

    async def repository(self, page: _Page, name: str) -> web.StreamResponse:
        refused = await page.needs(Access.of("repository", name, "pull"))
        if refused is not None:
            return refused
        try:
            tags = await self.inventory.tags(name)
        except NameUnknown:
            return page.not_found(f"There is no repository {name}.")
        number = _page_number(page.request.query.get("page"))
        pages = max(1, -(-len(tags) // self.page_size))
        number = min(number, pages)
        shown = tags[(number - 1) * self.page_size : number * self.page_size]
        rows, storage = await asyncio.gather(
            self.inventory.rows(name, shown), self.inventory.storage(name, tags)
        )
        return page.render(
            "repository.html",
            title=name,
            name=name,
            rows=rows,
            tag_count=len(tags),
            storage=storage,
            number=number,
            pages=pages,
            may_delete=await page.may_delete(name),
        )

    async def manifest(self, page: _Page, name: str, reference: str) -> web.StreamResponse:
        refused = await page.needs(Access.of("repository", name, "pull"))
        if refused is not None:
            return refused
        try:
            digest = Digest.parse(reference)
        except DigestInvalid:
            return page.not_found("That is not a digest.")
        try:
            details = await self.inventory.details(name, digest)
        except (ManifestUnknown, NameUnknown):
            return page.not_found(f"There is no manifest {digest} in {name}.")
        return page.render(
            "manifest.html",
            title=f"{name}@{short_digest(digest)}",
            name=name,
            m=details,
            may_delete=await page.may_delete(name),
        )

    async def confirm_delete(self, page: _Page, name: str) -> web.StreamResponse:
        target = await self._delete_target(page, name)
        if isinstance(target, web.StreamResponse):
            return target
        tag, digest, going = target
        return page.render(
            "delete.html",
            title=f"Delete from {name}",
            name=name,
            tag=tag,
            digest=digest,
            going=going,
        )

    async def delete(self, page: _Page, name: str) -> web.StreamResponse:
        form = await page.request.post()
        if not page.form_valid(form):
            return page.problem(
                403, "Refused", "The form was not this page's own: nothing was deleted."
            )
        target = await self._delete_target(page, name, form)
        if isinstance(target, web.StreamResponse):
            return target
        tag, digest, going = target
        repo = self.api.registry.repository(name)
        if tag is not None:
            await repo.tags.untag(tag)
            event = Event(DELETE, name, tag=tag)
        else:
            assert digest is not None
            untagged = await repo.manifests.delete(digest)
            going = sorted(set(going) | set(untagged))
            event = Event(DELETE, name, digest, untagged=tuple(untagged))
        record(page.request, event)  # delivered to webhooks as the API's own delete is
        log.info("ui: %s deleted %s from %s", page.viewer.user or "anonymous", tag or digest, name)
        return page.render(
            "deleted.html", title="Deleted", name=name, tag=tag, digest=digest, going=going
        )

    async def _delete_target(
        self, page: _Page, name: str, fields: Mapping[str, Any] | None = None
    ) -> tuple[str | None, Digest | None, list[str]] | web.StreamResponse:
        """The tag or manifest a delete names and the tags that go with it, or the refusal."""
        if not self.api.delete_enabled or self.api.read_only:
            return page.problem(
                405,
                "Deletes are off",
                "This registry does not delete"
                " (storage.delete.enabled is off, or it is read-only).",
            )
        refused = await page.needs(Access.of("repository", name, "delete"))
        if refused is not None:
            return refused
        fields = fields if fields is not None else page.request.query
        repo = self.api.registry.repository(name)
        try:
            if fields.get("tag"):
                tag = validate_tag(str(fields["tag"]))
                await repo.tags.get(tag)
                return tag, None, [tag]
            digest = Digest.parse(str(fields.get("digest", "")))
            await repo.manifests.get(digest)
            return None, digest, sorted(await repo.tags.lookup(digest))
        except (TagInvalid, DigestInvalid):
            return page.problem(400, "Nothing to delete", "Name a tag or a digest.")
        except (ManifestUnknown, NameUnknown):
            return page.not_found("It is not there (deleted already?).")

    async def collection(self, page: _Page) -> web.StreamResponse:
        refused = await page.needs(CATALOG)
        if refused is not None:
            return refused
        upkeep = self.api.registry.upkeep
        if upkeep is None:
            return page.problem(404, "No preview", "This registry keeps no storage of its own.")
        if self._collecting.locked():
            return page.problem(503, "Busy", "A preview is being worked out; try again shortly.")
        async with self._collecting:
            preview = await upkeep.preview_collection()
        names = sorted(
            {str(m["repository"]) for m in preview.get("manifests", [])}
            | {str(t["repository"]) for t in preview.get("tags", [])}
        )
        wanted = [Access.of("repository", name, "pull") for name in names]
        visible = {n for n, ok in zip(names, await page.viewer.allowed(wanted), strict=True) if ok}
        return page.render(
            "gc.html",
            title="Garbage collection preview",
            tags=[t for t in preview.get("tags", []) if t["repository"] in visible],
            manifests=[m for m in preview.get("manifests", []) if m["repository"] in visible],
            blobs=len(preview.get("blobs", [])),
            reclaimed=int(preview.get("reclaimed_bytes", 0)),
            hidden=len(names) - len(visible),
            online=bool(preview.get("online")),
            damaged=preview.get("damaged", []) if len(visible) == len(names) else [],
        )

    # -- signing in --------------------------------------------------------------------

    async def login_form(
        self, page: _Page, problem: str = "", status: int = 200, target: str | None = None
    ) -> web.StreamResponse:
        """The form; ``target`` is where it leads (by default, the query's ``next``)."""
        if not self.gate.has_sign_in:
            return page.problem(
                404, "No accounts", "This registry lets everyone in: there is no sign-in."
            )
        if target is None:
            target = page.request.query.get("next", PATH)
        return page.render(
            "login.html", title="Sign in", problem=problem, next=_local(target), status=status
        )

    async def sign_in(self, page: _Page) -> web.StreamResponse:
        form = await page.request.post()
        # A refused attempt keeps where the visitor was going, for the next one.
        target = str(form.get("next", PATH))
        if not page.form_valid(form):
            expired = "The form had expired: please try again."
            return await self.login_form(page, expired, 400, target)
        try:
            session = await self.gate.sign_in(
                str(form.get("username", "")), str(form.get("password", ""))
            )
        except SignInRefused as exc:
            return await self.login_form(page, str(exc), 401, target)
        response = _redirect(_local(target))
        page.set_cookie(
            response, SESSION_COOKIE, self.gate.signer.seal(session), self.gate.lifetime
        )
        log.info("ui: %s signed in", session.user)
        return response

    async def sign_out(self, page: _Page) -> web.StreamResponse:
        form = await page.request.post()
        response = _redirect(PATH)
        if page.form_valid(form):
            response.del_cookie(SESSION_COOKIE, path=PATH)
        return response

    def _static(self, page: _Page, name: str) -> web.StreamResponse:
        kind = _STATIC.get(name)
        if kind is None:
            return page.not_found("There is no such file.")
        body = resources.files("cargohold.ui").joinpath("static", name).read_bytes()
        headers = {**_SECURITY, "Cache-Control": "public, max-age=3600"}
        return web.Response(body=body, content_type=kind, headers=headers)


class _Page:
    """One request for a page: who asks, and how its answer is made."""

    def __init__(self, pages: Pages, request: web.Request, viewer: Viewer) -> None:
        self.pages = pages
        self.request = request
        self.viewer = viewer
        # Whoever is not signed in still gets a random anchor for their form tokens.
        self._visitor = request.cookies.get(VISITOR_COOKIE) or ""
        self._new_visitor = not self._visitor
        if self._new_visitor:
            self._visitor = secrets.token_urlsafe(16)

    @property
    def anchor(self) -> str:
        session = self.viewer.session
        return session.nonce if session is not None else self._visitor

    def form_valid(self, form: Mapping[str, Any]) -> bool:
        origin = self.request.headers.get("Origin")
        if origin is not None and origin != "null":
            host = origin.partition("://")[2]
            if host != self.request.host:
                return False
        if self._new_visitor and self.viewer.session is None:
            return False
        token = str(form.get("csrf", ""))
        return self.pages.gate.signer.form_token_valid(self.anchor, token)

    async def needs(self, access: Access) -> web.StreamResponse | None:
        """None when the visitor may; else the page that says so (or asks them to sign in)."""
        refused = await self.needs_sign_in()
        if refused is not None:
            return refused
        if await self.viewer.may(access):
            return None
        if self.viewer.user is None and self.pages.gate.has_sign_in:
            return self._sign_in_first()
        return self.problem(403, "Not allowed", "Your account may not see this.")

    async def needs_sign_in(self) -> web.StreamResponse | None:
        gate = self.pages.gate
        if not gate.has_sign_in or self.viewer.user is not None or gate.tokens is not None:
            return None  # with tokens, anonymous visitors see what anonymous pulls allow
        return self._sign_in_first()

    def _sign_in_first(self) -> web.StreamResponse:
        target = self.request.path_qs if self.request.method == "GET" else PATH
        return self.render(
            "login.html",
            title="Sign in",
            problem="Sign in to see this registry.",
            next=_local(target),
            status=401,
        )

    async def may_delete(self, name: str) -> bool:
        api = self.pages.api
        if not api.delete_enabled or api.read_only:
            return False
        return await self.viewer.may(Access.of("repository", name, "delete"))

    def render(self, template: str, *, status: int = 200, **values: Any) -> web.Response:
        pages = self.pages
        values.setdefault("title", "cargohold")
        body = pages._templates.get_template(template).render(
            viewer=self.viewer,
            sign_in=pages.gate.has_sign_in,
            csrf=pages.gate.signer.form_token(self.anchor),
            host=pull_host(pages.api, self.request),
            root=PATH,
            **values,
        )
        response = web.Response(
            status=status,
            text=body,
            content_type="text/html",
            headers=_SECURITY,
        )
        if self._new_visitor:
            self.set_cookie(response, VISITOR_COOKIE, self._visitor, None)
        return response

    def problem(self, status: int, title: str, message: str) -> web.Response:
        return self.render("problem.html", status=status, title=title, message=message)

    def not_found(self, message: str) -> web.Response:
        return self.problem(404, "Not found", message)

    def set_cookie(
        self, response: web.StreamResponse, name: str, value: str, max_age: float | None
    ) -> None:
        response.set_cookie(
            name,
            value,
            path=PATH,
            httponly=True,
            samesite="Strict",
            secure=self.request.secure,
            max_age=int(max_age) if max_age is not None else None,
        )


# -- helpers for pages and templates --------------------------------------------------------


def human_size(size: int | None) -> str:
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def short_digest(digest: object) -> str:
    text = str(digest)
    algorithm, _, encoded = text.partition(":")
    return f"{algorithm}:{encoded[:12]}" if encoded else text


def repo_url(name: str) -> str:
    return f"{PATH}r/{quote(name)}"


def manifest_url(name: str, digest: object) -> str:
    return f"{PATH}r/{quote(name)}/-/manifest/{quote(str(digest), safe=':')}"


def pull_host(api: Api, request: web.Request) -> str:
    """The registry's address as a client would name it in ``docker pull``."""
    if api.host:
        host = api.host.partition("://")[2] or api.host
        return host.rstrip("/")
    return request.host


def _redirect(target: str, status: int = 303) -> web.Response:
    return web.Response(status=status, headers={**_SECURITY, "Location": target})


def _local(target: str) -> str:
    """``target`` if it is a path of the UI, else the catalog: no redirect leads elsewhere."""
    if target.startswith(PATH) and "//" not in target and "\\" not in target:
        return target
    return PATH


def _position_after(names: list[str], after: str) -> int:
    if not after:
        return 0
    return bisect.bisect_right(names, after)


def _page_number(text: str | None) -> int:
    try:
        return max(1, int(text or "1"))
    except ValueError:
        return 1
