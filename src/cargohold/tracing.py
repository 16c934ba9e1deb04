"""OpenTelemetry traces: off unless the standard ``OTEL_*`` variables ask for them.

Tracing is on when ``OTEL_TRACES_EXPORTER`` names ``otlp`` or ``console``, or,
with that variable unset, when an OTLP endpoint is given
(``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``);
``OTEL_SDK_DISABLED=true`` turns it off. Everything else (endpoint, headers,
timeout, compression, sampler, batching, resource) is read by the SDK from the
same variables. Distribution v3 is configured the same way and has no section
of its own in its configuration file, so neither does cargohold.

Spans:

* one per HTTP request (``TracingHook``, a request hook, on both paths),
  continuing an incoming W3C ``traceparent``, named ``METHOD route``;
* under it, one per storage driver call (``TracingWatch``, named by the action
  as in Distribution, with its ``io.cncf.distribution.storage.*`` attributes),
  one per call to a shared (Redis) descriptor cache (``TracingCacheWatch``), and one
  per S3 request (``storage/driver/s3spans.py``, through the global tracer
  provider, which ``install`` sets).

The fast path's reads from storage take microseconds: they are timed by the
metrics but not traced. What a request costs depends on what the sampler can
keep, which ``Tracing`` asks it once, at start:

* nothing at all (``always_off``, ``traceidratio`` with a ratio of 0, which
  drop every span, a caller's ``traceparent`` or not): there is no request
  hook and no driver watch, and a request costs nothing;
* no root span, but a span continuing a sampled caller's
  (``parentbased_traceidratio`` with 0, ``parentbased_always_off``): the hook
  (``ContinuingHook``) makes a span only for a request that brings a
  ``traceparent``; the fast path opens no exchange for the others (the hook
  is ``pipeline.Selective``), which cost that header's lookup;
* root spans: a span per request (unsampled ones are not recorded).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from cargohold import __version__
from cargohold.api.routes import TEMPLATES
from cargohold.errors import ConfigError
from cargohold.storage.cache.watched import WatchedCache

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Span, Tracer

    from cargohold.api.pipeline import Exchange
    from cargohold.descriptor import Descriptor
    from cargohold.storage.cache import BlobDescriptorCache
    from cargohold.storage.driver.base import ImmediateFiles

__all__ = ["PREFIX", "Tracing", "check_environment", "from_environment", "requested"]

#: Distribution's prefix for the attributes it defines.
PREFIX = "io.cncf.distribution."
#: The exporters cargohold carries.
EXPORTERS = frozenset({"otlp", "console", "none"})
#: The samplers ``OTEL_TRACES_SAMPLER`` may name (the SDK's built-in ones).
SAMPLERS = frozenset(
    {
        "always_on",
        "always_off",
        "traceidratio",
        "parentbased_always_on",
        "parentbased_always_off",
        "parentbased_traceidratio",
    }
)
#: At most one record from OpenTelemetry's own loggers per this many seconds.
LOG_INTERVAL = 60.0
#: Sets that interval, in seconds.
LOG_INTERVAL_VARIABLE = "CARGOHOLD_OTEL_LOG_INTERVAL"


def _exporters(environ: Mapping[str, str]) -> list[str]:
    given = environ.get("OTEL_TRACES_EXPORTER")
    if given is None:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        return ["otlp"] if endpoint else []
    names = [name.strip().lower() for name in given.split(",") if name.strip()]
    return [name for name in names if name != "none"]


def requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for traces."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return bool(_exporters(environ))


def check_environment(environ: Mapping[str, str] = os.environ) -> None:
    """Refuse, with one line, what the environment asks and cargohold cannot do."""
    if not requested(environ):
        return
    given = environ.get("OTEL_TRACES_EXPORTER", "")
    for name in (n.strip().lower() for n in given.split(",") if n.strip()):
        if name not in EXPORTERS:
            raise ConfigError(
                "OTEL_TRACES_EXPORTER", f"{name!r} is not built in (otlp, console or none)"
            )
    protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    if protocol and protocol.strip() != "http/protobuf":
        raise ConfigError(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            f"{protocol.strip()!r} is not built in: OTLP is sent over http/protobuf",
        )
    _log_interval(environ)
    sampler = environ.get("OTEL_TRACES_SAMPLER")
    if sampler is not None and sampler.strip().lower() not in SAMPLERS:
        raise ConfigError("OTEL_TRACES_SAMPLER", f"{sampler!r} is not a built-in sampler")
    argument = environ.get("OTEL_TRACES_SAMPLER_ARG")
    if argument is not None and sampler and "traceidratio" in sampler:
        try:
            ratio = float(argument)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise ConfigError("OTEL_TRACES_SAMPLER_ARG", f"{argument!r} is not a ratio in [0, 1]")


def _log_interval(environ: Mapping[str, str]) -> float:
    given = environ.get(LOG_INTERVAL_VARIABLE)
    if given is None:
        return LOG_INTERVAL
    try:
        interval = float(given)
    except ValueError:
        interval = -1.0
    if not interval > 0:
        raise ConfigError(LOG_INTERVAL_VARIABLE, f"{given!r} is not a number of seconds above 0")
    return interval


class _HeaderGetter(Getter[Mapping[str, str]]):
    """Reads a request's headers on either path (both look names up case-insensitively)."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return list(carrier.keys())


