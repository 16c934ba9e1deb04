"""The conformance suite every storage driver passes.

A driver's test module subclasses ``DriverSuite`` and provides a ``driver``
fixture; every test below then runs against it, exactly as Distribution's
``storagedriver/testsuites`` do for its drivers.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from contextlib import AbstractContextManager, nullcontext
from datetime import UTC, datetime, timedelta

import pytest

from cargohold.errors import InvalidOffset, InvalidPath, PathNotFound
from cargohold.storage.driver.base import FileInfo, ImmediateFiles, StorageDriver

MiB = 1 << 20

INVALID_PATHS = [
    "",
    "relative/path",
    "//double",
    "/trailing/",
    "/a//b",
    "/a/../b",
    "/..",
    "/a/.",
    "/with space",
    "/percent%2f",
    "/nul\x00byte",
    "/unicode-é",
    "/tilde~",
    "/back\\slash",
    "/new\nline",
]


def random_path(depth: int = 3) -> str:
    return "/" + "/".join(f"d{secrets.token_hex(4)}" for _ in range(depth))


def random_bytes(size: int) -> bytes:
    return secrets.token_bytes(size)


async def read_all(driver: StorageDriver, path: str, offset: int = 0) -> bytes:
    stream = await driver.reader(path, offset)
    return b"".join([chunk async for chunk in stream])


async def walk_paths(driver: StorageDriver, path: str) -> list[str]:
    return [info.path async for info in driver.walk(path)]


async def file_paths(driver: StorageDriver, path: str) -> set[str]:
    return {info.path async for info in driver.walk(path) if not info.is_dir}


async def put_many(driver: StorageDriver, paths: list[str], content: bytes = b"x") -> None:
    """Store ``content`` at every path, a few at a time (thousands take seconds on S3)."""
    queue = iter(paths)

    async def worker() -> None:
        for path in queue:
            await driver.put_content(path, content)

    await asyncio.gather(*(worker() for _ in range(16)))


class RecordingWatch:
    """A ``DriverWatch`` that notes each action it is asked for."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, str]] = []

    def action(self, driver: str, action: str, path: str) -> AbstractContextManager[object]:
        self.actions.append((action, path))
        return nullcontext()

    def immediate(self, files: ImmediateFiles, driver: str) -> ImmediateFiles:
        return files


