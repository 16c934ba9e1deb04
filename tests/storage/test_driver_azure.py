"""The Azure driver against a real Azure Blob Storage API (Azurite, one per session)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import yaml
from azure.storage.blob.aio import BlobClient

from cargohold.config import AzureParameters, parse_config
from cargohold.errors import ConfigError, PathNotFound, StorageUnavailable
from cargohold.storage.driver import create_driver
from cargohold.storage.driver.azure import BLOCK, AzureDriver
from tests.storage.driver_suite import DriverSuite, MiB, random_bytes, random_path, walk_paths
from tests.support import azurite as _azurite
from tests.support.azurite import Azurite, create_container
from tests.support.servers import cargohold_argv, free_port

# The session's Azurite and a fresh root per test (fixtures of tests/support/azurite.py).
azurite = _azurite.azurite
azure_parameters = _azurite.azure_parameters

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def driver(azure_parameters: dict[str, Any]) -> AsyncIterator[AzureDriver]:
    """A driver under a root of its own on the session's Azurite."""
    driver = AzureDriver(**azure_parameters)
    yield driver
    await driver.close()


class TestAzureDriver(DriverSuite):
    """The conformance suite, on the ``driver`` fixture above."""


def blob_names(server: Azurite, prefix: str, container: str | None = None) -> list[str]:
    """Committed blobs under ``prefix``, as the service lists them."""
    client = server.client(container)
    try:
        return sorted(blob.name for blob in client.list_blobs(name_starts_with=prefix))
    finally:
        client.close()


def staged_blocks(server: Azurite, name: str) -> list[tuple[str, int]]:
    """The uncommitted blocks of the blob ``name``: (decoded id, size)."""
    client = server.client()
    try:
        _, uncommitted = client.get_blob_client(name).get_block_list("uncommitted")
    finally:
        client.close()
    return [(base64.b64decode(block.id).decode(), block.size) for block in uncommitted]


def root_of(parameters: dict[str, Any]) -> str:
    return str(parameters["rootdirectory"]).strip("/")


async def digest_of(driver: AzureDriver, path: str) -> str:
    digest = hashlib.sha256()
    async for chunk in await driver.reader(path):
        digest.update(chunk)
    return digest.hexdigest()


# -- configuration ----------------------------------------------------------------------


def test_serviceurl_defaults_to_the_accounts_endpoint_in_the_realm() -> None:
    key = _azurite.KEY
    default = AzureDriver(accountname="acct", accountkey=key, container="c")
    assert default.endpoint == "https://acct.blob.core.windows.net"
    china = AzureDriver(
        accountname="acct", accountkey=key, container="c", realm="core.chinacloudapi.cn"
    )
    assert china.endpoint == "https://acct.blob.core.chinacloudapi.cn"
    emulator = AzureDriver(
        accountname="acct", accountkey=key, container="c", serviceurl="http://127.0.0.1:1/acct/"
    )
    assert emulator.endpoint == "http://127.0.0.1:1/acct", "serviceurl wins over realm"


def test_distributions_keys_configure_the_driver() -> None:
    config = parse_config(
        yaml.safe_dump(
            {
                "version": "0.1",
                "storage": {
                    "azure": {
                        "accountname": "acct",
                        "accountkey": _azurite.KEY,
                        "container": "registry",
                        "realm": "core.usgovcloudapi.net",
                        "rootdirectory": "/prefix/",
                        "credentials": {"type": "shared_key"},
                        "max_retries": 3,
                        "retry_delay": "250ms",
                    }
                },
            }
        ),
        environ={},
    )
    assert config.storage.driver_name == "azure"
    driver = create_driver("azure", config.storage.driver_parameters.model_dump())
    assert isinstance(driver, AzureDriver)
    assert driver.endpoint == "https://acct.blob.core.usgovcloudapi.net"
    assert (driver.container, driver.max_retries, driver.retry_delay) == ("registry", 3, 0.25)
    assert driver._key("/docker/registry/v2") == "prefix/docker/registry/v2"


