"""Access control: who may do what, as Distribution's ``auth`` section configures it.

::

    access      access records, scopes, grants; what each request needs
    htpasswd    Basic authentication against a bcrypt htpasswd file
    token       Bearer tokens, verified against a rootcertbundle or a JWK set
    silly       anything with an Authorization header passes (tests only)
    issuer      cargohold's own token server and its ACL (the ``tokenserver`` section)

Every provider is an :class:`AccessController`: given a request's headers and
the access it needs, it returns the :class:`Grant` of the credentials or
raises ``Unauthorized`` carrying the challenge (``WWW-Authenticate``) the client
must answer. Only the api layer turns that into HTTP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Protocol

from cargohold.auth.access import Access, Grant
from cargohold.config import Config

if TYPE_CHECKING:
    from cargohold.auth.issuer import TokenIssuer

__all__ = ["AccessController", "Grant", "build_access_controller", "check_config"]


class AccessController(Protocol):
    """Decides whether a request's credentials allow the access it needs."""

    async def authorize(self, headers: Mapping[str, str], access: Sequence[Access]) -> Grant:
        """The grant of the credentials in ``headers``, if it allows every record of ``access``.

        Raises ``Unauthorized`` (with ``challenge`` set) when the credentials are
        missing, wrong, or do not allow it all. An empty ``access`` asks only
        that the caller be authenticated (``GET /v2/``).
        """
        ...

    def authorize_now(self, headers: Mapping[str, str], access: Sequence[Access]) -> Grant | None:
        """The grant, when it can be decided without waiting and allows all of ``access``.

        None otherwise: refused, or not decidable at once (a password to check
        in a thread). The request fast path calls this; on None the request
        takes the awaited ``authorize``, which decides and explains.
        """
        ...


def build_access_controller(
    config: Config, threads: Executor | None = None
) -> AccessController | None:
    """The controller of ``config.auth``, or None without one; ``ConfigError`` if unusable.

    ``threads`` runs password checks (bcrypt), when the provider has any.
    """
    auth = config.auth
    if auth.htpasswd is not None:
        from cargohold.auth.htpasswd import HtpasswdAccessController

        return HtpasswdAccessController(auth.htpasswd.realm, auth.htpasswd.path, threads)
    if auth.token is not None:
        from cargohold.auth.token import TokenAccessController

        token = auth.token
        return TokenAccessController.from_config(
            realm=token.realm,
            service=token.service,
            issuer=token.issuer,
            rootcertbundle=token.rootcertbundle,
            jwks=token.jwks,
            signingalgorithms=token.signingalgorithms,
            autoredirect=token.autoredirect,
            autoredirectpath=token.autoredirectpath,
        )
    if auth.silly is not None:
        from cargohold.auth.silly import SillyAccessController

        return SillyAccessController(auth.silly.realm, auth.silly.service)
    return None


def build_token_issuer(config: Config, threads: Executor | None = None) -> TokenIssuer | None:
    """The built-in token server, or None when ``tokenserver`` is not enabled.

    Its module (and ``cryptography``, ``jwt``) is imported only when it is on;
    ``threads`` runs its password checks.
    """
    if not config.tokenserver.enabled:
        return None
    from cargohold.auth.issuer import TokenIssuer

    return TokenIssuer.from_config(config, threads)


def check_config(config: Config) -> None:
    """Load every file access control needs, so that a bad one stops the start (``ConfigError``)."""
    build_access_controller(config)
    build_token_issuer(config)
