"""Mirror many repositories and tags: ``cargohold sync SRC-PREFIX DST-PREFIX``.

Every repository of the source registry's catalog under the prefix (the
prefix itself, or a name below it) is copied to the same name under the
destination's prefix, each tag the filter lets through with every platform and
its referrers. A tag whose destination already names the same manifest is up
to date and skipped, so that a sync cut short resumes where it stopped when run
again. ``jobs`` tags are copied at a time; each outcome is told to a callback
as it happens, and the totals come back.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from cargohold.client.auth import Credentials
from cargohold.client.copy import copy_manifest, copy_referrers, resolve
from cargohold.client.locations import Connections
from cargohold.errors import CargoholdError, ManifestUnknown, NameUnknown, ReferenceInvalid

__all__ = ["SyncOutcome", "SyncSummary", "sync"]


@dataclass(frozen=True)
class SyncOutcome:
    """What became of one tag: ``copied``, ``up to date`` or ``failed`` (with why)."""

    source: str
    destination: str
    status: str
    digest: str = ""
    error: str = ""


@dataclass
class SyncSummary:
    repositories: int = 0
    copied: int = 0
    up_to_date: int = 0
    failed: list[SyncOutcome] = field(default_factory=list)

    @property
    def tags(self) -> int:
        return self.copied + self.up_to_date + len(self.failed)


def _split(prefix: str) -> tuple[str, str]:
    host, slash, path = prefix.partition("/")
    if not host:
        raise ReferenceInvalid(f"{prefix!r}: write host[:port][/prefix]")
    return host, path.strip("/") if slash else ""


def _under(name: str, prefix: str) -> str | None:
    """What follows ``prefix`` in ``name`` ("" for the prefix itself); None when outside."""
    if not prefix:
        return name
    if name == prefix:
        return ""
    return name[len(prefix) + 1 :] if name.startswith(prefix + "/") else None


async def sync(
    connections: Connections,
    source_prefix: str,
    destination_prefix: str,
    *,
    tags: re.Pattern[str] | None = None,
    jobs: int = 4,
    source_credentials: Credentials | None = None,
    destination_credentials: Credentials | None = None,
    told: Callable[[SyncOutcome], None] = lambda outcome: None,
) -> SyncSummary:
    """Mirror the repositories under ``source_prefix`` (``host[/prefix]``) to
    ``destination_prefix``; ``tags``: only tags it matches whole."""
    if jobs < 1:
        raise ValueError("jobs must be at least 1")
    source_host, source_path = _split(source_prefix)
    destination_host, destination_path = _split(destination_prefix)
    source = connections.registry(source_host, source_credentials)
    destination = connections.registry(destination_host, destination_credentials)
    summary = SyncSummary()
    names = [
        (name, rest)
        for name in await source.catalog()
        if (rest := _under(name, source_path)) is not None
    ]
    limit = asyncio.Semaphore(jobs)

    async def one(name: str, target: str, tag: str) -> None:
        where = f"{source_host}/{name}:{tag}"
        there = f"{destination_host}/{target}:{tag}"
        async with limit:
            try:
                from_repository = source.repository(name)
                to_repository = destination.repository(target)
                top = await resolve(from_repository, tag)
                try:
                    current = (await resolve(to_repository, tag)).digest
                except (ManifestUnknown, NameUnknown):
                    current = None
                if current == top.digest:
                    outcome = SyncOutcome(where, there, "up to date", str(top.digest))
                    summary.up_to_date += 1
                else:
                    result = await copy_manifest(
                        from_repository, top, to_repository, tag, all_platforms=True
                    )
                    await copy_referrers(from_repository, to_repository, result.manifests)
                    outcome = SyncOutcome(where, there, "copied", str(result.digest))
                    summary.copied += 1
            except CargoholdError as exc:
                outcome = SyncOutcome(where, there, "failed", error=str(exc).splitlines()[0])
                summary.failed.append(outcome)
        told(outcome)

    async with asyncio.TaskGroup() as group:
        for name, rest in names:
            target = "/".join(part for part in (destination_path, rest) if part)
            if not target:
                raise ReferenceInvalid(f"{destination_prefix!r} names no repository for {name}")
            try:
                listed = await source.repository(name).tags.all()
            except NameUnknown:
                continue
            summary.repositories += 1
            for tag in listed:
                if tags is None or tags.fullmatch(tag):
                    group.create_task(one(name, target, tag))
    return summary
