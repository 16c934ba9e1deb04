"""The local catalog's inotify instance, shared by every process serving one root.

Workers each holding an instance would need a watch per folder each, against
one per-user limit; sharing one, a folder costs one watch however many watch
it. An event is read by one holder only: the others must still learn that
their scan is out of date (the generation in the shared page).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from cargohold.storage import catalog as local
from cargohold.storage.catalog import LocalScan
from cargohold.storage.watch import SharedInotify

from .test_catalog_local import TOP, age, make


def watches(scan: LocalScan | SharedInotify) -> int:
    """The watches of the instance held (every holder's, as the kernel counts them)."""
    inotify = scan
    if isinstance(scan, LocalScan):
        assert isinstance(scan._watch, local._InotifyWatch)
        assert scan._watch._inotify is not None
        inotify = scan._watch._inotify
    assert isinstance(inotify, SharedInotify)
    with open(f"/proc/self/fdinfo/{inotify.inotify.fd}") as info:
        return sum(line.startswith("inotify wd:") for line in info)


def test_two_scans_of_one_root_hold_one_instance(tmp_path: Path) -> None:
    make(tmp_path, "a", "b/c", "d")
    age(tmp_path)
    one, other = LocalScan(str(tmp_path / TOP)), LocalScan(str(tmp_path / TOP))
    try:
        assert list(one.names()) == ["a", "b/c", "d"]
        counted = watches(one)
        assert counted == 5  # repositories, a, b, b/c, d
        joined = SharedInotify(str(tmp_path / TOP))
        assert watches(joined) == counted  # handed the same instance, watches and all
        joined.close()
        assert list(other.names()) == ["a", "b/c", "d"]
        assert watches(other) == counted  # the same folders: the same watches
        make(tmp_path, "b/new", marker="_manifests")
        assert one.cached() is None  # reads the event ...
        assert other.cached() is None  # ... which the other still learns of
        assert list(other.names()) == ["a", "b/c", "b/new", "d"]
        assert list(one.names()) == ["a", "b/c", "b/new", "d"]
        assert list(one.cached() or ()) == ["a", "b/c", "b/new", "d"]
        assert list(other.cached() or ()) == ["a", "b/c", "b/new", "d"]
    finally:
        one.close()
        other.close()


def test_scans_of_other_roots_hold_their_own(tmp_path: Path) -> None:
    make(tmp_path / "x", "a")
    make(tmp_path / "y", "b", "c")
    one, other = LocalScan(str(tmp_path / "x" / TOP)), LocalScan(str(tmp_path / "y" / TOP))
    try:
        assert list(one.names()) == ["a"]
        assert list(other.names()) == ["b", "c"]
        assert (watches(one), watches(other)) == (2, 3)
    finally:
        one.close()
        other.close()


CHILD = textwrap.dedent(
    """
    import sys
    from cargohold.storage.catalog import LocalScan
    from cargohold.storage.watch import SharedInotify
    joined = SharedInotify(sys.argv[1])  # before scanning: only the parent's watches
    with open(f"/proc/self/fdinfo/{joined.inotify.fd}") as info:
        count = sum(line.startswith("inotify wd:") for line in info)
    joined.close()
    scan = LocalScan(sys.argv[1])
    names = scan.names()
    print(",".join(names), count, flush=True)
    sys.stdin.readline()
    print("stale" if scan.cached() is None else "kept", flush=True)
    sys.stdin.readline()
    """
)


def test_another_process_shares_the_instance_and_its_changes(tmp_path: Path) -> None:
    make(tmp_path, "a", "b/c")
    age(tmp_path)
    mine = LocalScan(str(tmp_path / TOP))
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / TOP)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        try:
            assert list(mine.names()) == ["a", "b/c"]
            assert child.stdout is not None
            assert child.stdin is not None
            # Before its scan, the child's instance holds this process's watches: it is one.
            assert child.stdout.readline().split() == ["a,b/c", str(watches(mine))]
            make(tmp_path, "b/new", marker="_manifests")
            assert mine.cached() is None  # this process read the event
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "stale"
            child.stdin.write("\n")
            child.stdin.flush()
            assert child.wait(timeout=30) == 0
        finally:
            if child.poll() is None:
                child.kill()
            mine.close()
