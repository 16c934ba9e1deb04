"""Waiting on a condition rather than for a fixed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


def wait_until(
    condition: Callable[[], bool], within: float = 20, what: str = "the condition never held"
) -> None:
    """Return once ``condition()`` holds; fail with ``what`` if it has not within ``within`` s."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


async def until(
    condition: Callable[[], bool], within: float = 20, what: str = "the condition never held"
) -> None:
    """``wait_until`` for a test on an event loop: the loop keeps running while it waits."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.01)


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 20, what: str = "it never came true"
) -> None:
    """``until`` for a condition that must itself wait (a read of storage, a request)."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)
