"""Fixtures of the browser tests: one chromium per module, a fresh visitor per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.ui import browser


@pytest.fixture(scope="module")
def chromium() -> Iterator[WebDriver]:
    """Headless chromium, started once for a module (a second or so) and quit after it."""
    with browser.chromium() as driver:
        yield driver


@pytest.fixture
def driver(chromium: WebDriver) -> WebDriver:
    """The module's chromium, as a new visitor would come: no cookies, a laptop's window."""
    browser.reset(chromium)
    return chromium
