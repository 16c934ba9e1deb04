"""A small OTLP/HTTP trace receiver: what a collector would be told, as spans a test reads."""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.waiting import wait_until

#: OTLP's span kinds, as the protobuf numbers them.
SERVER, CLIENT, INTERNAL = 2, 3, 1
STATUS_ERROR = 2


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    #: "" for a root span.
    parent_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    status: int
    service: str


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class Receiver:
    """Spans received at ``url`` + ``/v1/traces``, in arrival order."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.spans: list[Span] = []
        self.requests = 0
        self._lock = threading.Lock()

    def take(self, body: bytes) -> None:
        message = ExportTraceServiceRequest.FromString(body)
        found = []
        for resource_spans in message.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        Span(
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex(),
                            span.name,
                            span.kind,
                            {a.key: _value(a.value) for a in span.attributes},
                            span.status.code,
                            str(resource.get("service.name", "")),
                        )
                    )
        with self._lock:
            self.spans.extend(found)
            self.requests += 1

    def snapshot(self) -> list[Span]:
        with self._lock:
            return list(self.spans)

    def server_span(self, request_id: str) -> Span | None:
        """The server span of the request sent with ``X-Request-Id: request_id``."""
        found = [
            span
            for span in self.snapshot()
            if span.kind == SERVER and span.attributes.get("http.request.id") == request_id
        ]
        assert len(found) <= 1, f"{len(found)} server spans for {request_id}"
        return found[0] if found else None

    def trace(self, trace_id: str) -> list[Span]:
        return [span for span in self.snapshot() if span.trace_id == trace_id]

    def wait_for(self, condition: Callable[[], bool], within: float = 20) -> None:
        wait_until(condition, within, "the spans did not arrive")


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            encoding = self.headers.get("Content-Encoding", "")
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            receiver.take(body)
            reply = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """An OTLP/HTTP receiver on a free loopback port, stopped when the block ends."""
    receiver = Receiver("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
