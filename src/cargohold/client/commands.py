"""The client commands of the CLI (``copy``, ``tags``, ``catalog``, ``inspect``, ``rm``,
``digest``, ``tag``, ``referrers``, ``login``), as coroutines: ``cargohold.cli`` parses
arguments and prints.

A registry reference without a tag or digest means ``latest``, as docker reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from cargohold.client.artifacts import (
    DEFAULT_ARTIFACT_TYPE,
    ArtifactFile,
    pull_files,
    push_files,
)
from cargohold.client.auth import Credentials
from cargohold.client.copy import (
    DEFAULT_PLATFORM,
    CopyResult,
    Platform,
    copy_manifest,
    copy_referrers,
    resolve,
    select_platform,
)
from cargohold.client.display import inspect_summary
from cargohold.client.locations import Connections, LayoutLocation, Location, RegistryLocation
from cargohold.client.ocilayout import OciLayout
from cargohold.client.progress import NO_PROGRESS, Progress
from cargohold.client.registry import RemoteRepository
from cargohold.descriptor import Descriptor
from cargohold.digest import Digest
from cargohold.errors import DigestInvalid, ManifestUnknown, NameUnknown, ReferenceInvalid
from cargohold.manifest import parse_manifest
from cargohold.manifest.base import ImageManifestBase, IndexBase
from cargohold.registry import StoredManifest

DEFAULT_TAG = "latest"


def _reference(location: Location) -> str | None:
    if isinstance(location, RegistryLocation) and location.reference is None:
        return DEFAULT_TAG
    return location.reference


@dataclass
class CopyOptions:
    all_platforms: bool = False
    platform: Platform = DEFAULT_PLATFORM
    jobs: int = 4
    source_credentials: Credentials | None = None
    destination_credentials: Credentials | None = None
    #: Copy the manifests that refer to what is copied (signatures, SBOMs) too.
    referrers: bool = True


async def copy(
    connections: Connections,
    source: Location,
    destination: Location,
    options: CopyOptions,
    progress: Progress = NO_PROGRESS,
) -> CopyResult:
    """Copy ``source`` to ``destination``; the destination tag defaults to the source's."""
    src = connections.repository(source, options.source_credentials)
    dst = connections.repository(destination, options.destination_credentials)
    expected: Digest | None = None
    if isinstance(destination, RegistryLocation) and destination.digest is not None:
        tag, expected = None, destination.digest
    else:
        tag = destination.tag or (source.tag if isinstance(source, RegistryLocation) else None)
        if tag is None and isinstance(source, LayoutLocation):
            tag = source.tag
    try:
        top = await resolve(src, _reference(source))
    except (ManifestUnknown, NameUnknown) as exc:
        raise type(exc)(f"{source}: {exc}") from None
    result = await copy_manifest(
        src,
        top,
        dst,
        tag,
        all_platforms=options.all_platforms,
        platform=options.platform,
        jobs=options.jobs,
        progress=progress,
    )
    if expected is not None and result.digest != expected:
        raise DigestInvalid(f"copied manifest {result.digest}, not the {expected} asked for")
    if options.referrers:
        result.referrers = await copy_referrers(
            src, dst, result.manifests, jobs=options.jobs, progress=progress
        )
    return result


async def tags(
    connections: Connections, location: Location, credentials: Credentials | None = None
) -> list[str]:
    return await connections.repository(location, credentials).tags.all()


async def catalog(
    connections: Connections, host: str, credentials: Credentials | None = None
) -> list[str]:
    return await connections.registry(host, credentials).catalog()


async def digest(
    connections: Connections, location: Location, credentials: Credentials | None = None
) -> Digest:
    repository = connections.repository(location, credentials)
    return (await resolve(repository, _reference(location))).digest


@dataclass(frozen=True)
class Inspection:
    manifest: StoredManifest
    config: bytes | None
    summary: dict[str, object]

    def json(self) -> str:
        return json.dumps(self.summary, indent=4)


