"""A real cargohold registry on a free loopback port, for tests.

::

    from cargohold.testing import serve

    with serve() as registry:
        registry.push_image("team/app", "v1")
        subprocess.run(["skopeo", "inspect", f"docker://{registry.host}/team/app:v1", ...])

The registry is the application ``cargohold serve`` runs (``create_app`` on a
``Listener``), in this process, on an event loop of its own in a thread: the
same object works in a ``with`` block and in an ``async with`` block, and
its helpers (``push_image``, ``push_index``, ``push_artifact``) can be called
from either. Nothing reads the process environment (``REGISTRY_*``) or uses
the current directory: the configuration is built here from the options, and
files it needs (an htpasswd file, a certificate authority) go in a temporary
folder removed at the end.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import errno
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml

from cargohold.client.auth import Credentials
from cargohold.client.registry import RemoteRegistry
from cargohold.config import Config, parse_config
from cargohold.descriptor import Descriptor
from cargohold.testing import content
from cargohold.testing.faults import Faults, LoggedRequest, RequestLog

__all__ = ["ExternalRegistry", "Registry", "serve"]

_T = TypeVar("_T")

#: The realm htpasswd users are challenged with.
REALM = "cargohold.testing"


def _merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``, section by section (a value that is not a mapping wins)."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _htpasswd(users: Mapping[str, str]) -> str:
    """An htpasswd file's text, as ``htpasswd -B`` writes it (at the lowest cost: tests)."""
    import bcrypt

    lines = []
    for user, password in users.items():
        if not user or ":" in user:
            raise ValueError(f"users: {user!r} is not a user name")
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
        lines.append(f"{user}:{hashed}\n")
    return "".join(lines)


