"""``cargohold serve``: the HTTP server, its workers, and its start-up errors."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.http import location as location_of
from tests.support.http import request, with_query
from tests.support.servers import cargohold, cargohold_argv, free_port, running, stop
from tests.support.waiting import wait_until


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, dict(response.headers), response.read()


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(child) for child in text)
    return found


def test_base_endpoint_says_registry_v2(tmp_path: Path) -> None:
    with cargohold(tmp_path / "root") as url:
        status, headers, body = get(f"{url}/v2/")
    assert status == 200
    assert json.loads(body) == {}
    assert headers["Content-Type"] == "application/json"
    assert headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_workers_are_separate_processes_on_one_port(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path),
    }
    argv = cargohold_argv("serve", "--workers", "3")
    with running(argv, f"http://127.0.0.1:{port}/v2/", env=env) as server:
        deadline = time.monotonic() + 10
        while len(children(server.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = children(server.pid)
        assert len(workers) == 3
        for _ in range(20):
            assert get(f"http://127.0.0.1:{port}/v2/")[0] == 200
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
        )


def test_without_config_it_serves_127_0_0_1_port_5000_from_var_registry(tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    with running(
        cargohold_argv("serve", "--workers", "1"),
        "http://127.0.0.1:5000/v2/",
        env=environ,
        cwd=tmp_path,
    ):
        status, _, body = get("http://127.0.0.1:5000/v2/")
    assert (status, body) == (200, b"{}")


@pytest.mark.parametrize(
    ("config", "env", "message"),
    [
        (
            "version: 0.1\nstorage: {filesystem: {rootdirectoy: /x}}\n",
            {},
            "cargohold: config: storage.filesystem.rootdirectoy: unknown setting",
        ),
        (
            "version: 0.1\nstorage: inmemory\nhttp: {addr: [1, 2]}\n",
            {},
            "cargohold: config: http.addr",
        ),
        (
            "version: 0.1\nstorage: {filesystem: {}, inmemory: {}}\n",
            {},
            "cargohold: config: storage",
        ),
        ("version: 0.1\nstorage: inmemory\n  bad: [indent\n", {}, "cargohold: config:"),
        (
            "version: 0.1\nstorage: inmemory\n",
            {"REGISTRY_HTTP_DRAINTIMEOUT": "soon"},
            "cargohold: config: http.draintimeout",
        ),
    ],
)
def test_a_bad_setting_exits_2_with_one_line_naming_it(
    tmp_path: Path, config: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "config.yml"
    path.write_text(config)
    result = subprocess.run(
        cargohold_argv("serve", str(path)),
        env={**os.environ, **env},
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(message)
    assert "Traceback" not in result.stderr.decode()


def test_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = subprocess.run(
        cargohold_argv("serve", str(tmp_path / "absent.yml")), capture_output=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stderr.decode().strip().endswith("file not found")


def test_a_port_in_use_exits_2(tmp_path: Path) -> None:
    import socket

    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = subprocess.run(
            cargohold_argv("serve"),
            env={
                **os.environ,
                "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
                "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path),
            },
            capture_output=True,
            timeout=30,
        )
    assert result.returncode == 2
    assert "cannot listen on 127.0.0.1" in result.stderr.decode()


def s3_config(tmp_path: Path, parameters: dict[str, object]) -> Path:
    import yaml

    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump({"version": "0.1", "storage": {"s3": parameters}}))
    return path


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"bucket": "no-such-bucket"}, "does not exist"),
        ({"secretkey": "wrong"}, "denied"),
        ({"regionendpoint": "http://127.0.0.1:9"}, "cannot reach"),
    ],
)
def test_unusable_object_storage_exits_2_with_one_line(
    tmp_path: Path, s3_parameters: dict[str, object], change: dict[str, str], reason: str
) -> None:
    config = s3_config(tmp_path, {**s3_parameters, **change})
    result = subprocess.run(
        cargohold_argv("serve", str(config)),
        env={
            **os.environ,
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{free_port()}",
            "AWS_MAX_ATTEMPTS": "1",
        },
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("cargohold: config: storage.s3: ")
    assert reason in lines[0]


def test_an_unwritable_filesystem_root_exits_2(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    result = subprocess.run(
        cargohold_argv("serve"),
        env={
            **os.environ,
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{free_port()}",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path / "a-file" / "root"),
        },
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.decode().startswith("cargohold: config: storage.filesystem: cannot create")


def test_a_worker_that_dies_is_replaced(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path),
    }
    with running(
        cargohold_argv("serve", "--workers", "2"), f"http://127.0.0.1:{port}/v2/", env=env
    ) as server:
        deadline = time.monotonic() + 10
        while len(children(server.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(5.5)  # older than the supervisor's "died right after starting"
        victim = children(server.pid)[0]
        os.kill(victim, 9)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = children(server.pid)
            if len(now) == 2 and victim not in now:
                break
            time.sleep(0.05)
        assert len(children(server.pid)) == 2
        assert victim not in children(server.pid)
        for _ in range(10):
            assert get(f"http://127.0.0.1:{port}/v2/")[0] == 200


def test_workers_that_die_right_after_starting_stop_the_server(tmp_path: Path) -> None:
    port = free_port()
    server = subprocess.Popen(
        cargohold_argv("serve", "--workers", "2"),
        env={
            **os.environ,
            "REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}",
            "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(tmp_path),
        },
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        # A worker killed as soon as it is forked dies as one that cannot start would (a
        # port taken, a certificate gone): restarting it would only fail again.
        wait_until(lambda: bool(children(server.pid)), within=30, what="no worker started")
        os.kill(children(server.pid)[0], 9)
        assert server.wait(timeout=30) == 1
        assert server.stderr is not None
        with server.stderr:
            assert b"right after starting" in server.stderr.read()
    finally:
        stop(server)
        if server.stderr is not None:
            server.stderr.close()


# The supervisor's own SIGTERM handler is installed when it forks; the child pauses right
# after the fork, the way a loaded machine may leave it unscheduled, and is sent SIGTERM then.
_SIGNALLED_AT_ONCE = """
import os, signal, time
from cargohold import supervisor

