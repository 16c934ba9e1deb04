"""Every error cargohold raises, at a glance.

Errors are values of the domain. Only the api layer turns them into HTTP
(``api/errcode.py`` maps each to a specification error code and a status).

::

    CargoholdError
    ├── ConfigError                  a setting is malformed or unknown (the CLI exits 2)
    ├── StorageDriverError           a driver could not do what was asked (path, driver)
    │   ├── PathNotFound             nothing is stored at the path
    │   ├── InvalidPath              the path is not of the driver's grammar
    │   ├── InvalidOffset            a read or append offset is outside the content
    │   ├── Unsupported              the driver cannot do this operation at all
    │   └── StorageUnavailable       the backend failed (network, permissions, full disk)
    └── RegistryError                what the specification calls an error code
        ├── DigestInvalid            a digest is malformed or does not match the content
        ├── NameInvalid              a repository name is not of the reference grammar
        ├── TagInvalid               a tag is not of the reference grammar
        ├── ReferenceInvalid         an image reference (``host/name:tag@digest``) is malformed
        ├── NameUnknown              no such repository
        ├── BlobUnknown              no such blob (in this repository)
        ├── BlobUploadUnknown        no such upload
        ├── BlobUploadInvalid        the upload cannot continue as asked
        ├── SizeInvalid              a declared size disagrees with the content
        ├── RangeInvalid             a Range or Content-Range cannot be honoured
        ├── ManifestUnknown          no such manifest (tag or digest)
        ├── ManifestInvalid          a manifest does not parse or validate
        ├── ManifestBlobUnknown      a manifest references blobs the repository lacks
        ├── ManifestUnverified       a signed manifest's signature does not verify
        ├── ManifestTooLarge         a manifest is over the size limit
        ├── PaginationNumberInvalid  ``n`` is not a usable page size
        ├── OperationUnsupported     disabled here (delete, or writes when read-only)
        ├── Unauthorized             credentials are missing or wrong (carries the challenge)
        ├── Denied                   the credentials do not grant the access
        ├── TooManyRequests          the client must slow down
        ├── Unavailable              the registry cannot serve the request right now
        └── UpstreamInvalid          a mirror's upstream sent something unusable (502)
"""

from __future__ import annotations

from collections.abc import Sequence


class CargoholdError(Exception):
    """The root of every error cargohold raises on purpose."""


class ConfigError(CargoholdError):
    """A configuration value is malformed or unknown.

    ``key`` is the dotted path of the offending setting (``storage.filesystem``),
    ``reason`` says what is wrong with it in a few words.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}" if key else reason)
        self.key = key
        self.reason = reason


# --- storage drivers -------------------------------------------------------------------


class StorageDriverError(CargoholdError):
    """A driver could not do what was asked of it."""

    def __init__(self, path: str, driver: str, detail: str = "") -> None:
        self.path = path
        self.driver = driver
        self.detail = detail
        super().__init__(self._describe())

    def _describe(self) -> str:
        text = f"{self.driver}: {type(self).__name__}: {self.path}"
        return f"{text}: {self.detail}" if self.detail else text


class PathNotFound(StorageDriverError):
    """Nothing is stored at the path."""


class InvalidPath(StorageDriverError):
    """The path is not absolute, or has an empty, ``.``/``..`` or forbidden component."""


class InvalidOffset(StorageDriverError):
    """An offset lies outside the stored content."""

    def __init__(self, path: str, driver: str, offset: int, detail: str = "") -> None:
        self.offset = offset
        super().__init__(path, driver, detail or f"offset {offset}")


class Unsupported(StorageDriverError):
    """The driver does not implement this operation."""


class FileChanged(StorageDriverError):
    """A file was no longer the version an operation was asked to act on."""


class StorageUnavailable(StorageDriverError):
    """The backend failed: an I/O error, a network error, a refused request."""


class StorageFull(StorageUnavailable):
    """The backend has no room left (a full disk, a quota reached): writes fail until some
    is freed, reads go on."""


# --- the registry's domain -------------------------------------------------------------


class RegistryError(CargoholdError):
    """An error the distribution specification has a code for.

    ``detail`` is structured information for the client (it becomes the
    ``detail`` member of the error body).
    """

    default_message = "registry error"
    #: Seconds the client is asked to wait before trying again (``Retry-After``), if any.
    retry_after: int | None = None

    def __init__(self, message: str = "", detail: object = None) -> None:
        self.message = message or self.default_message
        self.detail = detail
        super().__init__(self.message)


class DigestInvalid(RegistryError):
    default_message = "provided digest did not match uploaded content"


class NameInvalid(RegistryError):
    default_message = "invalid repository name"


class TagInvalid(RegistryError):
    default_message = "manifest tag did not match URI"


class ReferenceInvalid(RegistryError):
    default_message = "invalid reference format"


class NameUnknown(RegistryError):
    default_message = "repository name not known to registry"


class BlobUnknown(RegistryError):
    default_message = "blob unknown to registry"

    def __init__(self, digest: str, message: str = "") -> None:
        self.digest = digest
        super().__init__(message, {"digest": digest})


class BlobUploadUnknown(RegistryError):
    default_message = "blob upload unknown to registry"


class BlobUploadInvalid(RegistryError):
    default_message = "blob upload invalid"


class SizeInvalid(RegistryError):
    default_message = "provided length did not match content length"


class RangeInvalid(RegistryError):
    default_message = "invalid content range"


class ManifestUnknown(RegistryError):
    default_message = "manifest unknown"


class ManifestInvalid(RegistryError):
    default_message = "manifest invalid"


class ManifestBlobUnknown(RegistryError):
    default_message = "blob unknown to registry"

    def __init__(self, digests: Sequence[str], message: str = "") -> None:
        self.digests = list(digests)
        text = message or "manifest references unknown blobs: " + ", ".join(self.digests)
        super().__init__(text, {"digests": self.digests})


class ManifestUnverified(RegistryError):
    default_message = "manifest failed signature verification"


class ManifestTooLarge(RegistryError):
    default_message = "manifest too large"


class PaginationNumberInvalid(RegistryError):
    default_message = "invalid number of results requested"


class OperationUnsupported(RegistryError):
    default_message = "The operation is unsupported."


class Unauthorized(RegistryError):
    """Credentials are missing or wrong, or a token lacks a scope.

    ``challenge`` is what the client must answer next, in the form of a
    ``WWW-Authenticate`` value (``Basic realm="…"``, ``Bearer realm="…",…``);
    empty when the registry has none to offer.
    """

    default_message = "authentication required"

    def __init__(self, message: str = "", detail: object = None, challenge: str = "") -> None:
        super().__init__(message, detail)
        self.challenge = challenge


class Denied(RegistryError):
    default_message = "requested access to the resource is denied"


class TooManyRequests(RegistryError):
    default_message = "too many requests"

    def __init__(self, message: str = "", detail: object = None, retry_after: int = 1) -> None:
        super().__init__(message, detail)
        self.retry_after = retry_after


class Unavailable(RegistryError):
    default_message = "service unavailable"


class UpstreamInvalid(RegistryError):
    """What a mirror's upstream sent cannot be served: wrong digest, short body, not a registry.

    The message never names the upstream's credentials.
    """

    default_message = "the upstream registry sent an invalid reply"
