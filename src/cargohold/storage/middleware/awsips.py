"""AWS's published address ranges, for ``cloudfront``'s ``ipfilteredby``.

AWS lists its ranges in ``ip-ranges.json`` (``prefixes``: ``ip_prefix`` and
``region``; ``ipv6_prefixes``: ``ipv6_prefix`` and ``region``). As
Distribution does, the list is fetched when the middleware starts to be used
and again every ``updatefrequency``; a failed fetch keeps the ranges known
(none at first: every client then goes to CloudFront), and is tried again
sooner. The first client asking waits for the first fetch, as Distribution's
start does; later fetches run in the background.

An address in an IPv4-mapped IPv6 form is looked up as the IPv4 address, as
Go does. Lookups bisect merged intervals: AWS lists some ten thousand
prefixes, and a redirect should not scan them all.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import ipaddress
import json
import logging
import socket
import time
from collections.abc import Iterable

import aiohttp

__all__ = ["AWSRanges", "Intervals", "parse_ranges", "prefix_span"]

log = logging.getLogger("cargohold.storage")

#: How soon a failed fetch is tried again (at most: ``updatefrequency`` if shorter).
RETRY = 60.0
#: The longest a fetch of the ranges may take.
FETCH_TIMEOUT = 10.0
#: The largest ranges document read (AWS's is about 2 MiB).
DOCUMENT_LIMIT = 64 * 1024 * 1024


class Intervals:
    """A set of addresses (as ints), kept as sorted, merged ``[first, last]`` ranges."""

    __slots__ = ("_firsts", "_lasts")

    def __init__(self, spans: Iterable[tuple[int, int]]) -> None:
        firsts: list[int] = []
        lasts: list[int] = []
        for first, last in sorted(spans):
            if lasts and first <= lasts[-1] + 1:
                lasts[-1] = max(lasts[-1], last)
            else:
                firsts.append(first)
                lasts.append(last)
        self._firsts, self._lasts = firsts, lasts

    def __contains__(self, address: int) -> bool:
        index = bisect.bisect_right(self._firsts, address) - 1
        return index >= 0 and address <= self._lasts[index]

    def __len__(self) -> int:
        return len(self._firsts)


def prefix_span(prefix: str, family: socket.AddressFamily) -> tuple[int, int]:
    """The first and last address of a CIDR prefix (host bits may be set, as Go allows).

    ValueError unless it is one of ``family``'s. Made by hand: ``ipaddress`` takes
    ten times as long, and AWS lists some twelve thousand prefixes.
    """
    address, slash, bits = prefix.partition("/")
    width = 32 if family == socket.AF_INET else 128
    if not slash or not bits.isdigit() or int(bits) > width:
        raise ValueError(f"not a prefix: {prefix!r}")
    try:
        value = int.from_bytes(socket.inet_pton(family, address), "big")
    except OSError:
        raise ValueError(f"not a prefix: {prefix!r}") from None
    host = width - int(bits)
    first = value >> host << host
    return first, first | ((1 << host) - 1)


def parse_ranges(document: object, regions: frozenset[str] | None) -> tuple[Intervals, Intervals]:
    """The IPv4 and IPv6 ranges of an ``ip-ranges.json`` document, of ``regions`` (lower
    case) only when given. A prefix that does not parse is left out, as Distribution does."""
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    found: list[list[tuple[int, int]]] = [[], []]
    for entries, field, family, into in (
        (document.get("prefixes"), "ip_prefix", socket.AF_INET, found[0]),
        (document.get("ipv6_prefixes"), "ipv6_prefix", socket.AF_INET6, found[1]),
    ):
        for entry in entries if isinstance(entries, list) else ():
            if not isinstance(entry, dict):
                continue
            region = entry.get("region")
            if regions is not None and str(region or "").lower() not in regions:
                continue
            try:
                into.append(prefix_span(str(entry.get(field)), family))
            except ValueError:
                continue
    return Intervals(found[0]), Intervals(found[1])


def _read_ranges(body: bytes, regions: frozenset[str] | None) -> tuple[Intervals, Intervals]:
    return parse_ranges(json.loads(body), regions)


class AWSRanges:
    """The ranges listed at ``url`` (of ``regions`` only, when given), fetched again every
    ``every`` seconds."""

    def __init__(self, url: str, every: float, regions: frozenset[str] | None = None) -> None:
        self.url = url
        self.every = every
        self.regions = regions
        self._v4 = Intervals(())
        self._v6 = Intervals(())
        self._due = 0.0  # time.monotonic() of the next fetch
        self._tried = False
        self._task: asyncio.Task[None] | None = None

    async def contains(self, address: str) -> bool:
        """Whether the client at ``address`` is inside the ranges (False if it is no address)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if self._task is None and time.monotonic() >= self._due:
            self._task = asyncio.get_running_loop().create_task(self._update())
        if not self._tried and self._task is not None:
            await asyncio.shield(self._task)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return int(ip) in (self._v4 if ip.version == 4 else self._v6)

    async def _update(self) -> None:
        try:
            body = await self._fetch()
            # Some 2 MiB of JSON: read off the event loop, which it would hold for a while.
            v4, v6 = await asyncio.to_thread(_read_ranges, body, self.regions)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("AWS address ranges not updated from %s: %s", self.url, exc)
            self._due = time.monotonic() + min(RETRY, self.every)
        else:
            self._v4, self._v6 = v4, v6
            self._due = time.monotonic() + self.every
            log.info("AWS address ranges from %s: %d IPv4, %d IPv6", self.url, len(v4), len(v6))
        finally:
            self._tried = True
            self._task = None

    async def _fetch(self) -> bytes:
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        # trust_env: through the proxy the environment names, as Go's default client goes.
        async with (
            aiohttp.ClientSession(timeout=timeout, trust_env=True) as session,
            session.get(self.url) as reply,
        ):
            if reply.status != 200:
                raise ValueError(f"status {reply.status}")
            body = bytearray()
            async for chunk in reply.content.iter_chunked(1 << 16):
                body += chunk
                if len(body) > DOCUMENT_LIMIT:
                    raise ValueError(f"larger than {DOCUMENT_LIMIT} bytes")
        return bytes(body)

    async def close(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
