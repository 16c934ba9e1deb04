"""Structured logs in the two shapes Distribution writes: logrus text and JSON.

Every record carries the configured ``log.fields`` and whatever a caller
passes as ``extra={"fields": {...}}``; each worker of ``serve --workers N``
adds its ``pid``, so a line tells which process wrote it. A line logged while
a request is being answered carries that request's fields (``bind_request``:
its ``http.request.id``), so every line about a request can be found by it. With
``log.reportcaller`` each line also names where it was logged from, under
logrus's keys: ``func`` (the function) and ``file`` (path and line).
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable, Mapping
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

_LEVELS = {
    "panic": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": logging.DEBUG,
}

logger = logging.getLogger("cargohold")

#: The fields of the request being answered in this context, if any.
_REQUEST: ContextVar[Mapping[str, Any] | None] = ContextVar("cargohold_request", default=None)


def bind_request(fields: Mapping[str, Any]) -> Token[Mapping[str, Any] | None]:
    """Add ``fields`` to every line logged in this context until ``unbind_request``."""
    return _REQUEST.set(fields)


def unbind_request(token: Token[Mapping[str, Any] | None]) -> None:
    _REQUEST.reset(token)


def _fields(record: logging.LogRecord, static: Mapping[str, Any]) -> dict[str, Any]:
    fields = dict(static)
    request = _REQUEST.get()
    if request:
        fields.update(request)
    fields.update(getattr(record, "fields", {}) or {})
    return fields


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class _StructuredFormatter(logging.Formatter):
    """A formatter that adds the same fields to every record."""

    def __init__(self, fields: Mapping[str, Any], report_caller: bool = False) -> None:
        super().__init__()
        self._static = dict(fields)
        self._report_caller = report_caller

    def add_fields(self, fields: Mapping[str, Any]) -> None:
        self._static.update(fields)

    #: The key of the calling function with ``log.reportcaller``.
    caller_key = "func"

    def fields_of(self, record: logging.LogRecord) -> dict[str, Any]:
        fields = _fields(record, self._static)
        if self._report_caller:
            fields[self.caller_key] = f"{record.module}.{record.funcName}"
            fields["file"] = f"{record.pathname}:{record.lineno}"
        return fields


class TextFormatter(_StructuredFormatter):
    """``time="…" level=info msg="…" key=value``, as logrus prints it."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [
            f"time={json.dumps(_timestamp(record))}",
            f"level={_level_name(record)}",
            f"msg={json.dumps(record.getMessage())}",
        ]
        for key, value in sorted(self.fields_of(record).items()):
            text = value if isinstance(value, str) else json.dumps(value, default=str)
            quoted = text if text and all(c.isalnum() or c in "-._/:" for c in text) else None
            parts.append(f"{key}={quoted or json.dumps(text)}")
        if record.exc_info:
            parts.append(f"error={json.dumps(self.formatException(record.exc_info))}")
        return " ".join(parts)


class JSONFormatter(_StructuredFormatter):
    """One JSON object per line: ``time``, ``level``, ``msg`` and the fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": _level_name(record),
            "msg": record.getMessage(),
        }
        entry.update(self.fields_of(record))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class LogstashFormatter(JSONFormatter):
    """Distribution's ``logstash``: its JSON lines, the caller under ``function``."""

    caller_key = "function"


def _level_name(record: logging.LogRecord) -> str:
    return "warning" if record.levelno == logging.WARNING else record.levelname.lower()


class _OneLineProtocolErrors(logging.Filter):
    """aiohttp's report of a request it could not parse, as one line without a traceback.

    Junk on the wire (a TLS hello on a plain port, a scanner's probe) is the
    client's mistake, answered with 400; a traceback would only bury it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and type(exc).__module__ == "aiohttp.http_exceptions":
            message = getattr(exc, "message", "") or str(exc)
            record.args = (record.getMessage(), " ".join(str(message).split()))
            record.msg = "%s: %s"
            record.exc_info = None
            record.exc_text = None
        return True


def setup_logging(
    level: str,
    formatter: str,
    fields: Mapping[str, Any] | None = None,
    *,
    report_caller: bool = False,
) -> None:
    """Send cargohold's and aiohttp's logs to stderr in the configured shape."""
    handler = logging.StreamHandler(sys.stderr)
    shapes: dict[str, type[_StructuredFormatter]] = {
        "json": JSONFormatter,
        "logstash": LogstashFormatter,
    }
    shape = shapes.get(formatter, TextFormatter)
    handler.setFormatter(shape(fields or {}, report_caller))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _OneLineProtocolErrors) for f in server.filters):
        server.addFilter(_OneLineProtocolErrors())
    root.setLevel(_LEVELS.get(level.lower(), logging.INFO))


def add_fields(fields: Mapping[str, Any]) -> None:
    """Add ``fields`` to every record from now on (a forked worker adds its ``pid``)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, _StructuredFormatter):
            handler.formatter.add_fields(fields)


class Recurring:
    """A problem that recurs on every request while it lasts (a full disk, a backend
    down), told once per ``interval`` seconds, with how often it came meanwhile."""

    def __init__(
        self,
        log: logging.Logger,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval = interval
        self._clock = clock
        #: Per kind of problem: when it was last told, and how often it came since.
        self._told: dict[str, tuple[float, int]] = {}

    def warning(self, kind: str, message: str, *args: object) -> None:
        now = self._clock()
        told, since = self._told.get(kind, (-math.inf, 0))
        if now - told < self._interval:
            self._told[kind] = (told, since + 1)
            return
        self._told[kind] = (now, 0)
        if since:
            message += f" (and {since} more times in the last {self._interval:g} s)"
        self._log.warning(message, *args)
