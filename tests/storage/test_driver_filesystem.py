from __future__ import annotations

import contextlib
import resource
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cargohold.errors import StorageUnavailable
from cargohold.storage.driver import create_driver
from cargohold.storage.driver.filesystem import FilesystemDriver
from tests.storage.driver_suite import DriverSuite, hidden_names, random_path


class TestFilesystemDriver(DriverSuite):
    @pytest.fixture
    async def driver(self, tmp_path: Path) -> AsyncIterator[FilesystemDriver]:
        driver = FilesystemDriver(str(tmp_path / "root"))
        yield driver
        await driver.close()


async def test_content_lives_at_the_path_under_the_root(tmp_path: Path) -> None:
    driver = FilesystemDriver(str(tmp_path))
    await driver.put_content("/docker/registry/v2/file", b"content")
    assert (tmp_path / "docker/registry/v2/file").read_bytes() == b"content"
    files = driver.local_files
    assert files is not None
    assert files.local_path("/docker/registry/v2/file") == str(tmp_path / "docker/registry/v2/file")
    assert driver.redirects is None
    assert hidden_names(str(tmp_path)) == [], "no temporary file is left behind"
    await driver.close()


async def test_a_writer_appends_to_the_file_at_its_path_as_distribution_does(
    tmp_path: Path,
) -> None:
    """An upload's bytes are at its ``data`` path while it is open, not in a file aside."""
    driver = FilesystemDriver(str(tmp_path))
    data = tmp_path / "a" / "data"
    async with await driver.writer("/a/data") as writer:
        await writer.write(b"x" * 1000)
        assert data.read_bytes() == b"x" * 1000
    assert hidden_names(str(tmp_path)) == [], "nothing is kept aside"
    inode = data.stat().st_ino
    async with await driver.writer("/a/data", append=True) as writer:
        assert writer.size == 1000
        await writer.write(b"y" * 10)
        await writer.commit()
    assert data.read_bytes() == b"x" * 1000 + b"y" * 10
    assert data.stat().st_ino == inode, "resuming appends to the same file: nothing is copied"
    await driver.close()


async def test_operating_system_errors_become_storage_unavailable(tmp_path: Path) -> None:
    # A file size limit makes the kernel refuse the write (EFBIG), as a full disk would.
    driver = FilesystemDriver(str(tmp_path))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
    try:
        with pytest.raises(StorageUnavailable) as caught:
            await driver.put_content("/too/big", b"x" * 4096)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert caught.value.path == "/too/big"
    assert not (tmp_path / "too" / "big").exists()
    assert hidden_names(str(tmp_path)) == [], "the temporary file is removed"
    await driver.close()


def test_driver_registry_builds_the_configured_driver(tmp_path: Path) -> None:
    driver = create_driver("filesystem", {"rootdirectory": str(tmp_path)})
    assert isinstance(driver, FilesystemDriver)
    assert driver.root == str(tmp_path)


# put_content killed with SIGKILL mid-write never leaves a torn file at the target
# path: the target holds the old whole version or the new one. A writer appends in
# place (as Distribution's): killed mid-write, it leaves the chunks it finished and a
# prefix of the one it was writing, never anything else.
_KILLED_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from cargohold.storage.driver.filesystem import FilesystemDriver

    async def main(root, path, mode):
        driver = FilesystemDriver(root)
        chunk = b"N" * (1 << 20)
        if mode == "writer":
            writer = await driver.writer(path, append=True)
            print("writing", flush=True)
            for _ in range(10_000):
                await writer.write(chunk)
            await writer.commit()
        else:
            print("writing", flush=True)
            while True:
                await driver.put_content(path, chunk * 64)

    asyncio.run(main(*sys.argv[1:]))
    """
)


@pytest.mark.parametrize("mode", ["writer", "put_content"])
async def test_sigkill_mid_write_never_leaves_a_partial_file(tmp_path: Path, mode: str) -> None:
    root, path = str(tmp_path / "root"), random_path()
    old = b"O" * 4096
    driver = FilesystemDriver(root)
    await driver.put_content(path, old)
    for delay in (0.05, 0.2, 0.5):
        child = subprocess.Popen(
            [sys.executable, "-c", _KILLED_WRITER, root, path, mode],
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"writing\n"
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        assert child.returncode == -signal.SIGKILL, "the writer must be killed mid-write"
        content = await driver.get_content(path)
        if mode == "writer":
            assert content.startswith(old), "what was there stays"
            assert content[len(old) :] == b"N" * (len(content) - len(old)), "only a prefix added"
            old = content
        else:
            assert content in (old, b"N" * (64 << 20)), "torn file at the target path"
    await driver.close()


async def test_delete_files_takes_the_folder_a_file_leaves_empty_and_no_further(
    tmp_path: Path,
) -> None:
    """A collection deleting a blob's ``data`` or a link's ``link`` leaves no empty folder,
    as Distribution's removal of the whole folder does."""
    driver = FilesystemDriver(str(tmp_path))
    await driver.put_content("/blobs/ab/abc/data", b"x")
    await driver.put_content("/blobs/ab/abd/data", b"y")
    await driver.put_content("/blobs/ab/abd/other", b"z")
    deletes = driver.batch_deletes
    await deletes.delete_files(["/blobs/ab/abc/data", "/blobs/ab/abd/data"])
    assert not (tmp_path / "blobs/ab/abc").exists()  # its last file went: so did it
    assert (tmp_path / "blobs/ab/abd/other").read_bytes() == b"z"  # not empty: it stays
    assert (tmp_path / "blobs/ab").is_dir()  # never a folder further up
    await driver.close()
