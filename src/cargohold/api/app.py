"""The aiohttp application: the registry's HTTP face.

One handler receives every request, finds the endpoint (``routes.py``), checks
the method and the repository name, calls the endpoint's handler and turns
domain errors into the specification's error replies (``errcode.py``).
Handlers stay thin: they parse the request, call the domain, and shape the reply.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import suppress
from typing import TYPE_CHECKING

from aiohttp import web

from cargohold.api import auth, blobs, health, listing, manifests, uploads
from cargohold.api.accesslog import AccessLog
from cargohold.api.base import base_reply
from cargohold.api.context import Api
from cargohold.api.errcode import NAME_INVALID, UNAVAILABLE, UNKNOWN, UNSUPPORTED
from cargohold.api.pipeline import (
    EXCHANGE,
    PIPELINE,
    Exchange,
    Pipeline,
    RequestHook,
    limited_reply,
)
from cargohold.api.pulls import PullNotes
from cargohold.api.routes import METHODS, Endpoint, Route
from cargohold.auth import build_access_controller, build_token_issuer
from cargohold.config import Config
from cargohold.digest import Digest
from cargohold.errors import (
    NameInvalid,
    OperationUnsupported,
    RegistryError,
    StorageDriverError,
    StorageFull,
    StorageUnavailable,
    Unauthorized,
)
from cargohold.log import Recurring, bind_request, unbind_request
from cargohold.metrics import METRICS_DIR
from cargohold.metrics.recorders import Metrics
from cargohold.metrics.store import Store
from cargohold.notifications.delivery import DeliveryWatch
from cargohold.notifications.notifier import Notifier, event_log
from cargohold.ratelimit import build_limiter
from cargohold.registry import Namespace, Repository, Upkeep
from cargohold.storage.configured import (
    build_registry,
    pull_interval,
)
from cargohold.storage.purge import run_purger
from cargohold.unsupported import check_supported

if TYPE_CHECKING:
    from cargohold.auth.issuer import TokenIssuer
    from cargohold.tracing import Tracing
    from cargohold.ui import Pages

log = logging.getLogger("cargohold.api")

API_KEY = web.AppKey("api", Api)
PIPELINE_KEY = PIPELINE
HEALTH_KEY = web.AppKey("health", health.Health)
#: The application's metrics (``http.debug.prometheus``), None when off.
METRICS_KEY: web.AppKey[Metrics | None] = web.AppKey("metrics")

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
    """The one handler of the application: aiohttp's side of the request pipeline.

    Every request opens an exchange and passes the pipeline's steps
    (``pipeline.py``). With access control (``auth``), every request on a route
    is authorized before anything else is looked at, as in Distribution: a
    refused request learns nothing, not even whether its method exists. The
    token endpoint (``tokenserver``) and ``/debug/health`` (``health.py``) sit
    beside the API, outside any ``http.prefix``, access control and rate limits.
    With ``ratelimit``, a request on a route is charged once access control has
    decided, refused or not, and one over its limit gets the 429 before anything else.
    """

    def __init__(
        self,
        api: Api,
        pipeline: Pipeline,
        issuer: TokenIssuer | None = None,
        checks: health.Health | None = None,
        ui: Pages | None = None,
    ) -> None:
        self.api = api
        self.pipeline = pipeline
        self.issuer = issuer
        self.checks = checks
        self.ui = ui
        self._recurring = Recurring(log)
        self._token_path = issuer.path.rstrip("/") if issuer is not None else None

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        version = request.version
        pipeline = self.pipeline
        headers = request.headers
        # The path as sent, still percent-encoded: see routes.py.
        path = request.raw_path.partition("?")[0]
        exchange = pipeline.begin(
            request.method,
            request.raw_path,
            f"{version.major}.{version.minor}",
            request.remote or "-",
            headers,
            fast=False,
            route=pipeline.route(path),
            request_id=pipeline.request_id(headers),
            head_size=_head_size(request),
            connection=request.transport,
        )
        request[EXCHANGE] = exchange
        bound = bind_request({"http.request.id": exchange.id})
        status = size = 0
        try:
            response = await self._answer(exchange, request, path)
            if not await pipeline.commit(exchange, response.status):
                response = self.api.error_code(UNAVAILABLE, "the write's event could not be kept")
            status = response.status
            if request.method != "HEAD" and status not in (204, 304):
                size = response.content_length or 0
            if self.pipeline.draining and not response.prepared:
                response.force_close()  # the server is stopping: no request after this one
            # Sent here, not after returning, so that the hooks run once it is out.
            await response.prepare(request)
            await response.write_eof()
            return response
        except asyncio.CancelledError:
            exchange.cut = True  # the server is stopping, and its drain time ran out
            raise
        finally:
            exchange.received = request.content.total_bytes
            unbind_request(bound)
            pipeline.finish(exchange, status, size)

    async def _answer(
        self, exchange: Exchange, request: web.Request, path: str
    ) -> web.StreamResponse:
        api = self.api
        if path == health.PATH and self.checks is not None:
            return await self.checks.handle(request)
        if self.issuer is not None and path.rstrip("/") == self._token_path:
            return await auth.token_endpoint(api, self.issuer, request)
        if self.ui is not None and self.ui.serves(path):
            return await self.ui.handle(request, path)
        route = exchange.route
        if route is None:
            return self._not_found()
        method = request.method
        if method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            # A browser's CORS preflight carries no credentials: answered before access
            # control, with http.headers (where Access-Control-* are configured). Any other
            # OPTIONS is an unsupported method, as in Distribution.
            return web.Response(status=200, headers=api.headers({"Content-Length": "0"}))
        refusal: web.Response | None = None
        try:
            grant = await self.pipeline.authorize(exchange, route, request.headers)
        except Unauthorized as exc:
            grant, refusal = None, auth.unauthorized(api, exc)
        except NameInvalid as exc:
            grant, refusal = None, api.error(exc)
        if self.pipeline.limiter is not None:
            # Refused requests are charged too (to the address): guessing passwords is limited.
            wait = await self.pipeline.limit(exchange)
            if wait:
                return limited_reply(api, wait).response()
        if refusal is not None:
            return refusal
        if grant is not None:
            request[auth.GRANT] = grant
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
        except StorageFull as exc:
            self._recurring.warning(f"full {exc.driver}", "storage is full: %s", exc)
            # 503 rather than 507: every client takes it for "try again later" (space is
            # usually freed: garbage collection, an operator), and it is a code the
            # specification names; the message says why.
            return api.error_code(
                UNAVAILABLE, "the registry's storage is full", headers={"Retry-After": "60"}
            )
        except StorageUnavailable as exc:
            self._recurring.warning(f"down {exc.driver}", "storage unavailable: %s", exc)
            return api.error_code(UNAVAILABLE, "storage is unavailable")
        except StorageDriverError as exc:
            log.error("storage error on %s %s: %s", method, path, exc)
            return api.error_code(UNKNOWN, "storage error")
        except ConnectionError:
            raise  # the client went away: there is no one to answer
        except Exception:
            # A bug: the client still gets the specification's error body, and the hooks a 500.
            log.exception("unexpected error on %s %s", method, path)
            return api.error_code(UNKNOWN, "internal error")

    def _check_delete(self, route: Route) -> None:
        # Cancelling an upload is not a delete: it stays allowed, as in Distribution.
        if route.endpoint != Endpoint.UPLOAD and not self.api.delete_enabled:
            raise OperationUnsupported("deletes are disabled (storage.delete.enabled)")

    async def _handle(self, route: Route, request: web.Request) -> web.StreamResponse:
        api = self.api
        if route.endpoint is Endpoint.BASE:
            return base_reply(api).response()
        if route.endpoint is Endpoint.CATALOG:
            return await listing.catalog(api, request)
        if "%" in route.name:
            return api.error_code(NAME_INVALID, "invalid repository name", {"name": route.name})
        name = route.name
        routing = api.registry.routing
        if routing is not None and "ns" in request.query:
            name = routing.namespaced(name, request.query["ns"])
        repo = api.registry.repository(name)
        return await _REPOSITORY_HANDLERS[route.endpoint](api, request, repo, route.argument)

    def _not_found(self) -> web.Response:
        return web.Response(status=404, text="404 page not found\n", headers=self.api.headers())


def build_namespace(
    config: Config,
    threads: Executor | None = None,
    metrics: Metrics | None = None,
    tracing: Tracing | None = None,
) -> Namespace:
    """The registry on the configured storage, mirroring ``proxy``'s upstreams when set."""
    local = build_registry(config, threads, metrics, tracing)
    if config.proxy is None:
        return local
    from cargohold.proxy import MirrorRegistry, upstreams_of

    watch = metrics.proxy if metrics is not None else None
    proxy = config.proxy
    return MirrorRegistry(local, upstreams_of(proxy), watch, local_repositories=proxy.local)


