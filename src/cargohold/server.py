"""``cargohold serve``: worker processes answering on one address.

Each worker binds its own listening socket with SO_REUSEPORT, so the kernel
spreads connections across the processes, and serves it with a ``Listener``
(``api/listener.py``). Nothing a request needs lives in a worker's memory
(``docs/ARCHITECTURE.md``, invariant 5), so any worker can answer any request.
The supervisor only forks, forwards signals and restarts a worker that dies.

Two configurations run one process whatever ``--workers`` says by default:
``inmemory`` storage (the content lives in that process's memory; asking for
more workers is refused) and ``http.net: unix`` (one socket file).

On SIGTERM or SIGINT a worker stops accepting, closes idle connections, and
lets the requests under way finish for up to ``http.draintimeout``; those
still running then are cut, each logged. As in Distribution, no drain time
(the default) means they are cut at once.

Every process raises its limit of open files to the hard limit at start: each
connection is a descriptor. Running out anyway is survived: asyncio stops
accepting for a second and tries again, and the worker logs it once a minute
(with how often it happened), serving the connections it has meanwhile.

With ``http.debug.addr`` every worker also listens there (``api/debug.py``).
With metrics on, each worker records them in a store of its own in one
directory (``metrics/store.py``): ``$CARGOHOLD_METRICS_DIR`` when set (the
counters then carry on across restarts), else a temporary one removed when
the server stops. A scrape on any worker reads them all.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import resource
import signal
import socket
import ssl
import stat
import tempfile

from cargohold.api.tls import server_context
from cargohold.auth import check_config as check_auth
from cargohold.config import Config
from cargohold.errors import ConfigError, StorageUnavailable
from cargohold.heaptrim import keep_trimmed
from cargohold.log import Recurring, add_fields
from cargohold.metrics import METRICS_DIR, METRICS_DIR_MADE, remove_metrics_dir
from cargohold.storage.driver import create_driver
from cargohold.supervisor import supervise
from cargohold.tracing import check_environment as check_tracing_environment
from cargohold.tracing import from_environment
from cargohold.ui.session import KEY_VARIABLE as UI_KEY_VARIABLE
from cargohold.unsupported import check_supported

log = logging.getLogger("cargohold.server")

#: What an accept fails with when descriptors (or kernel memory) run out.
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to its hard limit; returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError) as exc:  # a sandbox may forbid it: serve with what there is
            log.debug("open files: kept at %d, not raised to %d: %s", soft, hard, exc)
            return soft
        log.debug("open files: limit raised from %d to %d", soft, hard)
        return hard
    log.debug("open files: limit %d", soft)
    return soft


def _survive_exhaustion(loop: asyncio.AbstractEventLoop) -> None:
    """Log, once a minute, the accepts that fail for want of descriptors; anything else as before.

    asyncio itself stops accepting on such a listening socket for a second and
    then tries again; it would log each failure with a traceback.
    """
    recurring = Recurring(log)

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
        exc = context.get("exception")
        if (
            isinstance(exc, OSError)
            and exc.errno in _EXHAUSTED
            and "accept" in str(context.get("message", ""))
        ):
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            recurring.warning(
                "accept",
                "cannot accept connections: %s (open files limit %d); serving those open, "
                "accepting again in a second",
                exc.strerror,
                limit,
            )
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(handler)


def listen_socket(config: Config) -> socket.socket:
    """A listening socket on ``http.addr`` (TCP ones shareable by other workers)."""
    http = config.http
    if http.net == "unix":
        return _unix_socket(http.addr)
    return _tcp_socket("http.addr", http.addr, http.listen_host, http.listen_port, http.net)


def debug_socket(config: Config) -> socket.socket:
    """A listening socket on ``http.debug.addr``, shareable by other workers."""
    debug = config.http.debug
    return _tcp_socket("http.debug.addr", debug.addr, debug.listen_host, debug.listen_port, "tcp")


def _tcp_socket(key: str, addr: str, host: str, port: int, net: str) -> socket.socket:
    if net == "tcp6" or ":" in host:
        family, host = socket.AF_INET6, host or "::"
    else:
        family, host = socket.AF_INET, host or "0.0.0.0"
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and net == "tcp6":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise ConfigError(key, f"cannot listen on {addr}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


def _unix_socket(path: str) -> socket.socket:
    """A listening unix socket at ``path``; a stale socket file left there is replaced."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            with socket.socket(socket.AF_UNIX) as probe:
                if probe.connect_ex(path) == 0:
                    raise ConfigError("http.addr", f"{path}: a server is listening there")
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise ConfigError("http.addr", f"{path}: {exc.strerror}") from exc
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        raise ConfigError("http.addr", f"cannot listen on {path}: {exc.strerror}") from exc
    sock.setblocking(False)
    return sock


