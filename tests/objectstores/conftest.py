"""Registries on Azure (Azurite) and on GCS (gcp-storage-emulator): each test runs on both.

``backend`` is the session's emulator of one driver, under a root of the test's
own; ``stoppable`` is an emulator of this package's own, keeping its data on
disk, that a test may stop mid-request and start again on the same port and
data. S3 has the same tests in ``tests/s3/`` on SeaweedFS.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from tests.storage.test_driver_gcs import make_key
from tests.support.azurite import Azurite, azurite, stoppable_azurite
from tests.support.gcsemulator import GCSEmulator, gcs_emulator, stoppable_gcs_emulator
from tests.support.restartable import Restartable

__all__ = ["azurite", "gcs_emulator"]  # fixtures, used by name

BACKENDS = ["azure", "gcs"]


class ObjectStore(Protocol):
    """An emulator, as a test of the registry on it asks for it."""

    @property
    def driver(self) -> str:
        """The name of the storage driver, and of the configuration's section."""

    @property
    def env(self) -> Mapping[str, str]:
        """What a registry process needs in its environment to reach the emulator."""

    def parameters(self, **overrides: Any) -> dict[str, Any]: ...

    def names(self, prefix: str) -> list[str]:
        """The names of the objects (blobs) whose names start with ``prefix``, in order."""

    def content(self, name: str) -> bytes | None:
        """The object's bytes, or None when there is none."""


class Stoppable(Protocol):
    @property
    def server(self) -> ObjectStore: ...

    @property
    def alive(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Backend:
    """An emulator and the driver parameters of one test on it: a root of its own."""

    store: ObjectStore
    parameters: dict[str, Any]

    @property
    def driver(self) -> str:
        return self.store.driver

    @property
    def env(self) -> Mapping[str, str]:
        return self.store.env


@pytest.fixture(scope="session")
def service_key() -> dict[str, str]:
    """A service account's key, so that the GCS driver signs URLs (the emulator checks none)."""
    return make_key()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, service_key: dict[str, str]) -> Backend:
    """The session's emulator of each driver in turn; with signed redirects on both."""
    root = f"/t-{secrets.token_hex(6)}"
    store: Azurite | GCSEmulator
    if request.param == "azure":
        store = request.getfixturevalue("azurite")
        return Backend(store, store.parameters(rootdirectory=root))
    store = request.getfixturevalue("gcs_emulator")
    return Backend(store, store.parameters(rootdirectory=root, credentials=service_key))


@pytest.fixture(scope="package")
def stoppable_azure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Restartable[Azurite]]:
    store = stoppable_azurite(tmp_path_factory.mktemp("stoppable-azurite"))
    store.start()
    yield store
    store.stop()


@pytest.fixture(scope="package")
def stoppable_gcs(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Restartable[GCSEmulator]]:
    store = stoppable_gcs_emulator(tmp_path_factory.mktemp("stoppable-gcs"))
    store.start()
    yield store
    store.stop()


@pytest.fixture(params=BACKENDS)
def stoppable(request: pytest.FixtureRequest) -> Iterator[Stoppable]:
    """Each driver's stoppable emulator in turn, running; started again after the test."""
    store: Stoppable = request.getfixturevalue(f"stoppable_{request.param}")
    if not store.alive:
        store.start()
    yield store
    if not store.alive:
        store.start()
