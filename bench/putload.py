"""PUT distinct manifests; one process of the multi-process PUT client.

``python -m bench.putload URL REPO CONCURRENCY START_AT PREFIX FIRST STEP COUNT CONFIG LAYER``
opens CONCURRENCY connections, waits until the wall-clock time START_AT (so
that every process starts at once), then PUTs manifest number FIRST, FIRST +
STEP, ... below COUNT, CONCURRENCY at a time. Manifest ``n`` carries the
annotation ``PREFIX-n`` and is PUT under the tag ``PREFIX-n``, so both servers
receive exactly the same manifests and end in the same state. It prints one
JSON line: how many were answered 201, every other status with its count, the
wall-clock time the last reply came, and the CPU seconds spent before START_AT
(importing and connecting), which the benchmark does not charge to the load.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp

from bench import client


async def _run(
    url: str,
    repo: str,
    concurrency: int,
    start_at: float,
    prefix: str,
    numbers: range,
    config: bytes,
    layer: bytes,
) -> dict[str, object]:
    created = 0
    bad: dict[int, int] = {}
    headers = {"Content-Type": client.OCI_MANIFEST}
    todo = iter(numbers)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def warm() -> None:
            async with http.get(f"{url}/v2/") as response:
                await response.read()

        await asyncio.gather(*(warm() for _ in range(concurrency)))
        startup_cpu = time.process_time()
        await asyncio.sleep(max(0.0, start_at - time.time()))

        async def worker() -> None:
            nonlocal created
            for number in todo:
                tag = f"{prefix}-{number}"
                body = client.manifest(config, layer, annotation=tag)
                target = f"{url}/v2/{repo}/manifests/{tag}"
                async with http.put(target, data=body, headers=headers) as response:
                    await response.read()
                    if response.status == 201:
                        created += 1
                    else:
                        bad[response.status] = bad.get(response.status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        finished = time.time()
    return {"created": created, "bad": bad, "finished": finished, "startup_cpu": startup_cpu}


def main(argv: list[str]) -> None:
    url, repo, concurrency, start_at, prefix, first, step, count, config, layer = argv
    result = asyncio.run(
        _run(
            url,
            repo,
            int(concurrency),
            float(start_at),
            prefix,
            range(int(first), int(count), int(step)),
            Path(config).read_bytes(),
            Path(layer).read_bytes(),
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
