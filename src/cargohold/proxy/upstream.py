"""One upstream of a mirror: where its repositories are, how to reach it, how long to keep them.

An upstream owns the repositories whose names start with its prefix
(``docker.io/``; the empty prefix of Distribution's ``proxy.remoteurl`` owns
every name) and names them upstream without it. It is reached through
cargohold's own client, so the bearer-token flow, Basic, retries and TLS are
the client's; failover URLs are tried in order when one does not answer.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import urlsplit

from cargohold.client.auth import Credentials
from cargohold.client.registry import RemoteRegistry, RemoteRepository
from cargohold.config import Proxy
from cargohold.config import Upstream as UpstreamConfig
from cargohold.errors import (
    BlobUnknown,
    ConfigError,
    Denied,
    DigestInvalid,
    ManifestInvalid,
    ManifestUnknown,
    NameUnknown,
    RegistryError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
    UpstreamInvalid,
)
from cargohold.proxy.credentials import CredentialHelper

__all__ = ["Upstream", "upstreams_of"]

log = logging.getLogger("cargohold.proxy")

_T = TypeVar("_T")

#: Tries of one upstream request: a mirror with a cached answer should serve it soon.
UPSTREAM_TRIES = 2
UPSTREAM_BACKOFF = 0.1

#: What an upstream may answer that the client should see as it is.
_PASSED_ON = (ManifestUnknown, NameUnknown, BlobUnknown)
#: What means "not now": the next failover URL is tried, then a cached answer served.
UNREACHABLE = (Unavailable, TooManyRequests)


@dataclass
class Upstream:
    """The repositories under ``prefix``, mirrored from ``remotes`` (the first that answers)."""

    prefix: str
    remotes: Sequence[RemoteRegistry]
    ttl: float
    recheck: float
    #: The ``?ns=`` values that mean this upstream.
    hosts: frozenset[str] = frozenset()
    helper: CredentialHelper | None = None
    #: The upstream as metrics and logs name it: the first URL's host.
    label: str = field(default="")
    _preferred: int = 0

    def __post_init__(self) -> None:
        if not self.label:
            self.label = self.remotes[0].host

    def owns(self, name: str) -> bool:
        return name.startswith(self.prefix)

    def remote_name(self, name: str) -> str:
        return name[len(self.prefix) :]

    async def call(self, name: str, operation: Callable[[RemoteRepository], Awaitable[_T]]) -> _T:
        """``operation`` on the upstream's repository for local ``name``, failing over.

        The upstream's errors become the mirror's: a missing manifest or blob stays
        what it is, an unreachable upstream is ``Unavailable`` (or
        ``TooManyRequests``), and anything else it got wrong is ``UpstreamInvalid``.
        """
        remote_name = self.remote_name(name)
        count = len(self.remotes)
        failure: RegistryError | None = None
        for step in range(count):
            index = (self._preferred + step) % count
            remote = self.remotes[index]
            try:
                if self.helper is not None:
                    remote.transport.auth.credentials = await self.helper.credentials()
                result = await operation(remote.repository(remote_name))
            except UNREACHABLE as exc:
                log.warning("upstream %s did not answer: %s", remote.host, exc)
                failure = exc
                continue
            except _PASSED_ON:
                raise
            except (Unauthorized, Denied) as exc:
                log.warning("upstream %s refused the mirror: %s", remote.host, exc)
                raise UpstreamInvalid(
                    f"upstream {remote.host} refused the mirror's access"
                ) from exc
            except (DigestInvalid, ManifestInvalid) as exc:
                log.warning("upstream %s sent invalid content: %s", remote.host, exc)
                raise UpstreamInvalid(f"upstream {remote.host} sent invalid content") from exc
            except RegistryError as exc:
                if type(exc) in (RegistryError, UpstreamInvalid):
                    log.warning("upstream %s failed: %s", remote.host, exc)
                    raise UpstreamInvalid(f"upstream {remote.host} sent an unusable reply") from exc
                raise
            self._preferred = index
            return result
        assert failure is not None
        raise failure

    async def close(self) -> None:
        for remote in self.remotes:
            await remote.close()


def _remote(
    url: str, settings: UpstreamConfig | Proxy, credentials: Credentials, key: str
) -> RemoteRegistry:
    tls = settings.tls
    client_certificate = (tls.certificate, tls.key or None) if tls.certificate else None
    try:
        return RemoteRegistry(
            url,
            credentials=credentials,
            insecure=tls.insecure,
            ca_file=tls.ca or None,
            client_certificate=client_certificate,
            retries=UPSTREAM_TRIES,
            backoff=UPSTREAM_BACKOFF,
            environ={},
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{key}.tls", f"cannot load the CA or the certificate: {exc}") from None
    except ValueError as exc:
        raise ConfigError(key, str(exc)) from None


def _upstream(
    prefix: str, url: str, settings: UpstreamConfig | Proxy, hosts: Sequence[str], key: str
) -> Upstream:
    # Never the process's environment nor docker's config: only what the configuration says.
    credentials = Credentials(settings.username, settings.password)
    remotes = [_remote(u, settings, credentials, key) for u in [url, *settings.failover]]
    helper = None
    if settings.exec is not None:
        host = urlsplit(url).netloc
        helper = CredentialHelper(settings.exec.command, host, settings.exec.lifetime)
    return Upstream(
        prefix,
        remotes,
        ttl=settings.ttl,
        recheck=settings.recheck,
        hosts=frozenset(h.lower() for h in hosts),
        helper=helper,
    )


def upstreams_of(proxy: Proxy) -> list[Upstream]:
    """The configured upstreams, longest prefix first; Distribution's own one last."""
    found = []
    for index, entry in enumerate(proxy.upstreams):
        hosts = entry.hosts or [entry.prefix.split("/", 1)[0]]
        key = f"proxy.upstreams.{index}"
        found.append(_upstream(entry.prefix, entry.remoteurl, entry, hosts, key))
    found.sort(key=lambda upstream: len(upstream.prefix), reverse=True)
    if proxy.remoteurl:
        found.append(_upstream("", proxy.remoteurl, proxy, (), "proxy"))
    return found