os.register_at_fork(after_in_child=lambda: time.sleep(0.3))
signal.signal(signal.SIGTERM, lambda signum, frame: None)
pid = supervisor._fork_worker(lambda: time.sleep(30))
os.kill(pid, signal.SIGTERM)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


def test_a_worker_sent_sigterm_before_it_has_its_own_handlers_still_stops() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _SIGNALLED_AT_ONCE], capture_output=True, text=True, timeout=20
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(-15)], "ended by the SIGTERM, not by finishing its work"


# -- where it listens, and how many workers ------------------------------------------------


def curl_unix(socket_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["curl", "-sS", "--unix-socket", str(socket_path), *args],
        capture_output=True,
        timeout=30,
        check=False,
    )


@contextmanager
def serving_unix(socket_path: Path, root: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {
        **os.environ,
        "REGISTRY_HTTP_NET": "unix",
        "REGISTRY_HTTP_ADDR": str(socket_path),
        "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY": str(root),
    }
    process = subprocess.Popen(
        cargohold_argv("serve"),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while curl_unix(socket_path, "http://localhost/v2/").returncode != 0:
            assert process.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "nothing answered on the unix socket"
            time.sleep(0.05)
        yield process
    finally:
        stop(process)


def test_http_net_unix_serves_on_a_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "registry.sock"
    # A socket file left by a server that died is replaced, as nothing listens there.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(socket_path))
    stale.close()
    blob = b"over a unix socket"
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    with serving_unix(socket_path, tmp_path / "root") as server:
        assert children(server.pid) == [], "one process: a unix socket is not shared"
        version = curl_unix(socket_path, "-i", "http://localhost/v2/")
        assert version.stdout.startswith(b"HTTP/1.1 200")
        assert version.stdout.endswith(b"\r\n\r\n{}")
        pushed = curl_unix(
            socket_path,
            *("-o", "/dev/null", "-w", "%{http_code}", "--data-binary", blob.decode()),
            *("-H", "Content-Type: application/octet-stream"),
            f"http://localhost/v2/unix/blobs/uploads/?digest={digest}",
        )
        assert pushed.stdout == b"201"
        pulled = curl_unix(socket_path, f"http://localhost/v2/unix/blobs/{digest}")
        assert pulled.stdout == blob


def test_inmemory_storage_runs_one_worker_and_every_request_agrees(tmp_path: Path) -> None:
    port = free_port()
    env = {"REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}", "REGISTRY_STORAGE": "inmemory"}
    log = tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    with running(cargohold_argv("serve"), f"{url}/v2/", env=env, log=log) as server:
        assert children(server.pid) == []
        started = request("POST", f"{url}/v2/mem/blobs/uploads/")
        assert started.status == 202
        location = location_of(started, url)
        data = b"all in one process"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        # Each request on a connection of its own: with several workers they would spread.
        for _ in range(8):
            assert request("GET", location).status == 204
        finished = request("PUT", with_query(location, f"digest={digest}"), body=data)
        assert finished.status == 201
        for _ in range(8):
            assert request("GET", f"{url}/v2/mem/blobs/{digest}").body == data
            listed = request("GET", f"{url}/v2/mem/tags/list")
            assert (listed.status, json.loads(listed.body)) == (200, {"name": "mem", "tags": []})
    assert "inmemory storage: one worker" in log.read_text()


def test_inmemory_storage_with_several_workers_is_refused() -> None:
    result = subprocess.run(
        cargohold_argv("serve", "--workers", "2"),
        env={**os.environ, "REGISTRY_STORAGE": "inmemory", "REGISTRY_HTTP_ADDR": "127.0.0.1:0"},
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 2
    (line,) = result.stderr.decode().splitlines()
    assert line.startswith("cargohold: config: storage.inmemory: ")
    assert "--workers 2" in line


def test_a_tls_hello_on_a_plain_port_is_one_debug_line(tmp_path: Path) -> None:
    """skopeo probes HTTPS first: its hello is junk to a plain port, answered and noted once."""
    log = tmp_path / "server.log"
    env = {"REGISTRY_LOG_LEVEL": "debug"}
    with cargohold(tmp_path / "root", env=env, log=log) as url:
        host, port = url.removeprefix("http://").split(":")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection((host, int(port))) as sock, pytest.raises(ssl.SSLError):
            context.wrap_socket(sock, server_hostname=host)
        deadline = time.monotonic() + 10
        while "HTTPS" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
    text = log.read_text()
    assert "Traceback" not in text
    (line,) = [line for line in text.splitlines() if "HTTPS" in line]
    assert " level=debug " in line
    assert "Received HTTPS traffic on an HTTP port" in line
    info = [line for line in text.splitlines() if " level=info " in line]
    assert not [line for line in info if " 400 " in line or "UNKNOWN" in line], info


# A worker started as `cargohold serve` leaves it: the collector off for the start.
# A thread reports the collector's state once the worker answers, then stops it.
WORKER_GC_SCRIPT = """
import gc, os, signal, sys, threading, time, urllib.request
from cargohold.config import parse_config
from cargohold.server import run_worker

gc.disable()
config = parse_config(sys.argv[1])

def report():
    while True:
        try:
            urllib.request.urlopen(sys.argv[2], timeout=1).close()
            break
        except OSError:
            time.sleep(0.01)
    print(gc.isenabled(), gc.get_freeze_count() > 0, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)

threading.Thread(target=report, daemon=True).start()
run_worker(config, True)
"""


def test_a_worker_serves_with_the_collector_on_and_its_start_frozen(tmp_path: Path) -> None:
    """The start runs with the collector off; a worker that answers has it on again, and
    what the start made is frozen out of its passes."""
    port = free_port()
    document = (
        "version: 0.1\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
        f"storage: {{filesystem: {{rootdirectory: '{tmp_path / 'root'}'}}}}\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", WORKER_GC_SCRIPT, document, f"http://127.0.0.1:{port}/v2/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True"]
