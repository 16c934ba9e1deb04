"""cargohold: a container image registry (see README.md and docs/ARCHITECTURE.md)."""

from __future__ import annotations

__all__ = ["__version__"]


def __getattr__(name: str) -> str:
    # Read on first use: the package metadata costs a command such as ``gc`` 50 ms to load.
    if name != "__version__":
        raise AttributeError(f"module 'cargohold' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("cargohold")
    except PackageNotFoundError:  # pragma: no cover - always installed, if only editable
        found = "unknown"
    globals()["__version__"] = found
    return found
