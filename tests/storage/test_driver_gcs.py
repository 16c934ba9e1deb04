"""The GCS driver against a GCS emulator (gcp-storage-emulator, one per session)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import aiohttp
import pytest
import yaml
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cargohold.config import GCSParameters, parse_config
from cargohold.errors import ConfigError, PathNotFound, StorageUnavailable
from cargohold.storage.driver import create_driver, gcs
from cargohold.storage.driver.gcs import GCSDriver
from cargohold.storage.driver.gcssign import service_account, signed_url
from tests.storage.driver_suite import DriverSuite, MiB, random_bytes, random_path, walk_paths
from tests.support.gcsemulator import EMULATOR_ENV, GCSEmulator, gcs_emulator, gcs_parameters
from tests.support.http import location, request
from tests.support.servers import cargohold_argv, free_port, running

__all__ = ["gcs_emulator", "gcs_parameters"]  # fixtures, used by name

KiB = 1 << 10
VECTORS = Path(__file__).parent / "data" / "gcs_v4_signatures.json"


def make_key(token_uri: str = "http://127.0.0.1:9/token") -> dict[str, str]:
    """A service account's JSON key with a fresh RSA key (signing is local)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return {
        "type": "service_account",
        "project_id": "cargohold-tests",
        "private_key_id": "k1",
        "private_key": pem,
        "client_email": "registry@cargohold-tests.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }


@pytest.fixture(scope="session")
def service_key() -> dict[str, str]:
    return make_key()


@pytest.fixture
async def driver(
    gcs_parameters: dict[str, Any], service_key: dict[str, str]
) -> AsyncIterator[GCSDriver]:
    """A driver under a root of its own on the session's emulator, with a key to sign with."""
    driver = GCSDriver(**gcs_parameters, credentials=service_key)
    yield driver
    await driver.close()


class TestGCSDriver(DriverSuite):
    """The conformance suite, on the ``driver`` fixture above."""


def root_of(parameters: dict[str, Any]) -> str:
    return str(parameters["rootdirectory"]).strip("/")


async def digest_of(driver: GCSDriver, path: str) -> str:
    digest = hashlib.sha256()
    async for chunk in await driver.reader(path):
        digest.update(chunk)
    return digest.hexdigest()


# -- where things are stored ---------------------------------------------------------------


async def test_paths_are_object_names_under_the_root_directory(
    gcs_emulator: GCSEmulator, gcs_parameters: dict[str, Any]
) -> None:
    root = root_of(gcs_parameters)
    driver = GCSDriver(**{**gcs_parameters, "rootdirectory": f"/{root}/"})
    await driver.put_content("/docker/registry/v2/file", b"content")
    assert gcs_emulator.object_names(root) == [f"{root}/docker/registry/v2/file"]
    name = quote(f"{root}/docker/registry/v2/file", safe="")
    status, body = gcs_emulator.request("GET", f"/storage/v1/b/{gcs_emulator.bucket}/o/{name}")
    assert status == 200
    assert json.loads(body)["contentType"] == "application/octet-stream", "as Distribution stores"
    assert await driver.list("/") == ["/docker"]
    await driver.close()


async def test_pending_writes_are_hidden_objects_beside_the_file(
    gcs_emulator: GCSEmulator, driver: GCSDriver, gcs_parameters: dict[str, Any]
) -> None:
    root = root_of(gcs_parameters)
    async with await driver.writer("/uploads/u/data") as writer:
        await writer.write(b"pending bytes")
    pending = f"{root}/uploads/u/.~data.pending"
    assert gcs_emulator.object_names(root) == [pending]
    _, body = gcs_emulator.request(
        "GET", f"/storage/v1/b/{gcs_emulator.bucket}/o/{quote(pending, safe='')}"
    )
    # Distribution's content type of an upload in progress: its listings skip it too.
    assert json.loads(body)["contentType"] == gcs.SESSION_TYPE
    assert await driver.list("/uploads/u") == []
    assert await walk_paths(driver, "/uploads") == ["/uploads/u"]
    async with await driver.writer("/uploads/u/data", append=True) as writer:
        await writer.commit()
    assert gcs_emulator.object_names(root) == [f"{root}/uploads/u/data"], "no bookkeeping left"


