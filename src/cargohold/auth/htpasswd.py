"""htpasswd files and Basic authentication, as Distribution's ``htpasswd`` access controller.

The file holds one ``user:hash`` a line; blank lines and lines starting with
``#`` are skipped. Only bcrypt hashes (``$2y$``, ``$2b$``, ``$2a$``, what
``htpasswd -B`` writes) are accepted: Distribution accepts nothing else either,
but silently, so that a user with an MD5 or SHA-1 hash can never log in and nobody
knows why. cargohold refuses such a file at start, naming the line.

The file is re-read when it changes (its size, modification time or inode,
checked on every use: one ``stat``), so users are added and removed without a
restart. A file that turns bad while serving is not fatal: its good entries
are used, the bad ones are skipped and logged, so no removed user stays in.

A bcrypt check costs milliseconds by design, too much for every request of a
push, so a successful check is remembered for a few minutes, keyed by a keyed
hash of the user, the password and the stored hash: a changed password or a
removed user misses the cache at once. The check itself runs in a thread, so
the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import bcrypt

from cargohold.auth.access import Access, Grant, quote
from cargohold.errors import ConfigError, Unauthorized

__all__ = ["HtpasswdAccessController", "HtpasswdFile", "parse_basic"]

log = logging.getLogger("cargohold.auth")

_BCRYPT_PREFIXES = (b"$2y$", b"$2b$", b"$2a$")
_HASH_NAMES = {
    "$apr1$": "an Apache MD5 ($apr1$)",
    "$1$": "an MD5-crypt ($1$)",
    "$5$": "a SHA-256-crypt ($5$)",
    "$6$": "a SHA-512-crypt ($6$)",
    "{SHA}": "a SHA-1 ({SHA})",
}
#: bcrypt reads at most 72 bytes of a password; ``htpasswd -B`` hashed no more.
_BCRYPT_MAX_PASSWORD = 72
#: How long a successful password check is remembered.
_REMEMBER_SECONDS = 300.0
_REMEMBER_MAX = 4096


def parse_basic(authorization: str | None) -> tuple[str, bytes] | None:
    """The username and password of a ``Basic`` Authorization value, or None.

    As Go's ``Request.BasicAuth``: the scheme in any case, standard base64 with
    padding, split at the first colon.
    """
    if not authorization:
        return None
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    username, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        return username.decode("utf-8"), password
    except UnicodeDecodeError:
        return None


class _BadEntry(Exception):
    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")


def _parse(text: bytes) -> tuple[dict[str, bytes], list[_BadEntry]]:
    entries: dict[str, bytes] = {}
    bad: list[_BadEntry] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        user, colon, stored = line.partition(b":")
        if not colon or not user:
            bad.append(_BadEntry(number, "not of the form user:hash"))
            continue
        try:
            name = user.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(_BadEntry(number, "the user name is not UTF-8"))
            continue
        if not stored.startswith(_BCRYPT_PREFIXES):
            kind = next(
                (
                    label
                    for prefix, label in _HASH_NAMES.items()
                    if stored.startswith(prefix.encode())
                ),
                "a non-bcrypt",
            )
            bad.append(
                _BadEntry(
                    number,
                    f"user {name!r} has {kind} hash; only bcrypt is accepted (htpasswd -B)",
                )
            )
            continue
        entries[name] = stored
    return entries, bad


@dataclass(frozen=True, slots=True)
class _Stamp:
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, stat: os.stat_result) -> _Stamp:
        return cls(stat.st_size, stat.st_mtime_ns, stat.st_ino)


class HtpasswdFile:
    """The bcrypt entries of an htpasswd file, kept in step with the file.

    Raises ``ConfigError`` (naming ``key``) when the file cannot be read or
    holds a bad entry at start.
    """

    def __init__(
        self, path: str, key: str = "auth.htpasswd.path", *, threads: Executor | None = None
    ) -> None:
        self.path = path
        self._key = key
        self._threads = threads
        self._secret = secrets.token_bytes(32)
        self._remembered: dict[bytes, float] = {}
        self._dummy: bytes | None = None
        try:
            stat = os.stat(path)
            text = self._read()
        except OSError as exc:
            raise ConfigError(key, f"cannot read {path}: {exc.strerror}") from None
        entries, bad = _parse(text)
        if bad:
            raise ConfigError(key, f"{path} {bad[0]}")
        self._entries = entries
        self._stamp = _Stamp.of(stat)

    def _read(self) -> bytes:
        with open(self.path, "rb") as file:
            return file.read()

    def entries(self) -> Mapping[str, bytes]:
        """The entries as the file holds them now (re-read if it changed)."""
        try:
            stamp = _Stamp.of(os.stat(self.path))
        except OSError as exc:
            # Keep the last good entries: a file being replaced vanishes for an instant.
            log.error("htpasswd %s: %s; using the entries read before", self.path, exc.strerror)
            return self._entries
        if stamp != self._stamp:
            self._reload(stamp)
        return self._entries

    def _reload(self, stamp: _Stamp) -> None:
        try:
            text = self._read()
        except OSError as exc:
            log.error("htpasswd %s: %s; using the entries read before", self.path, exc.strerror)
            return
        entries, bad = _parse(text)
        for problem in bad:
            log.error("htpasswd %s %s; that entry is skipped", self.path, problem)
        self._entries = entries
        self._stamp = stamp
        log.info("htpasswd %s re-read: %d users", self.path, len(entries))

    def _mark(self, username: str, password: bytes, stored: bytes) -> bytes:
        return hmac.digest(
            self._secret, b"\0".join((username.encode(), password, stored)), hashlib.sha256
        )

    def remembered(self, username: str, password: bytes) -> bool:
        """Whether ``password`` was found to be ``username``'s moments ago (no bcrypt)."""
        stored = self.entries().get(username)
        if stored is None:
            return False
        until = self._remembered.get(self._mark(username, password, stored))
        return until is not None and time.monotonic() < until

    async def authenticate(self, username: str, password: bytes) -> bool:
        """Whether ``password`` is ``username``'s."""
        loop = asyncio.get_running_loop()
        stored = self.entries().get(username)
        if stored is None:
            # Spend the time a real check would, so that timing does not tell which users exist.
            await loop.run_in_executor(self._threads, self._check, b"", password)
            return False
        mark = self._mark(username, password, stored)
        now = time.monotonic()
        until = self._remembered.get(mark)
        if until is not None and now < until:
            return True
        if not await loop.run_in_executor(self._threads, self._check, stored, password):
            return False
        if len(self._remembered) >= _REMEMBER_MAX:
            self._remembered.clear()
        self._remembered[mark] = now + _REMEMBER_SECONDS
        return True

    def _check(self, stored: bytes, password: bytes) -> bool:
        if not stored:
            if self._dummy is None:
                self._dummy = bcrypt.hashpw(b"", bcrypt.gensalt(rounds=_cost(self._entries)))
            stored = self._dummy
        try:
            return bcrypt.checkpw(password[:_BCRYPT_MAX_PASSWORD], stored)
        except ValueError:
            # A malformed stored hash, or a NUL in the password: neither can match.
            return False

    def fingerprint(self, username: str) -> str | None:
        """A short digest of the user's stored hash (changes with the password), or None."""
        stored = self.entries().get(username)
        if stored is None:
            return None
        return hashlib.sha256(stored).hexdigest()[:32]


