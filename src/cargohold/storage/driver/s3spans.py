"""A span per S3 request, under the driver call that made it, when that call is traced.

Spans go through OpenTelemetry's global tracer provider, as a library's do:
without one installed (``tracing.Tracing.install``) they cost a context lookup.
The lean path (``s3objects.py``) opens one around each request it sends;
aiobotocore's requests get theirs from its ``before-call`` and ``after-call``
events (``instrument``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

_tracer = trace.get_tracer("cargohold.storage.s3")
#: Where a request's span waits in botocore's request context, between its two events.
_CONTEXT_KEY = "cargohold.span"


def start(operation: str, method: str) -> Span | None:
    """The span of a request about to be sent, or None when its caller is not traced."""
    if not trace.get_current_span().is_recording():
        return None
    return _tracer.start_span(
        f"S3.{operation}",
        kind=SpanKind.CLIENT,
        attributes={
            "rpc.system": "aws-api",
            "rpc.service": "S3",
            "rpc.method": operation,
            "http.request.method": method,
        },
    )


def untraced() -> AbstractContextManager[object]:
    """A block whose requests make no span, whatever its caller's."""
    return trace.use_span(trace.INVALID_SPAN)


def finish(span: Span, status: int | None, error: BaseException | None = None) -> None:
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if error is not None:
        span.record_exception(error)
    if error is not None or (status is not None and status >= 400):
        span.set_status(Status(StatusCode.ERROR))
    span.end()


def instrument(events: Any) -> None:
    """Span every request an aiobotocore client makes (``events``: its ``meta.events``)."""
    events.register("before-call.s3", _before_call, unique_id="cargohold-span-start")
    events.register("after-call.s3", _after_call, unique_id="cargohold-span-end")
    events.register("after-call-error.s3", _after_error, unique_id="cargohold-span-error")


def _before_call(model: Any, params: Any, context: dict[str, Any], **_: Any) -> None:
    span = start(model.name, model.http.get("method", ""))
    if span is not None:
        context[_CONTEXT_KEY] = span


def _after_call(http_response: Any, context: dict[str, Any], **_: Any) -> None:
    span = context.pop(_CONTEXT_KEY, None)
    if span is not None:
        finish(span, getattr(http_response, "status_code", None))


def _after_error(exception: BaseException, context: dict[str, Any], **_: Any) -> None:
    span = context.pop(_CONTEXT_KEY, None)
    if span is not None:
        finish(span, None, exception)
