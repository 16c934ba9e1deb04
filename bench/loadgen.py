"""Request-rate load generators: ``wrk`` for GETs, ``ab`` for HEAD, processes for PUTs.

Each returns requests per second and raises ``BenchError`` if any response was
not the one expected: ``wrk`` runs a Lua script that counts non-2xx replies in
every thread, ``ab`` reports failed and non-2xx requests, and the PUT client
counts every status other than 201. Debian's wrk 4.1 hangs on HEAD replies that
carry a Content-Length, so HEAD goes through ApacheBench (``ab -k -i``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.client import BenchError

_WRK_SCRIPT = """\
wrk.method = "GET"
{headers}
local expected = {body_length}
local wanted = {status}
local threads = {{}}
local ports = {{{ports}}}
function setup(thread)
  if #ports > 0 then
    local port = ports[#threads % #ports + 1]
    thread.addr = wrk.lookup("127.0.0.1", tostring(port))[1]
  end
  table.insert(threads, thread)
end
function init(args)
  bad = 0
  first = 0
end
function response(status, headers, body)
  local ok = (wanted == 0 and status >= 200 and status <= 299) or status == wanted
  if not ok or #body ~= expected then
    bad = bad + 1
    if first == 0 then first = status end
  end
end
function done(summary, latency, requests)
  local total, status = 0, 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("bad")
    if status == 0 then status = thread:get("first") end
  end
  io.write(string.format("BENCH bad=%d first=%d\\n", total, status))
  io.write(string.format("BENCH p50=%d p99=%d\\n", latency:percentile(50), latency:percentile(99)))
end
{request}
"""

#: A request function that asks for ``path % i`` with ``i`` drawn from ``range(count)``.
_WRK_REQUEST = """\
local count = {count}
function request()
  return wrk.format(nil, string.format({path}, math.random(0, count - 1)))
end
"""


def _run(argv: list[str], what: str, timeout: float) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: {argv[0]} did not finish within {timeout:.0f} s") from None
    if done.returncode != 0:
        raise BenchError(f"{what}: {argv[0]} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


@dataclass(frozen=True)
class Rate:
    """What a load generator measured: requests per second and latency percentiles."""

    per_second: float
    p50_ms: float
    p99_ms: float


def wrk(
    url: str,
    path: str,
    connections: int,
    duration: float,
    scratch: Path,
    headers: dict[str, str] | None = None,
    body_length: int = 0,
    threads: int = 1,
    status: int | None = None,
) -> float:
    """GET ``url+path`` with ``wrk``; requests per second.

    Raises if any reply is not a 2xx (or has not ``status``, if given) with a body
    of ``body_length`` bytes. One wrk
    thread drives 64 connections at over 80,000 req/s here; a second thread only
    takes CPU from the server on a 2-core machine (cargohold's fast path measured
    ~33,000 req/s with -t2 against ~40,000 with -t1).
    """
    measured = wrk_rate(
        url, path, connections, duration, scratch, headers, body_length, threads, status
    )
    return measured.per_second


def wrk_rate(
    url: str,
    path: str,
    connections: int,
    duration: float,
    scratch: Path,
    headers: dict[str, str] | None = None,
    body_length: int = 0,
    threads: int = 1,
    status: int | None = None,
    spread: int = 0,
    ports: Sequence[int] = (),
) -> Rate:
    """``wrk``, with its latency percentiles; with ``spread``, ``path`` holds one ``%d``
    (printf-style, ``%06d`` say) and each request fills it with a random number below
    ``spread``, so that the requests go to that many different paths. With ``ports``,
    thread ``i`` loads 127.0.0.1 on ``ports[i % len(ports)]`` instead of ``url``'s."""
    lines = [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in (headers or {}).items()]
    request = _WRK_REQUEST.format(count=spread, path=json.dumps(path)) if spread else ""
    script = scratch / "wrk-get.lua"
    script.write_text(
        _WRK_SCRIPT.format(
            headers="\n".join(lines),
            body_length=body_length,
            status=status or 0,
            request=request,
            ports=", ".join(str(port) for port in ports),
        )
    )
    argv = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "60s",
        "-s",
        str(script),
        f"{url}{path % 0 if spread else path}",
    ]
    out = _run(argv, f"wrk GET {path}", duration + 90)
    bench = re.search(r"BENCH bad=(\d+) first=(\d+)", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if bench is None or rate is None:
        raise BenchError(f"wrk GET {path}: unreadable output:\n{out}")
    if int(bench.group(1)):
        raise BenchError(
            f"wrk GET {path}: {bench.group(1)} replies not {status or '2xx'}"
            f" or not {body_length} bytes long"
            f" (first: HTTP {bench.group(2)})"
        )
    errors = re.search(r"Socket errors: (.*)", out)
    if errors:
        raise BenchError(f"wrk GET {path}: socket errors: {errors.group(1)}")
    latency = re.search(r"BENCH p50=(\d+) p99=(\d+)", out)
    if latency is None:
        raise BenchError(f"wrk GET {path}: no latency in its output:\n{out}")
    p50, p99 = (int(latency.group(i)) / 1000 for i in (1, 2))  # microseconds
    return Rate(float(rate.group(1)), p50, p99)


def ab_head(
    url: str, path: str, connections: int, duration: float, redirects: bool = False
) -> float:
    """HEAD ``url+path`` with ``ab -k -i``; requests per second (raises on any failure).

    With ``redirects`` every reply must be a non-2xx one (ab counts them, but does
    not tell a 307 from a 500: the caller checked before the run that the server
    answers 307, and a server that fails logs it).
    """
    return ab_head_rate(url, path, connections, duration, redirects).per_second


def ab_head_rate(
    url: str, path: str, connections: int, duration: float, redirects: bool = False
) -> Rate:
    """``ab_head``, with its latency percentiles (from its CSV of percentiles: the
    table it prints rounds to whole milliseconds)."""
    with tempfile.NamedTemporaryFile(suffix=".csv") as csv:
        # -t sets a request cap of 50000 unless -n comes after it.
        argv = ["ab", "-q", "-k", "-i", "-c", str(connections), "-t", str(max(1, round(duration)))]
        argv += ["-e", csv.name, "-n", "100000000", f"{url}{path}"]
        out = _run(argv, f"ab HEAD {path}", duration + 90)
        served = dict(line.split(",") for line in Path(csv.name).read_text().splitlines()[1:])
    rate = re.search(r"Requests per second:\s+([\d.]+)", out)
    complete = re.search(r"Complete requests:\s+(\d+)", out)
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    if rate is None or complete is None or failed is None:
        raise BenchError(f"ab HEAD {path}: unreadable output:\n{out}")
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    if redirects:
        redirected = int(non2xx.group(1)) if non2xx else 0
        if int(failed.group(1)) or redirected != int(complete.group(1)):
            raise BenchError(
                f"ab HEAD {path}: failed {failed.group(1)}, {redirected} of"
                f" {complete.group(1)} redirected, all expected"
            )
    elif int(failed.group(1)) or non2xx:
        raise BenchError(
            f"ab HEAD {path}: failed {failed.group(1)}, non-2xx {non2xx and non2xx.group(1)}"
        )
    if int(complete.group(1)) == 0:
        raise BenchError(f"ab HEAD {path}: no request completed")
    return Rate(float(rate.group(1)), float(served["50"]), float(served["99"]))


def put_manifests(
    url: str,
    repo: str,
    processes: int,
    concurrency: int,
    count: int,
    prefix: str,
    config: Path,
    layer: Path,
) -> tuple[float, float, float]:
    """PUT ``count`` distinct manifests from ``processes`` x ``concurrency`` clients.

    Returns 201s per second, the seconds from the common start to the last reply,
    and the CPU seconds the processes spent starting up.
    """
    start_at = time.time() + 1.5  # time for the processes to import aiohttp and connect
    argv = [sys.executable, "-m", "bench.putload", url, repo, str(concurrency), f"{start_at}"]
    children = [
        subprocess.Popen(
            [*argv, prefix, str(i), str(processes), str(count), str(config), str(layer)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        for i in range(processes)
    ]
    created, finished, startup_cpu = 0, start_at, 0.0
    bad: dict[str, int] = {}
    failures: list[str] = []
    for child in children:
        out, err = child.communicate(timeout=600)
        if child.returncode != 0:
            failures.append(f"exit {child.returncode}: {err.strip()[-500:]}")
            continue
        result = json.loads(out)
        created += result["created"]
        finished = max(finished, result["finished"])
        startup_cpu += result["startup_cpu"]
        for status, number in result["bad"].items():
            bad[status] = bad.get(status, 0) + number
    if failures:
        raise BenchError(f"PUT manifests: client failed: {failures[0]}")
    if bad or created != count:
        raise BenchError(f"PUT manifests: {created} of {count} answered 201; others: {bad}")
    seconds = finished - start_at
    return created / seconds, seconds, startup_cpu