def _describe(config: Config, sock: socket.socket, tls: ssl.SSLContext | None) -> str:
    if config.http.net == "unix":
        return f"unix:{config.http.addr}"
    host, port = sock.getsockname()[:2]
    return f"{'https' if tls else 'http'}://{host}:{port}"


async def _serve(
    config: Config,
    sock: socket.socket,
    use_fast_path: bool,
    debug_sock: socket.socket | None = None,
) -> None:
    # Imported here, not at the top: ``serve`` imports them (``preload``) only once its
    # checks have passed, so a configuration refused at start costs none of them.
    from aiohttp import web

    from cargohold.api.app import create_app
    from cargohold.api.debug import create_debug_app
    from cargohold.api.listener import Listener
    from cargohold.metrics.recorders import Metrics
    from cargohold.metrics.store import Store

    prometheus = config.http.debug.prometheus
    directory = os.environ.get(METRICS_DIR) if prometheus.enabled else None
    metrics = None
    if prometheus.enabled:
        path = os.path.join(directory, f"worker-{os.getpid()}.metrics") if directory else None
        metrics = Metrics(Store(path), prometheus.repositories)
    # Made here, in the worker: its exporting thread would not survive a fork.
    tracing = from_environment()
    if tracing is not None:
        tracing.install()
    app = create_app(config, metrics=metrics, tracing=tracing)
    listener = Listener.configured(app, config.http, fast_path=use_fast_path)
    _survive_exhaustion(asyncio.get_running_loop())
    debug: web.AppRunner | None = None
    trimming: asyncio.Task[None] | None = None
    try:
        await listener.start(sock)
        if config.http.debug.addr:
            debug = web.AppRunner(
                create_debug_app(config, app, directory), access_log=None, handle_signals=False
            )
            await debug.setup()
            await web.SockSite(debug, debug_sock or debug_socket(config)).start()
        # What start-up made lives as long as the worker: out of the collector's sight, a
        # collection walks only what requests allocate (with the SDKs imported, a tenth).
        # No collection first: start-up leaves no cycles to free, and a full pass over
        # the imported modules costs 50 ms on the way to the first answer. The collector
        # was off for the start (``cli.serve``); from here on it runs.
        gc.freeze()
        gc.enable()
        trimming = asyncio.create_task(keep_trimmed())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        if trimming is not None:
            trimming.cancel()
        if debug is not None:
            await debug.cleanup()
        await listener.close()
        if metrics is not None:
            metrics.store.close()
        if tracing is not None:
            # In a thread: it sends what is pending, waiting on the collector at most its timeout.
            await asyncio.to_thread(tracing.shutdown)


def _run_worker(
    config: Config,
    sock: socket.socket | None = None,
    fast_path: bool = True,
    debug_sock: socket.socket | None = None,
) -> None:
    if sock is None:
        sock = listen_socket(config)
    asyncio.run(_serve(config, sock, fast_path, debug_sock))


async def _check_storage(config: Config) -> None:
    storage = config.storage
    try:
        driver = create_driver(storage.driver_name, storage.driver_parameters.model_dump())
        try:
            await driver.check()
        finally:
            await driver.close()
    except StorageUnavailable as exc:
        raise ConfigError(f"storage.{storage.driver_name}", exc.detail or str(exc)) from exc


