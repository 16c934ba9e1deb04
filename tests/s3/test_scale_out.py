"""Three registry processes on one bucket and one Redis behave as one registry.

The check itself (``tests/support/scaleout.py``) is every object store driver's;
here it runs on S3, with parts small enough that a multipart upload changes hands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.s3.conftest import MiB, registry_config, serving, write_config
from tests.support.redis import RedisServer
from tests.support.scaleout import assert_one_registry


async def test_three_processes_on_one_bucket_and_one_redis_are_one_registry(
    tmp_path: Path, s3_parameters: dict[str, Any], redis_db: RedisServer
) -> None:
    # 5 MiB parts: the big layer's first part is uploaded by one process, its
    # pending tail kept by others, and the multipart upload completed by another.
    document = registry_config(
        {**s3_parameters, "chunksize": 5 * MiB}, redis_addr=f"127.0.0.1:{redis_db.port}"
    )
    config = write_config(tmp_path / "config.yml", document)
    with serving(config, 3, tmp_path) as urls:
        await assert_one_registry(urls, redis_db)