async def test_an_upload_in_progress_of_the_go_registry_is_no_file(
    gcs_emulator: GCSEmulator, driver: GCSDriver, gcs_parameters: dict[str, Any]
) -> None:
    # Distribution keeps an upload's unsent bytes in an object at the file's own name,
    # typed as an upload session; like Distribution, the driver sees no file there.
    name = f"{root_of(gcs_parameters)}/uploads/go/data"
    body = (
        b"--b\r\nContent-Type: application/json\r\n\r\n"
        + json.dumps({"name": name, "metadata": {"Offset": "0"}}).encode()
        + f"\r\n--b\r\nContent-Type: {gcs.SESSION_TYPE}\r\n\r\nbytes\r\n--b--\r\n".encode()
    )
    status, _ = gcs_emulator.request(
        "POST", f"/upload/storage/v1/b/{gcs_emulator.bucket}/o?uploadType=multipart", body,
        "multipart/related; boundary=b",
    )  # fmt: skip
    assert status == 200
    await driver.put_content("/uploads/go/startedat", b"t")
    with pytest.raises(PathNotFound):
        await driver.stat("/uploads/go/data")
    with pytest.raises(PathNotFound):
        await driver.get_content("/uploads/go/data")
    assert await driver.list("/uploads/go") == ["/uploads/go/startedat"]


# -- appending across processes ------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, json, os, sys
    from cargohold.storage.driver.gcs import GCSDriver

    async def main(parameters, path, pieces, die):
        driver = GCSDriver(**parameters)
        for index, (size, seed) in enumerate(pieces):
            writer = await driver.writer(path, append=True)
            await writer.write(bytes([seed]) * size)
            if die and index == len(pieces) - 1:
                # Chunks went into the session; the pending object was not rewritten.
                print(json.dumps({"size": writer.size}), flush=True)
                os._exit(0)
            await writer.close()
        print(json.dumps({"size": writer.size}), flush=True)
        await driver.close()

    asyncio.run(main(*json.loads(sys.argv[1])))
    """
)


def child_writes(
    parameters: dict[str, Any], path: str, pieces: list[tuple[int, int]], die: bool = False
) -> int:
    """Another process appends ``pieces`` (size, byte) to the upload at ``path``; its size."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([parameters, path, pieces, die])],
        capture_output=True, text=True, timeout=60, env=os.environ.copy(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout.splitlines()[-1])["size"])


def content_of(pieces: list[tuple[int, int]]) -> bytes:
    return b"".join(bytes([seed]) * size for size, seed in pieces)


async def test_an_upload_is_resumed_by_another_process(gcs_parameters: dict[str, Any]) -> None:
    parameters = {**gcs_parameters, "chunksize": 256 * KiB}
    path = "/repositories/r/_uploads/u/data"
    first = [(300 * KiB, 1), (5, 2), (600 * KiB + 3, 3)]
    assert child_writes(parameters, path, first) == len(content_of(first))
    driver = GCSDriver(**parameters)
    writer = await driver.writer(path, append=True)
    assert writer.size == len(content_of(first)), "the writer resumes what the other sent"
    await writer.write(b"and the end")
    await writer.commit()
    assert await driver.get_content(path) == content_of(first) + b"and the end"
    assert await driver.list("/repositories/r/_uploads/u") == [path]
    await driver.close()


async def test_a_process_dying_after_sending_chunks_leaves_a_consistent_prefix(
    gcs_parameters: dict[str, Any],
) -> None:
    parameters = {**gcs_parameters, "chunksize": 256 * KiB}
    path = random_path()
    # 300 KiB: 256 KiB in the session, 44 KiB pending. Then 600 KiB more: two chunks
    # go into the session (768 KiB in all) and the process dies before saving the rest.
    pieces = [(300 * KiB, 7), (600 * KiB, 8)]
    child_writes(parameters, path, pieces, die=True)
    driver = GCSDriver(**parameters)
    assert await driver.written_size(path) == 300 * KiB, "the pending object is stale"
    writer = await driver.writer(path, append=True)
    assert writer.size == 768 * KiB, "the session holds a prefix of what was sent"
    await writer.commit()
    assert await driver.get_content(path) == content_of(pieces)[: 768 * KiB]
    await driver.close()