def worker_count(config: Config, asked: int | None) -> int:
    """How many workers to run: ``asked`` (default: one per CPU), where the configuration allows.

    In-memory storage lives in one process: other workers would not see its
    content, so it runs one, and asking for more is refused.
    """
    if config.storage.driver_name == "inmemory":
        if asked is not None and asked > 1:
            raise ConfigError(
                "storage.inmemory",
                f"keeps content in one process's memory: --workers {asked} would split it "
                "(serve it with one worker)",
            )
        return 1
    if config.http.net == "unix":
        return 1
    return asked if asked is not None else (os.cpu_count() or 1)


def serve(
    config: Config,
    workers: int | None = None,
    *,
    fast_path: bool = True,
) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit status.

    With several workers this process becomes the supervisor (``supervisor.py``):
    it imports what the workers need first, so each worker it forks starts
    ready, sharing those pages with the others instead of importing its own copy.
    """
    # Start-up errors stop the server here, with one line, rather than crash each worker.
    check_supported(config)
    raise_open_files_limit()  # before the workers start: they inherit it
    check_tracing_environment()
    count = worker_count(config, workers)
    tls = server_context(config.http.tls)
    check_auth(config)
    asyncio.run(_check_storage(config))
    probe = listen_socket(config)
    debug_probe = debug_socket(config) if config.http.debug.addr else None
    where = _describe(config, probe, tls)
    drain = config.http.draintimeout
    if config.storage.driver_name == "inmemory":
        log.info("inmemory storage: one worker (the content lives in its memory)")
    if debug_probe is not None:
        host, port = debug_probe.getsockname()[:2]
        log.info("debug listener on http://%s:%d", host, port)
    shared = config.http.debug.prometheus.enabled or config.ratelimit.enabled
    if shared and not os.environ.get(METRICS_DIR):
        # In memory where there is a tmpfs: the stores (and the rate limiter's table) are
        # written on every request, and nothing in them needs to reach a disk.
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
        os.environ[METRICS_DIR] = tempfile.mkdtemp(prefix="cargohold-metrics-", dir=shm)
        os.environ[METRICS_DIR_MADE] = "1"
    single = count <= 1 or config.http.net == "unix" or config.http.listen_port == 0
    try:
        if single:
            # One process (or an ephemeral port, which workers could not share).
            log.info("listening on %s with 1 worker; draining for %gs on stop", where, drain)
            _run_worker(config, probe, fast_path, debug_probe)
            return 0
        # Workers bind their own sockets; the probes must not take connections.
        probe.close()
        if debug_probe is not None:
            debug_probe.close()
        log.info("listening on %s with %d workers; draining for %gs on stop", where, count, drain)
        preload(config)
        # The web UI's sessions are signed with a key every worker shares when
        # http.secret is not set.
        os.environ.setdefault(UI_KEY_VARIABLE, os.urandom(32).hex())
        # What the workers inherit is kept out of the collector's sight: a collection
        # in a worker would otherwise write to (and so copy) every page holding it.
        gc.freeze()
        gc.enable()
        return supervise(count, lambda: run_worker(config, fast_path))
    finally:
        remove_metrics_dir()


def preload(config: Config) -> None:
    """Import what a worker imports to serve, so that workers forked after it need not.

    The Redis client is among them when the configuration names a Redis server
    (every use of it, the cache, rate limits and the event spool, makes its client
    with ``client_from_config``): imported in each worker instead, it would cost
    each its own copy of the modules (redis-py brings OpenTelemetry's metrics SDK
    along), and a tenth of a second of CPU on the way to the worker's first answer.
    """
    from aiohttp import web  # noqa: F401

    from cargohold.api.app import create_app  # noqa: F401
    from cargohold.api.debug import create_debug_app  # noqa: F401
    from cargohold.api.listener import Listener  # noqa: F401
    from cargohold.metrics.recorders import Metrics  # noqa: F401
    from cargohold.metrics.store import Store  # noqa: F401

    if config.redis.addresses:
        from cargohold.storage.cache.redis import client_from_config  # noqa: F401


def run_worker(config: Config, fast_path: bool) -> None:
    """A forked worker: serve ``config`` on a listening socket of its own."""
    add_fields({"pid": os.getpid()})
    _run_worker(config, fast_path=fast_path)
