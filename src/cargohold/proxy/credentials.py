"""An upstream's credentials: fixed, or from a docker credential helper (``proxy.exec``).

The helper speaks docker's credential-helper protocol, as Distribution runs
it: ``<command> get`` with the server's host on standard input answers
``{"ServerURL": …, "Username": …, "Secret": …}``. Its answer is kept for
``lifetime`` (None: for good; 0: asked again before every request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

from cargohold.client.auth import Credentials
from cargohold.errors import Unavailable

log = logging.getLogger("cargohold.proxy")

#: A helper that has not answered by then is given up on.
HELPER_TIMEOUT = 30.0


class CredentialHelper:
    """``command get`` for ``host``, its answer kept for ``lifetime`` seconds."""

    def __init__(self, command: str, host: str, lifetime: float | None) -> None:
        self.command = command
        self.host = host
        self.lifetime = lifetime
        self._credentials: Credentials | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()
        #: How often the helper ran (for tests and diagnostics).
        self.runs = 0

    def _fresh(self) -> bool:
        if self._credentials is None:
            return False
        return self.lifetime is None or (self.lifetime > 0 and time.monotonic() < self._expires)

    async def credentials(self) -> Credentials:
        if self._fresh():
            assert self._credentials is not None
            return self._credentials
        async with self._lock:
            if self._fresh():
                assert self._credentials is not None
                return self._credentials
            self._credentials = await self._run()
            if self.lifetime:
                self._expires = time.monotonic() + self.lifetime
            return self._credentials

    async def _run(self) -> Credentials:
        self.runs += 1
        try:
            process = await asyncio.create_subprocess_exec(
                self.command,
                "get",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise Unavailable(f"credential helper {self.command!r} cannot run: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(
                process.communicate(self.host.encode()), HELPER_TIMEOUT
            )
        except TimeoutError:
            process.kill()
            await process.wait()
            raise Unavailable(f"credential helper {self.command!r} did not answer") from None
        if process.returncode != 0:
            # Its standard error may hold a secret: only its first line, and only in the log.
            first = err.decode(errors="replace").strip().splitlines()[:1]
            log.warning(
                "credential helper %r failed (exit %s): %s",
                self.command,
                process.returncode,
                first[0] if first else "",
            )
            raise Unavailable(f"credential helper {self.command!r} failed")
        try:
            answer = json.loads(out)
            username, secret = answer["Username"], answer["Secret"]
        except (ValueError, KeyError, TypeError):
            raise Unavailable(f"credential helper {self.command!r} gave no credentials") from None
        if not isinstance(username, str) or not isinstance(secret, str):
            raise Unavailable(f"credential helper {self.command!r} gave no credentials")
        # docker's convention: the username "<token>" means the secret is an identity token.
        if username == "<token>":
            return Credentials(identity_token=secret)
        return Credentials(username, secret)
