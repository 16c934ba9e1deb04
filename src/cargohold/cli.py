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
    fast_path: Annotated[
        bool,
        typer.Option(
            "--fast-path/--no-fast-path",
            help="Answer the commonest reads without aiohttp's request objects (same replies).",
        ),
    ] = True,
) -> None:
    """Serve the registry (default: 127.0.0.1:5000, storage under ./var/registry)."""
    from cargohold.config import load_config
    from cargohold.log import setup_logging
    from cargohold.server import serve as run

    try:
        settings = load_config(config)
        setup_logging(settings.log.level, settings.log.formatter, settings.log.fields)
        status = run(settings, workers or os.cpu_count() or 1, fast_path=fast_path)
    except ConfigError as exc:
        raise fail(f"config: {exc}", 2) from None
    except CargoholdError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(status)


@app.command()
def gc(
    config: Annotated[
        str | None, typer.Argument(help="A config.yml in Distribution's format.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "-d", help="Report what would be deleted; delete nothing.")
    ] = False,
    delete_untagged: Annotated[
        bool,
        typer.Option("--delete-untagged", "-m", help="Also delete manifests no tag points at."),
    ] = False,
) -> None:
    """Delete blobs no manifest references (run it with the registry read-only or stopped)."""
    import asyncio

    from cargohold.api.app import build_registry
    from cargohold.config import load_config
    from cargohold.storage.gc import collect_garbage

    async def run() -> None:
        registry = build_registry(load_config(config))
        try:
            result = await collect_garbage(
                registry, dry_run=dry_run, delete_untagged=delete_untagged
            )
        finally:
            await registry.close()
        verb = "would delete" if dry_run else "deleted"
        for name, digest in result.deleted_manifests:
            typer.echo(f"{verb} manifest {name}@{digest}")
        for digest in result.deleted_blobs:
            typer.echo(f"{verb} blob {digest}")
        typer.echo(
            f"{len(result.marked)} blobs marked, {len(result.deleted_blobs)} blobs and "
            f"{len(result.deleted_manifests)} manifests {verb}"
        )

    try:
        asyncio.run(run())
    except ConfigError as exc:
        raise fail(f"config: {exc}", 2) from None
    except CargoholdError as exc:
        raise fail(str(exc)) from None


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