def test_distribution_2_configurations_without_credentials_are_shared_key() -> None:
    driver = AzureDriver(accountname="acct", accountkey=_azurite.KEY, container="c")
    assert driver.accountname == "acct"
    with pytest.raises(ConfigError) as caught:
        AzureDriver(accountname="acct", container="c")
    assert caught.value.key == "storage.azure.credentials.type"


@pytest.mark.parametrize(
    ("overrides", "key", "reason"),
    [
        ({"credentials": {"type": "client_secret"}}, "storage.azure.credentials", "identity"),
        ({"credentials": {"type": "default_credentials"}}, "storage.azure.credentials", "identity"),
        ({"credentials": {"type": "sas"}}, "storage.azure.credentials.type", "expected"),
        (
            {"credentials": {"type": "shared_key", "clientid": "x"}},
            "storage.azure.credentials.clientid",
            "not supported",
        ),
        ({"accountkey": "not base64!"}, "storage.azure.accountkey", "base64"),
        ({"container": ""}, "storage.azure.container", "required"),
        ({"connectionstring": "AccountName=a"}, "storage.azure.connectionstring", "not supported"),
        ({"redirectexpiry": 0.5}, "storage.azure.redirectexpiry", "between"),
    ],
)
def test_settings_it_cannot_honour_are_refused_in_one_line(
    overrides: dict[str, Any], key: str, reason: str
) -> None:
    parameters = {"accountname": "acct", "accountkey": _azurite.KEY, "container": "c"}
    with pytest.raises(ConfigError) as caught:
        AzureDriver(**{**parameters, **overrides})
    assert caught.value.key == key
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


# -- where things are stored -------------------------------------------------------------


async def test_paths_are_blob_names_under_the_root_directory(
    azurite: Azurite, azure_parameters: dict[str, Any]
) -> None:
    root = root_of(azure_parameters)
    driver = AzureDriver(**{**azure_parameters, "rootdirectory": f"/{root}/"})
    await driver.put_content("/docker/registry/v2/file", b"content")
    assert blob_names(azurite, root) == [f"{root}/docker/registry/v2/file"]
    assert await driver.list("/") == ["/docker"]
    await driver.close()


async def test_an_empty_root_directory_puts_paths_at_the_top_of_the_container(
    azurite: Azurite,
) -> None:
    container = create_container(azurite)
    driver = AzureDriver(**azurite.parameters(container=container, rootdirectory=""))
    try:
        await driver.put_content("/a/b", b"x")
        assert blob_names(azurite, "", container) == ["a/b"]
        assert await driver.list("/") == ["/a"]
        assert await walk_paths(driver, "/") == ["/a", "/a/b"]
    finally:
        await driver.close()


async def test_the_registry_builds_the_driver_from_its_configuration(
    azure_parameters: dict[str, Any],
) -> None:
    parameters = AzureParameters(**azure_parameters).model_dump()
    driver = create_driver("azure", parameters)
    assert isinstance(driver, AzureDriver)
    await driver.put_content("/file", b"configured")
    assert await driver.get_content("/file") == b"configured"
    await driver.close()


# -- writers: staged blocks ------------------------------------------------------------------


async def test_a_pending_write_is_blocks_staged_at_the_files_own_name(
    azurite: Azurite, driver: AzureDriver, azure_parameters: dict[str, Any]
) -> None:
    root = root_of(azure_parameters)
    async with await driver.writer("/uploads/u/data") as writer:
        await writer.write(b"pending bytes")
    assert blob_names(azurite, root) == [], "nothing is committed, nothing else is kept"
    assert staged_blocks(azurite, f"{root}/uploads/u/data") == [("cargohold00000000w", 13)]
    with pytest.raises(PathNotFound):
        await driver.stat("/uploads/u/data")
    assert await driver.written_size("/uploads/u/data") == 13
    async with await driver.writer("/uploads/u/data", append=True) as writer:
        await writer.write(b", and more")
        await writer.commit()
    assert blob_names(azurite, root) == [f"{root}/uploads/u/data"]
    assert staged_blocks(azurite, f"{root}/uploads/u/data") == []
    assert await driver.get_content("/uploads/u/data") == b"pending bytes, and more"