async def test_chunks_of_one_upload_alternate_between_two_drivers(
    gcs_parameters: dict[str, Any],
) -> None:
    # Two drivers share nothing but the server, like two registry processes.
    parameters = {**gcs_parameters, "chunksize": 512 * KiB}
    drivers = GCSDriver(**parameters), GCSDriver(**parameters)
    path = random_path()
    sizes = [1, 100 * KiB, 700 * KiB, 1, 256 * KiB, 3 * MiB + 5, 0, 17]
    sent, written = hashlib.sha256(), 0
    for i, size in enumerate(sizes):
        writer = await drivers[i % 2].writer(path, append=i > 0)
        assert writer.size == written, f"chunk {i}: the writer resumes what was sent"
        chunk = random_bytes(size)
        await writer.write(chunk)
        await writer.close()
        sent.update(chunk)
        written += size
        with pytest.raises(PathNotFound):
            await drivers[0].stat(path)
        assert await drivers[1].written_size(path) == written
    writer = await drivers[0].writer(path, append=True)
    await writer.commit()
    assert (await drivers[1].stat(path)).size == written
    assert await digest_of(drivers[1], path) == sent.hexdigest()
    for driver in drivers:
        await driver.close()


async def test_a_cancelled_session_upload_leaves_nothing(
    gcs_emulator: GCSEmulator, gcs_parameters: dict[str, Any]
) -> None:
    driver = GCSDriver(**{**gcs_parameters, "chunksize": 256 * KiB})
    path = random_path()
    async with await driver.writer(path) as writer:
        await writer.write(random_bytes(700 * KiB))  # two chunks in a session
    writer = await driver.writer(path, append=True)
    assert writer.size == 700 * KiB
    await writer.cancel()
    assert gcs_emulator.object_names(root_of(gcs_parameters)) == []
    assert (await driver.writer(path, append=True)).size == 0
    await driver.close()


# -- redirects -----------------------------------------------------------------------------


