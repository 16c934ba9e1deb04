"""The pull-through cache: a registry that mirrors one upstream (Distribution's ``proxy``) or many.

Modules, one concern each: ``upstream`` (where a repository's upstream is,
reached through ``cargohold.client``, with failover), ``credentials`` (fixed,
or a docker credential helper), ``fills`` (single-flight blob copies streamed
to every waiting client), ``expiry`` (records of use in storage, and the
sweep that expires what went unused) and ``mirror`` (the ``Namespace``).
"""

from cargohold.proxy.mirror import MirrorRegistry, ProxyWatch
from cargohold.proxy.upstream import Upstream, upstreams_of

__all__ = ["MirrorRegistry", "ProxyWatch", "Upstream", "upstreams_of"]
