"""``http.debug.addr``: a second listener with health and, when enabled, the metrics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.http import request
from tests.support.servers import cargohold_argv, free_port, running


@contextmanager
def serving(tmp_path: Path, debug: dict[str, object], workers: int = 1) -> Iterator[str]:
    """``cargohold serve`` with ``http.debug`` set to ``debug``; yields the debug URL."""
    port = free_port()
    address = str(debug.get("addr", ""))
    config = tmp_path / "config.yml"
    config.write_text(
        json.dumps(
            {
                "version": "0.1",
                "storage": {"filesystem": {"rootdirectory": str(tmp_path / "root")}},
                "http": {"addr": f"127.0.0.1:{port}", "debug": debug},
            }
        )
    )
    argv = cargohold_argv("serve", str(config), "--workers", str(workers))
    with running(argv, f"http://127.0.0.1:{port}/v2/", log=tmp_path / "log"):
        yield f"http://{address}"


def test_health_without_metrics(tmp_path: Path) -> None:
    debug = {"addr": f"127.0.0.1:{free_port()}"}
    with serving(tmp_path, debug) as url:
        health = request("GET", f"{url}/debug/health")
        assert (health.status, json.loads(health.body)) == (200, {})
        assert request("GET", f"{url}/metrics").status == 404


def test_metrics_at_the_configured_path(tmp_path: Path) -> None:
    debug = {
        "addr": f"127.0.0.1:{free_port()}",
        "prometheus": {"enabled": True, "path": "/internal/metrics"},
    }
    with serving(tmp_path, debug, workers=2) as url:
        assert request("GET", f"{url}/metrics").status == 404
        scrape = request("GET", f"{url}/internal/metrics")
        assert scrape.status == 200
        assert b'\nregistry_http_in_flight_requests{handler="blob"} 0.0\n' in scrape.body


def test_the_temporary_metrics_directory_goes_with_the_server(tmp_path: Path) -> None:
    # Made on the tmpfs, where every request's samples are written without reaching a disk.
    def stores() -> set[str]:
        return {name for name in os.listdir("/dev/shm") if name.startswith("cargohold-metrics-")}

    before = stores()
    debug = {"addr": f"127.0.0.1:{free_port()}", "prometheus": {"enabled": True}}
    with serving(tmp_path, debug, workers=2):
        assert len(stores() - before) == 1
    assert stores() - before == set()


def test_a_debug_address_in_use_stops_the_start_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            cargohold_argv("serve", "--workers", "1"),
            env={
                **os.environ,
                "REGISTRY_HTTP_ADDR": f"127.0.0.1:{free_port()}",
                "REGISTRY_HTTP_DEBUG_ADDR": f"127.0.0.1:{port}",
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "root"),
            },
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"cargohold: config: http.debug.addr: cannot listen on 127.0.0.1:{port}")