def verify_signature(url: str, method: str, public_key: rsa.RSAPublicKey) -> None:
    """Check a V4 signed URL as a server would: rebuild what was signed, verify with the key."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    values = dict(query)
    canonical_query = "&".join(
        f"{quote(name, safe='')}={quote(value, safe='')}"
        for name, value in sorted(query)
        if name != "X-Goog-Signature"
    )
    assert values["X-Goog-SignedHeaders"] == "host"
    canonical = "\n".join(
        [
            method,
            parts.path,
            canonical_query,
            f"host:{parts.hostname}\n",
            "host",
            "UNSIGNED-PAYLOAD",
        ]
    )
    scope = values["X-Goog-Credential"].split("/", 1)[1]
    signed = "\n".join(
        [
            "GOOG4-RSA-SHA256",
            values["X-Goog-Date"],
            scope,
            hashlib.sha256(canonical.encode()).hexdigest(),
        ]
    )
    public_key.verify(
        bytes.fromhex(values["X-Goog-Signature"]),
        signed.encode(),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


async def test_redirects_are_signed_urls_that_the_configured_endpoint_serves(
    gcs_emulator: GCSEmulator, gcs_parameters: dict[str, Any], service_key: dict[str, str]
) -> None:
    driver = GCSDriver(**gcs_parameters, credentials=service_key, redirectexpiry=60)
    path, content = random_path(), random_bytes(100_000)
    await driver.put_content(path, content)
    url = await driver.redirect_url(path)
    head_url = await driver.redirect_url(path, "HEAD")
    assert url is not None
    assert head_url is not None
    assert url.startswith(
        f"{gcs_emulator.endpoint}/{gcs_emulator.bucket}/{root_of(gcs_parameters)}"
    )
    assert "X-Goog-Expires=60&" in url
    assert "X-Goog-Credential=registry%40cargohold-tests.iam.gserviceaccount.com%2F" in url
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        # The emulator checks no signature: the signature is checked below, with the key.
        assert response.status == 200
        assert await response.read() == content
    key = service_account(service_key, "the key").private_key.public_key()
    verify_signature(url, "GET", key)
    verify_signature(head_url, "HEAD", key)
    tampered = url.replace("X-Goog-Expires=60", "X-Goog-Expires=61")
    with pytest.raises(InvalidSignature):
        verify_signature(tampered, "GET", key)
    assert await driver.redirect_url(path, "PUT") is None
    await driver.close()


async def test_redirects_expire_after_twenty_minutes_by_default(driver: GCSDriver) -> None:
    path = random_path()
    await driver.put_content(path, b"x")
    url = await driver.redirect_url(path)
    assert url is not None
    assert "X-Goog-Expires=1200&" in url


async def test_without_a_key_the_registry_serves_content_itself(
    gcs_parameters: dict[str, Any],
) -> None:
    driver = GCSDriver(**gcs_parameters)
    assert driver.redirects is None, "nothing to sign with"
    await driver.put_content("/file", b"x")
    assert await driver.get_content("/file") == b"x"
    await driver.close()


def vectors() -> list[dict[str, Any]]:
    return list(json.loads(VECTORS.read_text())["signingV4Tests"])


@pytest.mark.parametrize("vector", vectors(), ids=lambda vector: vector["description"])
def test_signed_urls_match_googles_conformance_vectors(vector: dict[str, Any]) -> None:
    """Google's V4 signing vectors, with their published dummy key.

    The scheme and host come from each vector's URL (where a client sends its
    requests is the client's choice; the driver takes the endpoint's); the
    signature, the query and the path are computed.
    """
    account = service_account(json.loads(VECTORS.read_text())["service_account"], "vectors")
    expected = vector["expectedUrl"]
    parts = urlsplit(expected)
    if vector.get("urlStyle", "PATH_STYLE") == "PATH_STYLE":
        resource = "/" + vector["bucket"] + ("/" + vector["object"] if "object" in vector else "")
    else:
        resource = "/" + vector.get("object", "")
    url = signed_url(
        account,
        vector["method"],
        parts.scheme,
        parts.netloc,
        resource,
        expires=int(vector["expiration"]),
        now=datetime.fromisoformat(vector["timestamp"].replace("Z", "+00:00")),
        headers=vector.get("headers"),
        query=vector.get("queryParameters"),
    )
    # Some vectors spell the signature's parameter in lower case.
    assert url == expected.replace("x-goog-signature=", "X-Goog-Signature=")


# -- configuration -------------------------------------------------------------------------


def gcs_config(section: dict[str, Any], **http: Any) -> str:
    document = {
        "version": "0.1",
        "log": {"level": "warn"},
        "http": http or {"addr": "127.0.0.1:0"},
        "storage": {"gcs": section},
    }
    return yaml.safe_dump(document)


async def test_the_registry_builds_the_driver_from_its_configuration(
    gcs_parameters: dict[str, Any], service_key: dict[str, str], tmp_path: Path
) -> None:
    keyfile = tmp_path / "key.json"
    keyfile.write_text(json.dumps(service_key))
    sections = [
        {**gcs_parameters, "credentials": service_key, "chunksize": 262144},
        {**gcs_parameters, "keyfile": str(keyfile)},
    ]
    for section in sections:
        config = parse_config(gcs_config(section), environ={})
        assert config.storage.driver_name == "gcs"
        parameters = config.storage.driver_parameters
        assert isinstance(parameters, GCSParameters)
        driver = create_driver("gcs", parameters.model_dump())
        assert isinstance(driver, GCSDriver)
        assert driver.account is not None
        assert driver.account.email == service_key["client_email"]
        await driver.put_content("/file", b"configured")
        assert await driver.get_content("/file") == b"configured"
        assert await driver.redirect_url("/file") is not None
        await driver.close()
    config = parse_config(gcs_config(sections[0]), environ={})
    assert isinstance(config.storage.driver_parameters, GCSParameters)
    assert config.storage.driver_parameters.chunksize == 262144


def test_distributions_keys_and_defaults() -> None:
    parameters = parse_config(gcs_config({"bucket": "b"}), environ={}).storage.driver_parameters
    assert isinstance(parameters, GCSParameters)
    assert parameters.model_dump() == {
        "bucket": "b",
        "keyfile": "",
        "credentials": {},
        "rootdirectory": "",
        "chunksize": 16 * MiB,
        "useragent": "",
        "maxconcurrency": 50,
        "redirectexpiry": 1200.0,
    }
    # A credentials mapping, each key of it settable from the environment too.
    environ = {
        "REGISTRY_STORAGE_GCS_CREDENTIALS_PRIVATE_KEY_ID": "k2",
        "REGISTRY_STORAGE_GCS_MAXCONCURRENCY": "3",
    }
    section = {"bucket": "b", "credentials": {"type": "service_account", "client_id": 12}}
    parameters = parse_config(gcs_config(section), environ=environ).storage.driver_parameters
    assert isinstance(parameters, GCSParameters)
    assert parameters.credentials == {
        "type": "service_account",
        "client_id": "12",
        "private_key_id": "k2",
    }
    assert parameters.maxconcurrency == 25, "raised to Distribution's minimum"


@pytest.mark.parametrize(
    ("section", "key", "reason"),
    [
        ({}, "storage.gcs.bucket", "required"),
        ({"bucket": "b", "chunksize": 1000000}, "storage.gcs.chunksize", "multiple of 262144"),
        ({"bucket": "b", "chunksize": 131072}, "storage.gcs.chunksize", "262144"),
        ({"bucket": "b", "unknown": 1}, "storage.gcs.unknown", ""),
    ],
)
def test_bad_parameters_name_their_key(section: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(gcs_config(section), environ={})
    assert caught.value.key == key
    assert reason in caught.value.reason


def test_keys_that_are_no_service_account_key_are_refused(tmp_path: Path) -> None:
    user = {"type": "authorized_user", "client_id": "x", "refresh_token": "y"}
    broken = {**make_key(), "private_key": "-----BEGIN PRIVATE KEY-----\nnot a key\n"}
    (tmp_path / "user.json").write_text(json.dumps(user))
    (tmp_path / "garbage.json").write_text("not json")
    cases = [
        ({"keyfile": str(tmp_path / "missing.json")}, "storage.gcs.keyfile", "cannot read"),
        ({"keyfile": str(tmp_path / "garbage.json")}, "storage.gcs.keyfile", "not JSON"),
        ({"keyfile": str(tmp_path / "user.json")}, "storage.gcs.keyfile", "not a service account"),
        ({"credentials": broken}, "storage.gcs.credentials", "not a PEM RSA key"),
    ]
    for parameters, key, reason in cases:
        with pytest.raises(ConfigError) as caught:
            GCSDriver(bucket="b", **parameters)
        assert caught.value.key == key
        assert reason in caught.value.reason
        assert "\n" not in str(caught.value)


def test_the_emulators_address_may_omit_the_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EMULATOR_ENV, "127.0.0.1:4443")
    assert GCSDriver(bucket="b").endpoint == "http://127.0.0.1:4443"
    monkeypatch.setenv(EMULATOR_ENV, "https://gcs.example:8443/")
    assert GCSDriver(bucket="b").endpoint == "https://gcs.example:8443"
    monkeypatch.delenv(EMULATOR_ENV)
    assert GCSDriver(bucket="b").endpoint is None


# -- refusing to start ---------------------------------------------------------------------


class TokenRefuser(BaseHTTPRequestHandler):
    """An OAuth token endpoint that refuses every key, as Google's does a deleted one."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"error": "invalid_grant", "error_description": "Invalid JWT Signature."}'
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_token_uri() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), TokenRefuser)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/token"
    server.shutdown()
    server.server_close()


