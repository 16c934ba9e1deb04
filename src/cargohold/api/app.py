"""The aiohttp application: the registry's HTTP face.

One handler receives every request, finds the endpoint (``routes.py``), checks
the method and the repository name, calls the endpoint's handler and turns
domain errors into the specification's error replies (``errcode.py``).
Handlers stay thin: they parse the request, call the domain, and shape the reply.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import TYPE_CHECKING

from aiohttp import web

from cargohold.api import auth, blobs, health, listing, manifests, uploads
from cargohold.api.context import Api
from cargohold.api.errcode import NAME_INVALID, UNAVAILABLE, UNKNOWN, UNSUPPORTED
from cargohold.api.routes import METHODS, Endpoint, Route, match
from cargohold.auth import AccessController, build_access_controller, build_token_issuer
from cargohold.config import Config
from cargohold.digest import Digest
from cargohold.errors import (
    NameInvalid,
    OperationUnsupported,
    RegistryError,
    StorageDriverError,
    StorageUnavailable,
    Unauthorized,
)
from cargohold.manifest.urls import URLPolicy
from cargohold.registry import Namespace, Repository
from cargohold.storage.cache import BlobDescriptorCache
from cargohold.storage.cache.memory import MemoryBlobDescriptorCache
from cargohold.storage.driver import create_driver
from cargohold.storage.purge import run_purger
from cargohold.storage.registry import RegistryOptions, StorageRegistry

if TYPE_CHECKING:
    from cargohold.auth.issuer import TokenIssuer

log = logging.getLogger("cargohold.api")

API_KEY = web.AppKey("api", Api)

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})

RepoHandler = Callable[[Api, web.Request, Repository, str], Awaitable[web.StreamResponse]]


async def _blob(api: Api, request: web.Request, repo: Repository, arg: str) -> web.StreamResponse:
    digest = Digest.parse(arg)
    if request.method == "DELETE":
        return await blobs.delete_blob(api, request, repo, digest)
    return await blobs.get_blob(api, request, repo, digest)


async def _manifest(
    api: Api, request: web.Request, repo: Repository, arg: str
) -> web.StreamResponse:
    if request.method == "PUT":
        return await manifests.put_manifest(api, request, repo, arg)
    if request.method == "DELETE":
        return await manifests.delete_manifest(api, request, repo, arg)
    return await manifests.get_manifest(api, request, repo, arg)


async def _upload(api: Api, request: web.Request, repo: Repository, arg: str) -> web.StreamResponse:
    handler = {
        "PATCH": uploads.patch_upload,
        "PUT": uploads.finish_upload,
        "GET": uploads.upload_status,
        "DELETE": uploads.cancel_upload,
    }[request.method]
    return await handler(api, request, repo, arg)


async def _uploads(
    api: Api, request: web.Request, repo: Repository, arg: str
) -> web.StreamResponse:
    return await uploads.start_upload(api, request, repo)


async def _tags(api: Api, request: web.Request, repo: Repository, arg: str) -> web.StreamResponse:
    return await listing.list_tags(api, request, repo)


async def _referrers(
    api: Api, request: web.Request, repo: Repository, arg: str
) -> web.StreamResponse:
    return await listing.referrers(api, request, repo, Digest.parse(arg))


_REPOSITORY_HANDLERS: dict[Endpoint, RepoHandler] = {
    Endpoint.BLOB: _blob,
    Endpoint.MANIFEST: _manifest,
    Endpoint.UPLOAD: _upload,
    Endpoint.UPLOADS: _uploads,
    Endpoint.TAGS: _tags,
    Endpoint.REFERRERS: _referrers,
}


class Dispatcher:
    """The one handler of the application.

    With access control (``auth``), every request on a route is authorized
    before anything else is looked at, as in Distribution: a refused request
    learns nothing, not even whether its method exists. The token endpoint
    (``tokenserver``) and ``/debug/health`` (``health.py``) sit beside the API,
    outside any ``http.prefix`` and access control.
    """

    def __init__(
        self,
        api: Api,
        prefix: str = "",
        access: AccessController | None = None,
        issuer: TokenIssuer | None = None,
        checks: health.Health | None = None,
    ) -> None:
        self.api = api
        self.prefix = prefix.rstrip("/")
        self.access = access
        self.issuer = issuer
        self.checks = checks
        self._token_path = issuer.path.rstrip("/") if issuer is not None else None

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        api = self.api
        # The path as sent, still percent-encoded: see routes.py.
        path = request.raw_path.partition("?")[0]
        if path == health.PATH and self.checks is not None:
            return await self.checks.handle(request)
        if self.issuer is not None and path.rstrip("/") == self._token_path:
            return await auth.token_endpoint(api, self.issuer, request)
        if self.prefix:
            if not path.startswith(self.prefix + "/"):
                return self._not_found()
            path = path[len(self.prefix) :]
        route = match(path)
        if route is None:
            return self._not_found()
        method = request.method
        if self.access is not None:
            refused = await self._authorize(route, request)
            if refused is not None:
                return refused
        supported = METHODS[route.endpoint]
        # In read-only mode Distribution registers no write handlers, so its router answers
        # every write with 405 and an Allow header; the body here is the spec's UNSUPPORTED.
        allowed = supported - _WRITES if api.read_only else supported
        if method not in allowed:
            why = "the registry is in read-only mode" if method in supported else "not supported"
            return api.error_code(
                UNSUPPORTED,
                f"{method}: {why}",
                # RFC 9110 15.5.6: a 405 names the methods the resource does support.
                headers={"Allow": ", ".join(sorted(allowed))},
            )
        try:
            if method == "DELETE":
                self._check_delete(route)
            return await self._handle(route, request)
        except RegistryError as exc:
            return api.error(exc)
        except StorageUnavailable as exc:
            log.warning("storage unavailable: %s", exc)
            return api.error_code(UNAVAILABLE, "storage is unavailable")
        except StorageDriverError as exc:
            log.error("storage error on %s %s: %s", method, path, exc)
            return api.error_code(UNKNOWN, "storage error")

    async def _authorize(self, route: Route, request: web.Request) -> web.Response | None:
        """None when the request may go on (its grant left on it), else the refusal."""
        assert self.access is not None
        try:
            need = auth.required_access(route, request.method)
            request[auth.GRANT] = await self.access.authorize(request.headers, need)
        except Unauthorized as exc:
            return auth.unauthorized(self.api, exc)
        except NameInvalid as exc:
            return self.api.error(exc)
        return None

    def _check_delete(self, route: Route) -> None:
        # Cancelling an upload is not a delete: it stays allowed, as in Distribution.
        if route.endpoint != Endpoint.UPLOAD and not self.api.delete_enabled:
            raise OperationUnsupported("deletes are disabled (storage.delete.enabled)")

    async def _handle(self, route: Route, request: web.Request) -> web.StreamResponse:
        api = self.api
        if route.endpoint is Endpoint.BASE:
            return web.Response(
                body=b"{}", headers=api.headers({"Content-Type": "application/json"})
            )
        if route.endpoint is Endpoint.CATALOG:
            return await listing.catalog(api, request)
        if "%" in route.name:
            return api.error_code(NAME_INVALID, "invalid repository name", {"name": route.name})
        repo = api.registry.repository(route.name)
        return await _REPOSITORY_HANDLERS[route.endpoint](api, request, repo, route.argument)

    def _not_found(self) -> web.Response:
        return web.Response(status=404, text="404 page not found\n", headers=self.api.headers())


def build_cache(config: Config) -> BlobDescriptorCache | None:
    """The configured blob descriptor cache (``storage.cache.blobdescriptor``), if any."""
    cache = config.storage.cache
    if cache.blobdescriptor == "redis":
        from cargohold.storage.cache.redis import RedisBlobDescriptorCache

        return RedisBlobDescriptorCache.from_config(config.redis)
    if cache.blobdescriptor == "inmemory":
        # Distribution reads a size of 0 as "no bound".
        return MemoryBlobDescriptorCache(cache.blobdescriptorsize or sys.maxsize)
    return None


def build_registry(config: Config) -> StorageRegistry:
    storage = config.storage
    driver = create_driver(storage.driver_name, storage.driver_parameters.model_dump())
    urls = config.validation.manifests.urls
    options = RegistryOptions(
        delete_enabled=storage.delete.enabled,
        url_policy=URLPolicy.compile(urls.allow, urls.deny),
    )
    return StorageRegistry(driver, cache=build_cache(config), options=options)


def _mount_point(prefix: str) -> str:
    """``http.prefix`` as a path with a leading and no trailing slash (``/registry``), or "".

    Distribution's documentation asks for both slashes (``/registry/``); a prefix
    written without the leading one would otherwise match no request at all.
    """
    prefix = prefix.strip("/")
    return f"/{prefix}" if prefix else ""


def create_app(config: Config, registry: Namespace | None = None) -> web.Application:
    """An application serving the configured registry."""
    storage = config.storage
    api = Api(
        registry=registry if registry is not None else build_registry(config),
        extra_headers=config.http.headers,
        redirect=not storage.redirect.disable,
        delete_enabled=storage.delete.enabled,
        read_only=storage.maintenance.readonly.enabled,
        host=config.http.host,
        relative_urls=config.http.relativeurls,
        prefix=_mount_point(config.http.prefix),
        catalog_max_entries=config.catalog.maxentries,
    )
    app = web.Application(client_max_size=api.manifest_max_size + 1)
    app[API_KEY] = api
    # The bound coroutine method, not the instance: aiohttp deprecates (and warns about)
    # handlers that are not coroutine functions, and an instance with ``__call__`` is not one.
    checks = health.build_health(config, api.registry, api.headers())
    dispatcher = Dispatcher(
        api, api.prefix, build_access_controller(config), build_token_issuer(config), checks
    )
    app.router.add_route("*", "/{tail:.*}", dispatcher.__call__)
    app.cleanup_ctx.append(checks.running)

    async def close_registry(app: web.Application) -> None:
        close = getattr(api.registry, "close", None)
        if close is not None:
            await close()

    app.on_cleanup.append(close_registry)
    purging = storage.maintenance.uploadpurging
    if purging.enabled and not api.read_only and isinstance(api.registry, StorageRegistry):
        app.cleanup_ctx.append(_purger(api.registry, purging.age, purging.interval, purging.dryrun))
    return app


def _purger(
    registry: StorageRegistry, age: float, interval: float, dry_run: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Purge abandoned uploads in the background while the application runs."""

    async def purge(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(run_purger(registry.driver, age, interval, dry_run=dry_run))
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    return purge
