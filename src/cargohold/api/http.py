"""Small HTTP facts shared by the handlers: headers, ranges, pagination, URLs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web

from cargohold.errors import PaginationNumberInvalid, RangeInvalid

#: Every response says which API it speaks.
API_VERSION = ("Docker-Distribution-API-Version", "registry/2.0")

# Range units are case-insensitive (RFC 9110 14.1).
_RANGE = re.compile(r"bytes=(\d*)-(\d*)", re.ASCII | re.IGNORECASE)
# Content-Range on uploads: "<start>-<end>" per the OCI spec; some clients send the
# RFC 9110 form "bytes <start>-<end>/<total>" or "bytes=<start>-<end>".
_CONTENT_RANGE = re.compile(r"(?:bytes[ =])?\s*(\d+)-(\d+)(?:/(?:\d+|\*))?", re.ASCII)


#: A number with more digits than this is beyond any blob or upload size.
_MAX_DIGITS = 18


def _number(digits: str) -> int:
    """A header's decimal number, capped: ``int()`` refuses more than 4300 digits (a 500)."""
    digits = digits.lstrip("0")
    return int(digits or "0") if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


@dataclass(frozen=True, slots=True)
class ByteRange:
    start: int
    end: int  # inclusive

    @property
    def length(self) -> int:
        return self.end - self.start + 1


def parse_range(header: str, size: int) -> ByteRange | None:
    """The byte range a ``Range`` header asks for, or None for the whole content.

    Raises ``RangeInvalid`` when it cannot be satisfied. Multiple ranges are not
    served: the whole content is sent instead, as RFC 9110 allows.
    """
    text = header.strip()
    unit, equals, _ = text.partition("=")
    if equals and unit.strip().lower() != "bytes":
        # RFC 9110 14.2: a range unit the server does not understand MUST be ignored.
        return None
    match = _RANGE.fullmatch(text)
    if match is None:
        if equals and "," in text:
            return None
        raise RangeInvalid(f"malformed Range header {header[:64]!r}")
    first, last = match.groups()
    if not first and not last:
        raise RangeInvalid(f"malformed Range header {header[:64]!r}")
    if not first:  # a suffix: the last N bytes
        suffix = _number(last)
        if suffix == 0 or size == 0:
            raise RangeInvalid("unsatisfiable range")
        return ByteRange(max(size - suffix, 0), size - 1)
    start = _number(first)
    end = _number(last) if last else size - 1
    if start >= size or end < start:
        raise RangeInvalid("unsatisfiable range")
    return ByteRange(start, min(end, size - 1))


def parse_content_range(header: str) -> ByteRange:
    match = _CONTENT_RANGE.fullmatch(header.strip())
    if match is None:
        raise RangeInvalid(f"malformed Content-Range header {header[:64]!r}")
    start, end = _number(match.group(1)), _number(match.group(2))
    if end < start:
        raise RangeInvalid(f"Content-Range ends before it starts: {header[:64]!r}")
    return ByteRange(start, end)


def not_modified(headers: Mapping[str, str], digest: str) -> bool:
    """Whether ``If-None-Match`` names the content's ETag (``"<digest>"``), or is ``*``.

    RFC 9110 13.1.2: the comparison is weak, so ``W/"<digest>"`` matches too.
    """
    header = headers.get("If-None-Match")
    if not header:
        return False
    for tag in header.split(","):
        tag = tag.strip().removeprefix("W/")
        if tag == "*" or tag.strip('"') == digest:
            return True
    return False


def upload_range(size: int) -> str:
    """The ``Range`` of an upload's reply: ``0-<last byte>``, and ``0-0`` when empty."""
    return f"0-{max(size - 1, 0)}"


@dataclass(frozen=True, slots=True)
class Page:
    n: int | None
    last: str | None


def parse_page(request: web.Request, maximum: int | None = None) -> Page:
    """``n`` and ``last`` of a paginated listing."""
    query = request.query
    n: int | None = None
    text = query.get("n")
    if text is not None and text != "":
        # ASCII only: str.isdigit() also takes "²" (which int() refuses) and other scripts' digits.
        if not (text.isascii() and text.isdigit()) or len(text) > 9:
            raise PaginationNumberInvalid(f"n must be a non-negative integer, not {text[:32]!r}")
        n = int(text)
    if maximum is not None:
        n = maximum if n is None else min(n, maximum)
    return Page(n, query.get("last") or None)


def next_link(path: str, n: int, last: str) -> str:
    """An RFC 5988 ``Link`` to the next page."""
    return f'<{path}?n={n}&last={quote(last, safe="")}>; rel="next"'


def base_url(request: web.Request, host: str, relative: bool) -> str:
    """Where the client reached us, for absolute ``Location`` headers."""
    return origin(request.headers, request.scheme, request.host, host, relative)


def origin(
    headers: Mapping[str, str], scheme: str, authority: str, host: str, relative: bool
) -> str:
    """``base_url`` from a request's parts: its headers, and the scheme and host it came by."""
    if relative:
        return ""
    if host:
        return host.rstrip("/")
    scheme = headers.get("X-Forwarded-Proto", "").split(",")[0].strip() or scheme
    authority = headers.get("X-Forwarded-Host", "").split(",")[0].strip() or authority
    return f"{scheme}://{authority}"