async def test_a_writer_stages_a_block_per_block_size(
    azurite: Azurite, driver: AzureDriver, azure_parameters: dict[str, Any]
) -> None:
    path = random_path()
    content = random_bytes(2 * BLOCK + 5)
    writer = await driver.writer(path)
    for start in range(0, len(content), 3 * MiB):
        await writer.write(content[start : start + 3 * MiB])
    name = f"{root_of(azure_parameters)}{path}"
    assert [size for _, size in staged_blocks(azurite, name)] == [BLOCK, BLOCK], "5 in memory"
    await writer.close()
    assert [size for _, size in staged_blocks(azurite, name)] == [BLOCK, BLOCK, 5]
    async with await driver.writer(path, append=True) as resumed:
        assert resumed.size == len(content)
        await resumed.commit()
    assert await digest_of(driver, path) == hashlib.sha256(content).hexdigest()


async def test_cancel_after_appending_to_committed_content_keeps_that_content(
    driver: AzureDriver,
) -> None:
    path = random_path()
    await driver.put_content(path, b"committed")
    async with await driver.writer(path, append=True) as writer:
        await writer.write(b" and appended")
    assert await driver.written_size(path) == len(b"committed and appended")
    assert await driver.get_content(path) == b"committed", "not before the commit"
    writer = await driver.writer(path, append=True)
    assert writer.size == len(b"committed and appended")
    await writer.cancel()
    assert await driver.get_content(path) == b"committed"
    assert await driver.written_size(path) == len(b"committed")


async def test_a_fresh_writer_over_committed_content_leaves_it_until_its_commit(
    driver: AzureDriver,
) -> None:
    path = random_path()
    await driver.put_content(path, b"committed")
    async with await driver.writer(path) as writer:
        await writer.write(b"abandoned")
    async with await driver.writer(path) as writer:
        assert writer.size == 0
        assert await driver.get_content(path) == b"committed"
        assert await driver.written_size(path) == len(b"committed"), "the abandoned blocks went"
        await writer.write(b"new")
        await writer.commit()
    assert await driver.get_content(path) == b"new"


async def test_put_content_replaces_an_append_blob_of_distributions(
    azurite: Azurite, driver: AzureDriver, azure_parameters: dict[str, Any]
) -> None:
    name = f"{root_of(azure_parameters)}/repositories/r/_manifests/tags/t/current/link"
    client = azurite.client()
    try:
        blob = client.get_blob_client(name)
        blob.create_append_blob()
        blob.append_block(b"sha256:old")
    finally:
        client.close()
    path = "/repositories/r/_manifests/tags/t/current/link"
    assert await driver.get_content(path) == b"sha256:old"
    await driver.put_content(path, b"sha256:new")
    assert await driver.get_content(path) == b"sha256:new"


# -- an upload continued by another process ----------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, hashlib, json, os, sys
    from cargohold.storage.driver.azure import AzureDriver

    def piece(start, size):
        # The same bytes for the same offsets, in every process.
        out = bytearray()
        block = start // 4096
        while len(out) < size + (start % 4096):
            out += hashlib.sha256(str(block).encode()).digest() * 128
            block += 1
        return bytes(out[start % 4096 : start % 4096 + size])

    async def main(parameters, path, append, size, crash):
        driver = AzureDriver(**parameters)
        writer = await driver.writer(path, append=append)
        start = writer.size
        await writer.write(piece(start, size))
        if crash:
            os._exit(3)  # dies without closing: what is not staged yet is lost
        await writer.close()
        await driver.close()
        print(json.dumps({"started": start}))

    asyncio.run(main(*json.loads(sys.argv[1])))
    """
)


def child(parameters: dict[str, Any], path: str, append: bool, size: int, crash: bool) -> int:
    """Write ``size`` bytes in a process of its own; the offset it started at (None: crashed)."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([parameters, path, append, size, crash])],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    if crash:
        assert result.returncode == 3, result.stderr
        return -1
    assert result.returncode == 0, result.stderr
    return int(json.loads(result.stdout)["started"])


def piece(start: int, size: int) -> bytes:
    namespace: dict[str, Any] = {}
    exec(CHILD.split("async def main")[0], namespace)  # the children's own function
    return bytes(namespace["piece"](start, size))


