"""The ``cargohold`` command.

Exit status: 0 success, 1 failure, 2 a usage or configuration error (one line
on stderr naming what is wrong, never a traceback).
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, TextIO, TypeVar

import typer

import cargohold
from cargohold.errors import CargoholdError, ConfigError, RegistryError

if TYPE_CHECKING:
    from cargohold.client.auth import Credentials
    from cargohold.client.copy import Platform
    from cargohold.client.locations import Connections, Location
    from cargohold.notifications.backlog import EventLog
    from cargohold.storage.gc import Collection, Progress
    from cargohold.storage.registry import StorageRegistry

T = TypeVar("T")

app = typer.Typer(
    name="cargohold",
    help="A container image registry: OCI Distribution 1.1 and Docker Registry API V2.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help texts are plain text: "os/arch[/variant]" is not markup to interpret.
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"cargohold {cargohold.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
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
    # The start imports and builds what lives as long as the process: the collector's
    # passes meanwhile free nothing and cost a sixth of the time to the first answer.
    # ``server.serve`` turns it on again once the start is done. (``gc`` here is the
    # module, not the command of that name.)
    import gc

    gc.disable()
    from cargohold.config import load_config
    from cargohold.log import setup_logging
    from cargohold.server import serve as run

    try:
        settings = load_config(config)
        setup_logging(
            settings.log.level,
            settings.log.formatter,
            settings.log.fields,
            report_caller=settings.log.reportcaller,
        )
        status = run(settings, workers, fast_path=fast_path)
    except ConfigError as exc:
        raise fail(f"config: {exc}", 2) from None
    except CargoholdError as exc:
        raise fail(str(exc)) from None
    raise typer.Exit(status)


class Format(enum.StrEnum):
    """How ``gc`` prints what it did."""

    lines = "lines"
    table = "table"
    json = "json"


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
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only the summary line.")
    ] = False,
    online: Annotated[
        bool,
        typer.Option(
            "--online",
            help="Collect while registries serve this storage: nothing younger than "
            "storage.maintenance.gc.graceperiod goes (every registry writing here must have "
            "storage.maintenance.gc.enabled, so that it records the blobs clients find).",
        ),
    ] = False,
    last: Annotated[
        bool, typer.Option("--last", help="Print the last collection's report (JSON) and exit.")
    ] = False,
    output: Annotated[
        Format,
        typer.Option(
            "--format",
            help="lines: Distribution's (one per manifest and blob deleted); table: tags, "
            "manifests and blobs with their sizes; json: the same as one document.",
        ),
    ] = Format.lines,
    metrics_file: Annotated[
        str | None,
        typer.Option(
            "--metrics-file",
            help="Write how the run went there, for node_exporter's textfile collector "
            "(a *.prom in its directory), whether it succeeds or fails.",
        ),
    ] = None,
) -> None:
    """Delete blobs no manifest references: offline (no registry writing), or --online."""
    import asyncio
    import json
    import time

    from cargohold.config import load_config
    from cargohold.metrics.gcreport import GcReport, ReportUnwritable, check_writable
    from cargohold.storage.configured import build_registry
    from cargohold.storage.gc import (
        collect_garbage,
        inventory_of,
        load_report,
        report_of,
        require_storage,
        save_report,
    )
    from cargohold.storage.lease import holding
    from cargohold.storage.live import writers

    try:
        loaded = load_config(config)
    except ConfigError as exc:
        raise fail(f"config: {exc}", 2) from None

    async def show_last() -> dict[str, object] | None:
        registry = build_registry(loaded)
        try:
            return await load_report(registry)
        finally:
            await registry.close()

    if last:
        found = asyncio.run(show_last())
        if found is None:
            raise fail("no collection has run on this storage yet")
        typer.echo(json.dumps(found, indent=1))
        return

    async def alone(registry: StorageRegistry) -> None:
        live = await writers(registry.driver)
        if live:
            raise CargoholdError(
                "registries are writing to this storage ("
                + ", ".join(w.who for w in live)
                + "): stop them, make them read-only, or run gc --online"
            )

    async def collect(registry: StorageRegistry) -> Collection:
        live = await writers(registry.driver)
        if not online:
            await alone(registry)
        blind = [w.who for w in live if not w.records_reuse]
        if online and blind:
            raise CargoholdError(
                "registries write to this storage without recording the blobs clients find ("
                + ", ".join(blind)
                + "): enable storage.maintenance.gc on them first"
            )
        started = time.time()
        grace = loaded.storage.maintenance.grace if online else None
        result = await collect_garbage(
            registry,
            dry_run=dry_run,
            delete_untagged=delete_untagged,
            grace=grace,
            # A registry started during the mark would write unseen: asked again before.
            before_sweep=None if online else lambda: alone(registry),
            retention=loaded.storage.maintenance.gc.policies(),
            progress=shown,
        )
        report = report_of(result, started=started, ended=time.time(), dry_run=dry_run)
        await save_report(registry, report)
        return result

    async def run() -> Collection:
        registry = build_registry(loaded)
        try:
            await require_storage(registry)
            async with holding(registry.driver):
                return await collect(registry)
        finally:
            await registry.close()

    if metrics_file is not None:
        try:
            check_writable(metrics_file)
        except ReportUnwritable as exc:
            raise fail(f"--metrics-file: {exc}", 2) from None
    report = GcReport(metrics_file, dry_run=dry_run)
    shown = _ProgressLine(sys.stderr, quiet=quiet, dry_run=dry_run)
    try:
        with report, shown:
            try:
                result = report.collection = asyncio.run(run())
            except ConfigError as exc:
                raise fail(f"config: {exc}", 2) from None
            except CargoholdError as exc:
                raise fail(str(exc)) from None
            for damage in result.damaged:
                typer.echo(f"cargohold: warning: {damage}", err=True)
            if output is Format.json:
                typer.echo(json.dumps(inventory_of(result, dry_run=dry_run), indent=1))
            elif output is Format.table:
                _print_table(result, dry_run)
            else:
                _print_collection(result, dry_run, quiet)
            if result.cache_stale:
                raise fail(
                    "the blob descriptor cache (Redis) stopped answering during the sweep: "
                    "registries may report deleted blobs as present until the entries expire "
                    "(delete the blobs::<digest> keys of the blobs listed above to end it now)"
                )
    except ReportUnwritable as exc:
        raise fail(f"--metrics-file: {exc}") from None


notifications_app = typer.Typer(
    help="The events of notifications.endpoints an endpoint gave up on (its dead letters).",
    no_args_is_help=True,
)
app.add_typer(notifications_app, name="notifications")


def _with_event_log(
    config: str | None, endpoint: str, work: Callable[[EventLog], Awaitable[T]]
) -> T:
    """``work`` done on the configured event log, opened for it and closed after."""
    import asyncio

    from cargohold.config import load_config
    from cargohold.notifications.notifier import event_log

    try:
        loaded = load_config(config)
        if endpoint not in {e.name for e in loaded.notifications.endpoints}:
            raise fail(f"--endpoint: no endpoint is named {endpoint!r}", 2)
        events = event_log(loaded)
    except ConfigError as exc:
        raise fail(f"config: {exc}", 2) from None

    async def run() -> T:
        await events.open()
        try:
            return await work(events)
        finally:
            await events.close()

    return asyncio.run(run())


ConfigArgument = Annotated[
    str | None, typer.Argument(help="A config.yml in Distribution's format.")
]
EndpointOption = Annotated[str, typer.Option("--endpoint", "-e", help="The endpoint's name.")]


@notifications_app.command("dead-letters")
def dead_letters(config: ConfigArgument = None, endpoint: EndpointOption = "") -> None:
    """List an endpoint's dead letters, oldest first: id, time, action, what."""
    import json

    for line in _with_event_log(config, endpoint, lambda events: events.dead(endpoint)):
        try:
            event = json.loads(line)["event"]
        except (ValueError, KeyError):
            continue  # cut short by a crash while it was written
        target = event["target"]
        what = target["repository"]
        if target.get("tag"):
            what += ":" + target["tag"]
        if target.get("digest"):
            what += "@" + target["digest"]
        typer.echo(f"{event['id']}  {event['timestamp']}  {event['action']:6}  {what}")


