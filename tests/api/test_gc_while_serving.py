"""``storage.maintenance.gc``: collection in the background while the registry serves.

A registry with it records every find of a blob (on both request paths), and
collects every ``interval`` what is unreferenced and older than the grace
period. The test settings keep every period at a second or two.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from tests.api.conftest import MakeRegistry, Registry, assert_error, random_blob
from tests.support.waiting import eventually

from cargohold.config import parse_config
from cargohold.errors import ConfigError, PathNotFound
from cargohold.storage.configured import registry_options
from cargohold.storage.gc import load_report
from cargohold.storage.paths import BlobTouched, path_for
from cargohold.storage.registry import StorageRegistry


def collecting(interval: str = "1s", grace: str = "1s", **gc: Any) -> dict[str, Any]:
    return {
        "storage": {
            "maintenance": {
                "uploadpurging": {"enabled": True, "age": grace, "interval": "1h"},
                "gc": {"enabled": True, "interval": interval, "graceperiod": grace, **gc},
            }
        }
    }


def storage_of(registry: Registry) -> StorageRegistry:
    namespace = registry.namespace
    assert isinstance(namespace, StorageRegistry)
    return namespace


async def test_a_head_that_finds_a_blob_is_written_down_before_it_answers(
    make_registry: MakeRegistry,
) -> None:
    registry = await make_registry(collecting(interval="1h", grace="1h"))
    blob = await registry.push_blob("a")
    storage = storage_of(registry)
    record = path_for(BlobTouched(blob.digest))
    reuse = storage.blobs.reuse
    assert reuse is not None
    reuse._written.clear()  # whatever the push found: a first find from here
    status, _ = await registry.request_anew("HEAD", f"/v2/a/blobs/{blob.digest}")
    assert status == 200
    first = float(await storage.driver.get_content(record))  # there when the 200 came
    await storage.driver.delete(record)
    status, _ = await registry.request_anew("HEAD", f"/v2/a/blobs/{blob.digest}")
    assert status == 200
    with pytest.raises(PathNotFound):  # once per interval: not written again
        await storage.driver.get_content(record)
    reuse._written.clear()  # as if the interval had passed
    status, _ = await registry.request_anew("HEAD", f"/v2/a/blobs/{blob.digest}")
    assert status == 200
    assert float(await storage.driver.get_content(record)) >= first


async def test_unreferenced_content_goes_once_older_than_the_grace_period(
    make_registry: MakeRegistry,
) -> None:
    registry = await make_registry(collecting(deleteuntagged=True))
    image = await registry.push_image("a", "kept")
    orphan = await registry.push_blob("a", random_blob(4096))
    storage = storage_of(registry)

    async def collected() -> bool:
        report = await load_report(storage)
        return report is not None and report["deleted_blobs"] > 0

    # A pass runs every second; the orphan is spared until a second has passed.
    await eventually(collected, what="no pass collected the orphan")
    report = await load_report(storage)
    assert report is not None
    assert report["blobs"] == [orphan.digest]
    assert report["online"] is True
    response = await registry.request("HEAD", f"/v2/a/blobs/{orphan.digest}")
    await assert_error(response, 404, "BLOB_UNKNOWN", head=True)
    status, body = await registry.request_anew("GET", "/v2/a/manifests/kept")
    assert (status, body) == (200, image.payload)
    for blob in (image.config, *image.layers):
        assert blob is not None
        status, data = await registry.request_anew("GET", f"/v2/a/blobs/{blob.digest}")
        assert (status, data) == (200, blob.data)


def test_a_grace_period_shorter_than_the_upload_purge_age_is_refused() -> None:
    text = (
        "version: 0.1\nstorage:\n  inmemory: {}\n  maintenance:\n"
        "    gc: {enabled: true, graceperiod: 1h}\n    uploadpurging: {age: 2h}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, environ={})
    assert caught.value.key == "storage.maintenance"
    assert "graceperiod" in str(caught.value)


def test_a_read_only_registry_records_nothing_says_nothing_and_collects_nothing() -> None:
    settings = collecting()
    settings["storage"]["maintenance"]["readonly"] = {"enabled": True}
    settings["storage"]["inmemory"] = {}
    config = parse_config(yaml.safe_dump({"version": "0.1", **settings}), environ={})
    options = registry_options(config)
    assert (options.reuse_interval, options.gc, options.heartbeat) == (None, None, False)
    writing = parse_config(
        yaml.safe_dump(
            {
                "version": "0.1",
                **collecting(),
                "storage": {**collecting()["storage"], "inmemory": {}},
            }
        ),
        environ={},
    )
    options = registry_options(writing)
    assert options.heartbeat is True
    assert options.reuse_interval == 0.25  # a quarter of the grace period
    assert options.gc is not None
    assert (options.gc.interval, options.gc.grace) == (1.0, 1.0)
