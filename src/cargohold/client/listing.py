"""Paginated listings (tags, catalog): follow the ``Link: <…>; rel="next"`` headers.

Registries differ in the details, and the client smooths them over: pages
come sorted (Distribution 2.8 lists tags in storage order, ignoring ``n`` and
``last``); a
missing list (Distribution sends ``"tags": null`` for a repository whose tags
were all deleted) is empty; a ``last`` that the registry treats as inclusive
(Distribution 2.8 does for tags) does not repeat an entry, because every
entry must sort after the ``last`` of its page's request; a ``Link`` may be
relative; and a registry whose links go round in circles is stopped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from urllib.parse import parse_qs, urlencode, urlsplit

from cargohold.client.transport import Transport
from cargohold.errors import RegistryError

#: Pages a listing follows at most: far more than any registry needs, finitely many.
MAX_PAGES = 10_000

_NEXT = re.compile(r"<([^>]*)>\s*;(?:[^,]*;)?\s*rel=\"?next\"?", re.IGNORECASE)


def next_link(headers: Sequence[str]) -> str | None:
    """The target of the ``rel="next"`` link, if any."""
    for header in headers:
        found = _NEXT.search(header)
        if found is not None:
            return found.group(1)
    return None


def _last_of(target: str) -> str | None:
    values = parse_qs(urlsplit(target).query).get("last")
    return values[0] if values else None


async def list_pages(
    transport: Transport,
    path: str,
    key: str,
    *,
    scopes: Sequence[str],
    missing: Callable[[], RegistryError] | None = None,
    n: int | None = None,
    last: str | None = None,
    page_size: int | None = None,
) -> list[str]:
    """Every entry of ``key`` across the pages of ``path`` after ``last``, at most ``n``.

    ``page_size`` asks the registry for pages of that many entries (default ``n``);
    the registry may send fewer, or more (Distribution 2.8 ignores ``n`` for tags).
    """
    size = page_size if page_size is not None else n
    query = [(name, value) for name, value in (("n", size), ("last", last)) if value is not None]
    target: str | None = f"{path}?{urlencode(query)}" if query else path
    found: list[str] = []
    seen_targets: set[str] = set()
    while target is not None and len(seen_targets) < MAX_PAGES:
        if target in seen_targets:
            break  # a registry that links back to a page it sent already
        seen_targets.add(target)
        after = _last_of(target)
        response = await transport.send("GET", target, scopes=scopes, missing=missing)
        async with response:
            body = await response.read()
            link = next_link(response.headers.getall("Link", []))
        # A page is in lexical order by the specification; Distribution 2.8 sends its
        # tags in storage order, all in one page, so sorting each page fixes both.
        entries = sorted(_entries(body, key))
        if after is not None:
            entries = [entry for entry in entries if entry > after]
        found.extend(entries)
        if n is not None and len(found) >= n:
            return found[:n]
        target = link
    return found


def _entries(body: bytes, key: str) -> list[str]:
    try:
        document = json.loads(body)
    except ValueError as exc:
        raise RegistryError(f"the registry sent a listing that is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RegistryError("the registry sent a listing that is not a JSON object")
    entries = document.get(key)
    if entries is None:
        return []
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise RegistryError(f"the registry sent a listing whose {key!r} is not a list of strings")
    return entries
