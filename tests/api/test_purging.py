"""A running registry purges uploads abandoned for longer than the purge age."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml
from tests.support.inprocess import Client, Servers
from tests.support.metrics import parse

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


async def started_upload(client: Client) -> str:
    response = await client.post("/v2/repo/blobs/uploads/")
    assert response.status == 202
    return response.headers["Docker-Upload-UUID"]


async def upload_status(client: Client, upload_id: str) -> int:
    return (await client.get(f"/v2/repo/blobs/uploads/{upload_id}")).status


async def test_uploads_older_than_the_age_are_purged(tmp_path: Path, servers: Servers) -> None:
    app = create_app(parse_config(config(tmp_path, age="1s"), environ={}))
    client = await servers.serve(app)
    upload_id = await started_upload(client)
    assert await upload_status(client, upload_id) == 204
    for _ in range(60):
        await asyncio.sleep(0.1)
        if await upload_status(client, upload_id) == 404:
            break
    assert await upload_status(client, upload_id) == 404
    assert not (tmp_path / "docker/registry/v2/repositories/repo/_uploads" / upload_id).exists()
    metrics = app[METRICS_KEY]
    assert metrics is not None
    found = parse(render([metrics.store.as_file()], None)[0].decode())
    assert found.value("cargohold_uploads_purged_total") == 1
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
        upload_id = await started_upload(client)
        await asyncio.sleep(1.5)  # ten purge intervals past the age
        assert await upload_status(client, upload_id) == 204, settings