class DriverSuite:
    """Tests shared by all drivers; subclasses supply the ``driver`` fixture."""

    # -- content in, content out ----------------------------------------------------------

    @pytest.mark.parametrize("size", [0, 1, 71, 4096, 3 * MiB + 17])
    async def test_put_then_get_returns_the_same_bytes(
        self, driver: StorageDriver, size: int
    ) -> None:
        path, content = random_path(), random_bytes(size)
        await driver.put_content(path, content)
        assert await driver.get_content(path) == content
        assert (await driver.stat(path)).size == size

    async def test_put_replaces_existing_content(self, driver: StorageDriver) -> None:
        path = random_path()
        await driver.put_content(path, b"first version, longer than the second")
        await driver.put_content(path, b"second")
        assert await driver.get_content(path) == b"second"

    async def test_put_contents_writes_every_file_in_order(self, driver: StorageDriver) -> None:
        base = random_path(1)
        await driver.put_content(f"{base}/replaced", b"old")
        items = [(f"{base}/a/1", b"one"), (f"{base}/b/2", b""), (f"{base}/replaced", b"new")]
        await driver.put_contents(items)
        for path, content in items:
            assert await driver.get_content(path) == content

    async def test_put_contents_with_an_invalid_path_writes_nothing(
        self, driver: StorageDriver
    ) -> None:
        base = random_path(1)
        with pytest.raises(InvalidPath):
            await driver.put_contents([(f"{base}/fine", b"x"), (f"{base}/../bad", b"x")])
        with pytest.raises(PathNotFound):
            await driver.stat(f"{base}/fine")

    async def test_put_stages_writes_every_file_of_every_stage(self, driver: StorageDriver) -> None:
        base = random_path(1)
        await driver.put_content(f"{base}/replaced", b"old")
        stages = [
            [(f"{base}/content", b"whole")],
            [(f"{base}/a/1", b"one"), (f"{base}/b/2", b""), (f"{base}/replaced", b"new")],
            [],
            [(f"{base}/last", b"named")],
        ]
        await driver.put_stages(stages)
        for stage in stages:
            for path, content in stage:
                assert await driver.get_content(path) == content
        await driver.put_stages([])

    async def test_put_stages_with_an_invalid_path_writes_nothing(
        self, driver: StorageDriver
    ) -> None:
        base = random_path(1)
        with pytest.raises(InvalidPath):
            await driver.put_stages([[(f"{base}/fine", b"x")], [(f"{base}/../bad", b"x")]])
        with pytest.raises(PathNotFound):
            await driver.stat(f"{base}/fine")

    async def test_get_of_a_missing_path_is_path_not_found(self, driver: StorageDriver) -> None:
        path = random_path()
        with pytest.raises(PathNotFound) as caught:
            await driver.get_content(path)
        assert caught.value.path == path
        assert caught.value.driver == driver.name

    async def test_get_of_a_directory_is_path_not_found(self, driver: StorageDriver) -> None:
        path = random_path()
        await driver.put_content(path + "/file", b"x")
        with pytest.raises(PathNotFound):
            await driver.get_content(path)

    async def test_valid_path_characters_are_accepted(self, driver: StorageDriver) -> None:
        base = random_path(1)
        for leaf in ["a", "A.b-c_d", "...", ".hidden", "-", "_", "0123456789"]:
            await driver.put_content(f"{base}/{leaf}", leaf.encode())
            assert await driver.get_content(f"{base}/{leaf}") == leaf.encode()

    async def test_large_content_streams_through_writer_and_reader(
        self, driver: StorageDriver
    ) -> None:
        path, chunk = random_path(), random_bytes(MiB)
        expected = hashlib.sha256()
        writer = await driver.writer(path)
        for i in range(64):
            piece = hashlib.sha256(i.to_bytes(4, "big")).digest() + chunk
            expected.update(piece)
            assert await writer.write(piece) == len(piece)
        await writer.commit()
        await writer.close()
        size = 64 * (MiB + 32)
        assert writer.size == size
        assert (await driver.stat(path)).size == size
        actual = hashlib.sha256()
        largest = 0
        async for piece in await driver.reader(path):
            largest = max(largest, len(piece))
            actual.update(piece)
        assert actual.hexdigest() == expected.hexdigest()
        assert largest <= 4 * MiB, "reader must hand out bounded chunks"

    # -- reader at offsets ----------------------------------------------------------------

    async def test_reader_starts_at_any_offset(self, driver: StorageDriver) -> None:
        path, content = random_path(), random_bytes(3 * MiB + 5)
        await driver.put_content(path, content)
        for offset in [0, 1, MiB, 2 * MiB + 3, len(content) - 1]:
            assert await read_all(driver, path, offset) == content[offset:]

    async def test_reader_at_the_end_yields_nothing(self, driver: StorageDriver) -> None:
        path, content = random_path(), random_bytes(1000)
        await driver.put_content(path, content)
        assert await read_all(driver, path, len(content)) == b""

    @pytest.mark.parametrize("offset", [-1, 1001, 1 << 40])
    async def test_reader_outside_the_content_is_invalid_offset(
        self, driver: StorageDriver, offset: int
    ) -> None:
        path = random_path()
        await driver.put_content(path, random_bytes(1000))
        with pytest.raises(InvalidOffset) as caught:
            await driver.reader(path, offset)
        assert caught.value.offset == offset

    async def test_reader_of_a_missing_path_is_path_not_found(self, driver: StorageDriver) -> None:
        with pytest.raises(PathNotFound):
            await driver.reader(random_path())

    async def test_reader_honours_chunk_size(self, driver: StorageDriver) -> None:
        # At most chunk_size, not exactly: an object store's reader hands on what arrives.
        path, content = random_path(), random_bytes(10_000)
        await driver.put_content(path, content)
        chunks = [c async for c in await driver.reader(path, 0, chunk_size=4096)]
        assert all(0 < len(chunk) <= 4096 for chunk in chunks)
        assert len(chunks) >= 3
        assert b"".join(chunks) == content
        chunks = [c async for c in await driver.reader(path, 9_000, chunk_size=4096)]
        assert all(0 < len(chunk) <= 4096 for chunk in chunks)
        assert b"".join(chunks) == content[9_000:]

    # -- writers --------------------------------------------------------------------------

    @pytest.mark.parametrize("chunk", [1, 1000, MiB + 7])
    async def test_writer_resumes_after_close(self, driver: StorageDriver, chunk: int) -> None:
        path = random_path()
        parts = [random_bytes(chunk) for _ in range(3)]
        written = 0
        for i, part in enumerate(parts):
            writer = await driver.writer(path, append=i > 0)
            assert writer.size == written, "a resumed writer starts at what was written"
            await writer.write(part)
            written += len(part)
            assert writer.size == written
            if i == len(parts) - 1:
                await writer.commit()
            await writer.close()
        assert await driver.get_content(path) == b"".join(parts)

    async def test_writer_without_append_starts_over(self, driver: StorageDriver) -> None:
        path = random_path()
        async with await driver.writer(path) as writer:
            await writer.write(b"abandoned")
        async with await driver.writer(path, append=False) as writer:
            assert writer.size == 0
            await writer.write(b"fresh")
            await writer.commit()
        assert await driver.get_content(path) == b"fresh"

    async def test_append_continues_committed_content(self, driver: StorageDriver) -> None:
        path = random_path()
        await driver.put_content(path, b"committed ")
        async with await driver.writer(path, append=True) as writer:
            assert writer.size == len(b"committed ")
            await writer.write(b"and appended")
            # Whether the appended bytes show before the commit is the driver's affair
            # (a local file shows them at once, as Distribution's does; S3 at commit).
            assert await driver.get_content(path) in (b"committed ", b"committed and appended")
            await writer.commit()
        assert await driver.get_content(path) == b"committed and appended"

    async def test_append_to_nothing_starts_empty(self, driver: StorageDriver) -> None:
        path = random_path()
        async with await driver.writer(path, append=True) as writer:
            assert writer.size == 0
            await writer.write(b"abc")
            await writer.commit()
        assert await driver.get_content(path) == b"abc"

    async def test_cancel_discards_what_was_written(self, driver: StorageDriver) -> None:
        path = random_path()
        writer = await driver.writer(path)
        await writer.write(b"discard me")
        await writer.cancel()
        with pytest.raises(PathNotFound):
            await driver.get_content(path)
        resumed = await driver.writer(path, append=True)
        assert resumed.size == 0, "cancelled content must not come back on resume"
        await resumed.close()

    async def test_empty_writer_commits_an_empty_file(self, driver: StorageDriver) -> None:
        path = random_path()
        async with await driver.writer(path) as writer:
            await writer.commit()
        assert await driver.get_content(path) == b""
        assert (await driver.stat(path)).size == 0

    async def test_written_size_is_where_a_resume_would_start(self, driver: StorageDriver) -> None:
        path = random_path()
        with pytest.raises(PathNotFound):
            await driver.written_size(path)
        async with await driver.writer(path) as writer:
            await writer.write(b"not committed")
        assert await driver.written_size(path) == len(b"not committed")
        async with await driver.writer(path, append=True) as resumed:
            assert resumed.size == len(b"not committed")
            await resumed.write(b", then committed")
            await resumed.commit()
        size = len(b"not committed, then committed")
        assert await driver.written_size(path) == size == (await driver.stat(path)).size
        with pytest.raises(PathNotFound):
            await driver.written_size(path.rpartition("/")[0])  # a directory

    # -- stat -----------------------------------------------------------------------------

    async def test_stat_of_a_file(self, driver: StorageDriver) -> None:
        path = random_path()
        before = datetime.now(UTC) - timedelta(seconds=2)
        await driver.put_content(path, b"12345")
        info = await driver.stat(path)
        assert info == FileInfo(path, 5, info.modtime, is_dir=False)
        assert before <= info.modtime <= datetime.now(UTC) + timedelta(seconds=2)

    async def test_stat_of_a_directory(self, driver: StorageDriver) -> None:
        path = random_path()
        await driver.put_content(path + "/child/file", b"x")
        for directory in (path, path + "/child"):
            info = await driver.stat(directory)
            assert info.is_dir
            assert info.path == directory

    async def test_stat_of_a_missing_path_is_path_not_found(self, driver: StorageDriver) -> None:
        with pytest.raises(PathNotFound):
            await driver.stat(random_path())

    # -- list -----------------------------------------------------------------------------

    async def test_list_returns_direct_children_only(self, driver: StorageDriver) -> None:
        base = random_path(2)
        files = [f"{base}/file{i}" for i in range(5)]
        for f in files:
            await driver.put_content(f, b"x")
        await driver.put_content(f"{base}/sub/deeper/file", b"x")
        assert sorted(await driver.list(base)) == sorted([*files, f"{base}/sub"])
        assert await driver.list(f"{base}/sub") == [f"{base}/sub/deeper"]

    async def test_list_root_includes_top_level_entries(self, driver: StorageDriver) -> None:
        path = random_path(2)
        await driver.put_content(path, b"x")
        top = "/" + path.split("/")[1]
        assert top in await driver.list("/")

    async def test_list_shows_nothing_but_paths(self, driver: StorageDriver) -> None:
        """No temporary or pending file of the driver's own ever shows in a listing."""
        base = random_path(1)
        await driver.put_contents([(f"{base}/done", b"x"), (f"{base}/also", b"z")])
        writer = await driver.writer(f"{base}/pending")
        await writer.write(b"y")
        await writer.close()
        assert set(await driver.list(base)) <= {f"{base}/done", f"{base}/also", f"{base}/pending"}
        assert {f"{base}/done", f"{base}/also"} <= set(await driver.list(base))

    async def test_list_of_a_missing_directory_is_path_not_found(
        self, driver: StorageDriver
    ) -> None:
        with pytest.raises(PathNotFound):
            await driver.list(random_path())

    async def test_list_of_a_file_is_path_not_found(self, driver: StorageDriver) -> None:
        path = random_path()
        await driver.put_content(path, b"x")
        with pytest.raises(PathNotFound):
            await driver.list(path)

    # -- move -----------------------------------------------------------------------------

    async def test_move_renames_content(self, driver: StorageDriver) -> None:
        source, dest, content = random_path(), random_path(), random_bytes(2 * MiB)
        await driver.put_content(source, content)
        await driver.move(source, dest)
        assert await driver.get_content(dest) == content
        with pytest.raises(PathNotFound):
            await driver.stat(source)

    async def test_move_onto_an_existing_file_replaces_it(self, driver: StorageDriver) -> None:
        source, dest = random_path(), random_path()
        await driver.put_content(source, b"new")
        await driver.put_content(dest, b"old content")
        await driver.move(source, dest)
        assert await driver.get_content(dest) == b"new"

    async def test_move_of_a_missing_file_is_path_not_found(self, driver: StorageDriver) -> None:
        source, dest = random_path(), random_path()
        await driver.put_content(dest, b"untouched")
        with pytest.raises(PathNotFound):
            await driver.move(source, dest)
        assert await driver.get_content(dest) == b"untouched"

    # -- delete ---------------------------------------------------------------------------

    async def test_delete_a_file(self, driver: StorageDriver) -> None:
        path = random_path()
        await driver.put_content(path, b"x")
        await driver.delete(path)
        with pytest.raises(PathNotFound):
            await driver.get_content(path)

    async def test_delete_is_recursive(self, driver: StorageDriver) -> None:
        base = random_path(1)
        files = [f"{base}/a", f"{base}/b/c", f"{base}/b/d/e"]
        for f in files:
            await driver.put_content(f, b"x")
        await driver.delete(base)
        for path in [base, *files]:
            with pytest.raises(PathNotFound):
                await driver.stat(path)

    async def test_delete_only_deletes_that_path(self, driver: StorageDriver) -> None:
        base = random_path(1)
        await driver.put_content(f"{base}/dir/file", b"x")
        await driver.put_content(f"{base}/dirsibling", b"stays")
        await driver.put_content(f"{base}/dir2/file", b"stays")
        await driver.delete(f"{base}/dir")
        assert await driver.get_content(f"{base}/dirsibling") == b"stays"
        assert await driver.get_content(f"{base}/dir2/file") == b"stays"

    async def test_delete_of_a_missing_path_is_path_not_found(self, driver: StorageDriver) -> None:
        with pytest.raises(PathNotFound):
            await driver.delete(random_path())

    async def test_delete_discards_pending_writes(self, driver: StorageDriver) -> None:
        base = random_path(1)
        writer = await driver.writer(f"{base}/upload/data")
        await writer.write(b"pending")
        await writer.close()
        await driver.put_content(f"{base}/upload/startedat", b"t")
        await driver.delete(f"{base}/upload")
        resumed = await driver.writer(f"{base}/upload/data", append=True)
        assert resumed.size == 0
        await resumed.cancel()

    # -- batch deletes (optional) ---------------------------------------------------------

    async def test_delete_files_deletes_those_files_and_nothing_else(
        self, driver: StorageDriver
    ) -> None:
        deletes = driver.batch_deletes
        if deletes is None:
            return  # optional: a driver whose deletes cost little one by one offers none
        base = random_path(1)
        # 2500: more than one request's worth on S3 (a thousand keys, two a file).
        doomed = [f"{base}/d{i % 50:02}/f{i}" for i in range(2500)]
        # Siblings, names that extend a doomed one, and a file beside the folders.
        kept = [f"{base}/d{i:02}/keep" for i in range(50)]
        kept += [f"{base}/d00/f0.keep", f"{base}/d00/f0x", f"{base}/d00/f0-1", f"{base}/other"]
        await put_many(driver, doomed + kept, b"content")
        missing = [f"{base}/d00/never", f"{base}/nodir/never", f"{base}/other/below"]
        await deletes.delete_files([*doomed, *missing, doomed[0]])
        assert await file_paths(driver, base) == set(kept)
        for path in kept:
            assert await driver.get_content(path) == b"content"
        with pytest.raises(PathNotFound):
            await driver.stat(doomed[-1])

    async def test_delete_files_of_missing_paths_is_not_an_error(
        self, driver: StorageDriver
    ) -> None:
        deletes = driver.batch_deletes
        if deletes is None:
            return
        base = random_path(1)
        await driver.put_content(f"{base}/file", b"x")
        await deletes.delete_files([])
        await deletes.delete_files([random_path(), f"{base}/missing", f"{base}/file/below"])
        await deletes.delete_files([f"{base}/file"])
        await deletes.delete_files([f"{base}/file"])  # again: already gone
        with pytest.raises(PathNotFound):
            await driver.stat(f"{base}/file")

    async def test_delete_files_never_deletes_a_directory(self, driver: StorageDriver) -> None:
        deletes = driver.batch_deletes
        if deletes is None:
            return
        base = random_path(1)
        files = [f"{base}/dir/a", f"{base}/dir/sub/b", f"{base}/dir-sibling"]
        await put_many(driver, files)
        await deletes.delete_files([f"{base}/dir", f"{base}/dir/sub", f"{base}/dir/a"])
        assert await file_paths(driver, base) == {f"{base}/dir/sub/b", f"{base}/dir-sibling"}
        assert (await driver.stat(f"{base}/dir")).is_dir

    async def test_delete_files_discards_pending_writes(self, driver: StorageDriver) -> None:
        deletes = driver.batch_deletes
        if deletes is None:
            return
        base = random_path(1)
        await driver.put_content(f"{base}/committed", b"committed")
        for path in (f"{base}/committed", f"{base}/uncommitted"):
            async with await driver.writer(path, append=True) as writer:
                await writer.write(b"pending")
        await deletes.delete_files([f"{base}/committed", f"{base}/uncommitted"])
        for path in (f"{base}/committed", f"{base}/uncommitted"):
            with pytest.raises(PathNotFound):
                await driver.written_size(path)
            resumed = await driver.writer(path, append=True)
            assert resumed.size == 0
            await resumed.cancel()

    @pytest.mark.parametrize("path", INVALID_PATHS)
    async def test_delete_files_with_an_invalid_path_deletes_nothing(
        self, driver: StorageDriver, path: str
    ) -> None:
        deletes = driver.batch_deletes
        if deletes is None:
            return
        good = random_path()
        await driver.put_content(good, b"x")
        with pytest.raises(InvalidPath) as caught:
            await deletes.delete_files([good, path])
        assert caught.value.path == path
        assert await driver.get_content(good) == b"x"

    async def test_delete_files_is_one_watched_action(self, driver: StorageDriver) -> None:
        deletes = driver.batch_deletes
        if deletes is None:
            return
        paths = [random_path() for _ in range(3)]
        await put_many(driver, paths)
        watch = driver.watch = RecordingWatch()
        try:
            await deletes.delete_files(paths)
            await deletes.delete_files([])
        finally:
            driver.watch = None
        assert watch.actions == [("DeleteFiles", paths[0])], "one call, none for no paths"

    # -- walk -----------------------------------------------------------------------------

    async def test_walk_visits_everything_depth_first_in_lexical_order(
        self, driver: StorageDriver
    ) -> None:
        base = random_path(1)
        for f in ["b/y", "a/z/1", "c", "a/x"]:
            await driver.put_content(f"{base}/{f}", b"12")
        expected = ["a", "a/x", "a/z", "a/z/1", "b", "b/y", "c"]
        assert await walk_paths(driver, base) == [f"{base}/{p}" for p in expected]
        infos = {info.path: info async for info in driver.walk(base)}
        assert infos[f"{base}/a"].is_dir
        assert not infos[f"{base}/a/x"].is_dir
        assert infos[f"{base}/a/x"].size == 2

    async def test_walk_skips_directories_it_is_told_not_to_enter(
        self, driver: StorageDriver
    ) -> None:
        base = random_path(1)
        for f in ["keep/1", "skip/2", "skip/deep/3"]:
            await driver.put_content(f"{base}/{f}", b"x")
        seen = [
            info.path
            async for info in driver.walk(base, descend=lambda info: info.path.endswith("keep"))
        ]
        assert seen == [f"{base}/keep", f"{base}/keep/1", f"{base}/skip"]

    async def test_walk_of_a_missing_directory_is_path_not_found(
        self, driver: StorageDriver
    ) -> None:
        with pytest.raises(PathNotFound):
            await walk_paths(driver, random_path())

    # -- invalid paths --------------------------------------------------------------------

    @pytest.mark.parametrize("path", INVALID_PATHS)
    async def test_every_method_rejects_an_invalid_path(
        self, driver: StorageDriver, path: str
    ) -> None:
        good = random_path()
        await driver.put_content(good, b"x")
        attempts = [
            driver.get_content(path),
            driver.put_content(path, b"x"),
            driver.reader(path),
            driver.writer(path),
            driver.stat(path),
            driver.written_size(path),
            driver.list(path),
            driver.move(path, good),
            driver.move(good, path),
            driver.delete(path),
            walk_paths(driver, path),
        ]
        redirects = driver.redirects
        if redirects is not None:
            attempts.append(redirects.redirect_url(path))
        for attempt in attempts:
            with pytest.raises(InvalidPath) as caught:
                await attempt
            assert caught.value.path == path
        assert await driver.get_content(good) == b"x", "nothing moved or deleted"
        files = driver.local_files
        if files is not None:
            with pytest.raises(InvalidPath):
                files.local_path(path)

    async def test_root_is_a_directory_not_a_file(self, driver: StorageDriver) -> None:
        await driver.put_content(random_path(), b"x")
        assert (await driver.stat("/")).is_dir
        for attempt in [driver.get_content("/"), driver.put_content("/", b"x"), driver.delete("/")]:
            with pytest.raises(InvalidPath):
                await attempt

    # -- concurrency ----------------------------------------------------------------------

    async def test_many_concurrent_writers_to_different_paths(self, driver: StorageDriver) -> None:
        base = random_path(1)
        contents = {f"{base}/w{i}": random_bytes(64 * 1024 + i) for i in range(32)}

        async def write(path: str, content: bytes) -> None:
            async with await driver.writer(path) as writer:
                for start in range(0, len(content), 8192):
                    await writer.write(content[start : start + 8192])
                    await asyncio.sleep(0)
                await writer.commit()

        await asyncio.gather(*(write(p, c) for p, c in contents.items()))
        for path, content in contents.items():
            assert await driver.get_content(path) == content

    async def test_concurrent_puts_of_one_path_are_never_torn(self, driver: StorageDriver) -> None:
        path = random_path()
        versions = [bytes([i]) * (256 * 1024) for i in range(8)]
        await driver.put_content(path, versions[0])
        seen: set[bytes] = set()

        async def keep_reading() -> None:
            for _ in range(60):
                content = await driver.get_content(path)
                assert content in versions, "a reader saw a torn or partial version"
                seen.add(content[:1])
                streamed = await read_all(driver, path)
                assert streamed in versions
                await asyncio.sleep(0)

        writers = [driver.put_content(path, v) for v in versions for _ in range(3)]
        await asyncio.gather(keep_reading(), *writers, keep_reading())
        assert await driver.get_content(path) in versions
        assert seen

    async def test_redirect_url_is_none_or_a_url(self, driver: StorageDriver) -> None:
        redirects = driver.redirects
        if redirects is None:
            return  # the capability is optional; without it there is nothing to hand out
        path = random_path()
        await driver.put_content(path, b"x")
        url = await redirects.redirect_url(path)
        assert url is None or url.startswith(("http://", "https://"))

    # -- immediate reads (optional) -------------------------------------------------------

    async def test_immediate_reads_see_what_the_async_api_sees(self, driver: StorageDriver) -> None:
        files = driver.immediate
        if files is None:
            return  # optional: a driver that must wait for its reads offers none
        folder = random_path(2)
        content = random_bytes(3000)
        await driver.put_content(f"{folder}/file", content)
        await driver.put_content(f"{folder}/other", b"")
        async with await driver.writer(f"{folder}/partial") as writer:
            await writer.write(b"uncommitted")
        assert files.read_now(f"{folder}/file", 3000) == content
        assert files.read_now(f"{folder}/other", 10) == b""
        assert files.size_now(f"{folder}/file") == (await driver.stat(f"{folder}/file")).size
        listed = [path.rpartition("/")[2] for path in await driver.list(folder)]
        assert sorted(files.list_now(folder) or []) == listed
        assert {"file", "other"} <= set(listed)

    async def test_immediate_reads_answer_none_for_anything_but_a_plain_file(
        self, driver: StorageDriver
    ) -> None:
        files = driver.immediate
        if files is None:
            return
        folder = random_path(2)
        await driver.put_content(f"{folder}/file", b"0123456789")
        assert files.read_now(f"{folder}/file", 9) is None, "over the limit"
        assert files.read_now(f"{folder}/missing", 100) is None
        assert files.size_now(f"{folder}/missing") is None
        assert files.list_now(f"{folder}/missing") is None
        assert files.read_now(folder, 100) is None, "a folder"
        assert files.size_now(folder) is None
        assert files.list_now(f"{folder}/file") is None, "a file"
        for odd in (f"{folder}/../{folder}/file", f"{folder}/~file", f"{folder}/./file", "x"):
            assert files.read_now(odd, 100) is None, odd
            assert files.size_now(odd) is None, odd


def hidden_names(root: str) -> list[str]:
    """Names under ``root`` on disk that a listing must not show (filesystem only)."""
    return [n for _, _, files in os.walk(root) for n in files if "~" in n]
