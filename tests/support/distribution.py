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


#: Appended with ``metrics_port``: the debug listener with Prometheus metrics, and the
#: in-memory descriptor cache (so that the cache metrics count).
_METRICS = """\
  debug:
    addr: 127.0.0.1:{metrics_port}
    prometheus:
      enabled: true
      path: /metrics
"""


_NOTIFY = """\
notifications:
  endpoints:
    - name: hook
      url: {url}
      timeout: 2s
      threshold: 5
      backoff: 100ms
"""


@contextmanager
def distribution(
    root: Path,
    *,
    log: Path | None = None,
    secret: str = "a secret for tests only",
    metrics_port: int | None = None,
    notify: str | None = None,
    proxy: str | None = None,
    htpasswd: Path | None = None,
) -> Iterator[str]:
    """``docker-registry serve`` with filesystem storage at ``root``; yields its URL.

    ``secret`` is its ``http.secret``: a cargohold sharing the root with the same one
    can hand uploads over to it. With ``metrics_port`` its debug listener serves
    Prometheus metrics there, at ``/metrics``. With ``notify`` (a URL) its events
    go there, from one endpoint named ``hook``. With ``proxy`` (a URL) it is a
    pull-through cache of that registry. With ``htpasswd`` its users are that file's.
    """
    executable = shutil.which(DOCKER_REGISTRY)
    if executable is None:
        pytest.fail(f"{DOCKER_REGISTRY} is not installed (Debian package docker-registry)")
    port = free_port()
    config = root.parent / f"{root.name}-distribution-{port}.yml"
    text = _CONFIG.format(root=json.dumps(str(root)), port=port, secret=json.dumps(secret))
    if metrics_port is not None:
        text += _METRICS.format(metrics_port=metrics_port)
        text = text.replace("  delete:\n", "  cache:\n    blobdescriptor: inmemory\n  delete:\n", 1)
    if notify is not None:
        text += _NOTIFY.format(url=json.dumps(notify))
    if proxy is not None:
        text += f"proxy:\n  remoteurl: {json.dumps(proxy)}\n"
    if htpasswd is not None:
        text += (
            f"auth:\n  htpasswd:\n    realm: go-registry\n    path: {json.dumps(str(htpasswd))}\n"
        )
    config.write_text(text)
    url = f"http://127.0.0.1:{port}"
    with running([executable, "serve", str(config)], f"{url}/v2/", log=log):
        yield url
