"""CNCF Distribution (Debian's ``docker-registry``, the Go registry) on a free loopback port.

The Go registry is part of the test environment (docs/ARCHITECTURE.md): when the binary
is missing the tests fail, they never skip.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.servers import free_port, running

DOCKER_REGISTRY = "docker-registry"

_CONFIG = """\
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: {secret}
"""


@contextmanager
def distribution(
    root: Path, *, log: Path | None = None, secret: str = "a secret for tests only"
) -> Iterator[str]:
    """``docker-registry serve`` with filesystem storage at ``root``; yields its URL.

    ``secret`` is its ``http.secret``: a cargohold sharing the root with the same one
    can hand uploads over to it.
    """
    executable = shutil.which(DOCKER_REGISTRY)
    if executable is None:
        pytest.fail(f"{DOCKER_REGISTRY} is not installed (Debian package docker-registry)")
    port = free_port()
    config = root.parent / f"{root.name}-distribution-{port}.yml"
    config.write_text(
        _CONFIG.format(root=json.dumps(str(root)), port=port, secret=json.dumps(secret))
    )
    url = f"http://127.0.0.1:{port}"
    with running([executable, "serve", str(config)], f"{url}/v2/", log=log):
        yield url
