"""Several ``cargohold serve`` processes on one Azure container or GCS bucket are one registry.

Each test runs on both emulators (``backend``). skopeo pushes through one
process and pulls through another; three processes on one store and one Redis
answer, at once, what any of them wrote, deleted or cached, with every request
of a chunked upload sent to the next process in turn (``tests/support/scaleout.py``,
the check S3 runs in ``tests/s3/test_scale_out.py``).
"""

from __future__ import annotations

from pathlib import Path

from cargohold.storage.driver.azure import BLOCK
from tests.objectstores.conftest import Backend
from tests.s3.conftest import MiB, registry_config, serving, write_config
from tests.support import skopeo
from tests.support.accesslog import ACCESS_LOG_ENV, requests
from tests.support.images import assert_sound, build_image, image_tree, layers_of
from tests.support.redis import RedisServer
from tests.support.scaleout import assert_one_registry


def test_skopeo_pushes_through_one_registry_and_pulls_through_another(
    tmp_path: Path, backend: Backend
) -> None:
    """Two processes on one store: the pull's blob GETs redirect to signed URLs of the store."""
    layout = tmp_path / "layout"
    # A layer of two Azure blocks, sent by skopeo in one streamed request.
    build_image(layout, "v1", (64 * 1024, BLOCK + 3 * MiB))
    document = registry_config(backend.parameters, driver=backend.driver)
    config = write_config(tmp_path / "config.yml", document)
    name = f"{backend.driver}/app"
    env = {**ACCESS_LOG_ENV, **backend.env}
    with serving(config, 2, tmp_path, env=env) as (pusher, puller):
        skopeo.copy(f"oci:{layout}:v1", skopeo.docker(pusher, f"{name}:v1"))
        skopeo.copy(skopeo.docker(puller, f"{name}:v1"), f"oci:{tmp_path / 'pulled'}:v1")
    pulled = image_tree(tmp_path / "pulled", "v1")
    assert pulled == image_tree(layout, "v1"), "every manifest and blob, byte for byte"
    assert_sound(pulled)
    blob_gets = {
        r.path.rpartition("/")[2]: r.status
        for r in requests(tmp_path / "cargohold-1.log")
        if r.method == "GET" and r.path.startswith(f"/v2/{name}/blobs/sha256:")
    }
    assert set(layers_of(layout, "v1")) <= set(blob_gets), f"skopeo fetched {sorted(blob_gets)}"
    assert set(blob_gets.values()) == {307}, blob_gets


async def test_three_processes_on_one_store_and_one_redis_are_one_registry(
    tmp_path: Path, backend: Backend, redis_db: RedisServer
) -> None:
    document = registry_config(
        backend.parameters, driver=backend.driver, redis_addr=f"127.0.0.1:{redis_db.port}"
    )
    config = write_config(tmp_path / "config.yml", document)
    with serving(config, 3, tmp_path, env=backend.env) as urls:
        await assert_one_registry(urls, redis_db)
