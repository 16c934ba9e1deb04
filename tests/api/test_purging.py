"""A running registry purges uploads abandoned for longer than the purge age."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from aiohttp import web
from tests.support.inprocess import Client, Servers
from tests.support.metrics import Scrape, parse

from cargohold.api.app import METRICS_KEY, create_app
from cargohold.config import parse_config
from cargohold.metrics.exposition import render


def config(root: Path, **purging: object) -> str:
    return yaml.safe_dump(
        {
            "version": "0.1",
            "storage": {
                "filesystem": {"rootdirectory": str(root)},
                "maintenance": {"uploadpurging": {"interval": "100ms", **purging}},
            },
            "http": {"debug": {"prometheus": {"enabled": True}}},
        }
    )


async def upload_status(client: Client, upload_id: str) -> int:
    return (await client.get(f"/v2/repo/blobs/uploads/{upload_id}")).status


async def patched_upload(client: Client, chunk: bytes) -> str:
    """An upload started and sent ``chunk``, then abandoned."""
    response = await client.post("/v2/repo/blobs/uploads/")
    assert response.status == 202
    patched = await client.patch(urlsplit(response.headers["Location"]).path, data=chunk)
    assert patched.status == 202
    assert patched.headers["Range"] == f"0-{len(chunk) - 1}"
    return response.headers["Docker-Upload-UUID"]


def scrape(app: web.Application) -> Scrape:
    metrics = app[METRICS_KEY]
    assert metrics is not None
    return parse(render([metrics.store.as_file()], None)[0].decode())


async def test_uploads_older_than_the_age_are_purged(tmp_path: Path, servers: Servers) -> None:
    app = create_app(parse_config(config(tmp_path, age="1s"), environ={}))
    client = await servers.serve(app)
    chunk = b"abandoned after its first chunk " * 100
    upload_id = await patched_upload(client, chunk)
    upload_dir = tmp_path / "docker/registry/v2/repositories/repo/_uploads" / upload_id
    assert (upload_dir / "data").stat().st_size == len(chunk)
    assert await upload_status(client, upload_id) == 204
    # The metrics are noted once the run has deleted the folder: wait on them.
    for _ in range(60):
        if scrape(app).value("cargohold_uploads_purged_total") >= 1:
            break
        await asyncio.sleep(0.1)
    assert await upload_status(client, upload_id) == 404
    assert not upload_dir.exists()
    found = scrape(app)
    assert found.value("cargohold_uploads_purged_total") == 1
    assert found.value("cargohold_upload_purge_bytes_total") == len(chunk)
    assert found.value("cargohold_upload_purge_runs_total") >= 1
    assert found.value("cargohold_uploads_in_progress") == 0


async def test_young_uploads_and_disabled_purging_keep_uploads(
    tmp_path: Path, servers: Servers
) -> None:
    for settings in ({"age": "1h"}, {"age": "1s", "enabled": False}, {"age": "1s", "dryrun": True}):
        app = create_app(
            parse_config(config(tmp_path / str(len(settings)), **settings), environ={})
        )
        client = await servers.serve(app)
        upload_id = await patched_upload(client, b"kept")
        await asyncio.sleep(1.5)  # ten purge intervals past the age
        assert await upload_status(client, upload_id) == 204, settings
        found = scrape(app)
        assert found.value("cargohold_uploads_purged_total") == 0, settings
        assert found.value("cargohold_upload_purge_bytes_total") == 0, settings
        runs = found.value("cargohold_upload_purge_runs_total")
        if settings.get("enabled") is False:
            assert runs == 0, settings
        else:
            assert runs >= 1, settings  # purging ran, and left the upload alone
