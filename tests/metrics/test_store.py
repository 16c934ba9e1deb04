"""The shared-memory store: rows written in one process, read whole from any other."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from cargohold.metrics.store import INITIAL_SIZE, Row, Store, read_store, read_stores


def test_rows_are_read_back_with_their_labels_and_values(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "worker-7.metrics"))
    http = store.row("http", ("blob", "get", "200"), 3)
    other = store.row("cache", (), 2)
    assert store.row("http", ("blob", "get", "200"), 3) == http, "made once, then found"
    store.values[http] += 1
    store.values[http + 2] += 2.5
    store.values[other + 1] = 9
    found = read_store(str(tmp_path / "worker-7.metrics"))
    assert found is not None
    assert found.alive
    assert found.pid == 7
    assert found.rows == [
        Row("http", ("blob", "get", "200"), (1.0, 0.0, 2.5)),
        Row("cache", (), (0.0, 9.0)),
    ]
    store.close()


def test_a_store_grows_and_its_rows_keep_their_places(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "worker-1.metrics"))
    first = store.row("repository", ("first",), 6)
    store.values[first] = 1
    rows = [store.row("repository", (f"team/app-{n:05d}",), 6) for n in range(3000)]
    assert rows[-1] * 8 > INITIAL_SIZE, "the file grew"
    store.values[first] += 1
    store.values[rows[-1] + 5] = 42
    found = read_store(store.path or "")
    assert found is not None
    assert len(found.rows) == 3001
    assert found.rows[0] == Row("repository", ("first",), (2.0, 0, 0, 0, 0, 0))
    assert found.rows[-1].values[5] == 42
    store.close()


def test_an_anonymous_store_reads_as_this_process(tmp_path: Path) -> None:
    store = Store()
    store.values[store.row("uploads", (), 5)] += 3
    found = store.as_file()
    assert found.alive
    assert found.rows == [Row("uploads", (), (3.0, 0, 0, 0, 0))]
    store.close()


def test_a_store_reads_as_dead_once_its_process_has_gone(tmp_path: Path) -> None:
    """The lock is held while the process lives; its file stays for the sums."""
    path = tmp_path / "worker-1234.metrics"
    script = textwrap.dedent(
        f"""
        import sys
        from cargohold.metrics.store import Store
        store = Store({str(path)!r})
        store.values[store.row("http", ("base", "get", "200"), 1)] += 5
        print("ready", flush=True)
        sys.stdin.readline()
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdout is not None
    assert child.stdin is not None
    assert child.stdout.readline() == b"ready\n"
    alive = read_store(str(path))
    assert alive is not None
    assert alive.alive
    child.kill()
    child.wait()
    child.stdin.close()
    child.stdout.close()
    dead = read_store(str(path))
    assert dead is not None
    assert not dead.alive
    assert dead.rows == [Row("http", ("base", "get", "200"), (5.0,))]
    assert [store.path for store in read_stores(str(tmp_path))] == [str(path)]


def test_files_that_are_not_stores_are_passed_over(tmp_path: Path) -> None:
    (tmp_path / "junk.metrics").write_bytes(b"not a store at all")
    (tmp_path / "short.metrics").write_bytes(b"x")
    (tmp_path / "other.txt").write_bytes(b"")
    store = Store(str(tmp_path / "worker-3.metrics"))
    assert [found.pid for found in read_stores(str(tmp_path))] == [3]
    store.close()