async def inspect(
    connections: Connections,
    location: Location,
    credentials: Credentials | None = None,
    platform: Platform = DEFAULT_PLATFORM,
) -> Inspection:
    """The manifest ``location`` names, and for an image its config and a summary.

    An index is summarised by its image for ``platform``, under the index's
    digest, as ``skopeo inspect`` does.
    """
    repository = connections.repository(location, credentials)
    top = await resolve(repository, _reference(location))
    image = top
    parsed = parse_manifest(top.payload, top.media_type)
    if isinstance(parsed, IndexBase):
        image = await repository.manifests.get(select_platform(parsed, platform).digest)
        parsed = parse_manifest(image.payload, image.media_type)
    config = None
    if isinstance(parsed, ImageManifestBase):
        config = await repository.blobs.get(parsed.config.digest)
    if isinstance(location, RegistryLocation):
        name: str | None = location.repository
        try:
            repo_tags: list[str] = await repository.tags.all()
        except NameUnknown:
            repo_tags = []
    else:
        name, repo_tags = None, []
    summary = inspect_summary(name, top.digest, top.media_type, parsed, config, repo_tags)
    return Inspection(top, config, summary)


async def remove(
    connections: Connections, location: Location, credentials: Credentials | None = None
) -> Digest:
    """Delete the manifest ``location`` names (every tag on it goes with it).

    In an OCI layout, ``oci:PATH:TAG`` drops the tag's ``index.json`` entry only.
    """
    if location.reference is None:
        raise ReferenceInvalid(f"{location}: name the manifest to delete with a tag or digest")
    repository = connections.repository(location, credentials)
    if isinstance(repository, OciLayout) and location.tag is not None:
        found = await repository.tags.get(location.tag)
        await repository.tags.untag(location.tag)
        return found
    reference = location.reference
    found = Digest.parse(reference) if ":" in reference else await repository.tags.get(reference)
    try:
        await repository.manifests.delete(found)
    except ManifestUnknown:
        raise ManifestUnknown(f"{location}: no such manifest") from None
    return found


async def tag(
    connections: Connections,
    location: Location,
    new_tags: list[str],
    credentials: Credentials | None = None,
) -> Digest:
    """Point ``new_tags`` of the same repository at the manifest ``location`` names."""
    repository = connections.repository(location, credentials)
    found = await resolve(repository, _reference(location))
    await repository.manifests.put(found.payload, found.media_type, new_tags)
    return found.digest


async def referrers(
    connections: Connections,
    location: Location,
    credentials: Credentials | None = None,
    artifact_type: str | None = None,
) -> tuple[Digest, list[Descriptor]]:
    """The manifest ``location`` names, and the descriptors of its referrers."""
    repository = connections.repository(location, credentials)
    found = await resolve(repository, _reference(location))
    return found.digest, await repository.referrers(found.digest, artifact_type)


async def login(connections: Connections, host: str, credentials: Credentials) -> None:
    """Check ``credentials`` on ``host`` (a request only a signed-in user may make)."""
    await connections.registry(host, credentials).sign_in()


async def push(
    connections: Connections,
    location: Location,
    files: list[ArtifactFile],
    credentials: Credentials | None = None,
    *,
    artifact_type: str = DEFAULT_ARTIFACT_TYPE,
    annotations: dict[str, str] | None = None,
) -> Descriptor:
    """Push ``files`` as an artifact at ``location`` (its tag, else ``latest``)."""
    if isinstance(location, RegistryLocation) and location.digest is not None:
        raise ReferenceInvalid(f"{location}: push to a tag, not a digest")
    repository = _registry_repository(connections, location, credentials)
    return await push_files(
        repository,
        files,
        tag=_reference(location),
        artifact_type=artifact_type,
        annotations=annotations,
    )


async def pull(
    connections: Connections,
    location: Location,
    directory: Path,
    credentials: Credentials | None = None,
) -> list[Path]:
    """Write the files of the artifact ``location`` names into ``directory``."""
    repository = _registry_repository(connections, location, credentials)
    found = await resolve(repository, _reference(location))
    return await pull_files(repository, found.payload, directory)


def _registry_repository(
    connections: Connections, location: Location, credentials: Credentials | None
) -> RemoteRepository:
    repository = connections.repository(location, credentials)
    if isinstance(repository, OciLayout):
        raise ReferenceInvalid(f"{location}: artifacts go to and come from a registry")
    return repository
