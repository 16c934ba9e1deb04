"""cargohold: a container image registry (see README.md and docs/ARCHITECTURE.md)."""

from importlib.metadata import PackageNotFoundError, version

try:
    #: The installed version; "unknown" when run from a source tree that was never installed.
    __version__ = version("cargohold")
except PackageNotFoundError:  # pragma: no cover - always installed, if only editable
    __version__ = "unknown"