class _Reachable:
    """What a test uses of a registry, served here or elsewhere: where it is, how to sign
    in, a client, and the seeding helpers (run by ``call``)."""

    credentials: Credentials | None
    ca_file: Path | None

    @property
    def url(self) -> str:
        raise NotImplementedError

    def basic_auth(self) -> dict[str, str]:
        """The ``Authorization`` header of ``credentials`` (empty without users)."""
        if self.credentials is None:
            return {}
        pair = f"{self.credentials.username}:{self.credentials.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode()}

    def client(self) -> RemoteRegistry:
        """A client of this registry for the caller's event loop (``async with`` it)."""
        return RemoteRegistry(
            self.url,
            credentials=self.credentials,
            ca_file=str(self.ca_file) if self.ca_file is not None else None,
            insecure=self.url.startswith("http://"),
            environ={},
        )

    def push_image(self, name: str, tag: str | None = None, **options: Any) -> Descriptor:
        """``content.push_image`` on this registry; the manifest's descriptor."""
        return self.call(content.push_image, name, tag, **options)

    def push_index(self, name: str, tag: str | None = None, **options: Any) -> Descriptor:
        """``content.push_index`` on this registry; the index's descriptor."""
        return self.call(content.push_index, name, tag, **options)

    def push_artifact(self, name: str, tag: str | None = None, **options: Any) -> Descriptor:
        """``content.push_artifact`` on this registry; the artifact manifest's descriptor."""
        return self.call(content.push_artifact, name, tag, **options)

    def call(self, work: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        """``await work(client, *args, **kwargs)``; the result."""
        raise NotImplementedError


class Registry(_Reachable):
    """A registry served in this process until its ``with`` block (or ``stop``) ends.

    - ``url``: ``http://127.0.0.1:PORT`` (``https`` with ``tls``); ``host``:
      ``127.0.0.1:PORT``, as image references name it; ``port``.
    - ``ca_file``: with ``tls``, the certificate authority to trust.
    - ``credentials``: with ``users``, the first user's.
    - ``faults``: faults to inject (``Faults``); ``requests``: what it was asked.
    - ``config``: the configuration it runs.
    """

    def __init__(
        self,
        config: Config,
        *,
        fast_path: bool,
        credentials: Credentials | None,
        ca_file: Path | None,
        folder: Path,
        tls: tuple[Path, Path] | None,
        sock: socket.socket,
    ) -> None:
        self.config = config
        self._sock: socket.socket | None = sock
        self.credentials = credentials
        self.ca_file = ca_file
        self._log = RequestLog()
        # A folder's large blobs go out through the kernel, where no cut can count them.
        self.faults = Faults(self._log, cuttable=config.storage.driver_name == "inmemory")
        self._fast_path = fast_path
        self._folder = folder
        self._tls = tls
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Event | None = None
        self._client: RemoteRegistry | None = None
        self.port = sock.getsockname()[1]
        #: Seconds ``start`` took: from the call until the registry listened, ready.
        self.startup_seconds = 0.0

    # -- where it is ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{self.host}"

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request answered so far, in order of their answers."""
        return self._log.entries()

    # -- seeding ---------------------------------------------------------------------------

    def call(self, work: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        """``await work(client, *args, **kwargs)`` on the registry's own loop, with its client;
        the result. Callable from any thread (not from the registry's loop itself)."""
        return self._run(self._with_client(work, *args, **kwargs))

    async def _with_client(
        self, work: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any
    ) -> _T:
        if self._client is None:
            self._client = self.client()
        return await work(self._client, *args, **kwargs)

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        loop = self._loop
        if loop is None:
            coroutine.close()
            raise RuntimeError("the registry is not running")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    # -- running ---------------------------------------------------------------------------

    def start(self) -> Registry:
        """Serve from a thread of its own; returns once it answers."""
        begun = time.perf_counter()
        sock, self._sock = self._sock, None
        if sock is None:
            raise RuntimeError("a registry starts once")
        ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._serve, args=(sock, ready), name=f"cargohold.testing:{self.port}"
        )
        self._thread.daemon = True
        self._thread.start()
        try:
            ready.result()
        except BaseException:
            self._thread.join()
            raise
        self.startup_seconds = time.perf_counter() - begun
        return self

    def stop(self) -> None:
        """Stop serving, and remove the temporary files."""
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None:
            loop.call_soon_threadsafe(stopped.set)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._sock is not None:  # made, never started
            self._sock.close()
            self._sock = None
        shutil.rmtree(self._folder, ignore_errors=True)

    def _serve(self, sock: socket.socket, ready: Future[None]) -> None:
        asyncio.run(self._main(sock, ready))

    async def _main(self, sock: socket.socket, ready: Future[None]) -> None:
        from cargohold.api.app import create_app
        from cargohold.api.listener import Listener

        try:
            app = create_app(self.config, hooks=[self._log])
            app.middlewares.append(self.faults.middleware)
            listener = Listener.configured(
                app, self.config.http, fast_path=self._fast_path, shutdown_timeout=0.5
            )
            await listener.start(sock)
        except BaseException as exc:
            sock.close()
            ready.set_exception(exc)
            return
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        ready.set_result(None)
        try:
            await self._stopped.wait()
        finally:
            if self._client is not None:
                await self._client.close()
            await listener.close()
            self._loop = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise OSError(
            exc.errno or errno.EADDRNOTAVAIL, f"cannot listen on 127.0.0.1 (a free port): {exc}"
        ) from exc
    sock.setblocking(False)
    return sock


class serve:
    """Serve a registry for the block: ``with serve(...) as registry`` or ``async with``.

    - ``root``: a folder to keep the storage in (filesystem storage, as
      ``cargohold serve`` lays it out); None: in memory.
    - ``delete``: whether manifests and blobs may be deleted (on by default).
    - ``read_only``: refuse every write.
    - ``users``: user names and passwords: the registry asks for them (htpasswd,
      Basic); ``registry.credentials`` are the first user's.
    - ``token``: with ``users``, bearer tokens instead of Basic, from cargohold's
      own token server at ``/auth/token`` (its signing key made for it), as
      docker's token authentication works.
    - ``tls``: serve HTTPS with a certificate from an authority made for it
      (``registry.ca_file``).
    - ``config``: settings in ``config.yml``'s shape laid over the ones these
      options make (``{"validation": {"disabled": True}}``); one that
      contradicts an option is refused.
    - ``fast_path``: answer the commonest reads on cargohold's fast path, as
      ``cargohold serve`` does. Off by default: ``faults`` apply where
      aiohttp answers (the request log hears both).

    Conflicting options raise ``ValueError`` before anything starts; a bad
    setting in ``config``, ``cargohold.errors.ConfigError``.
    """

    def __init__(
        self,
        *,
        root: str | Path | None = None,
        delete: bool = True,
        read_only: bool = False,
        users: Mapping[str, str] | None = None,
        tls: bool = False,
        token: bool = False,
        config: Mapping[str, Any] | None = None,
        fast_path: bool = False,
    ) -> None:
        overlay = dict(config or {})
        if token and not users:
            raise ValueError("token=True needs users: the token server signs them in")
        if token and "tokenserver" in overlay:
            raise ValueError("config sets tokenserver, and so does token=True")
        for key, option in (("storage", root is not None), ("auth", users), ("http", tls)):
            section = overlay.get(key)
            if not option or not isinstance(section, Mapping):
                continue
            clash = {"storage": "filesystem", "auth": "htpasswd", "http": "tls"}[key]
            if clash in section or (key == "auth" and section):
                raise ValueError(f"config sets {key}.{clash}, and so does an option of serve()")
        if users is not None and not users:
            raise ValueError("users: give at least one user, or None for no authentication")
        if read_only and "maintenance" in overlay.get("storage", {}):
            maintenance = overlay["storage"]["maintenance"]
            if maintenance.get("readonly", {}).get("enabled") is False:
                raise ValueError("read_only=True, and config sets readonly.enabled: false")
        self._options = (root, delete, read_only, users, tls, token, overlay, fast_path)
        self._registry: Registry | None = None

    def _make(self) -> Registry:
        root, delete, read_only, users, tls, token, overlay, fast_path = self._options
        folder = Path(tempfile.mkdtemp(prefix="cargohold-testing-"))
        sock = None
        try:
            # Bound first: a token server's realm names the port.
            sock = _listening_socket()
            port = sock.getsockname()[1]
            storage: dict[str, Any] = (
                {"filesystem": {"rootdirectory": str(Path(root).resolve())}}
                if root is not None
                else {"inmemory": {}}
            )
            storage["delete"] = {"enabled": delete}
            storage["maintenance"] = {
                "uploadpurging": {"enabled": False},
                "readonly": {"enabled": read_only},
            }
            document: dict[str, Any] = {
                "version": 0.1,
                "log": {"level": "error", "accesslog": {"disabled": True}},
                "storage": storage,
                "http": {"addr": "127.0.0.1:0"},
            }
            credentials = None
            if users:
                (folder / "htpasswd").write_text(_htpasswd(users))
                document["auth"] = {"htpasswd": {"realm": REALM, "path": str(folder / "htpasswd")}}
                first = next(iter(users))
                credentials = Credentials(first, users[first])
            if token:
                from cargohold.testing.tls import make_token_signer

                key, certificate = make_token_signer(folder / "token")
                scheme = "https" if tls else "http"
                document["auth"] = {
                    "token": {
                        "realm": f"{scheme}://127.0.0.1:{port}/auth/token",
                        "service": REALM,
                        "issuer": REALM,
                        "rootcertbundle": str(certificate),
                    }
                }
                document["tokenserver"] = {
                    "enabled": True,
                    "key": str(key),
                    "certificate": str(certificate),
                    "htpasswd": {"path": str(folder / "htpasswd")},
                    # Every user may do everything: tests of clients, not of access control.
                    "acl": [{"name": "**", "users": ["*"], "actions": ["*"]}],
                }
            ca_file, pair = None, None
            if tls:
                from cargohold.testing.tls import make_server_certificate

                made = make_server_certificate(folder / "tls")
                document["http"]["tls"] = {
                    "certificate": str(made.certificate),
                    "key": str(made.key),
                }
                ca_file, pair = made.ca_file, (made.certificate, made.key)
            text = yaml.safe_dump(_merge(document, overlay))
            parsed = parse_config(text, environ={})
            return Registry(
                parsed,
                fast_path=fast_path,
                credentials=credentials,
                ca_file=ca_file,
                folder=folder,
                tls=pair,
                sock=sock,
            )
        except BaseException:
            if sock is not None:
                sock.close()
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def __enter__(self) -> Registry:
        registry = self._make()
        try:
            registry.start()
        except BaseException:
            registry.stop()
            raise
        self._registry = registry
        return registry

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._registry is not None:
            self._registry.stop()
            self._registry = None

    async def __aenter__(self) -> Registry:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.__exit__, kind, error, traceback)


