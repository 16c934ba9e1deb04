"""The web UI at ``/ui/``: browse, inspect and clean up, served by the registry itself.

::

    pages      the routes and their pages (templates/, static/)
    inventory  what the pages show, worked out on the server from the registry's content
    gate       who is looking and what they may see and do, by the registry's own auth
    session    signed cookies and form tokens
    natural    natural order of tags (1.9 before 1.10)

Server-rendered: Jinja2 templates (autoescaped), one stylesheet and one small
script, every file shipped in the package, nothing fetched from elsewhere.
Browsing works without JavaScript; the script only adds copy buttons.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cargohold.ui.gate import Gate, IssuerTokens, RealmTokens, TokenSource
from cargohold.ui.pages import PATH, Pages
from cargohold.ui.session import Signer, session_key

if TYPE_CHECKING:
    from cargohold.api.context import Api
    from cargohold.auth import AccessController
    from cargohold.auth.issuer import TokenIssuer
    from cargohold.config import Config

__all__ = ["PATH", "Pages", "build_pages"]


def build_pages(
    config: Config,
    api: Api,
    controller: AccessController | None,
    issuer: TokenIssuer | None,
) -> Pages | None:
    """The UI as configured, or None when ``ui.enabled`` is off."""
    ui = config.ui
    if not ui.enabled:
        return None
    tokens: TokenSource | None = None
    token = config.auth.token
    if token is not None:
        # cargohold's own token server is asked in this process; another one over HTTP.
        tokens = (
            IssuerTokens(issuer) if issuer is not None else RealmTokens(token.realm, token.service)
        )
    signer = Signer(session_key(config.http.secret))
    gate = Gate(controller, signer, tokens=tokens, lifetime=ui.session)
    return Pages(api, gate, page_size=ui.pagesize)