def _head_size(request: web.Request) -> int:
    """Bytes of the request line and headers as sent (give or take the spaces)."""
    size = len(request.method) + len(request.raw_path) + 13  # " ", " HTTP/1.1\r\n", "\r\n"
    for name, value in request.raw_headers:
        size += len(name) + len(value) + 4
    return size


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    # Here rather than in the handler: streamed replies send their headers themselves.
    exchange = request.get(EXCHANGE)
    if exchange is not None:
        response.headers["X-Request-Id"] = exchange.id


def _mount_point(prefix: str) -> str:
    """``http.prefix`` as a path with a leading and no trailing slash (``/registry``), or "".

    Distribution's documentation asks for both slashes (``/registry/``); a prefix
    written without the leading one would otherwise match no request at all.
    """
    prefix = prefix.strip("/")
    return f"/{prefix}" if prefix else ""


#: Threads of the application's executor (fsyncs, hashing, large sends, scans, bcrypt)
#: when the storage is not a local disk, whose maxthreads sets it.
THREADS = 32


def create_app(
    config: Config,
    registry: Namespace | None = None,
    *,
    hooks: Sequence[RequestHook] = (),
    metrics: Metrics | None = None,
    tracing: Tracing | None = None,
) -> web.Application:
    """An application serving the configured registry (or ``registry``, when given).

    ``hooks`` hear of every request after the configured ones (the access log,
    metrics). The application owns one executor for every blocking call, made
    here and shut down when the application is cleaned up, after ``registry``
    is closed. With ``http.debug.prometheus`` it records metrics in ``metrics``
    (``serve`` gives each worker a store the others can read) or, when none is
    given, in a store of its own. With ``tracing`` (``tracing.from_environment``)
    every request is a span, and its storage and cache calls are its children.
    """
    check_supported(config)
    prometheus = config.http.debug.prometheus
    own_metrics = metrics is None and prometheus.enabled
    if own_metrics:
        metrics = Metrics(Store(), prometheus.repositories)
    storage = config.storage
    # Every blocking call of the application runs here; on a local disk it is also the
    # bound Distribution's storage.filesystem.maxthreads puts on blocking file operations.
    size = storage.filesystem.maxthreads if storage.filesystem is not None else THREADS
    threads = ThreadPoolExecutor(size, thread_name_prefix="cargohold")
    namespace = (
        registry if registry is not None else build_namespace(config, threads, metrics, tracing)
    )
    api = Api(
        registry=namespace,
        threads=threads,
        extra_headers=config.http.headers,
        redirect=not storage.redirect.disable,
        delete_enabled=storage.delete.enabled,
        read_only=storage.maintenance.readonly.enabled,
        host=config.http.host,
        relative_urls=config.http.relativeurls,
        prefix=_mount_point(config.http.prefix),
        catalog_max_entries=config.catalog.maxentries,
        tags_max_entries=config.tags.maxtags,
        manifest_max_size=config.limits.manifestsize,
        json_depth=config.limits.jsondepth,
        tags_per_push=config.limits.tagsperpush,
        uploads_per_client=config.limits.uploadsperclient,
        upload_secret=config.http.secret,
    )
    configured: list[RequestHook] = []
    if tracing is not None and tracing.hook is not None:  # None: the sampler keeps nothing
        configured.append(tracing.hook)
    if not config.log.accesslog.disabled:
        configured.append(AccessLog())
    if metrics is not None:
        configured.append(metrics.http)
    notifier = build_notifier(
        config, threads, metrics.notifications if metrics is not None else None, namespace
    )
    if notifier is not None:
        configured.append(notifier)
    if pull_interval(storage.maintenance) is not None and namespace.upkeep is not None:
        configured.append(PullNotes(namespace.upkeep))
    # The workers of ``serve`` share one table of buckets, in the directory made for them.
    limiter = build_limiter(config, os.environ.get(METRICS_DIR))
    pipeline = Pipeline(
        prefix=api.prefix,
        access=build_access_controller(config, threads),
        hooks=[*configured, *hooks],
        journal=notifier,
        limiter=limiter,
    )
    app = web.Application(client_max_size=api.manifest_max_size + 1)
    app[API_KEY] = api
    app[PIPELINE_KEY] = pipeline
    app[METRICS_KEY] = metrics
    checks = app[HEALTH_KEY] = health.build_health(config, namespace.upkeep, api.headers())
    issuer = build_token_issuer(config, threads)
    pages = None
    if config.ui.enabled:
        from cargohold.ui import build_pages  # and Jinja2, only when the UI is on

        pages = build_pages(config, api, pipeline.access, issuer)
    dispatcher = Dispatcher(api, pipeline, issuer, checks, pages)
    # The bound coroutine method, not the instance: aiohttp deprecates (and warns about)
    # handlers that are not coroutine functions, and an instance with ``__call__`` is not one.
    app.router.add_route("*", "/{tail:.*}", dispatcher.__call__)
    app.on_response_prepare.append(_echo_request_id)
    app.cleanup_ctx.append(checks.running)
    purging = storage.maintenance.uploadpurging
    upkeep = namespace.upkeep
    if purging.enabled and not api.read_only and upkeep is not None:
        on_purged = metrics.http.purged if metrics is not None else None
        app.cleanup_ctx.append(
            _purger(upkeep, purging.age, purging.interval, purging.dryrun, on_purged)
        )
    if metrics is not None:
        app.cleanup_ctx.append(_noting_cpu(metrics))
    if notifier is not None:
        app.cleanup_ctx.append(_notifying(notifier))
    if namespace.maintenance is not None:
        app.cleanup_ctx.append(_background(namespace.maintenance.run))

    async def close(app: web.Application) -> None:
        try:
            if limiter is not None:
                await limiter.close()
            await namespace.close()
        finally:
            threads.shutdown(wait=True)
            if own_metrics and metrics is not None:
                metrics.store.close()

    app.on_cleanup.append(close)
    return app


