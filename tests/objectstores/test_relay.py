"""With redirects off, GCS hands its answer's socket to the client's as S3 does; Azure streams.

GCS's driver reads objects over aiohttp, so a large blob's body goes from the
emulator's socket to the client's by ``splice`` (``tests/s3/test_relay.py``
has the rest of the behaviour). Azure's SDK reads its sockets itself: its
blobs stream through the process, byte for byte the same.
"""

from __future__ import annotations

import pytest

from tests.objectstores.conftest import Backend
from tests.s3.conftest import AiohttpClient, app_client, registry_config
from tests.s3.test_redirects import NAME, push
from tests.s3.test_relay import DATA, Relays, relays

__all__ = ["relays"]  # a fixture, used by name


async def test_a_large_blob_is_relayed_on_gcs_and_streamed_on_azure(
    aiohttp_client: AiohttpClient,
    backend: Backend,
    relays: Relays,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for variable, value in backend.env.items():
        monkeypatch.setenv(variable, value)
    document = registry_config(backend.parameters, driver=backend.driver, redirect=False)
    client = await app_client(aiohttp_client, document)
    digest = await push(client, DATA)
    reply = await client.get(f"/v2/{NAME}/blobs/{digest}", allow_redirects=False)
    assert reply.status == 200
    assert await reply.read() == DATA
    ranged = await client.get(f"/v2/{NAME}/blobs/{digest}", headers={"Range": "bytes=99-"})
    assert (ranged.status, await ranged.read()) == (206, DATA[99:])
    if backend.driver == "gcs":
        assert [head + in_socket for head, in_socket in relays.bodies] == [
            len(DATA),
            len(DATA) - 99,
        ]
    else:
        assert relays.bodies == []
