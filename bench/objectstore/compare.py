"""S3 clients side by side on one SeaweedFS (issue #21 item 5).

    .venv/bin/python bench/objectstore/compare.py            # 5 reps, ~6 min
    .venv/bin/python bench/objectstore/compare.py --reps 1 --big-mib 32   # smoke run

Clients, each in a worker process of its own (process CPU time counts only it,
the Rust runtime's threads included):

- ``driver``: cargohold's ``S3Driver`` itself. Every request goes through
  ``s3objects.HTTPObjects`` (aiohttp, signed by ``sigv4.py``), and so does
  presigning.
- ``aiobotocore``: a plain aiobotocore client configured as the driver's
  (what GET/PUT/HEAD would cost if ``sigv4.py`` went and aiobotocore stayed).
- ``obstore``: ``obstore.store.S3Store`` (Rust ``object_store`` under Python).

Operations: ``get4k``, ``put4k``, ``head``, ``list100`` (one delimiter listing
of a directory of 100 keys) at concurrency 1 and 16; ``presign`` (a GET URL,
c=1); ``get256`` (one streamed GET of a 256 MiB object in 1 MiB chunks) and
``put256`` (a 256 MiB multipart upload: the driver's writer, 10 MiB parts one
at a time; obstore ``put_async`` with 10 MiB parts at concurrency 1 and 12,
and ``open_writer_async`` fed 1 MiB writes). Every figure is the median of
``--reps`` runs; the clients take turns inside each rep, so load from
elsewhere on the machine falls on all of them alike.

RSS: a fresh interpreter per client imports it, makes one GET of 4 KiB and
reads VmRSS from /proc/self/status (then again after 200 GETs at c=16); the
``+aiohttp`` rows import aiohttp first, as a registry worker has it anyway.
The median of 3 fresh processes each.

Results: a table on stdout and JSON in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

KiB, MiB = 1 << 10, 1 << 20
PREFIX = "bench"  # the driver's rootdirectory; every key is below it
SMALL = 4 * KiB
CHUNK = 1 * MiB  # read and write granularity of the large transfers
PART = 10 * MiB  # the driver's default chunksize; obstore's part size to match
CLIENTS = ("driver", "aiobotocore", "obstore")


# --------------------------------------------------------------------------- clients


class DriverClient:
    """cargohold's S3Driver as the registry uses it."""

    name = "driver"

    def __init__(self, server: dict[str, Any]) -> None:
        from cargohold.storage.driver.s3 import S3Driver

        self.driver = S3Driver(
            bucket=server["bucket"],
            region=server["region"],
            regionendpoint=server["endpoint"],
            accesskey=server["accesskey"],
            secretkey=server["secretkey"],
            forcepathstyle=True,
            secure=False,
            rootdirectory="/" + PREFIX,
            chunksize=PART,
        )

    async def get(self, key: str) -> bytes:
        return await self.driver.get_content("/" + key)

    async def put(self, key: str, data: bytes) -> None:
        await self.driver.put_content("/" + key, data)

    async def head(self, key: str) -> int:
        return (await self.driver.stat("/" + key)).size

    async def list(self, directory: str) -> int:
        return len(await self.driver.list("/" + directory))

    async def presign(self, key: str) -> str:
        url = await self.driver.redirect_url("/" + key)
        assert url is not None
        return url

    async def stream(self, key: str) -> int:
        total = 0
        async for chunk in await self.driver.reader("/" + key, chunk_size=CHUNK):
            total += len(chunk)
        return total

    async def upload(self, key: str, data: bytes, variant: str) -> None:
        writer = await self.driver.writer("/" + key)
        view = memoryview(data)
        for at in range(0, len(data), CHUNK):
            await writer.write(view[at : at + CHUNK])
        await writer.commit()

    upload_variants = ("writer",)

    async def close(self) -> None:
        await self.driver.close()


