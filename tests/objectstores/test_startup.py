"""An Azure or GCS endpoint that takes connections and never answers stops the start quickly.

``cargohold serve`` turns what ``check`` raises into exit status 2 and one line;
each driver's own tests show that for a missing container or bucket, wrong
credentials and a closed port (``tests/storage/test_driver_azure.py``,
``tests/storage/test_driver_gcs.py``). A silent endpoint must not hold the start
for a client library's read timeout (a minute for Azure's) first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from cargohold.errors import StorageUnavailable
from cargohold.storage.driver import azure, gcs
from cargohold.storage.driver.azure import AzureDriver
from cargohold.storage.driver.base import StorageDriver
from cargohold.storage.driver.gcs import GCSDriver
from tests.objectstores.conftest import BACKENDS
from tests.support.azurite import ACCOUNT, CONTAINER, KEY
from tests.support.gcsemulator import BUCKET, EMULATOR_ENV


@pytest.fixture
async def silent_endpoint() -> AsyncIterator[str]:
    """The URL of a loopback server that accepts connections and reads nothing, says nothing."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


def driver_at(name: str, url: str, monkeypatch: pytest.MonkeyPatch) -> StorageDriver:
    if name == "azure":
        return AzureDriver(
            accountname=ACCOUNT, accountkey=KEY, container=CONTAINER, serviceurl=f"{url}/{ACCOUNT}"
        )
    monkeypatch.setenv(EMULATOR_ENV, url)
    return GCSDriver(bucket=BUCKET)


@pytest.mark.parametrize("name", BACKENDS)
async def test_an_endpoint_that_never_answers_is_unusable_storage_within_the_check_timeout(
    name: str, silent_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in (azure, gcs):
        monkeypatch.setattr(module, "CHECK_TIMEOUT", 0.5)
    driver = driver_at(name, silent_endpoint, monkeypatch)
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        await driver.check()
    waited = time.monotonic() - started
    await driver.close()
    assert 0.5 <= waited < 5
    assert f"cannot reach {'container' if name == 'azure' else 'bucket'}" in str(caught.value)
    assert "no answer" in str(caught.value)
    assert "\n" not in str(caught.value)
