"""Watching the S3 operations an ``S3Driver`` sends, on both of its paths.

Every operation goes straight over HTTP (``HTTPObjects``), or through
aiobotocore when the configuration needs it. A test that counts or interrupts
operations sees both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cargohold.storage.driver import s3objects
from cargohold.storage.driver.s3 import S3Driver

#: Called with the operation's name and the object key (``""`` for bucket-wide operations).
Watcher = Callable[[str, str], None]


async def watch_operations(driver: S3Driver, watcher: Watcher) -> Callable[[], None]:
    """Call ``watcher`` before each operation ``driver`` sends from now on; returns the undo."""
    objects = await driver._objects()  # whatever the set-up sends is done before watching
    events = (await driver._s3()).meta.events

    def before_botocore(params: dict[str, Any], model: Any, **_: Any) -> None:
        watcher(model.name, params.get("Key", ""))

    events.register("before-parameter-build.s3", before_botocore, unique_id=id(watcher))
    http = objects if isinstance(objects, s3objects.HTTPObjects) else None
    if http is not None:
        send = http._send

        async def before_http(
            operation: str, method: str, key: str, *args: Any, **kwargs: Any
        ) -> Any:
            watcher(operation, key)
            return await send(operation, method, key, *args, **kwargs)

        http._send = before_http  # type: ignore[method-assign]

    def undo() -> None:
        events.unregister("before-parameter-build.s3", unique_id=id(watcher))
        if http is not None:
            del http._send

    return undo


async def record_operations(driver: S3Driver) -> list[str]:
    """The names of the S3 operations ``driver`` sends from now on, appended as they go."""
    calls: list[str] = []
    await watch_operations(driver, lambda operation, _key: calls.append(operation))
    return calls