def serve_refused(config: Path, env: dict[str, str]) -> tuple[int, list[str]]:
    environ = {k: v for k, v in os.environ.items() if k != EMULATOR_ENV}
    result = subprocess.run(
        cargohold_argv("serve", str(config)),
        capture_output=True, text=True, timeout=30, env={**environ, **env},
    )  # fmt: skip
    return result.returncode, result.stderr.splitlines()


def test_serve_refuses_to_start_on_storage_it_cannot_use(
    gcs_emulator: GCSEmulator, tmp_path: Path, refusing_token_uri: str
) -> None:
    emulator = {EMULATOR_ENV: gcs_emulator.endpoint}
    closed = {EMULATOR_ENV: f"127.0.0.1:{free_port()}"}
    cases = [
        ({"bucket": "no-such-bucket"}, emulator, "does not exist"),
        ({"bucket": "cargohold", "keyfile": str(tmp_path / "none.json")}, emulator, "cannot read"),
        ({"bucket": "cargohold", "credentials": make_key(refusing_token_uri)}, {}, "refused"),
        ({"bucket": "cargohold"}, {"GOOGLE_APPLICATION_CREDENTIALS": "/none"}, "no credentials"),
        ({"bucket": "cargohold"}, closed, "cannot reach"),
    ]
    config = tmp_path / "config.yml"
    for section, env, reason in cases:
        config.write_text(gcs_config(section))
        status, lines = serve_refused(config, env)
        assert status == 2, lines
        assert len(lines) == 1, lines
        assert lines[0].startswith("cargohold: config: storage.gcs"), lines
        assert reason in lines[0], lines


