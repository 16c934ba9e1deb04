"""The client commands of the CLI: output, progress, errors and exit statuses.

Exit status 0 on success, 2 for a usage error, 1 for a failure; errors are one
line on stderr starting ``cargohold:``. Most tests run the CLI in-process; a
few run ``python -m cargohold`` for what only a real process shows (a
terminal, peak memory).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner, Result

from cargohold.cli import app
from cargohold.client.display import PlainProgress, RichProgress
from cargohold.descriptor import Descriptor
from cargohold.digest import digest_of
from tests.client.conftest import SourceImages, unique_name
from tests.support.images import descriptor_of, layers_of, read_blob, umoci
from tests.support.servers import free_port

MiB = 1 << 20


def cargohold(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def host_of(url: str) -> str:
    return url.removeprefix("http://")


def assert_one_error_line(result: Result, status: int, pattern: str) -> None:
    assert result.exit_code == status, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert re.fullmatch(rf"cargohold: .*{pattern}.*\n", result.stderr), result.stderr


# -- copy ---------------------------------------------------------------------------------------


def test_copy_prints_the_digest_and_a_line_per_blob(
    images: SourceImages, cargohold_url: str
) -> None:
    target = f"{host_of(cargohold_url)}/{unique_name('cli')}:1.0"
    result = cargohold("copy", images.oci("multi"), target)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == descriptor_of(images.layout, "amd64")["digest"] + "\n"
    lines = result.stderr.splitlines()
    manifest = json.loads(read_blob(images.layout, descriptor_of(images.layout, "amd64")["digest"]))
    expected = {manifest["config"]["digest"], *layers_of(images.layout, "amd64")}
    assert {line.split()[1] for line in lines} == expected
    assert all(line.startswith("copied ") for line in lines)

    again = cargohold("copy", images.oci("multi"), target, "--jobs", "1")
    assert again.exit_code == 0
    assert all(line.startswith("exists ") for line in again.stderr.splitlines())
    assert len(again.stderr.splitlines()) == len(expected)


def test_copy_all_then_back_to_a_layout(
    images: SourceImages, cargohold_url: str, tmp_path: Path
) -> None:
    remote = f"{host_of(cargohold_url)}/{unique_name('cli')}"
    assert cargohold("copy", "--all", "-q", images.oci("multi"), f"{remote}:m").exit_code == 0
    result = cargohold("copy", "--all", "--quiet", f"{remote}:m", f"oci:{tmp_path / 'back'}")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    index = descriptor_of(images.layout, "multi")["digest"]
    # Without a destination tag, the source's tag is kept.
    assert descriptor_of(tmp_path / "back", "m")["digest"] == index


# -- reading and deleting -----------------------------------------------------------------------


def test_tags_catalog_digest_inspect_and_rm(images: SourceImages, cargohold_url: str) -> None:
    host, name = host_of(cargohold_url), unique_name("cli")
    for tag in ("b", "a"):
        assert cargohold("copy", "-q", images.oci("amd64"), f"{host}/{name}:{tag}").exit_code == 0
    amd64 = descriptor_of(images.layout, "amd64")["digest"]

    assert cargohold("tags", f"{host}/{name}").stdout == "a\nb\n"
    assert name in cargohold("catalog", host).stdout.splitlines()
    assert cargohold("digest", f"{host}/{name}:a").stdout == f"{amd64}\n"

    summary = json.loads(cargohold("inspect", f"{host}/{name}:a").stdout)
    assert summary["Name"] == f"{host}/{name}"
    assert summary["Digest"] == amd64
    assert summary["RepoTags"] == ["a", "b"]
    assert (summary["Architecture"], summary["Os"]) == ("amd64", "linux")
    assert summary["Layers"] == layers_of(images.layout, "amd64")

    raw = cargohold("inspect", "--raw", f"{host}/{name}@{amd64}")
    assert raw.stdout_bytes == read_blob(images.layout, amd64)
    config = cargohold("inspect", "--config", f"{host}/{name}:b")
    manifest = json.loads(read_blob(images.layout, amd64))
    assert config.stdout_bytes == read_blob(images.layout, manifest["config"]["digest"])

    assert cargohold("rm", f"{host}/{name}:a").stdout == f"{amd64}\n"
    assert cargohold("tags", f"{host}/{name}").stdout == ""
    assert_one_error_line(cargohold("digest", f"{host}/{name}:b"), 1, "unknown tag 'b'")


def test_inspect_of_an_index_shows_the_platform_asked_for(images: SourceImages) -> None:
    summary = json.loads(
        cargohold("inspect", "--platform", "linux/arm64", images.oci("multi")).stdout
    )
    assert summary["Digest"] == descriptor_of(images.layout, "multi")["digest"]
    assert summary["Architecture"] == "arm64"
    assert "Name" not in summary
    raw = cargohold("inspect", "--raw", images.oci("multi"))
    assert raw.stdout_bytes == read_blob(
        images.layout, descriptor_of(images.layout, "multi")["digest"]
    )


# -- errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (["copy", "no-host/name:1", "oci:/tmp/x"], "names no registry"),
        (["copy", "oci:", "localhost:5000/a"], "oci:PATH"),
        (["inspect", "localhost:5000/UPPER"], "lowercase"),
        (["digest", "localhost:5000/a@sha256:beef"], "digest"),
        (["copy", "--platform", "linux", "oci:/a:b", "localhost:5000/a"], "--platform"),
        (["tags", "--creds", "no-colon", "localhost:5000/a"], "USERNAME:PASSWORD"),
        (["catalog", "http://registry.example.com"], "insecure"),
        (["rm", "oci:/tmp/nothing"], "tag or digest"),
    ],
)
def test_usage_errors_exit_2(args: list[str], pattern: str) -> None:
    result = cargohold(*args)
    expected = 1 if args[0] == "rm" else 2
    assert_one_error_line(result, expected, re.escape(pattern))


def test_failures_exit_1_with_one_line(images: SourceImages, cargohold_url: str) -> None:
    host = host_of(cargohold_url)
    assert_one_error_line(
        cargohold("copy", images.oci("nope"), f"{host}/x:1"), 1, "unknown tag 'nope'"
    )
    assert_one_error_line(cargohold("tags", f"{host}/{unique_name('nowhere')}"), 1, "not known")
    unreachable = f"127.0.0.1:{free_port()}/a:1"
    assert_one_error_line(cargohold("digest", "--retries", "1", unreachable), 1, "cannot connect")
    assert_one_error_line(
        cargohold("copy", images.oci("multi"), "oci:/tmp/x", "--platform", "linux/s390x"),
        1,
        "no image for linux/s390x",
    )


# -- progress -----------------------------------------------------------------------------------


def test_progress_renders_as_bars_or_lines() -> None:
    descriptor = Descriptor("x", digest_of(b"abc"), 3 * 1024 * 1024)
    out = StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with RichProgress(console) as bars:
        blob = bars.blob(descriptor)
        blob.advance(1024 * 1024)
        blob.rewind(512)
        blob.advance(3 * 1024 * 1024 - 512)
        blob.finish("copied")
    assert f"sha256:{descriptor.digest.encoded[:12]} copied" in out.getvalue()
    assert "3.0/3.0 MiB" in out.getvalue()

    plain = StringIO()
    lines = PlainProgress(plain)
    lines.blob(descriptor).finish("mounted")
    assert plain.getvalue() == f"mounted  {descriptor.digest} 3.0 MiB\n"


def run_on_a_terminal(argv: list[str], timeout: float = 60) -> tuple[int, str]:
    """Run ``argv`` with its stderr on a pseudo-terminal; exit status and what it drew."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=terminal, stdin=subprocess.DEVNULL
    )
    os.close(terminal)
    drawn = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(controller, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
        elif process.poll() is not None:
            break
    os.close(controller)
    assert process.stdout is not None
    with process.stdout:
        process.stdout.read()
    return process.wait(timeout), drawn.decode(errors="replace")


def test_a_terminal_gets_progress_bars(images: SourceImages, cargohold_url: str) -> None:
    target = f"{host_of(cargohold_url)}/{unique_name('cli')}:tty"
    status, drawn = run_on_a_terminal(
        [sys.executable, "-m", "cargohold", "copy", images.oci("amd64"), target]
    )
    assert status == 0, drawn
    assert "━" in drawn  # rich's bar
    assert drawn.count("copied") >= 4


def build_big_image(layout: Path, tag: str, size: int) -> None:
    """An image of one ``size``-byte layer, written a MiB at a time (this process stays small)."""
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:{tag}")
    bundle = layout.parent / "bundle"
    umoci("unpack", "--rootless", "--image", f"{layout}:{tag}", str(bundle))
    with open(bundle / "rootfs" / "big.bin", "wb") as out:
        for _ in range(size // MiB):
            out.write(os.urandom(MiB))
    umoci("repack", "--image", f"{layout}:{tag}", str(bundle))
    umoci("config", "--image", f"{layout}:{tag}", "--architecture", "amd64", "--os", "linux")


#: Runs the CLI and reports the peak RSS of this process alone. ``ru_maxrss`` would not
#: do: Linux keeps it across fork and exec, so it would report the parent's peak.
PEAK_RSS = """\
import sys
from cargohold.cli import app
try:
    app(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
with open("/proc/self/status") as status:
    peak = next(line for line in status if line.startswith("VmHWM:"))
print(peak.split()[1], file=sys.stderr)
sys.exit(code)
"""


@pytest.mark.slow
def test_memory_stays_bounded_whatever_the_layer_size(tmp_path: Path, cargohold_url: str) -> None:
    """A 192 MiB layer goes through processes whose peak RSS stays far below it."""
    layout = tmp_path / "big"
    build_big_image(layout, "big", 192 * MiB)
    target = f"{host_of(cargohold_url)}/{unique_name('cli')}:big"
    for argv in (
        ["copy", "-q", f"oci:{layout}:big", target],
        ["copy", "-q", target, f"oci:{tmp_path / 'back'}:big"],
    ):
        result = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, *argv], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        peak_mib = int(result.stderr.split()[-1]) / 1024
        assert peak_mib < 100, f"peak RSS {peak_mib:.0f} MiB for {argv}"
    assert (
        descriptor_of(tmp_path / "back", "big")["digest"] == descriptor_of(layout, "big")["digest"]
    )
