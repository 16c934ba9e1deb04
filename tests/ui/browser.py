"""Debian's chromium, driven headless through Debian's chromedriver, and what the tests ask of it.

Both are part of the test environment (scripts/install-debs): when either is
missing or chromium cannot start, the tests fail, they do not skip. Nothing is
downloaded: the driver is named by its path and ``SE_OFFLINE`` keeps Selenium
Manager off the network.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Seconds a page may take to show what a test waits for.
PATIENCE = 15
#: Where a test's window is reset to: a laptop screen.
LAPTOP = (1366, 900)
#: A phone held upright.
PHONE = (390, 844)

_T = TypeVar("_T")


@contextmanager
def chromium() -> Iterator[WebDriver]:
    """A headless chromium for the block, quit at its end; the test fails if it cannot start."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{path} is missing (Debian package {package}: scripts/install-debs)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--window-size={LAPTOP[0]},{LAPTOP[1]}",
    ):
        options.add_argument(argument)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SE_OFFLINE", "true")
        try:
            driver = webdriver.Chrome(
                service=Service(executable_path=CHROMEDRIVER), options=options
            )
        except WebDriverException as exc:
            pytest.fail(f"chromium did not start through {CHROMEDRIVER}: {exc.msg or exc}")
        try:
            yield driver
        finally:
            driver.quit()


def reset(driver: WebDriver) -> None:
    """A fresh visitor: no cookies of an earlier test (every registry is 127.0.0.1, and
    cookies ignore the port), no permissions granted, a laptop-sized window, a blank page."""
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    driver.execute_cdp_cmd("Browser.resetPermissions", {})
    driver.get("about:blank")
    driver.set_window_size(*LAPTOP)


def wait(driver: WebDriver, condition: Callable[[WebDriver], _T], what: str) -> _T:
    """``condition``'s first truthy answer; the test fails saying ``what`` after ``PATIENCE``."""
    return WebDriverWait(driver, PATIENCE).until(condition, what)


def heading(driver: WebDriver, text: str) -> None:
    """Wait until the page's ``h1`` reads ``text`` (the page has loaded)."""
    wait(
        driver,
        EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), text),
        f"no page headed {text!r} (at {driver.current_url})",
    )
    title = driver.find_element(By.TAG_NAME, "h1").text
    assert title == text, f"the page is headed {title!r}, not {text!r}"


def gone(element: WebElement) -> Callable[[WebDriver], bool]:
    """Whether ``element``'s page has been replaced: ``EC.staleness_of``, and also when
    chromedriver, asked mid-navigation, says the node "does not belong to the document"
    instead of calling it stale."""
    stale = EC.staleness_of(element)

    def replaced(driver: WebDriver) -> bool:
        try:
            return stale(driver)
        except WebDriverException as exc:
            if "does not belong to the document" in (exc.msg or ""):
                return True
            raise

    return replaced


def follow(driver: WebDriver, element: WebElement, then: str) -> None:
    """Click ``element`` (a link or a submit button), and wait for the page headed ``then``."""
    element.click()
    wait(driver, gone(element), "the click led to no new page")
    heading(driver, then)


def texts(elements: list[WebElement]) -> list[str]:
    return [element.text for element in elements]


def screenshot(driver: WebDriver, folder: Path, name: str) -> Path:
    """The window as a person sees it, saved as ``folder/name``, checked to be a PNG."""
    path = folder / name
    assert driver.save_screenshot(str(path)), f"chromium saved no screenshot {name}"
    data = path.read_bytes()
    assert len(data) > 1000, f"{name} is {len(data)} bytes"
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{name} is not a PNG"
    return path


def http_fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """``GET url`` outside the browser: the status and the body, error statuses included."""
    try:
        with urlopen(Request(url, headers=headers or {}), timeout=PATIENCE) as reply:
            body: bytes = reply.read()
            return reply.status, body
    except HTTPError as error:
        with error:
            return error.code, error.read()


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """``http_fetch`` with the body as text."""
    status, body = http_fetch(url, headers)
    return status, body.decode()
