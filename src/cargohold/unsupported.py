"""What cargohold does not do of Distribution's configuration: refused at start, never ignored.

Every key of Distribution's ``config.yml`` either works as Distribution
documents it, or is refused by ``check_supported`` with one line naming the
key, saying "not supported by cargohold", and what to use instead where
something does. ``cargohold serve`` (and ``create_app``, for a program that
embeds the registry) call it before anything starts; ``tests/test_settings.py``
walks Distribution's whole key list to show each key is one or the other.

A setting counts as asked for when it would change what Distribution does:
an explicit ``http.http2.disabled: true`` asks for nothing cargohold lacks,
an explicit ``false`` asks for HTTP/2.
"""

from __future__ import annotations

from collections.abc import Iterator

from cargohold.config import Config
from cargohold.errors import ConfigError

__all__ = ["check_supported", "refusals"]


def refusals(config: Config) -> Iterator[tuple[str, str]]:
    """Each setting of ``config`` cargohold cannot honour: its key, and what to do instead."""
    log, http, redis = config.log, config.http, config.redis
    if any(not hook.disabled for hook in log.hooks):
        yield "log.hooks", "have a log collector read cargohold's standard error"
    reporting = config.reporting
    if reporting.bugsnag.apikey or reporting.newrelic.licensekey:
        yield "reporting", "watch the logs and /debug/health instead"
    middleware = config.middleware
    for layer in ("registry", "repository"):
        for entry in getattr(middleware, layer):
            if not entry.disabled:
                # Distribution itself registers none: only programs built on it do.
                yield f"middleware.{layer}.{entry.name}", "leave it out"
    for entry in middleware.storage:
        if not entry.disabled and entry.settings is None:
            yield f"middleware.storage.{entry.name}", "cloudfront and redirect are"
    if config.proxy is not None and config.proxy.remotenamespace:
        yield (
            "proxy.remotenamespace",
            "give the upstream's repositories a prefix in proxy.upstreams",
        )
    if config.proxy is not None and config.proxy.cachewritetimeout is not None:
        # A fill is its own task, never waited on by a reply: there is no write to bound.
        yield "proxy.cachewritetimeout", "clients never wait on a cache write here: leave it out"
    if http.tls.letsencrypt.model_fields_set:
        yield (
            "http.tls.letsencrypt",
            "it would fetch certificates from the internet: give http.tls.certificate and key",
        )
    if "disabled" in http.http2.model_fields_set and not http.http2.disabled:
        yield "http.http2.disabled", "HTTP/1.1 is served: set it to true or leave it out"
    if http.h2c.enabled:
        yield "http.h2c.enabled", "HTTP/1.1 is served: leave it out"
    idle = (
        ("redis.maxidleconns", redis.maxidleconns),
        ("redis.connmaxidletime", redis.connmaxidletime),
        ("redis.pool.maxidle", redis.pool.maxidle),
        ("redis.pool.idletimeout", redis.pool.idletimeout),
    )
    for key, value in idle:
        if value:
            yield key, "the Redis client keeps idle connections open until closed: leave it out"


def check_supported(config: Config) -> None:
    """``ConfigError`` for the first setting cargohold cannot honour."""
    for key, instead in refusals(config):
        raise ConfigError(key, f"not supported by cargohold; {instead}")
