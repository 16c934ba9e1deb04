"""Debian's ``podman``, as root, with storage, state and configuration of its own.

Nothing of the machine's is read or written: the image store (``vfs``, which
mounts nothing) and libpod's state live under the folder given, the
configuration files are ones the test writes (``registries.conf`` is the
test's; ``containers.conf`` is empty; the signature policy accepts anything),
and events go nowhere.

podman is part of the test environment (scripts/install-debs): when it is
missing the tests fail, they never skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

PODMAN = "podman"


class PodmanError(AssertionError):
    def __init__(self, argv: list[str], stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} failed:\n{stderr}")
        self.stderr = stderr


@dataclass(frozen=True)
class Podman:
    folder: Path
    registries_conf: Path
    #: libpod's run directory: podman refuses one of more than 50 characters.
    runroot: Path

    def _files(self) -> dict[str, Path]:
        files = {
            "storage": self.folder / "storage.conf",
            "containers": self.folder / "containers.conf",
            "policy": self.folder / "policy.json",
        }
        if not files["storage"].exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            files["storage"].write_text(
                f'[storage]\ndriver = "vfs"\n'
                f"graphroot = {json.dumps(str(self.folder / 'root'))}\n"
                f"runroot = {json.dumps(str(self.runroot))}\n"
            )
            files["containers"].write_text("")
            files["policy"].write_text(
                json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
            )
        return files

    def __call__(self, *args: str, timeout: float = 120) -> str:
        """``podman args``; its standard output, or ``PodmanError`` with its standard error."""
        if shutil.which(PODMAN) is None:
            pytest.fail(f"{PODMAN} is not installed (Debian package podman)")
        files = self._files()
        argv = [
            PODMAN,
            "--root",
            str(self.folder / "root"),
            "--runroot",
            str(self.runroot),
            "--tmpdir",
            str(self.folder / "tmp"),
            "--storage-driver",
            "vfs",
            "--events-backend",
            "none",
            *args,
        ]
        env = {
            **os.environ,
            "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
            "CONTAINERS_CONF": str(files["containers"]),
            "CONTAINERS_STORAGE_CONF": str(files["storage"]),
            "TMPDIR": str(self.folder),
        }
        result = subprocess.run(argv, capture_output=True, timeout=timeout, env=env)
        if result.returncode != 0:
            raise PodmanError(argv, result.stderr.decode(errors="replace"))
        return result.stdout.decode(errors="replace")

    def pull(self, reference: str, *options: str) -> str:
        """Pull ``reference`` (no transport prefix); the image's ID."""
        policy = str(self._files()["policy"])
        return self("pull", "--quiet", "--signature-policy", policy, *options, reference).strip()

    def inspect(self, reference: str) -> dict[str, Any]:
        found: list[dict[str, Any]] = json.loads(self("image", "inspect", reference))
        assert len(found) == 1, found
        return found[0]


@contextmanager
def podman(folder: Path, registries_conf: Path) -> Iterator[Podman]:
    """A ``Podman`` keeping its images under ``folder``, its run directory in a short one."""
    runroot = Path(tempfile.mkdtemp(prefix="podman-"))
    try:
        yield Podman(folder, registries_conf, runroot)
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