_GETTER = _HeaderGetter()
_PROPAGATOR = TraceContextTextMapPropagator()


class _RequestTrace:
    """What tracing keeps of a request: its span, and the context token to detach."""

    __slots__ = ("span", "token")

    def __init__(self, span: Span, token: Token[Context] | None) -> None:
        self.span = span
        self.token = token


class TracingHook:
    """A request hook: a server span per request, on both paths."""

    def __init__(self, tracer: Tracer, roots: bool) -> None:
        self._tracer = tracer
        #: Whether the sampler may sample a root span; if not, only continued traces are made.
        self._roots = roots

    def request_started(self, exchange: Exchange) -> None:
        headers = exchange.headers
        if not self._roots and headers.get("traceparent") is None:
            return
        parent = _PROPAGATOR.extract(headers, getter=_GETTER)
        route = exchange.route
        method = exchange.method
        path = exchange.target.partition("?")[0]
        attributes: dict[str, str] = {
            "http.request.method": method,
            "url.path": path,
            "http.request.id": exchange.id,
        }
        if route is not None:
            template = TEMPLATES[route.endpoint]  # under http.prefix, if one is set
            attributes["http.route"] = template
            name = f"{method} {template}"
            if route.name:
                attributes[PREFIX + "repository.name"] = route.name
        else:
            name = method
        span = self._tracer.start_span(
            name,
            context=parent,
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=int(exchange.started * 1e9),
        )
        token = None
        if not exchange.fast:
            # The handlers run in this task: the storage calls they make become children.
            token = otel_context.attach(trace.set_span_in_context(span, parent))
        exchange.trace = _RequestTrace(span, token)

    def request_finished(self, exchange: Exchange) -> None:
        kept = exchange.trace
        if not isinstance(kept, _RequestTrace):
            return
        span = kept.span
        status = exchange.status
        if status:
            span.set_attribute("http.response.status_code", status)
            span.set_attribute("http.response.body.size", exchange.size)
        if status >= 500 or exchange.cut or not status:
            span.set_status(Status(StatusCode.ERROR))
        if exchange.user:
            span.set_attribute("enduser.id", exchange.user)
        if kept.token is not None:
            otel_context.detach(kept.token)
        span.end()


class ContinuingHook(TracingHook):
    """The hook when the sampler starts no trace of its own: a span only continues a caller's.

    Selective (``pipeline.Selective``): a request the fast path answers needs an
    exchange, and a span, only when it brings a ``traceparent``; the others cost
    the fast path that header's lookup, and nothing more.
    """

    exchange_with = "traceparent"

    def __init__(self, tracer: Tracer) -> None:
        super().__init__(tracer, roots=False)


class _Ending:
    """Ends a span that is not made current (a walk's, whose iteration crosses tasks)."""

    __slots__ = ("_span",)

    def __init__(self, span: Span) -> None:
        self._span = span

    def __enter__(self) -> Span:
        return self._span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self._span.record_exception(exc)
            self._span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
        self._span.end()


_NOTHING: AbstractContextManager[object] = nullcontext()


