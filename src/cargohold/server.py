"""``cargohold serve``: N worker processes answering on one port.

Each worker binds its own listening socket with SO_REUSEPORT, so the kernel
spreads connections across the processes, and serves it with a ``Listener``
(``api/listener.py``). Nothing a request needs lives in a worker's memory
(``docs/ARCHITECTURE.md``, invariant 5), so any worker can answer any request.
The supervisor only forks, forwards signals and restarts a worker that dies.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import ssl
import sys

from cargohold.api.app import create_app
from cargohold.api.listener import Listener
from cargohold.auth import check_config as check_auth
from cargohold.config import Config, load_config
from cargohold.errors import ConfigError, StorageUnavailable
from cargohold.log import add_fields, setup_logging
from cargohold.storage.driver import create_driver

log = logging.getLogger("cargohold.server")


def listen_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` that other workers may share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def _ssl_context(config: Config) -> ssl.SSLContext | None:
    tls = config.http.tls
    if tls is None or not tls.certificate:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(tls.certificate, tls.key or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("http.tls", f"cannot load certificate and key: {exc}") from exc
    return context


async def _serve(config: Config, sock: socket.socket, use_fast_path: bool) -> None:
    listener = Listener(
        create_app(config), fast_path=use_fast_path, ssl_context=_ssl_context(config)
    )
    await listener.start(sock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await listener.close()


def _address(config: Config) -> tuple[str, int]:
    return config.http.listen_host or "0.0.0.0", config.http.listen_port


def _run_worker(config: Config, sock: socket.socket | None = None, fast_path: bool = True) -> None:
    if sock is None:
        sock = listen_socket(*_address(config))
    asyncio.run(_serve(config, sock, fast_path))


async def _check_storage(config: Config) -> None:
    storage = config.storage
    driver = create_driver(storage.driver_name, storage.driver_parameters.model_dump())
    try:
        await driver.check()
    except StorageUnavailable as exc:
        raise ConfigError(f"storage.{storage.driver_name}", exc.detail or str(exc)) from exc
    finally:
        await driver.close()


def serve(
    config: Config, workers: int, *, fast_path: bool = True, config_path: str | None = None
) -> int:
    """Serve until SIGINT or SIGTERM; returns the exit status.

    With several workers this process becomes the supervisor (``supervisor.py``):
    it replaces itself with a lean interpreter that forks the workers, so none of
    them carries what only the command line needed, and the supervisor holds
    almost nothing.
    """
    host, port = _address(config)
    # Start-up errors stop the server here, with one line, rather than crash each worker.
    _ssl_context(config)
    check_auth(config)
    asyncio.run(_check_storage(config))
    try:
        probe = listen_socket(host, port)
    except OSError as exc:
        raise ConfigError("http.addr", f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    scheme = "https" if config.http.tls and config.http.tls.certificate else "http"
    bound = probe.getsockname()[1]
    if workers <= 1 or port == 0:
        # One process (or an ephemeral port, which workers could not share).
        log.info("listening on %s://%s:%d with 1 worker", scheme, host, bound)
        _run_worker(config, probe, fast_path)
        return 0
    # Workers bind their own sockets; the probe must not take connections.
    probe.close()
    log.info("listening on %s://%s:%d with %d workers", scheme, host, port, workers)
    for handler in logging.getLogger().handlers:
        handler.flush()
    argv = [sys.executable, "-m", "cargohold.supervisor", str(workers)]
    argv += ["--fast-path" if fast_path else "--no-fast-path", config_path or ""]
    os.execv(sys.executable, argv)


def run_worker(config_path: str | None, fast_path: bool) -> None:
    """A worker process: read the configuration again, then serve on a port of its own."""
    config = load_config(config_path)
    setup_logging(config.log.level, config.log.formatter, config.log.fields)
    add_fields({"pid": os.getpid()})
    _run_worker(config, fast_path=fast_path)
