"""The Python client: the domain Protocols of ``cargohold.registry`` over HTTP.

::

    RemoteRegistry(url)            a registry (registry.Namespace): repository(), catalog()
      └── RemoteRepository         blobs, manifests, tags, referrers (registry.Repository)
    OciLayout(path)                an OCI image layout on disk, as a Repository too
    copy_image(...)                an image (or a whole index) from any Repository to any other

Modules, one concern each: ``transport`` (scheme, TLS, retries, errors as
domain values), ``auth`` (challenges, tokens, credentials), ``blobs``,
``uploads``, ``manifests``, ``referrers``, ``listing``, ``ocilayout``,
``copy``, ``progress``; ``locations``, ``display`` and ``commands`` serve the CLI.
"""

from cargohold.client.auth import Credentials
from cargohold.client.copy import CopyResult, Platform, copy_image, copy_manifest
from cargohold.client.ocilayout import OciLayout
from cargohold.client.progress import BlobProgress, Progress
from cargohold.client.registry import RemoteRegistry, RemoteRepository
from cargohold.client.transport import RetryPolicy

__all__ = [
    "BlobProgress",
    "CopyResult",
    "Credentials",
    "OciLayout",
    "Platform",
    "Progress",
    "RemoteRegistry",
    "RemoteRepository",
    "RetryPolicy",
    "copy_image",
    "copy_manifest",
]
