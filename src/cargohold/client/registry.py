"""A remote registry as a ``registry.Namespace``: the same Protocols as the storage-backed one.

::

    async with RemoteRegistry("registry.example.com") as remote:
        repository = remote.repository("library/alpine")
        digest = await repository.tags.get("3.20")
        manifest = await repository.manifests.get(digest)

Every error is a domain error (``cargohold.errors``); a registry that cannot be
reached, or keeps failing after the retries, is ``Unavailable``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import TracebackType

from cargohold.client.auth import Credentials
from cargohold.client.blobs import RemoteBlobStore
from cargohold.client.listing import list_pages
from cargohold.client.manifests import RemoteManifestService, RemoteTagService
from cargohold.client.referrers import list_referrers
from cargohold.client.transport import RetryPolicy, Transport
from cargohold.descriptor import Descriptor
from cargohold.digest import Digest
from cargohold.reference import validate_name

__all__ = ["RemoteRegistry", "RemoteRepository"]


class RemoteRegistry:
    """The registry at ``url`` (``host[:port]``, or ``http(s)://host[:port]``).

    - ``credentials``: else ``CARGOHOLD_USERNAME``/``CARGOHOLD_PASSWORD``, else
      docker's ``config.json`` (see ``cargohold.client.auth``).
    - ``insecure``: allow plain HTTP and unverified TLS (loopback registries
      are plain HTTP anyway, as docker treats them).
    - ``ca_file``: PEM certificates to verify the registry's TLS certificate with.
    - ``client_certificate``: a certificate file and its key (None: in the same file),
      shown to the registry.
    - ``chunk_size``: upload ``PATCH`` size in bytes; None streams each blob in one.
    - ``retries``: tries of a failing request in all (the first included).
    """

    def __init__(
        self,
        url: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool = False,
        ca_file: str | None = None,
        client_certificate: tuple[str, str | None] | None = None,
        chunk_size: int | None = None,
        retries: int = 5,
        backoff: float = 0.25,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if chunk_size is not None and chunk_size < 1:
            raise ValueError("chunk_size must be positive")
        if retries < 1:
            raise ValueError("retries must be at least 1")
        self.transport = Transport(
            url,
            credentials=credentials,
            insecure=insecure,
            ca_file=ca_file,
            client_certificate=client_certificate,
            retry=RetryPolicy(attempts=retries, base_delay=backoff),
            environ=environ,
        )
        self.chunk_size = chunk_size

    @property
    def host(self) -> str:
        return self.transport.host

    @property
    def url(self) -> str:
        return self.transport.base

    def repository(self, name: str) -> RemoteRepository:
        return RemoteRepository(self, validate_name(name))

    async def catalog(
        self, n: int | None = None, last: str | None = None, *, page_size: int | None = None
    ) -> list[str]:
        """Repository names after ``last``, at most ``n``, following the registry's pages."""
        return await list_pages(
            self.transport,
            "/v2/_catalog",
            "repositories",
            scopes=("registry:catalog:*",),
            n=n,
            last=last,
            page_size=page_size,
        )

    async def ping(self) -> None:
        """Reach the registry (``GET /v2/``); ``Unavailable`` when it does not answer."""
        await self.transport.ping()

    async def sign_in(self) -> None:
        """``GET /v2/`` as the credentials' user, as ``docker login`` checks them:
        ``Unauthorized`` when the registry refuses them."""
        response = await self.transport.send("GET", "/v2/")
        async with response:
            await response.read()

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> RemoteRegistry:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"RemoteRegistry({self.url!r})"


class RemoteRepository:
    """One repository of a remote registry (implements ``registry.Repository``)."""

    def __init__(self, registry: RemoteRegistry, name: str) -> None:
        self.registry = registry
        self.transport = registry.transport
        self._name = name
        self._blobs = RemoteBlobStore(registry.transport, name, registry.chunk_size)
        self._manifests = RemoteManifestService(self)
        self._tags = RemoteTagService(self, self._manifests)

    @property
    def name(self) -> str:
        return self._name

    @property
    def blobs(self) -> RemoteBlobStore:
        return self._blobs

    @property
    def manifests(self) -> RemoteManifestService:
        return self._manifests

    @property
    def tags(self) -> RemoteTagService:
        return self._tags

    async def referrers(
        self, subject: Digest, artifact_type: str | None = None
    ) -> list[Descriptor]:
        return await list_referrers(
            self.transport, self._manifests, Digest.parse(subject), artifact_type
        )

    def __repr__(self) -> str:
        return f"RemoteRepository({self.registry.url!r}, {self._name!r})"
