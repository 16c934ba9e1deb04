from __future__ import annotations

import pytest

from cargohold.storage.driver.inmemory import InMemoryDriver
from tests.storage.driver_suite import DriverSuite


class TestInMemoryDriver(DriverSuite):
    @pytest.fixture
    def driver(self) -> InMemoryDriver:
        return InMemoryDriver()