def _cost(entries: Mapping[str, bytes]) -> int:
    """The bcrypt cost of the first entry (``$2y$10$…`` → 10), 10 without one."""
    for stored in entries.values():
        try:
            return min(max(int(stored[4:6]), 4), 16)
        except ValueError:
            break
    return 10


class HtpasswdAccessController:
    """Basic authentication against an htpasswd file; a valid user may do anything.

    As Distribution: no credentials, unreadable ones and wrong ones all get
    ``401`` with ``WWW-Authenticate: Basic realm="…"``.
    """

    def __init__(self, realm: str, path: str, threads: Executor | None = None) -> None:
        self.realm = realm
        self.file = HtpasswdFile(path, threads=threads)
        self._challenge = f'Basic realm="{quote(realm)}"'

    def authorize_now(self, headers: Mapping[str, str], access: Sequence[Access]) -> Grant | None:
        # Only credentials checked recently: a bcrypt check takes a thread and ~0.1 s.
        credentials = parse_basic(headers.get("Authorization"))
        if credentials is not None and self.file.remembered(*credentials):
            return Grant(credentials[0])
        return None

    async def authorize(self, headers: Mapping[str, str], access: Sequence[Access]) -> Grant:
        credentials = parse_basic(headers.get("Authorization"))
        if credentials is not None and await self.file.authenticate(*credentials):
            return Grant(credentials[0])
        detail = [item.record() for item in access] or None
        raise Unauthorized(detail=detail, challenge=self._challenge)