async def test_an_upload_started_in_one_process_is_finished_in_another(
    driver: AzureDriver, azure_parameters: dict[str, Any]
) -> None:
    path = "/docker/registry/v2/repositories/r/_uploads/u/data"
    first = BLOCK + 100  # one whole block, and a short one staged at close
    assert child(azure_parameters, path, False, first, crash=False) == 0
    assert await driver.written_size(path) == first
    # The second process stages one block and dies before staging the 50 bytes after it.
    child(azure_parameters, path, True, BLOCK + 50, crash=True)
    assert await driver.written_size(path) == first + BLOCK, "a consistent prefix survives"
    third = 3 * MiB + 7
    assert child(azure_parameters, path, True, third, crash=False) == first + BLOCK
    total = first + BLOCK + third
    async with await driver.writer(path, append=True) as writer:
        assert writer.size == total
        await writer.commit()
    assert (await driver.stat(path)).size == total
    assert await digest_of(driver, path) == hashlib.sha256(piece(0, total)).hexdigest()


# -- moves ------------------------------------------------------------------------------


class _PendingCopies:
    """Makes the service report a copy pending for the first ``checks`` property reads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, checks: int) -> None:
        self.checks = checks
        self.aborted: list[str] = []
        start, properties = BlobClient.start_copy_from_url, BlobClient.get_blob_properties
        outer = self

        async def start_copy(self: BlobClient, url: str, **kwargs: Any) -> dict[str, Any]:
            result = dict(await start(self, url, **kwargs))
            result["copy_status"] = "pending"
            return result

        async def read(self: BlobClient, **kwargs: Any) -> Any:
            found = await properties(self, **kwargs)
            if outer.checks > 0:
                outer.checks -= 1
                found.copy.status = "pending"
                found.copy.id = "copy-id"
            return found

        async def abort(self: BlobClient, copy_id: str, **kwargs: Any) -> None:
            outer.aborted.append(copy_id)

        monkeypatch.setattr(BlobClient, "start_copy_from_url", start_copy)
        monkeypatch.setattr(BlobClient, "get_blob_properties", read)
        monkeypatch.setattr(BlobClient, "abort_copy", abort)


async def test_move_waits_for_a_pending_copy_retry_delay_apart(
    azure_parameters: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = AzureDriver(**{**azure_parameters, "max_retries": 5, "retry_delay": 0.01})
    slept: list[float] = []
    sleep = __import__("asyncio").sleep

    async def recorded(delay: float) -> None:
        if delay:  # not the event loop's own yields
            slept.append(delay)
        await sleep(0)

    monkeypatch.setattr("cargohold.storage.driver.azure.asyncio.sleep", recorded)
    try:
        await driver.put_content("/a", b"moved")
        _PendingCopies(monkeypatch, checks=3)
        await driver.move("/a", "/b")
        assert slept == pytest.approx([0.01, 0.02, 0.03]), "retry_delay times the attempt"
        assert await driver.get_content("/b") == b"moved"
        with pytest.raises(PathNotFound):
            await driver.stat("/a")
    finally:
        await driver.close()


async def test_move_gives_up_on_a_copy_pending_after_max_retries(
    azure_parameters: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = AzureDriver(**{**azure_parameters, "max_retries": 2, "retry_delay": 0.001})
    try:
        await driver.put_content("/a", b"kept")
        pending = _PendingCopies(monkeypatch, checks=100)
        with pytest.raises(StorageUnavailable, match="pending"):
            await driver.move("/a", "/b")
        assert pending.aborted == ["copy-id"]
        monkeypatch.undo()
        assert await driver.get_content("/a") == b"kept", "the source stays"
    finally:
        await driver.close()


async def test_move_replaces_a_destination_and_removes_the_source(driver: AzureDriver) -> None:
    await driver.put_content("/src", b"new")
    await driver.put_content("/dst", b"old content")
    await driver.move("/src", "/dst")
    assert await driver.get_content("/dst") == b"new"
    with pytest.raises(PathNotFound):
        await driver.stat("/src")


# -- redirects ---------------------------------------------------------------------------


async def test_redirect_urls_are_sas_urls_on_the_configured_endpoint(
    azurite: Azurite, driver: AzureDriver
) -> None:
    path, content = random_path(), random_bytes(70_000)
    await driver.put_content(path, content)
    url = await driver.redirect_url(path)
    assert url is not None
    assert url.startswith(f"{azurite.serviceurl}/{azurite.container}/"), "http, as configured"
    query = parse_qs(urlsplit(url).query)
    assert query["sp"] == ["r"], "read only"
    assert query["spr"] == ["https,http"], "usable over the endpoint's http"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            assert response.status == 200
            assert await response.read() == content
        head = await driver.redirect_url(path, "HEAD")
        assert head is not None
        async with session.head(head) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(len(content))
        signature = query["sig"][0]
        tampered = url.replace(
            "sig=" + urlsplit(url).query.split("sig=")[1].split("&")[0],
            "sig=" + ("A" if signature[0] != "A" else "B") + signature[1:],
        )
        async with session.get(tampered) as response:
            assert response.status == 403
    assert await driver.redirect_url(path, "PUT") is None


async def test_an_https_endpoint_gets_https_only_urls(azure_parameters: dict[str, Any]) -> None:
    driver = AzureDriver(**{**azure_parameters, "serviceurl": "https://acct.example/acct"})
    url = await driver.redirect_url("/docker/registry/v2/blobs/data")
    assert url is not None
    assert url.startswith("https://acct.example/acct/")
    assert parse_qs(urlsplit(url).query)["spr"] == ["https"]
    await driver.close()


async def test_redirect_urls_expire_after_redirectexpiry(azure_parameters: dict[str, Any]) -> None:
    from datetime import UTC, datetime

    driver = AzureDriver(**{**azure_parameters, "redirectexpiry": 90})
    url = await driver.redirect_url("/file")
    assert url is not None
    expiry = datetime.fromisoformat(parse_qs(urlsplit(url).query)["se"][0])
    assert 80 <= (expiry - datetime.now(UTC)).total_seconds() <= 91
    await driver.close()


# -- exclusive creates ---------------------------------------------------------------------


async def test_create_writes_only_where_there_is_no_file(driver: AzureDriver) -> None:
    creates = driver.exclusive_creates
    path = random_path()
    assert await creates.create(path, b"first")
    assert not await creates.create(path, b"second")
    assert await driver.get_content(path) == b"first"


# -- unusable storage ----------------------------------------------------------------------


async def test_check_passes_on_a_usable_container(driver: AzureDriver) -> None:
    await driver.check()


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"accountkey": base64.b64encode(b"wrong" * 8).decode()}, "denied"),
        ({"container": "no-such-container"}, "does not exist"),
        ({"serviceurl": "http://127.0.0.1:{closed_port}/devstoreaccount1"}, "cannot reach"),
    ],
    ids=["wrong-key", "missing-container", "closed-port"],
)
async def test_check_explains_in_one_line_why_storage_is_unusable(
    azure_parameters: dict[str, Any], overrides: dict[str, str], reason: str
) -> None:
    changed = {k: v.format(closed_port=free_port()) for k, v in overrides.items()}
    driver = AzureDriver(**{**azure_parameters, **changed})
    with pytest.raises(StorageUnavailable) as caught:
        await driver.check()
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)
    await driver.close()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"container": "no-such-container"}, "does not exist"),
        ({"accountkey": base64.b64encode(b"wrong" * 8).decode()}, "denied"),
        ({"serviceurl": "http://127.0.0.1:9/devstoreaccount1"}, "cannot reach"),
    ],
    ids=["missing-container", "wrong-key", "dead-endpoint"],
)
def test_unusable_azure_storage_exits_2_with_one_line(
    tmp_path: Path, azure_parameters: dict[str, Any], change: dict[str, str], reason: str
) -> None:
    config = tmp_path / "config.yml"
    document = {"version": "0.1", "storage": {"azure": {**azure_parameters, **change}}}
    config.write_text(yaml.safe_dump(document))
    result = subprocess.run(
        cargohold_argv("serve", str(config)),
        env={**os.environ, "REGISTRY_HTTP_ADDR": f"127.0.0.1:{free_port()}"},
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("cargohold: config: storage.azure: ")
    assert reason in lines[0]
