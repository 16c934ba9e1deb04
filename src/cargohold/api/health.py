"""``GET /debug/health``: the registry's health checks, in CNCF Distribution's format.

The reply is Distribution's (``health.StatusHandler``): ``200`` with ``{}`` when
every check passes, else ``503`` with a JSON object mapping each failing check's
name to its error message, compact and sorted by name, as Go's ``json.Marshal``
writes a ``map[string]string``::

    HTTP/1.1 503 Service Unavailable
    Content-Type: application/json; charset=utf-8

    {"/srv/down":"file exists","redis":"127.0.0.1:6379: no reply to PING"}

The checks and their names are Distribution's (``registry/handlers/app.go``),
plus one for the Redis cache:

- ``storagedriver_<driver>`` (``health.storagedriver``): a stat of the storage
  root failed; a missing root passes, the backend answered.
- ``<file>`` (``health.file``): the file exists (``file exists``).
- ``<uri>`` (``health.http``): a HEAD of the URI answered another status than
  ``statuscode``, or failed.
- ``<addr>`` (``health.tcp``): a TCP connection to the address failed.
- ``redis`` (``storage.cache.blobdescriptor: redis``): the Redis blob descriptor
  cache did not answer PING.

When checks run
---------------
The configured checks are polled in the background, one task per check, every
``interval`` (10 s when 0), as Distribution does; a request only reads their
latest status, so the endpoint costs nothing however often a load balancer asks,
and ``threshold`` keeps Distribution's meaning: a check reports failure once it
failed that many times in a row (0 or 1: at once), whoever asks and how often.
Each run is bounded by the check's ``timeout`` when it has one, else by its
``interval``; a run that takes longer fails. Differences from Distribution:

- the first run happens at start-up, not one interval later, so a ``file`` check
  whose file exists at start (a registry taken out of rotation) fails at once;
- file checks honour ``threshold`` too (Distribution ignores it for them);
- a check's passing-to-failing change and its recovery are logged once, on
  ``cargohold.health``, rather than every failed poll.

Redis has no ``health`` settings, so its check runs on demand: each request
sends one PING (concurrent requests share it) and waits at most
``REDIS_TIMEOUT`` for it. A PING also replays the cache's journal of clears that
could not reach Redis (``storage/cache/redis.py``), so it is sent every
``DEFAULT_INTERVAL`` in the background too, whether anyone asks or not.

A failing Redis check never fails a request: the cache falls back to storage.
Nor does any other check: Distribution also wraps its whole API in
``health.Handler``, which answers every request with ``503 UNAVAILABLE`` while
any check fails; cargohold leaves taking a registry out of rotation to whatever
reads this endpoint, and keeps the checks off the request path.

Where it is served
------------------
Distribution serves ``/debug/health`` on its debug listener (``http.debug.addr``)
without authentication. cargohold serves it on the main listener, ahead of
``http.prefix`` and of access control, so a load balancer needs no credentials;
it reveals only check names and their errors. ``GET`` and ``HEAD`` answer;
other methods get Go's plain ``404 page not found``. With ``serve --workers N``
each worker runs its own checks, and a request sees the worker that took it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Final

import aiohttp
from aiohttp import web

from cargohold.config import Config
from cargohold.registry import Upkeep

__all__ = ["DEFAULT_INTERVAL", "PATH", "REDIS_TIMEOUT", "Check", "Health", "build_health"]

log = logging.getLogger("cargohold.health")

PATH: Final = "/debug/health"
#: Distribution's ``defaultCheckInterval``, for checks configured with 0.
DEFAULT_INTERVAL: Final = 10.0
#: How long a request waits for Redis to answer PING.
REDIS_TIMEOUT: Final = 2.0

#: A probe returns None when healthy, else the error message the endpoint shows.
Probe = Callable[[], Awaitable[str | None]]


@dataclass
class Check:
    """A polled check, with Distribution's threshold semantics (``thresholdUpdater``)."""

    name: str
    probe: Probe
    interval: float = DEFAULT_INTERVAL
    threshold: int = 0
    #: The longest a run may take; None: the interval.
    timeout: float | None = None
    _error: str | None = field(default=None, init=False)
    _failures: int = field(default=0, init=False)

    @property
    def error(self) -> str | None:
        """The latest error, once the check has failed ``threshold`` times in a row."""
        return self._error if self._failures >= self.threshold else None

    def update(self, error: str | None) -> None:
        was = self.error
        if error is None:
            self._failures = 0
        elif self._failures < self.threshold:
            self._failures += 1
        self._error = error
        now = self.error
        if now is not None and was is None:
            log.warning("health check %s is failing: %s", self.name, now)
        elif now is None and was is not None:
            log.info("health check %s passes again", self.name)

    async def run(self) -> None:
        limit = self.timeout or self.interval
        try:
            error = await asyncio.wait_for(self.probe(), limit)
        except TimeoutError:
            error = f"{self.name}: no result within {limit:g} s"
        except Exception as exc:  # a probe's bug must not stop the polling
            error = f"{type(exc).__name__}: {exc}"
        self.update(error)

    async def poll(self) -> None:
        while True:
            await self.run()
            await asyncio.sleep(self.interval)


