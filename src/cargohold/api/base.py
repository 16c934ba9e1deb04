"""``GET /v2/``: the version check, which says this is a registry of API version 2."""

from __future__ import annotations

from cargohold.api.context import Api
from cargohold.api.reply import Reply


def base_reply(api: Api) -> Reply:
    return Reply(200, api.headers({"Content-Type": "application/json"}), b"{}")