class BotoClient:
    """A plain aiobotocore client with the driver's configuration."""

    name = "aiobotocore"
    upload_variants: tuple[str, ...] = ()

    def __init__(self, server: dict[str, Any]) -> None:
        self.server = server
        self.bucket = server["bucket"]
        self._client: Any = None
        self._stack: Any = None

    async def client(self) -> Any:
        if self._client is None:
            from contextlib import AsyncExitStack

            from aiobotocore.session import get_session

            from cargohold.storage.driver.s3 import _client_config

            config = _client_config(
                self.server["region"],
                forcepathstyle=True,
                v4auth=True,
                useragent="",
                usedualstack=False,
                usefipsendpoint=False,
                accelerate=False,
                pool=32,
            )
            self._stack = AsyncExitStack()
            self._client = await self._stack.enter_async_context(
                get_session().create_client(
                    "s3",
                    region_name=self.server["region"],
                    endpoint_url=self.server["endpoint"],
                    use_ssl=False,
                    aws_access_key_id=self.server["accesskey"],
                    aws_secret_access_key=self.server["secretkey"],
                    config=config,
                )
            )
        return self._client

    async def get(self, key: str) -> bytes:
        response = await (await self.client()).get_object(Bucket=self.bucket, Key=f"{PREFIX}/{key}")
        async with response["Body"] as body:
            data: bytes = await body.read()
        return data

    async def put(self, key: str, data: bytes) -> None:
        await (await self.client()).put_object(
            Bucket=self.bucket,
            Key=f"{PREFIX}/{key}",
            Body=data,
            ContentType="application/octet-stream",
            ACL="private",
            StorageClass="STANDARD",
        )

    async def head(self, key: str) -> int:
        response = await (await self.client()).head_object(
            Bucket=self.bucket, Key=f"{PREFIX}/{key}"
        )
        return int(response["ContentLength"])

    async def list(self, directory: str) -> int:
        client = await self.client()
        count = 0
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket,
            Prefix=f"{PREFIX}/{directory}/",
            Delimiter="/",
            PaginationConfig={"PageSize": 1000},
        )
        async for page in pages:
            count += len(page.get("Contents", [])) + len(page.get("CommonPrefixes", []))
        return count

    async def presign(self, key: str) -> str:
        url: str = await (await self.client()).generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": f"{PREFIX}/{key}"}, ExpiresIn=1200
        )
        return url

    async def stream(self, key: str) -> int:
        response = await (await self.client()).get_object(Bucket=self.bucket, Key=f"{PREFIX}/{key}")
        total = 0
        async with response["Body"] as body:
            while chunk := await body.read(CHUNK):
                total += len(chunk)
        return total

    async def upload(self, key: str, data: bytes, variant: str) -> None:
        raise NotImplementedError  # the driver's writer is aiobotocore's multipart upload

    async def close(self) -> None:
        if self._stack is not None:
            await self._stack.aclose()


class ObstoreClient:
    """obstore's S3Store."""

    name = "obstore"
    upload_variants = ("put-c1", "put-c12", "writer")

    def __init__(self, server: dict[str, Any]) -> None:
        import obstore
        from obstore.store import S3Store

        self.obs = obstore
        self.store = S3Store(
            server["bucket"],
            endpoint=server["endpoint"],
            region=server["region"],
            access_key_id=server["accesskey"],
            secret_access_key=server["secretkey"],
            virtual_hosted_style_request=False,
            client_options={"allow_http": True},
        )

    async def get(self, key: str) -> bytes:
        result = await self.obs.get_async(self.store, f"{PREFIX}/{key}")
        return bytes(await result.bytes_async())

    async def put(self, key: str, data: bytes) -> None:
        await self.obs.put_async(
            self.store,
            f"{PREFIX}/{key}",
            data,
            attributes={"Content-Type": "application/octet-stream"},
        )

    async def head(self, key: str) -> int:
        return int((await self.obs.head_async(self.store, f"{PREFIX}/{key}"))["size"])

    async def list(self, directory: str) -> int:
        listing = await self.obs.list_with_delimiter_async(self.store, f"{PREFIX}/{directory}")
        return len(listing["objects"]) + len(listing["common_prefixes"])

    async def presign(self, key: str) -> str:
        from datetime import timedelta

        url: str = self.obs.sign(self.store, "GET", f"{PREFIX}/{key}", timedelta(seconds=1200))
        return url

    async def stream(self, key: str) -> int:
        result = await self.obs.get_async(self.store, f"{PREFIX}/{key}")
        total = 0
        async for chunk in result.stream(min_chunk_size=CHUNK):
            total += len(chunk)
        return total

    async def upload(self, key: str, data: bytes, variant: str) -> None:
        path = f"{PREFIX}/{key}"
        if variant == "writer":
            writer = self.obs.open_writer_async(self.store, path, buffer_size=PART)
            view = memoryview(data)
            for at in range(0, len(data), CHUNK):
                await writer.write(view[at : at + CHUNK])
            await writer.close()
            return
        concurrency = {"put-c1": 1, "put-c12": 12}[variant]
        await self.obs.put_async(
            self.store,
            path,
            data,
            use_multipart=True,
            chunk_size=PART,
            max_concurrency=concurrency,
        )

    async def close(self) -> None:
        pass


