"""No event of an acknowledged write is lost: not to SIGKILL, not to a process gone for good.

Real ``cargohold serve`` processes on one filesystem storage, a real receiver
that takes each event slowly, so that deliveries are under way when a
process is killed. Afterwards, every push a client was told succeeded has
reached the receiver at least once, and, counting each event's first
arrival, in the order the pushes were acknowledged.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import yaml

from cargohold.notifications.spool import LOCK
from tests.support.http import request
from tests.support.servers import cargohold_argv, free_port, running
from tests.support.waiting import wait_until
from tests.support.webhooks import Receiver, webhook_receiver


def write_config(path: Path, root: Path, receiver: Receiver) -> Path:
    endpoint = {"name": "hook", "url": receiver.url, "timeout": "2s", "backoff": "100ms"}
    config = {
        "version": "0.1",
        "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(root)}},
        "notifications": {"endpoints": [endpoint]},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def serving(config: Path, workers: int = 1) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = cargohold_argv("serve", str(config), "--workers", str(workers))
    env = {"REGISTRY_HTTP_ADDR": f"127.0.0.1:{port}"}
    with running(argv, f"{url}/v2/", env=env) as process:
        yield url, process


def push_blob(url: str, name: str, number: int) -> str:
    data = f"blob {number} {os.urandom(8).hex()}".encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    reply = request("POST", f"{url}/v2/{name}/blobs/uploads/?digest={digest}", body=data)
    assert reply.status == 201, reply.body
    return digest


def first_arrivals(receiver: Receiver) -> list[str]:
    """Each event's digest, at its first arrival (a redelivery repeats an id)."""
    seen: set[str] = set()
    order = []
    for event in receiver.events():
        if event["id"] not in seen:
            seen.add(event["id"])
            order.append(event["target"]["digest"])
    return order


def kill(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def owns(process: subprocess.Popen[bytes], pid: int | None) -> bool:
    """Whether ``pid`` is ``process`` or one of its workers."""
    if pid is None:
        return False
    if pid == process.pid:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return int(stat.rsplit(")", 1)[1].split()[1]) == process.pid


def lock_holder(spool: Path) -> int | None:
    """The pid holding the spool's delivery lock, as the kernel lists it (``/proc/locks``)."""
    inode = os.stat(spool / LOCK).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "FLOCK" in fields and fields[-3].endswith(f":{inode}"):
            return int(fields[-4])
    return None


def test_a_sigkill_mid_delivery_loses_no_event(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with webhook_receiver() as receiver:
        receiver.delay = 0.05  # each event takes a while: deliveries are under way
        config = write_config(tmp_path / "config.yml", root, receiver)
        acknowledged: list[str] = []
        for round in range(3):
            with serving(config, workers=2) as (url, process):
                for number in range(15):
                    acknowledged.append(push_blob(url, "crash/app", 15 * round + number))
                kill(process)  # events are still waiting in the spool, or mid-POST
            assert len(first_arrivals(receiver)) < len(acknowledged)
        with serving(config):
            wait_until(
                lambda: len(first_arrivals(receiver)) >= len(acknowledged),
                60,
                "events were lost",
            )
        assert first_arrivals(receiver) == acknowledged


def test_two_processes_one_killed_for_good_every_event_once_delivered(tmp_path: Path) -> None:
    root = tmp_path / "root"
    spool = root / "cargohold" / "notifications"
    with webhook_receiver() as receiver, ExitStack() as stack:
        receiver.delay = 0.02
        config = write_config(tmp_path / "config.yml", root, receiver)
        first = stack.enter_context(serving(config))
        second = stack.enter_context(serving(config))
        acknowledged = []
        for number in range(20):
            url = (first, second)[number % 2][0]
            acknowledged.append(push_blob(url, "pair/app", number))
        wait_until(lambda: lock_holder(spool) is not None, 20, "no process delivers")
        holder = lock_holder(spool)
        victim, survivor = (first, second)
        if not owns(first[1], holder):
            victim, survivor = second, first
        assert owns(victim[1], holder)
        kill(victim[1])  # the deliverer dies for good, events still pending
        for number in range(20, 30):
            acknowledged.append(push_blob(survivor[0], "pair/app", number))
        wait_until(
            lambda: len(first_arrivals(receiver)) >= len(acknowledged), 60, "events were lost"
        )
        assert sorted(first_arrivals(receiver)) == sorted(acknowledged)
        assert owns(survivor[1], lock_holder(spool))
        # every event was sent once per receiver, not once per process
        ids = [event["id"] for event in receiver.events()]
        assert len(ids) - len(set(ids)) <= 1  # at most the one POST under way at the kill
