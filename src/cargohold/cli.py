"""The ``cargohold`` command.

Exit status: 0 success, 1 failure, 2 a usage or configuration error (one line
on stderr naming what is wrong, never a traceback).
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from cargohold.errors import CargoholdError, ConfigError

app = typer.Typer(
    name="cargohold",
    help="A container image registry: OCI Distribution 1.1 and Docker Registry API V2.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """A container image registry: OCI Distribution 1.1 and Docker Registry API V2."""


def fail(message: str, status: int = 1) -> typer.Exit:
    """Print ``cargohold: message`` on stderr; raise the returned Exit."""
    typer.echo(f"cargohold: {message}", err=True)
    return typer.Exit(status)


@app.command()
def serve(
    config: Annotated[
        str | None, typer.Argument(help="A config.yml in Distribution's format.")
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", "-w", min=1, help="Worker processes (default: CPUs)."),
    ] = None,
) -> None:
    """Serve the registry (default: 127.0.0.1:5000, storage under ./var/registry)."""
    from cargohold.config import load_config
    from cargohold.log import setup_logging
    from cargohold.server import serve as run

    try:
        settings = load_config(config)
        setup_logging(settings.log.level, settings.log.formatter, settings.log.fields)
        status = run(settings, workers or os.cpu_count() or 1)
    except ConfigError as exc:
        raise fail(f"config: {exc}", 2) from None
    except CargoholdError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(status)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