def make_client(name: str, server: dict[str, Any]) -> Any:
    return {"driver": DriverClient, "aiobotocore": BotoClient, "obstore": ObstoreClient}[name](
        server
    )


# --------------------------------------------------------------------------- worker


async def timed(calls: int, concurrency: int, call: Any) -> dict[str, float]:
    """Run ``call(i)`` for i < calls with ``concurrency`` at a time; CPU and wall time."""
    counter = iter(range(calls))

    async def lane() -> None:
        for i in counter:
            await call(i)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {"cpu_us": cpu / calls * 1e6, "rate": calls / wall, "wall": wall, "cpu": cpu}


async def run_command(client: Any, command: dict[str, Any], big: bytes) -> dict[str, Any]:
    op, conc, calls = command["op"], command.get("conc", 1), command.get("calls", 1)
    small = b"s" * SMALL
    name = client.name
    if op == "get4k":
        return await timed(calls, conc, lambda i: client.get("small/get4k"))
    if op == "put4k":
        return await timed(calls, conc, lambda i: client.put(f"put/{name}/{i % 64}", small))
    if op == "head":
        return await timed(calls, conc, lambda i: client.head("small/get4k"))
    if op == "list100":
        return await timed(calls, conc, lambda i: client.list("list100"))
    if op == "presign":
        return await timed(calls, conc, lambda i: client.presign("small/get4k"))
    if op == "get256":
        result = await timed(1, 1, lambda i: client.stream("big/object"))
        return {
            **result,
            "mib_s": len(big) / MiB / result["wall"],
            "cpu_ms_per_mib": result["cpu"] * 1e3 / (len(big) / MiB),
        }
    if op == "put256":
        variant = command["variant"]
        result = await timed(1, 1, lambda i: client.upload(f"big/{name}-{variant}", big, variant))
        return {
            **result,
            "mib_s": len(big) / MiB / result["wall"],
            "cpu_ms_per_mib": result["cpu"] * 1e3 / (len(big) / MiB),
        }
    if op == "check":
        return await check(client, big)
    raise ValueError(op)


async def check(client: Any, big: bytes) -> dict[str, Any]:
    """What each client reads back is what was stored; its presigned URL works."""
    import urllib.request

    assert await client.get("small/get4k") == b"g" * SMALL
    assert await client.head("small/get4k") == SMALL
    assert await client.list("list100") == 100, await client.list("list100")
    assert await client.stream("big/object") == len(big)
    url = await client.presign("small/get4k")

    def fetch() -> bytes:
        with urllib.request.urlopen(url, timeout=10) as response:
            body: bytes = response.read()
        return body

    assert await asyncio.to_thread(fetch) == b"g" * SMALL
    return {"ok": True, "presigned": url.split("?")[0] + "?..."}


def worker(name: str, server: dict[str, Any], big_mib: int) -> None:
    big = os.urandom(big_mib * MiB)

    async def main() -> None:
        client = make_client(name, server)
        loop = asyncio.get_running_loop()
        try:
            while line := await loop.run_in_executor(None, sys.stdin.readline):
                command = json.loads(line)
                if command["op"] == "variants":
                    result: dict[str, Any] = {"variants": list(client.upload_variants)}
                else:
                    result = await run_command(client, command, big)
                sys.stdout.write(json.dumps(result) + "\n")
                sys.stdout.flush()
        finally:
            await client.close()

    asyncio.run(main())


