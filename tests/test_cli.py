"""The ``cargohold`` command never shows a traceback: help, version, and the gc's start checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from cargohold.cli import app

#: The installed script, as an operator runs it (its help names "cargohold").
SCRIPT = str(Path(sys.executable).parent / "cargohold")


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=60, env=env, check=False
    )


def subcommands() -> list[str]:
    return sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_every_subcommand_is_walked() -> None:
    assert {"serve", "gc", "copy", "inspect", "tags", "catalog", "digest", "rm"} <= set(
        subcommands()
    )


@pytest.mark.parametrize("command", subcommands())
def test_every_subcommand_has_help(command: str) -> None:
    shown = run(command, "--help")
    assert shown.returncode == 0, shown.stderr
    assert "Traceback" not in shown.stderr
    assert shown.stdout.startswith(f"Usage: cargohold {command} ")


def test_version() -> None:
    shown = run("--version")
    assert shown.returncode == 0
    assert shown.stdout.strip() == "cargohold 0.1.0"


def test_gc_of_a_root_that_is_not_there_is_refused_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    shown = run(
        "gc",
        env={
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(missing),
            "PATH": "/usr/bin:/bin",
        },
    )
    assert shown.returncode == 2
    assert shown.stdout == ""
    (line,) = shown.stderr.splitlines()
    assert line.startswith("cargohold: config: storage.filesystem: ")
    assert str(missing) in line
    assert not missing.exists(), "nothing was created"


def test_a_root_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("in the way")
    shown = run(
        "serve",
        env={
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(blocker / "root"),
            "REGISTRY_HTTP_ADDR": "127.0.0.1:0",
            "PATH": "/usr/bin:/bin",
        },
    )
    assert shown.returncode == 2
    (line,) = shown.stderr.splitlines()
    assert str(blocker) in line