@notifications_app.command()
def replay(config: ConfigArgument = None, endpoint: EndpointOption = "") -> None:
    """Send an endpoint's dead letters again (by the running registry, with their ids)."""
    count = _with_event_log(config, endpoint, lambda events: events.replay(endpoint))
    typer.echo(f"{count} event{'' if count == 1 else 's'} put back for {endpoint}")


class _ProgressLine:
    """A collection's progress on stderr: one line redrawn in place on a terminal (ten times
    a second at most), plain lines when piped (at each phase, and every few seconds)."""

    def __init__(self, stream: TextIO, *, quiet: bool, dry_run: bool) -> None:
        self._stream = stream
        self._verbs = ("to delete", "to reclaim") if dry_run else ("deleted", "reclaimed")
        self._tty = stream.isatty()
        self._quiet = quiet
        self._phase = ""
        self._shown = 0.0
        self._drawn = False

    def __enter__(self) -> _ProgressLine:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()

    def __call__(self, progress: Progress) -> None:
        import time

        if self._quiet:
            return
        now = time.monotonic()
        every = 0.1 if self._tty else 5.0
        if progress.phase == self._phase and now - self._shown < every:
            return
        self._phase, self._shown = progress.phase, now
        text = (
            f"gc: {progress.phase}: {progress.repositories} repositories, "
            f"{progress.manifests} manifests, {progress.blobs} blobs examined, "
            f"{progress.deleted_manifests} manifests and {progress.deleted_blobs} blobs "
            f"{self._verbs[0]}, {_size(progress.reclaimed)} {self._verbs[1]}"
        )
        if self._tty:
            self._stream.write("\r\x1b[K" + text)
            self._drawn = True
        else:
            self._stream.write(text + "\n")
        self._stream.flush()