class TracingWatch:
    """A driver watch (``DriverWatch``): a span per driver call under a recording span."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def action(self, driver: str, action: str, path: str) -> AbstractContextManager[object]:
        if not trace.get_current_span().is_recording():
            return _NOTHING
        attributes = {PREFIX + "storage.driver.name": driver, PREFIX + "storage.path": path}
        if action == "Walk":
            return _Ending(self._tracer.start_span(action, attributes=attributes))
        return self._tracer.start_as_current_span(action, attributes=attributes)

    def immediate(self, files: ImmediateFiles, driver: str) -> ImmediateFiles:
        return files  # immediate reads take microseconds: they are timed, not traced


class TracingCacheWatch:
    """A cache watch (``CacheWatch``): a client span per call to a shared (Redis) cache."""

    def __init__(self, tracer: Tracer) -> None:
        self._tracer = tracer

    def call(self, operation: str) -> AbstractContextManager[object]:
        if not trace.get_current_span().is_recording():
            return _NOTHING
        return self._tracer.start_as_current_span(
            f"redis {operation}",
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": "redis", PREFIX + "cache.operation": operation},
        )

    def called(self, found: Descriptor | None = None, lookup: bool = False) -> None:
        pass


class _Throttled(logging.Handler):
    """Passes on at most one record per interval, saying how many it held back.

    An unreachable collector fails every export: without this, the log would
    carry a warning per batch for as long as it stays down.
    """

    def __init__(self, interval: float) -> None:
        super().__init__()
        self._interval = interval
        self._next = 0.0
        self._held = 0

    def emit(self, record: logging.LogRecord) -> None:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return
        self._next = now + self._interval
        if self._held:
            record.msg = f"{record.getMessage()} ({self._held} more such records held back)"
            record.args = None
            self._held = 0
        for handler in logging.getLogger().handlers:
            if record.levelno >= handler.level:
                handler.handle(record)


def _throttle_logs(interval: float) -> None:
    # Records of every ``opentelemetry.*`` logger stop at this one, and pass through the throttle.
    otel = logging.getLogger("opentelemetry")
    otel.handlers[:] = [_Throttled(interval)]
    otel.propagate = False


class Tracing:
    """The tracer of one process, and what records its spans."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("cargohold", __version__)
        roots, continued = _may_sample(provider.sampler)
        #: None when no request can ever be sampled: spans that are never recorded make
        #: nothing to export, and the storage calls under them make none either.
        self.hook: TracingHook | None = None
        if roots:
            self.hook = TracingHook(self.tracer, roots=True)
        elif continued:
            self.hook = ContinuingHook(self.tracer)
        self.watch = TracingWatch(self.tracer) if self.hook is not None else None

    def cache(self, cache: BlobDescriptorCache) -> BlobDescriptorCache:
        """``cache``, with its calls traced when it is shared (Redis) and may be sampled."""
        if not cache.shared or self.hook is None:
            return cache
        return WatchedCache(cache, TracingCacheWatch(self.tracer))

    def install(self) -> None:
        """Make this the process's tracer provider: S3 requests are traced through it."""
        trace.set_tracer_provider(self.provider)

    def shutdown(self) -> None:
        """Send what is pending (within the exporter's timeout) and stop."""
        self.provider.shutdown()


def _may_sample(sampler: Sampler) -> tuple[bool, bool]:
    """Whether ``sampler`` may sample a root span, and a span continuing a caller's.

    The samplers ``OTEL_TRACES_SAMPLER`` names (``SAMPLERS``) decide by the trace
    id (a ratio: 0 is sampled at any ratio above 0) and by the parent's flags and
    remoteness, so one probe per kind of parent answers for every request. A
    caller's ``traceparent`` is a remote parent, sampled or not.
    """
    from opentelemetry.sdk.trace.sampling import Decision
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    def kept(parent: Context | None) -> bool:
        return sampler.should_sample(parent, 0, "probe").decision is not Decision.DROP

    def caller(flags: int) -> Context:
        span = NonRecordingSpan(SpanContext(1, 1, is_remote=True, trace_flags=TraceFlags(flags)))
        return trace.set_span_in_context(span)

    continued = kept(caller(TraceFlags.SAMPLED)) or kept(caller(TraceFlags.DEFAULT))
    return kept(None), continued


def from_environment() -> Tracing | None:
    """The tracing the ``OTEL_*`` variables ask for, or None; call it in each worker.

    The SDK reads the process's environment (sampler, exporter, batching), so this does too.
    """
    environ = os.environ
    if not requested(environ):
        return None
    check_environment(environ)
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    _throttle_logs(_log_interval(environ))
    resource = Resource.create({SERVICE_VERSION: __version__})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "cargohold"}))
    provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER
    for name in _exporters(environ):
        exporter: SpanExporter
        if name == "console":
            exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracing(provider)
