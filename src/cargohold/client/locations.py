"""What the CLI's arguments name: an image on a registry, or in an OCI image layout.

::

    host[:port]/name[:tag|@digest]     a registry (a leading docker:// is allowed)
    oci:PATH[:TAG]                     an OCI image layout; PATH holds no ":"

:class:`Connections` opens them: one :class:`RemoteRegistry` per registry and
set of credentials, so two repositories of one registry share a session (and
the copy engine mounts between them), all closed together.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cargohold.client.auth import Credentials
from cargohold.client.ocilayout import OciLayout
from cargohold.client.registry import RemoteRegistry, RemoteRepository
from cargohold.digest import Digest
from cargohold.errors import ReferenceInvalid
from cargohold.reference import parse_reference

__all__ = ["Connections", "LayoutLocation", "Location", "RegistryLocation", "parse_location"]

OCI_PREFIX = "oci:"
DOCKER_PREFIX = "docker://"


@dataclass(frozen=True, slots=True)
class RegistryLocation:
    host: str
    name: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def reference(self) -> str | None:
        """What names the manifest: the digest when given (it wins over a tag), else the tag."""
        return str(self.digest) if self.digest is not None else self.tag

    @property
    def repository(self) -> str:
        return f"{self.host}/{self.name}"

    def __str__(self) -> str:
        text = self.repository
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True, slots=True)
class LayoutLocation:
    path: str
    tag: str | None = None

    @property
    def reference(self) -> str | None:
        return self.tag

    def __str__(self) -> str:
        return f"{OCI_PREFIX}{self.path}" + (f":{self.tag}" if self.tag else "")


Location = RegistryLocation | LayoutLocation


def parse_location(text: str) -> Location:
    """Parse an argument; ``ReferenceInvalid`` (or ``NameInvalid``, …) saying what is wrong."""
    if text.startswith(OCI_PREFIX):
        # containers/image splits at the first ":" too, so a PATH cannot contain one.
        path, _, tag = text[len(OCI_PREFIX) :].partition(":")
        if not path:
            raise ReferenceInvalid(f"{text!r}: an OCI layout reference is oci:PATH[:TAG]")
        return LayoutLocation(path, tag or None)
    reference = parse_reference(text.removeprefix(DOCKER_PREFIX))
    if reference.domain is None:
        raise ReferenceInvalid(
            f"{text!r} names no registry: write host[:port]/name[:tag] (or oci:PATH[:TAG])"
        )
    return RegistryLocation(reference.domain, reference.name, reference.tag, reference.digest)


@dataclass
class Connections:
    """Opens the repositories a command names and closes them all at the end."""

    insecure: bool = False
    ca_file: str | None = None
    chunk_size: int | None = None
    retries: int = 5
    _registries: dict[tuple[str, Credentials | None], RemoteRegistry] = field(default_factory=dict)

    def registry(self, host: str, credentials: Credentials | None = None) -> RemoteRegistry:
        key = (host, credentials)
        registry = self._registries.get(key)
        if registry is None:
            registry = RemoteRegistry(
                host,
                credentials=credentials,
                insecure=self.insecure,
                ca_file=self.ca_file,
                chunk_size=self.chunk_size,
                retries=self.retries,
            )
            self._registries[key] = registry
        return registry

    def repository(
        self, location: Location, credentials: Credentials | None = None
    ) -> RemoteRepository | OciLayout:
        if isinstance(location, LayoutLocation):
            return OciLayout(location.path)
        return self.registry(location.host, credentials).repository(location.name)

    async def close(self) -> None:
        for registry in self._registries.values():
            await registry.close()
        self._registries.clear()