def rss_probe(name: str, server: dict[str, Any]) -> None:
    """Import the client, one GET; VmRSS. Then 200 GETs at c=16; VmRSS and VmHWM."""

    def status(field: str) -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        raise KeyError(field)

    async def main() -> dict[str, float]:
        out = {"bare": status("VmRSS")}
        if name.endswith("+aiohttp"):
            # A registry worker serves on aiohttp anyway: what the client adds to that.
            import aiohttp  # noqa: F401

            out["bare"] = status("VmRSS")
        client_name = name.removesuffix("+aiohttp")
        if client_name == "none":
            return out
        client = make_client(client_name, server)
        await client.get("small/get4k")
        out["one_call"] = status("VmRSS")
        await timed(200, 16, lambda i: client.get("small/get4k"))
        out["after_200_c16"] = status("VmRSS")
        out["hwm"] = status("VmHWM")
        await client.close()
        return out

    print(json.dumps(asyncio.run(main())))


# --------------------------------------------------------------------------- parent


class Worker:
    def __init__(self, name: str, server: dict[str, Any], big_mib: int) -> None:
        self.name = name
        self.process = subprocess.Popen(
            [sys.executable, __file__, "worker", name, json.dumps(server), str(big_mib)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} died on {command}")
        result: dict[str, Any] = json.loads(line)
        return result

    def close(self) -> int:
        """Its exit status (obstore's Tokio threads can abort the interpreter's shutdown)."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def seed(server: dict[str, Any], big_mib: int) -> None:
    """The objects every client reads: small/get4k, list100/0..99, big/object."""
    import botocore.session
    from botocore.config import Config

    client = botocore.session.get_session().create_client(
        "s3",
        region_name=server["region"],
        endpoint_url=server["endpoint"],
        aws_access_key_id=server["accesskey"],
        aws_secret_access_key=server["secretkey"],
        config=Config(s3={"addressing_style": "path"}),
    )
    bucket = server["bucket"]
    client.put_object(Bucket=bucket, Key=f"{PREFIX}/small/get4k", Body=b"g" * SMALL)
    for i in range(100):
        client.put_object(Bucket=bucket, Key=f"{PREFIX}/list100/{i:03d}", Body=b"l")
    client.put_object(Bucket=bucket, Key=f"{PREFIX}/big/object", Body=os.urandom(big_mib * MiB))
    client.close()


RSS_PROBES = ("none", "none+aiohttp", *CLIENTS, "obstore+aiohttp")
SMALL_OPS = {"get4k": 400, "put4k": 200, "head": 400, "list100": 100}


def median(values: list[float]) -> float:
    return statistics.median(values)


def study(args: argparse.Namespace, server: dict[str, Any]) -> dict[str, Any]:
    seed(server, args.big_mib)
    workers = {name: Worker(name, server, args.big_mib) for name in CLIENTS}
    results: dict[str, Any] = {"runs": {}, "checks": {}, "rss": {}, "rss_exit_status": {}}
    runs: dict[str, list[dict[str, Any]]] = results["runs"]
    try:
        for name, w in workers.items():
            results["checks"][name] = w.ask(op="check")
        variants = {name: w.ask(op="variants")["variants"] for name, w in workers.items()}
        # Warm-up: connections, first-call costs (botocore loads its service model lazily).
        for w in workers.values():
            for op in SMALL_OPS:
                w.ask(op=op, conc=16, calls=32)
            w.ask(op="presign", calls=20)
        for rep in range(args.reps):
            print(f"rep {rep + 1}/{args.reps}", file=sys.stderr, flush=True)
            for op, calls in SMALL_OPS.items():
                for conc in (1, 16):
                    for name, w in workers.items():
                        runs.setdefault(f"{name}|{op}|c{conc}", []).append(
                            w.ask(op=op, conc=conc, calls=calls)
                        )
            for name, w in workers.items():
                runs.setdefault(f"{name}|presign|c1", []).append(w.ask(op="presign", calls=500))
                runs.setdefault(f"{name}|get256|c1", []).append(w.ask(op="get256"))
                for variant in variants[name]:
                    runs.setdefault(f"{name}|put256-{variant}|c1", []).append(
                        w.ask(op="put256", variant=variant)
                    )
    finally:
        results["exit_status"] = {name: w.close() for name, w in workers.items()}
    for name in RSS_PROBES:
        samples = []
        for _ in range(3):
            out = subprocess.run(
                [sys.executable, __file__, "rss", name, json.dumps(server)],
                capture_output=True, text=True, cwd=ROOT,
            )  # fmt: skip
            # The figures are printed before any abort at exit: keep them, count the abort.
            samples.append(json.loads(out.stdout.splitlines()[0]))
            if out.returncode:
                results["rss_exit_status"].setdefault(name, []).append(out.returncode)
        results["rss"][name] = {key: median([s[key] for s in samples]) for key in samples[0]}
    summary: dict[str, dict[str, float]] = {}
    for key, samples in runs.items():
        summary[key] = {
            field: median([s[field] for s in samples])
            for field in samples[0]
            if isinstance(samples[0][field], float)
        }
    results["summary"] = summary
    return results


def table(results: dict[str, Any]) -> str:
    summary = results["summary"]
    lines = [
        "| client | operation | CPU µs/call c=1 | calls/s c=1 | CPU µs/call c=16 | calls/s c=16 |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for op in (*SMALL_OPS, "presign"):
        for name in CLIENTS:
            one, many = summary.get(f"{name}|{op}|c1"), summary.get(f"{name}|{op}|c16")
            if one is None:
                continue
            cells = [f"{one['cpu_us']:.0f}", f"{one['rate']:.0f}"]
            cells += [f"{many['cpu_us']:.0f}", f"{many['rate']:.0f}"] if many else ["", ""]
            lines.append(f"| {name} | {op} | " + " | ".join(cells) + " |")
    lines += ["", "| client | transfer | MiB/s | CPU ms/MiB |", "| --- | --- | ---: | ---: |"]
    for key, value in summary.items():
        name, op, _ = key.split("|")
        if op.startswith(("get256", "put256")):
            lines.append(
                f"| {name} | {op} | {value['mib_s']:.0f} | {value['cpu_ms_per_mib']:.2f} |"
            )
    lines += [
        "",
        "| process | RSS MiB before | after import + 1 GET | after 200 GETs c=16 | VmHWM |",
    ]
    lines += ["| --- | ---: | ---: | ---: | ---: |"]
    for name, rss in results["rss"].items():
        keys = ("bare", "one_call", "after_200_c16", "hwm")
        cells = [f"{rss[k]:.1f}" if k in rss else "" for k in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        worker(sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "rss":
        rss_probe(sys.argv[2], json.loads(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--big-mib", type=int, default=256)
    parser.add_argument("--out", type=Path, default=Path("/tmp/objectstore-study/compare.json"))
    parser.add_argument("--endpoint", help="use this S3 server (bucket cargohold, test keys)")
    args = parser.parse_args()
    from tests.support import seaweed

    def as_dict(s: Any) -> dict[str, Any]:
        return {
            "endpoint": s.endpoint,
            "bucket": s.bucket,
            "region": s.region,
            "accesskey": s.accesskey,
            "secretkey": s.secretkey,
        }

    began = time.perf_counter()
    if args.endpoint:
        server = {
            "endpoint": args.endpoint,
            "bucket": seaweed.BUCKET,
            "region": seaweed.REGION,
            "accesskey": seaweed.ACCESS_KEY,
            "secretkey": seaweed.SECRET_KEY,
        }
        results = study(args, server)
    else:
        scratch = Path("/tmp/objectstore-study") / f"seaweed-{os.getpid()}"
        try:
            with seaweed.running_seaweedfs(scratch) as s:
                results = study(args, as_dict(s))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # GiBs of 256 MiB objects
    results["seconds"] = time.perf_counter() - began
    results["versions"] = versions()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=str))
    print(table(results))
    print(
        f"\nexit status of the workers {results['exit_status']}, of the RSS probes that "
        f"failed {results['rss_exit_status']}"
    )
    print(f"{results['versions']}; {results['seconds']:.0f} s; JSON in {args.out}")
    return 0


def versions() -> dict[str, str]:
    from importlib.metadata import version

    out = {p: version(p) for p in ("obstore", "aiobotocore", "botocore", "aiohttp")}
    from tests.support import seaweed

    weed = subprocess.run([seaweed.weed_binary(), "version"], capture_output=True, text=True)
    out["weed"] = weed.stdout.split("\n")[0].strip()
    out["python"] = sys.version.split()[0]
    return out


if __name__ == "__main__":
    sys.exit(main())
