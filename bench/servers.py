"""The two registries under test, each on a free loopback port with a fresh root.

Both get the same configuration: filesystem storage (or the S3 or cache settings
of the other modes), deletes enabled, upload purging off, log level error and no
access log.
cargohold runs with its default number of workers (one per CPU); the Go
registry is Debian's ``docker-registry`` (CNCF Distribution 2.8).
Each server starts in its own session so that stopping it (SIGTERM, then
SIGKILL for the whole process group) also stops any worker it forked.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from tests.support.servers import free_port, stop, wait_for_http

CARGOHOLD = "cargohold"
GO = "go"
TRIVIAL = "trivial"

#: Redis pool settings from Distribution's documented example: Go 2.8 keeps no idle
#: connection by default (it would dial Redis for every cache lookup).
REDIS_POOL = {"maxidle": 16, "maxactive": 64, "idletimeout": "300s"}


def filesystem_storage(root: Path) -> dict[str, Any]:
    """The ``storage`` section of the default comparison: a local directory."""
    return {"filesystem": {"rootdirectory": str(root)}}


def config_text(
    port: int,
    storage: dict[str, Any],
    redis: dict[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    *,
    pool: bool = True,
) -> str:
    """The ``config.yml`` both registries read: ``storage`` plus the shared settings.

    ``redis`` is the ``redis`` section (``addr``, ``db``), given the pool settings when
    ``pool`` (Go's: cargohold keeps its connections open and refuses idle settings).
    ``extra`` is merged in last, section by section (``{"http": {"debug": ...}}``
    adds to ``http`` rather than replacing it).
    """
    config: dict[str, Any] = {
        "version": "0.1",
        "log": {"level": "error", "accesslog": {"disabled": True}},
        # No upload purging: Go's purger first runs at a random minute of the first hour,
        # walks every repository (it would land in some timed run), and on SeaweedFS
        # Distribution 2.8's purger panics on the empty "directory/" keys S3 listings
        # return, killing the registry.
        "storage": {
            **storage,
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    if redis is not None:
        config["redis"] = {**redis, "pool": REDIS_POOL} if pool else dict(redis)
    if extra is not None:
        _merge(config, extra)
    return yaml.safe_dump(config, sort_keys=False)


def _merge(into: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Merge ``extra`` into ``into`` in place: mappings key by key, anything else replaced."""
    for key, value in extra.items():
        present = into.get(key)
        if isinstance(value, Mapping) and isinstance(present, dict):
            _merge(present, value)
        else:
            into[key] = dict(value) if isinstance(value, Mapping) else value


@dataclass(frozen=True)
class Server:
    """One running registry: what the workloads talk to and what the samplers watch."""

    name: str
    url: str
    root: Path
    process: subprocess.Popen[bytes]
    #: Which server of the run this is: ``name`` unless several of one kind run side
    #: by side (then each has its own files to warm, keyed by label).
    label: str = ""

    @property
    def key(self) -> str:
        return self.label or self.name

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").split(":")
        return host, int(port)


def cargohold_executable() -> str:
    """The ``cargohold`` script beside the interpreter that runs the benchmark."""
    beside = Path(sys.executable).parent / "cargohold"
    if beside.exists():
        return str(beside)
    found = shutil.which("cargohold")
    if found is None:
        raise SystemExit("bench: cargohold is not installed in this environment (make bench)")
    return found


def go_executable() -> str:
    found = shutil.which("docker-registry")
    if found is None:
        raise SystemExit("bench: docker-registry is missing (Debian package docker-registry)")
    return found


def _environment(name: str, extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment, adjusted for ``name``; ``extra`` sets (or with None, unsets)."""
    env = dict(os.environ)
    if name == GO:
        # With AWS_CA_BUNDLE set, aws-sdk-go v1 refuses the HTTP transport Distribution
        # builds ("LoadCustomCABundleError") and the Go registry panics on S3 storage.
        env.pop("AWS_CA_BUNDLE", None)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@contextmanager
def start(
    name: str,
    workdir: Path,
    *,
    label: str | None = None,
    storage: dict[str, Any] | None = None,
    root: Path | None = None,
    redis: dict[str, Any] | None = None,
    config_extra: Mapping[str, Any] | None = None,
    env: Mapping[str, str | None] | None = None,
) -> Iterator[Server]:
    """Start registry ``name`` (CARGOHOLD or GO) on a free port.

    By default with a fresh filesystem root under ``workdir``; ``storage`` replaces
    that section (``root`` is then what the runner reads to warm the page cache).
    ``label`` (default ``name``) names the config and log files and the server
    (``Server.key``), so that several servers of one kind can run side by side.
    ``config_extra`` is merged into the configuration (``config_text``), ``env``
    into the environment (a None value removes the variable).
    """
    label = label or name
    if storage is None:
        root = workdir / f"{label}-root"
        root.mkdir()
        storage = filesystem_storage(root)
    port = free_port()
    config = workdir / f"{label}-config.yml"
    config.write_text(config_text(port, storage, redis, config_extra, pool=name == GO))
    executable = cargohold_executable() if name == CARGOHOLD else go_executable()
    log = open(workdir / f"{label}.log", "ab")  # noqa: SIM115 - closed below
    process = subprocess.Popen(
        [executable, "serve", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_environment(name, env),
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/v2/", process, timeout=30)
        yield Server(name, url, root or workdir, process, label)
    finally:
        stop(process)
        log.close()


@contextmanager
def start_trivial(workdir: Path, big_path: str, big: bytes | bytearray) -> Iterator[Server]:
    """``bench.trivial`` serving ``big`` at ``big_path``: the clients' ceiling."""
    root = workdir / "trivial-root"
    root.mkdir()
    (root / "big").write_bytes(big)
    port = free_port()
    argv = [sys.executable, "-m", "bench.trivial", str(port), str(root / "big"), big_path, "4096"]
    process = subprocess.Popen(
        argv,
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/v2/", process, timeout=30)
        yield Server(TRIVIAL, url, root, process)
    finally:
        stop(process)


@contextmanager
def workdir(keep: bool = False, parent: Path | None = None) -> Iterator[Path]:
    """A scratch directory for the roots, configs and logs (in ``parent``, by default the
    temporary directory); removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="cargohold-bench-", dir=parent))
    try:
        yield path
    finally:
        if keep:
            print(f"bench: kept {path}", file=sys.stderr)
        else:
            print(f"bench: removing {path}", file=sys.stderr)
            shutil.rmtree(path, ignore_errors=True)