class RedisCheck:
    """PING on demand, one at a time: concurrent requests share the one in flight."""

    name: Final = "redis"

    def __init__(self, upkeep: Upkeep, where: str, timeout: float = REDIS_TIMEOUT) -> None:
        self._upkeep = upkeep
        self._where = where
        self._timeout = timeout
        self._ping: asyncio.Task[bool | None] | None = None

    async def error(self) -> str | None:
        if self._ping is None or self._ping.done():
            self._ping = asyncio.create_task(self._upkeep.ping_cache())
        ping = self._ping
        # Not wait_for: cancelling a command half sent would only cost the cache a connection,
        # and a later request may still use this answer.
        done, _ = await asyncio.wait({ping}, timeout=self._timeout)
        if not done:
            return f"{self._where}: no reply to PING within {self._timeout:g} s"
        if ping.cancelled() or ping.exception() is not None or not ping.result():
            return f"{self._where}: no reply to PING"
        return None

    async def poll(self, interval: float = DEFAULT_INTERVAL) -> None:
        # Drains the cache's journal of clears even when no request comes.
        while True:
            await asyncio.sleep(interval)
            await self.error()

    async def close(self) -> None:
        if self._ping is not None:
            self._ping.cancel()
            with suppress(asyncio.CancelledError):
                await self._ping


class Health:
    """The checks of one registry process, and the endpoint that reports them."""

    def __init__(
        self,
        checks: list[Check] | None = None,
        redis: RedisCheck | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.checks = list(checks or [])
        self.redis = redis
        self._headers = dict(headers or {})
        self._session: aiohttp.ClientSession | None = None

    async def status(self) -> dict[str, str]:
        """Every failing check's name and error; empty when all pass."""
        failing = {check.name: check.error for check in self.checks if check.error is not None}
        if self.redis is not None and (error := await self.redis.error()) is not None:
            failing[self.redis.name] = error
        return failing

    async def handle(self, request: web.Request) -> web.Response:
        if request.method not in ("GET", "HEAD"):
            # Go's http.NotFound, as Distribution's StatusHandler answers.
            return web.Response(status=404, text="404 page not found\n", headers=self._headers)
        failing = await self.status()
        return web.Response(
            status=503 if failing else 200,
            body=_go_json(failing),
            headers={**self._headers, "Content-Type": "application/json; charset=utf-8"},
        )

    def session(self) -> aiohttp.ClientSession:
        """The HTTP client of the ``http`` checks, made in the running loop on first use."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def running(self, app: web.Application) -> AsyncIterator[None]:
        """An aiohttp cleanup context: poll while the application runs."""
        tasks = [asyncio.create_task(check.poll()) for check in self.checks]
        if self.redis is not None:
            tasks.append(asyncio.create_task(self.redis.poll()))
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with suppress(asyncio.CancelledError):
                await task
        if self.redis is not None:
            await self.redis.close()
        if self._session is not None:
            await self._session.close()


def _go_json(failing: dict[str, str]) -> bytes:
    # encoding/json sorts map keys, writes no spaces and escapes <, > and & for HTML.
    text = json.dumps(failing, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").encode()


# -- the probes ---------------------------------------------------------------------------


def storage_probe(upkeep: Upkeep) -> Probe:
    return upkeep.probe_storage


def file_probe(path: str) -> Probe:
    absolute = os.path.abspath(path)

    async def probe() -> str | None:
        # Distribution's FileChecker: a file that exists means "take me out of rotation".
        try:
            os.stat(absolute)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"{absolute}: {exc.strerror or exc}"
        return "file exists"

    return probe


def http_probe(
    health: Health, uri: str, status: int, headers: dict[str, list[str]], timeout: float | None
) -> Probe:
    send = [(name, value) for name, values in headers.items() for value in values]

    async def probe() -> str | None:
        try:
            async with health.session().head(
                uri,
                headers=send,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=True,  # as Go's http.Client
            ) as reply:
                got = reply.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return f"{uri}: error while checking: {str(exc) or type(exc).__name__}"
        if got != status:
            return f"{uri}: downstream service returned unexpected status: {got}"
        return None

    return probe


def tcp_probe(address: str, timeout: float | None) -> Probe:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")

    async def probe() -> str | None:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            return f"{address}: connection failed: {str(exc) or type(exc).__name__}"
        writer.close()
        with suppress(OSError):
            await writer.wait_closed()
        return None

    return probe


# -- from the configuration ---------------------------------------------------------------


def build_health(
    config: Config, upkeep: Upkeep | None, headers: dict[str, str] | None = None
) -> Health:
    """The checks ``config`` asks for, on the registry's storage and cache (``upkeep``).

    A registry without storage of its own has no storage or Redis check.
    """
    settings = config.health
    health = Health(headers=headers)
    checks = health.checks

    def interval(value: float) -> float:
        return value if value > 0 else DEFAULT_INTERVAL

    storage = settings.storagedriver
    if storage.enabled and upkeep is not None:
        name = f"storagedriver_{upkeep.storage_name}"
        probe = storage_probe(upkeep)
        checks.append(Check(name, probe, interval(storage.interval), storage.threshold))
    for file in settings.file:
        probe = file_probe(file.file)
        checks.append(Check(file.file, probe, interval(file.interval), file.threshold))
    for http in settings.http:
        timeout = http.timeout if http.timeout > 0 else None
        probe = http_probe(health, http.uri, http.statuscode or 200, http.headers, timeout)
        checks.append(Check(http.uri, probe, interval(http.interval), http.threshold, timeout))
    for tcp in settings.tcp:
        timeout = tcp.timeout if tcp.timeout > 0 else None
        probe = tcp_probe(tcp.addr, timeout)
        checks.append(Check(tcp.addr, probe, interval(tcp.interval), tcp.threshold, timeout))
    if config.storage.cache.blobdescriptor == "redis" and upkeep is not None:
        addresses = config.redis.addresses
        health.redis = RedisCheck(upkeep, addresses[0] if addresses else "redis")
    return health
