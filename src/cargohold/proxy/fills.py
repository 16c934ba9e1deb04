"""Single-flight blob fills: one upstream GET however many clients ask, streamed to all.

A fill copies a blob from the upstream into an upload of the mirrored
repository and, beside it, into an anonymous temporary file. Every client
asking for the blob meanwhile reads the temporary file as it grows, at its own
pace, so memory holds one chunk per reader whatever the blob's size. The
upload hashes the content as it is written (the only hash of it) and is
committed only when it matched its digest; readers get the last chunk only
then, so no client ever receives all of a blob that did not verify. The fill
is a task of its own: a client that goes away stops reading, never the fill.

The temporary file is written and read on the event loop: a chunk goes to
and comes from the page cache in tens of microseconds, less than handing it
to a thread costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable

from cargohold.digest import Digest
from cargohold.errors import (
    DigestInvalid,
    RangeInvalid,
    RegistryError,
    SizeInvalid,
    Unavailable,
    UpstreamInvalid,
)
from cargohold.registry import BlobStore

__all__ = ["Fill", "Fills"]

log = logging.getLogger("cargohold.proxy")

#: Bytes handed to a reader at a time.
READ_CHUNK = 1 << 20

#: What a fill reads: the blob's announced size (None if not) and its chunks.
Source = Callable[[], Awaitable[tuple[int | None, AsyncIterator[bytes]]]]


class Fill:
    """One blob on its way from the upstream into a repository."""

    def __init__(self, digest: Digest) -> None:
        self.digest = digest
        self.size: int | None = None
        #: Bytes in the temporary file so far.
        self.written = 0
        #: Bytes readers may have: all written but the latest chunk, until verified.
        self.readable = 0
        self.done = False
        self.error: BaseException | None = None
        # Closed by ``_release`` once the fill and its last reader are done.
        self._file = tempfile.TemporaryFile(prefix="cargohold-fill-")  # noqa: SIM115
        self._readers = 0
        self._changed = asyncio.Event()
        self._started = asyncio.Event()

    @property
    def finished(self) -> bool:
        return self.done or self.error is not None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def started(self) -> int:
        """The blob's size, once the upstream answered; its error if it did not."""
        await self._started.wait()
        if self.error is not None:
            raise self.error
        assert self.size is not None
        return self.size

    async def complete(self) -> None:
        """Wait for the fill to end; its error, if it failed."""
        while not self.finished:
            await self._changed.wait()
        if self.error is not None:
            raise self.error

    def read(self, offset: int, length: int) -> AsyncIterator[bytes]:
        """``length`` bytes from ``offset``, as they arrive.

        The reader counts from now, not from its first step, so that the file
        stays open for it however soon the fill ends.
        """
        if self._file.closed:  # the fill ended before this reader came
            raise self.error or Unavailable(f"the fill of blob {self.digest} is over")
        self._readers += 1
        return self._read(offset, length)

    async def _read(self, offset: int, length: int) -> AsyncIterator[bytes]:
        try:
            position, end = offset, offset + length
            while position < end:
                available = self.readable
                if available > position:
                    count = min(available, end, position + READ_CHUNK) - position
                    try:
                        data = os.pread(self._file.fileno(), count, position)
                    except (OSError, ValueError) as exc:
                        raise Unavailable(f"the fill of blob {self.digest} failed: {exc}") from exc
                    if len(data) != count:
                        raise Unavailable(f"the fill of blob {self.digest} lost its data")
                    position += count
                    yield data
                    continue
                if self.error is not None:
                    raise self.error
                if self.done:
                    raise Unavailable(f"blob {self.digest} ended at byte {available}")
                await self._changed.wait()
        finally:
            self._readers -= 1
            self._release()

    def _release(self) -> None:
        if self.finished and self._readers == 0 and not self._file.closed:
            self._file.close()

    async def run(
        self, source: Source, target: BlobStore, on_stored: Callable[[int], Awaitable[None]]
    ) -> None:
        """Copy the blob from ``source`` into an upload of ``target``, then commit it."""
        try:
            size, chunks = await source()
            if size is not None:
                self.size = size
                self._started.set()  # else readers learn the size when the fill is done
            upload = await target.create_upload(self.digest.algorithm)
            try:
                async for chunk in _broken_off_is_invalid(self.digest, chunks):
                    os.pwrite(self._file.fileno(), chunk, self.written)
                    # The chunk before this one may go out: this one waits for the next.
                    self.readable = self.written
                    self.written += len(chunk)
                    self._notify()
                    await upload.write(chunk)
                await upload.commit(self.digest, self.written)
                if self.size is None:
                    self.size = self.written
            except BaseException:
                with contextlib.suppress(Exception):
                    await upload.cancel()
                raise
            finally:
                with contextlib.suppress(Exception):
                    await upload.close()
            await on_stored(self.written)
            self.readable = self.written
            self.done = True
        except BaseException as exc:
            self.error = _as_served(self.digest, exc)
            if not isinstance(exc, asyncio.CancelledError):
                log.warning("filling blob %s failed: %s", self.digest, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._started.set()
            self._notify()
            self._release()


async def _broken_off_is_invalid(
    digest: Digest, chunks: AsyncIterator[bytes]
) -> AsyncIterator[bytes]:
    # The upstream answered, then kept breaking off its body (the client resumed it
    # as often as it tries): that is a bad reply, not an upstream that is down.
    try:
        async for chunk in chunks:
            yield chunk
    except Unavailable as exc:
        raise UpstreamInvalid(f"the upstream's body of blob {digest} kept breaking off") from exc


def _as_served(digest: Digest, exc: BaseException) -> RegistryError:
    """What a client of the mirror is told of a fill's failure."""
    if isinstance(exc, (DigestInvalid, SizeInvalid, RangeInvalid)):
        # The upstream's content, not the client's request, was wrong.
        return UpstreamInvalid(f"the upstream sent blob {digest} with other content")
    if isinstance(exc, RegistryError):
        return exc
    return Unavailable(f"the fill of blob {digest} failed")


class Fills:
    """The fills under way in this process, one per repository and digest."""

    def __init__(self) -> None:
        self._fills: dict[tuple[str, Digest], Fill] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, name: str, digest: Digest) -> Fill | None:
        return self._fills.get((name, digest))

    def busy(self, digest: Digest) -> bool:
        """Whether some repository is filling ``digest`` now (expiry leaves its data alone)."""
        return any(key[1] == digest for key in self._fills)

    def busy_in(self, name: str, digest: Digest | None = None) -> bool:
        """Whether repository ``name`` is filling ``digest`` (or anything) now."""
        if digest is not None:
            return (name, digest) in self._fills
        return any(key[0] == name for key in self._fills)

    def start(
        self,
        name: str,
        digest: Digest,
        source: Source,
        target: BlobStore,
        on_stored: Callable[[int], Awaitable[None]],
    ) -> Fill:
        """The fill of ``digest`` into repository ``name``: the running one, or a new one."""
        key = (name, digest)
        fill = self._fills.get(key)
        if fill is not None:
            return fill
        fill = self._fills[key] = Fill(digest)

        async def running() -> None:
            try:
                await fill.run(source, target, on_stored)
            finally:
                if self._fills.get(key) is fill:
                    del self._fills[key]

        task = asyncio.get_running_loop().create_task(running(), name=f"fill {digest}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return fill

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