def _purger(
    upkeep: Upkeep,
    age: float,
    interval: float,
    dry_run: bool,
    on_purged: Callable[[int, int], None] | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Purge abandoned uploads in the background while the application runs."""
    return _background(
        lambda: run_purger(upkeep, age, interval, dry_run=dry_run, on_purged=on_purged)
    )


def _noting_cpu(metrics: Metrics) -> Callable[[web.Application], AsyncIterator[None]]:
    """Note the process's CPU time while the application runs, and once more at its end."""
    background = _background(metrics.noting_cpu)

    async def noting(app: web.Application) -> AsyncIterator[None]:
        async for _ in background(app):
            yield
        metrics.note_cpu()

    return noting


def build_notifier(
    config: Config,
    threads: Executor,
    watch: DeliveryWatch | None = None,
    registry: Namespace | None = None,
) -> Notifier | None:
    """The notifier of the configured endpoints, if any is enabled."""
    if not config.notifications.active:
        return None
    scheme = "https" if config.http.tls.certificate else "http"
    return Notifier(
        config, event_log(config, threads), scheme=scheme, watch=watch, registry=registry
    )


def _notifying(notifier: Notifier) -> Callable[[web.Application], AsyncIterator[None]]:
    """Spool from the first request on; deliver in the background while the application runs."""
    background = _background(notifier.running)

    async def notifying(app: web.Application) -> AsyncIterator[None]:
        await notifier.open()
        async for _ in background(app):
            yield

    return notifying


def _background(
    work: Callable[[], Awaitable[None]],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context running ``work`` as a task while the application runs."""

    async def running(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.ensure_future(work())
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    return running