async def test_check_passes_on_a_usable_bucket(driver: GCSDriver) -> None:
    await driver.check()


async def test_every_failure_of_the_endpoint_is_storage_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(gcs, "ATTEMPTS", 1)  # no retries of what cannot succeed
    monkeypatch.setenv(EMULATOR_ENV, f"127.0.0.1:{free_port()}")
    driver = GCSDriver(bucket="cargohold")
    path = random_path()

    async def write() -> None:
        async with await driver.writer(path) as writer:
            await writer.write(b"x")

    attempts = [
        driver.get_content(path),
        driver.put_content(path, b"x"),
        driver.reader(path),
        write(),
        driver.stat(path),
        driver.list(path),
        driver.delete(path),
        driver.move(path, random_path()),
        walk_paths(driver, path),
    ]
    for attempt in attempts:
        with pytest.raises(StorageUnavailable):
            await attempt
    await driver.close()


# -- through the registry ------------------------------------------------------------------


def test_a_pushed_blob_is_pulled_through_a_signed_url_of_the_emulator(
    gcs_emulator: GCSEmulator,
    gcs_parameters: dict[str, Any],
    service_key: dict[str, str],
    tmp_path: Path,
) -> None:
    """A chunked push through two workers, then a pull redirected to the emulator."""
    port = free_port()
    section = {**gcs_parameters, "credentials": service_key, "chunksize": 256 * KiB}
    config = tmp_path / "config.yml"
    config.write_text(gcs_config(section, addr=f"127.0.0.1:{port}"))
    base = f"http://127.0.0.1:{port}"
    content = random_bytes(700 * KiB + 11)
    digest = "sha256:" + hashlib.sha256(content).hexdigest()
    argv = cargohold_argv("serve", str(config), "--workers", "2")
    with running(argv, f"{base}/v2/", env={EMULATOR_ENV: gcs_emulator.endpoint}):
        reply = request("POST", f"{base}/v2/gcs/app/blobs/uploads/")
        assert reply.status == 202, reply.body
        upload = location(reply, base)
        offset = 0
        for piece in (content[: 300 * KiB], content[300 * KiB :]):
            headers = {
                "Content-Type": "application/octet-stream",
                "Content-Range": f"{offset}-{offset + len(piece) - 1}",
            }
            reply = request("PATCH", upload, piece, headers)
            assert reply.status == 202, reply.body
            upload, offset = location(reply, base), offset + len(piece)
        reply = request("PUT", f"{upload}{'&' if '?' in upload else '?'}digest={digest}")
        assert reply.status == 201, reply.body
        reply = request("GET", f"{base}/v2/gcs/app/blobs/{digest}")
        assert reply.status == 307, reply.body
        signed = str(reply.headers["Location"])
        assert signed.startswith(f"{gcs_emulator.endpoint}/{gcs_emulator.bucket}/"), signed
        pulled = request("GET", signed)
        assert pulled.status == 200
        assert pulled.body == content
