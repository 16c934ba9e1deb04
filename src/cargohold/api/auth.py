"""Access control over HTTP: what each route needs, the grant on the request, the token endpoint.

The domain side lives in ``cargohold.auth``; this module only maps requests
onto access records and the domain's answers onto replies:

- ``Unauthorized`` → ``401 UNAUTHORIZED`` with its ``WWW-Authenticate`` challenge
  and, as Distribution, the access records the request needed as ``detail``;
- the token endpoint's refusals → ``401`` (wrong credentials) or ``400`` with an
  OAuth2 error body (``{"error", "error_description"}``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aiohttp import web

from cargohold.api.context import Api
from cargohold.api.errcode import UNAUTHORIZED
from cargohold.api.routes import Endpoint, Route
from cargohold.auth.access import CATALOG, Access, Grant, repository_access
from cargohold.errors import NameInvalid, Unauthorized
from cargohold.reference import validate_name

if TYPE_CHECKING:
    from cargohold.auth.issuer import TokenIssuer

__all__ = ["GRANT", "may", "required_access", "token_endpoint", "unauthorized"]

#: Where the Dispatcher leaves the request's grant for handlers that look further
#: (a mount's source repository). Absent when the registry controls no access.
GRANT = web.RequestKey("grant", Grant)


def required_access(route: Route, method: str) -> tuple[Access, ...]:
    """What ``method`` on ``route`` needs; NameInvalid for a name no access can be about.

    The name is checked first, so that a challenge never carries a scope built
    from a malformed name (``..``, ``%2f``, quotes).
    """
    if route.endpoint is Endpoint.BASE:
        return ()
    if route.endpoint is Endpoint.CATALOG:
        return (CATALOG,)
    if "%" in route.name:
        raise NameInvalid("invalid repository name", {"name": route.name})
    return repository_access(method, validate_name(route.name))


def may(request: web.Request, access: Access) -> bool:
    """Whether the request's credentials allow ``access`` (always, without access control)."""
    grant: Grant | None = request.get(GRANT)
    return grant is None or grant.permits(access)


def unauthorized(api: Api, exc: Unauthorized) -> web.Response:
    """``401`` with the challenge, and Distribution's body to the byte.

    Distribution always names ``detail``: the access records asked for, or
    ``null`` when there were none (``GET /v2/``).
    """
    headers = api.headers({"Content-Type": "application/json"})
    if exc.challenge:
        headers["WWW-Authenticate"] = exc.challenge
    entry = {"code": UNAUTHORIZED.code, "message": exc.message, "detail": exc.detail}
    body = json.dumps({"errors": [entry]}, separators=(",", ":")).encode()
    return web.Response(status=UNAUTHORIZED.status, headers=headers, body=body)


_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _json(api: Api, status: int, body: object) -> web.Response:
    headers = api.headers({"Content-Type": "application/json", **_NO_STORE})
    return web.Response(status=status, headers=headers, body=json.dumps(body).encode())


async def token_endpoint(api: Api, issuer: TokenIssuer, request: web.Request) -> web.Response:
    """``GET`` (Distribution's token request) and ``POST`` (OAuth2) at ``tokenserver.path``."""
    from cargohold.auth.issuer import TokenRequestInvalid  # only loaded with a token server

    try:
        if request.method == "GET":
            query = request.query
            reply = await issuer.get(
                service=query.get("service"),
                scopes=query.getall("scope", []),
                account=query.get("account"),
                offline=query.get("offline_token", "").lower() == "true",
                authorization=request.headers.get("Authorization"),
            )
        elif request.method == "POST":
            form = await request.post()
            reply = await issuer.post({k: v for k, v in form.items() if isinstance(v, str)})
        else:
            refused = _json(
                api, 405, {"error": "invalid_request", "error_description": "GET or POST"}
            )
            refused.headers["Allow"] = "GET, POST"
            return refused
    except Unauthorized as exc:
        return unauthorized(api, exc)
    except TokenRequestInvalid as exc:
        return _json(api, 400, {"error": exc.error, "error_description": exc.description})
    return _json(api, 200, reply.document())