class ExternalRegistry(_Reachable):
    """A registry running elsewhere (``--registry-url``: a Go registry, say), with the same
    seeding helpers as ``Registry``. It serves no faults and keeps no request log: a test
    that asks for them fails saying so."""

    def __init__(
        self,
        url: str,
        *,
        credentials: Credentials | None = None,
        ca_file: str | Path | None = None,
    ) -> None:
        url = url.rstrip("/")
        if "://" not in url:
            url = f"http://{url}"
        self._url = url
        self.host = url.partition("://")[2]
        self.port = int(self.host.rpartition(":")[2]) if ":" in self.host else 0
        self.credentials = credentials
        self.ca_file = Path(ca_file) if ca_file is not None else None

    @property
    def faults(self) -> Faults:
        raise RuntimeError(f"{self.url} is an external registry: it injects no faults")

    @property
    def requests(self) -> list[LoggedRequest]:
        raise RuntimeError(f"{self.url} is an external registry: its requests are not logged")

    @property
    def url(self) -> str:
        return self._url

    def call(self, work: Callable[..., Awaitable[_T]], *args: Any, **kwargs: Any) -> _T:
        """``await work(client, *args, **kwargs)`` with a client of its own, on a loop of its
        own (in a thread, so that it works from async code too); the result."""

        async def run() -> _T:
            async with self.client() as client:
                return await work(client, *args, **kwargs)

        with ThreadPoolExecutor(1, thread_name_prefix="cargohold.testing") as thread:
            return thread.submit(asyncio.run, run()).result()
