"""Debian's ``skopeo``, driven against registries on plain HTTP at 127.0.0.1.

skopeo is part of the test environment (docs/ARCHITECTURE.md): when it is missing the
tests fail, they do not skip. ``--insecure-policy`` spares the tests any
dependence on the machine's ``/etc/containers/policy.json``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import Any

import pytest

SKOPEO = "skopeo"


class SkopeoError(AssertionError):
    def __init__(self, argv: list[str], stderr: str) -> None:
        super().__init__(f"{' '.join(argv)} failed:\n{stderr}")
        self.stderr = stderr


def skopeo(*args: str, timeout: float = 180) -> bytes:
    """Run ``skopeo args``; its standard output, or ``SkopeoError`` with its standard error."""
    if shutil.which(SKOPEO) is None:
        pytest.fail(f"{SKOPEO} is not installed (Debian package skopeo)")
    argv = [SKOPEO, "--insecure-policy", *args]
    result = subprocess.run(argv, capture_output=True, timeout=timeout)
    if result.returncode != 0:
        raise SkopeoError(argv, result.stderr.decode(errors="replace"))
    return result.stdout


def docker(url: str, reference: str) -> str:
    """A ``docker://`` reference to ``name:tag`` (or ``name@digest``) on the registry at ``url``."""
    return f"docker://{url.removeprefix('http://')}/{reference}"


def copy(source: str, destination: str, *options: str) -> None:
    skopeo(
        "copy", "--src-tls-verify=false", "--dest-tls-verify=false", *options, source, destination
    )


def inspect(reference: str, *options: str) -> Any:
    return json.loads(skopeo("inspect", "--tls-verify=false", *options, reference))


def inspect_raw(reference: str) -> bytes:
    """The manifest exactly as the registry serves it."""
    return skopeo("inspect", "--tls-verify=false", "--raw", reference)


def list_tags(reference: str) -> list[str]:
    tags: list[str] = json.loads(skopeo("list-tags", "--tls-verify=false", reference))["Tags"]
    return tags


def delete(reference: str) -> None:
    skopeo("delete", "--tls-verify=false", reference)