def _print_table(result: Collection, dry_run: bool) -> None:
    """What went (or would go), in columns: removed tags, manifests, blobs, then the totals."""
    import datetime

    def when(stamp: float | None) -> str:
        if stamp is None:
            return "never"
        moment = datetime.datetime.fromtimestamp(stamp, datetime.UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S")

    def table(title: str, head: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
        if not rows:
            return
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        typer.echo(title)
        for row in [head, *rows]:
            cells = (c.ljust(w) for c, w in zip(row, widths, strict=True))
            typer.echo(("  " + "  ".join(cells)).rstrip())
        typer.echo("")

    verb = "to delete" if dry_run else "deleted"
    table(
        f"TAGS {'to remove' if dry_run else 'removed'} by retention policies",
        ("REPOSITORY", "TAG", "MANIFEST", "PUSHED (UTC)", "PULLED (UTC)"),
        [
            (name, t.tag, str(t.digest), when(t.pushed), when(t.pulled))
            for name, t in result.removed_tags
        ],
    )
    table(
        f"MANIFESTS {verb}",
        ("REPOSITORY", "MANIFEST", "SIZE"),
        [
            (name, str(d), _size(result.manifest_sizes.get((name, d), 0)))
            for name, d in result.deleted_manifests
        ],
    )
    table(
        f"BLOBS {verb}",
        ("BLOB", "SIZE"),
        [(str(d), _size(result.blob_sizes.get(d, 0))) for d in result.deleted_blobs],
    )
    typer.echo(
        f"{len(result.removed_tags)} tags, {len(result.deleted_manifests)} manifests and "
        f"{len(result.deleted_blobs)} blobs {verb}: "
        f"{_size(result.reclaimed)} ({result.reclaimed} bytes) "
        + ("to reclaim" if dry_run else "reclaimed")
    )


def _size(count: int) -> str:
    """``count`` bytes for a person: 512 B, 1.5 KiB, 3.2 MiB."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _print_collection(result: Collection, dry_run: bool, quiet: bool = False) -> None:
    verb = "would delete" if dry_run else "deleted"
    for name, t in [] if quiet else result.removed_tags:
        typer.echo(f"{'would remove' if dry_run else 'removed'} tag {name}:{t.tag}")
    for name, digest in [] if quiet else result.deleted_manifests:
        typer.echo(f"{verb} manifest {name}@{digest}")
    for digest in [] if quiet else result.deleted_blobs:
        typer.echo(f"{verb} blob {digest}")
    done = "to delete" if dry_run else "deleted"
    reclaimed = "to reclaim" if dry_run else "reclaimed"
    typer.echo(
        f"{len(result.marked)} blobs marked, {len(result.deleted_blobs)} blobs and "
        f"{len(result.deleted_manifests)} manifests {done}, {result.reclaimed} bytes {reclaimed}"
    )
    if result.online:
        typer.echo(
            f"{result.young_blobs} blobs and {result.young_manifests} manifests younger than "
            "the grace period kept"
        )


# -- the client: commands that talk to registries and OCI layouts ------------------------

_REFERENCE_HELP = "host[:port]/name[:tag|@digest], or oci:PATH[:TAG] for an OCI image layout."
Insecure = Annotated[
    bool,
    typer.Option("--insecure", help="Allow plain HTTP and unverified TLS (loopback is HTTP)."),
]
CaFile = Annotated[
    str | None, typer.Option("--ca-file", help="PEM certificates to verify TLS with.")
]
Retries = Annotated[
    int, typer.Option("--retries", min=1, help="Tries of a failing request, the first included.")
]
Creds = Annotated[
    str | None,
    typer.Option(
        "--creds",
        help="USERNAME:PASSWORD (else CARGOHOLD_USERNAME/CARGOHOLD_PASSWORD, else docker's "
        "config.json).",
    ),
]


def _location(text: str) -> Location:
    from cargohold.client.locations import parse_location

    try:
        return parse_location(text)
    except CargoholdError as exc:
        raise fail(f"{text}: {exc}", 2) from None


def _credentials(text: str | None, option: str = "--creds") -> Credentials | None:
    from cargohold.client.auth import Credentials

    if text is None:
        return None
    try:
        return Credentials.parse(text)
    except ValueError as exc:
        raise fail(f"{option}: {exc}", 2) from None


def _platform(text: str) -> Platform:
    from cargohold.client.copy import Platform

    try:
        return Platform.parse(text)
    except ValueError as exc:
        raise fail(f"--platform: {exc}", 2) from None


def _connect(
    insecure: bool, ca_file: str | None, retries: int, chunk_size: int | None = None
) -> Connections:
    from cargohold.client.locations import Connections

    return Connections(insecure=insecure, ca_file=ca_file, chunk_size=chunk_size, retries=retries)


def _run(work: Callable[[Connections], Awaitable[T]], connections: Connections, what: str) -> T:
    """Run a client coroutine; any failure becomes one line on stderr and exit status 1."""
    import asyncio

    async def run() -> T:
        try:
            return await work(connections)
        finally:
            await connections.close()

    try:
        return asyncio.run(run())
    except (CargoholdError, OSError) as exc:
        text = (str(exc) or type(exc).__name__).splitlines()[0]
        if isinstance(exc, RegistryError):
            from cargohold.api.errcode import code_for

            # The specification's code first, as the registry said it (MANIFEST_UNKNOWN: ...).
            text = f"{code_for(exc).code}: {text}"
        raise fail(f"{what}: {text}" if what else text) from None


@app.command()
def copy(
    source: Annotated[str, typer.Argument(help=_REFERENCE_HELP)],
    destination: Annotated[str, typer.Argument(help=_REFERENCE_HELP)],
    all_platforms: Annotated[
        bool, typer.Option("--all", "-a", help="Copy a whole index, every platform.")
    ] = False,
    platform: Annotated[
        str, typer.Option("--platform", help="From an index, copy this os/arch[/variant].")
    ] = "linux/amd64",
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Blobs at a time.")] = 4,
    src_creds: Annotated[
        str | None, typer.Option("--src-creds", help="USERNAME:PASSWORD for the source.")
    ] = None,
    dest_creds: Annotated[
        str | None, typer.Option("--dest-creds", help="USERNAME:PASSWORD for the destination.")
    ] = None,
    chunk_size: Annotated[
        int | None,
        typer.Option("--chunk-size", min=1, help="Upload PATCH size (default: one per blob)."),
    ] = None,
    with_referrers: Annotated[
        bool,
        typer.Option(
            "--referrers/--no-referrers",
            help="Also copy the manifests that refer to it (signatures, SBOMs), as oras does.",
        ),
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Show no progress.")] = False,
    insecure: Insecure = False,
    ca_file: CaFile = None,
    retries: Retries = 5,
) -> None:
    """Copy an image between registries and OCI layouts, with its referrers; prints the
    manifest digest."""
    from rich.console import Console

    from cargohold.client import commands
    from cargohold.client.display import PlainProgress, RichProgress
    from cargohold.client.progress import NO_PROGRESS

    options = commands.CopyOptions(
        all_platforms=all_platforms,
        platform=_platform(platform),
        jobs=jobs,
        source_credentials=_credentials(src_creds, "--src-creds"),
        destination_credentials=_credentials(dest_creds, "--dest-creds"),
        referrers=with_referrers,
    )
    src, dst = _location(source), _location(destination)
    console = Console(stderr=True)

    async def work(connections: Connections) -> str:
        if quiet:
            result = await commands.copy(connections, src, dst, options, NO_PROGRESS)
        elif console.is_terminal:
            with RichProgress(console) as bars:
                result = await commands.copy(connections, src, dst, options, bars)
        else:
            result = await commands.copy(connections, src, dst, options, PlainProgress(sys.stderr))
        return str(result.digest)

    typer.echo(_run(work, _connect(insecure, ca_file, retries, chunk_size), ""))


@app.command()
def tags(
    reference: Annotated[str, typer.Argument(help=_REFERENCE_HELP)],
    creds: Creds = None,
    insecure: Insecure = False,
    ca_file: CaFile = None,
    retries: Retries = 5,
) -> None:
    """List the tags of a repository (or of an OCI layout), one a line."""
    from cargohold.client import commands

    location, credentials = _location(reference), _credentials(creds)
    found = _run(
        lambda c: commands.tags(c, location, credentials),
        _connect(insecure, ca_file, retries),
        reference,
    )
    for tag in found:
        typer.echo(tag)


@app.command()
def catalog(
    host: Annotated[str, typer.Argument(help="The registry: host[:port].")],
    creds: Creds = None,
    insecure: Insecure = False,
    ca_file: CaFile = None,
    retries: Retries = 5,
) -> None:
    """List the repositories of a registry, one a line."""
    from cargohold.client import commands
    from cargohold.client.transport import Endpoint

    credentials = _credentials(creds)
    try:
        Endpoint.of(host, insecure)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    found = _run(
        lambda c: commands.catalog(c, host, credentials), _connect(insecure, ca_file, retries), host
    )
    for name in found:
        typer.echo(name)


@app.command()
def inspect(
    reference: Annotated[str, typer.Argument(help=_REFERENCE_HELP)],
    raw: Annotated[
        bool, typer.Option("--raw", help="Print the manifest exactly as stored.")
    ] = False,
    config: Annotated[
        bool, typer.Option("--config", help="Print the image's config exactly as stored.")
    ] = False,
    platform: Annotated[
        str, typer.Option("--platform", help="Of an index, inspect this os/arch[/variant].")
    ] = "linux/amd64",
    creds: Creds = None,
    insecure: Insecure = False,
    ca_file: CaFile = None,
    retries: Retries = 5,
) -> None:
    """Show an image: digest, platform, layers, config (as JSON, like skopeo inspect)."""
    from cargohold.client import commands

    location, credentials = _location(reference), _credentials(creds)
    chosen = _platform(platform)
    found = _run(
        lambda c: commands.inspect(c, location, credentials, chosen),
        _connect(insecure, ca_file, retries),
        reference,
    )
    if raw:
        sys.stdout.buffer.write(found.manifest.payload)
        sys.stdout.buffer.flush()
    elif config:
        if found.config is None:
            raise fail(f"{reference}: {found.manifest.media_type} has no config")
        sys.stdout.buffer.write(found.config)
        sys.stdout.buffer.flush()
    else:
        typer.echo(found.json())


@app.command()
def rm(
    reference: Annotated[str, typer.Argument(help=_REFERENCE_HELP)],
    creds: Creds = None,
    insecure: Insecure = False,
    ca_file: CaFile = None,
    retries: Retries = 5,
) -> None:
    """Delete a manifest (by tag or digest; every tag on it goes too); prints its digest."""
    from cargohold.client import commands

    location, credentials = _location(reference), _credentials(creds)
    deleted = _run(
        lambda c: commands.remove(c, location, credentials),
        _connect(insecure, ca_file, retries),
        reference,
    )
    typer.echo(str(deleted))


@app.command()
def digest(
    reference: Annotated[str, typer.Argument(help=_REFERENCE_HELP)],
    creds: Creds = None,
    insecure: Insecure = False,
    ca_file: CaFile = None,
    retries: Retries = 5,
) -> None:
    """Print the digest of the manifest a reference names."""
    from cargohold.client import commands

    location, credentials = _location(reference), _credentials(creds)
    found = _run(
        lambda c: commands.digest(c, location, credentials),
        _connect(insecure, ca_file, retries),
        reference,
    )
    typer.echo(str(found))


@app.command()
def tag(
    reference: Annotated[str, typer.Argument(help=_REFERENCE_HELP)],
    new_tags: Annotated[list[str], typer.Argument(help="Tags to give it, in its repository.")],
    creds: Creds = None,
    insecure: Insecure = False,
    ca_file: CaFile = None,
    retries: Retries = 5,
) -> None:
    """Tag the manifest a reference names with more tags (like crane tag); prints its digest."""
    from cargohold.client import commands
    from cargohold.reference import validate_tag

    location, credentials = _location(reference), _credentials(creds)
    for new in new_tags:
        try:
            validate_tag(new)
        except CargoholdError as exc:
            raise fail(f"{new}: {exc}", 2) from None
    found = _run(
        lambda c: commands.tag(c, location, list(new_tags), credentials),
        _connect(insecure, ca_file, retries),
        reference,
    )
    typer.echo(str(found))


@app.command()
def referrers(
    reference: Annotated[str, typer.Argument(help=_REFERENCE_HELP)],
    artifact_type: Annotated[
        str | None, typer.Option("--artifact-type", help="Only the referrers of this type.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the referrers index (OCI image index JSON).")
    ] = False,
    creds: Creds = None,
    insecure: Insecure = False,
    ca_file: CaFile = None,
    retries: Retries = 5,
) -> None:
    """List the manifests that refer to an image (signatures, SBOMs): digest, type, size."""
    import json

    from cargohold.client import commands

    location, credentials = _location(reference), _credentials(creds)
    _, found = _run(
        lambda c: commands.referrers(c, location, credentials, artifact_type),
        _connect(insecure, ca_file, retries),
        reference,
    )
    if as_json:
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [d.to_json() for d in found],
        }
        typer.echo(json.dumps(index, indent=2))
        return
    for descriptor in found:
        typer.echo(f"{descriptor.digest}  {descriptor.artifact_type or '-'}  {descriptor.size}")


@app.command()
def push(
    reference: Annotated[str, typer.Argument(help=_REFERENCE_HELP)],
    files: Annotated[
        list[str], typer.Argument(help="Files, each PATH or PATH:MEDIA/TYPE (as oras takes them).")
    ],
    artifact_type: Annotated[
        str | None, typer.Option("--artifact-type", help="What the artifact is (a media type).")
    ] = None,
    annotation: Annotated[
        list[str] | None,
        typer.Option("--annotation", "-a", help="KEY=VALUE on the manifest (repeatable)."),
    ] = None,
    creds: Creds = None,
    insecure: Insecure = False,
    ca_file: CaFile = None,
    retries: Retries = 5,
) -> None:
    """Push files as an OCI artifact (as oras push does); prints its manifest digest."""
    from cargohold.client import commands
    from cargohold.client.artifacts import DEFAULT_ARTIFACT_TYPE, ArtifactFile

    location, credentials = _location(reference), _credentials(creds)
    try:
        parsed = [ArtifactFile.parse(text) for text in files]
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    annotations = {}
    for text in annotation or []:
        key, equals, value = text.partition("=")
        if not equals or not key:
            raise fail(f"--annotation {text!r}: expected KEY=VALUE", 2)
        annotations[key] = value
    pushed = _run(
        lambda c: commands.push(
            c,
            location,
            parsed,
            credentials,
            artifact_type=artifact_type or DEFAULT_ARTIFACT_TYPE,
            annotations=annotations,
        ),
        _connect(insecure, ca_file, retries),
        reference,
    )
    typer.echo(str(pushed.digest))


@app.command()
def pull(
    reference: Annotated[str, typer.Argument(help=_REFERENCE_HELP)],
    output: Annotated[
        str, typer.Option("--output", "-o", help="The folder to write the files in.")
    ] = ".",
    creds: Creds = None,
    insecure: Insecure = False,
    ca_file: CaFile = None,
    retries: Retries = 5,
) -> None:
    """Pull the files of an OCI artifact (as oras pull does); prints each file written."""
    from pathlib import Path

    from cargohold.client import commands

    location, credentials = _location(reference), _credentials(creds)
    written = _run(
        lambda c: commands.pull(c, location, Path(output), credentials),
        _connect(insecure, ca_file, retries),
        reference,
    )
    for path in written:
        typer.echo(str(path))


@app.command()
def sync(
    source: Annotated[str, typer.Argument(help="host[:port][/prefix]: the repositories under it.")],
    destination: Annotated[str, typer.Argument(help="host[:port][/prefix] to mirror them to.")],
    tags: Annotated[
        str | None,
        typer.Option("--tags", help="Only tags this regular expression matches whole."),
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", min=1, help="Tags at a time.")] = 4,
    src_creds: Annotated[
        str | None, typer.Option("--src-creds", help="USERNAME:PASSWORD for the source.")
    ] = None,
    dest_creds: Annotated[
        str | None, typer.Option("--dest-creds", help="USERNAME:PASSWORD for the destination.")
    ] = None,
    insecure: Insecure = False,
    ca_file: CaFile = None,
    retries: Retries = 5,
) -> None:
    """Mirror many repositories and tags (every platform, with referrers); a run cut short
    resumes where it stopped. A line per tag, then the totals."""
    import re

    from cargohold.client.sync import SyncOutcome
    from cargohold.client.sync import sync as mirror

    try:
        pattern = re.compile(tags) if tags is not None else None
    except re.error as exc:
        raise fail(f"--tags: {exc}", 2) from None
    for prefix in (source, destination):
        if not prefix.partition("/")[0]:
            raise fail(f"{prefix!r}: write host[:port][/prefix]", 2)
    source_credentials = _credentials(src_creds, "--src-creds")
    destination_credentials = _credentials(dest_creds, "--dest-creds")

    def told(outcome: SyncOutcome) -> None:
        what = outcome.digest or outcome.error
        typer.echo(f"{outcome.status:10}  {outcome.source} -> {outcome.destination}  {what}")

    summary = _run(
        lambda c: mirror(
            c,
            source,
            destination,
            tags=pattern,
            jobs=jobs,
            source_credentials=source_credentials,
            destination_credentials=destination_credentials,
            told=told,
        ),
        _connect(insecure, ca_file, retries),
        "sync",
    )
    typer.echo(
        f"{summary.repositories} repositories, {summary.tags} tags: {summary.copied} copied, "
        f"{summary.up_to_date} up to date, {len(summary.failed)} failed"
    )
    if summary.failed:
        raise typer.Exit(1)


@app.command()
def login(
    host: Annotated[str, typer.Argument(help="The registry: host[:port].")],
    username: Annotated[str | None, typer.Option("--username", "-u", help="The user.")] = None,
    password: Annotated[
        str | None, typer.Option("--password", "-p", help="The password (prefer stdin).")
    ] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin.")
    ] = False,
    insecure: Insecure = False,
    ca_file: CaFile = None,
    retries: Retries = 5,
) -> None:
    """Sign in to a registry and keep the credentials in docker's config.json (as docker
    login does: docker, podman and skopeo read them there too)."""
    from cargohold.client import commands
    from cargohold.client.auth import Credentials, store_docker_credentials
    from cargohold.client.transport import Endpoint

    try:
        Endpoint.of(host, insecure)
    except ValueError as exc:
        raise fail(str(exc), 2) from None
    if password_stdin:
        if password is not None:
            raise fail("--password and --password-stdin: give one", 2)
        password = sys.stdin.readline().rstrip("\r\n")
    if not username:
        raise fail("--username: required", 2)
    if password is None:
        raise fail("--password or --password-stdin: required", 2)
    credentials = Credentials(username, password)
    _run(lambda c: commands.login(c, host, credentials), _connect(insecure, ca_file, retries), host)
    try:
        store_docker_credentials(host, credentials)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot keep the credentials: {exc}") from None
    typer.echo("Login Succeeded")


@app.command()
def logout(host: Annotated[str, typer.Argument(help="The registry: host[:port].")]) -> None:
    """Forget the credentials docker's config.json holds for a registry."""
    from cargohold.client.auth import remove_docker_credentials

    try:
        removed = remove_docker_credentials(host)
    except (OSError, ValueError) as exc:
        raise fail(f"cannot change the credentials: {exc}") from None
    typer.echo(f"Removing login credentials for {host}" if removed else f"Not logged in to {host}")


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
