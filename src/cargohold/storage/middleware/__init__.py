"""Storage middleware (``middleware.storage``): who decides where a blob download goes.

Distribution wraps its storage driver in middleware that change the driver's
``RedirectURL``; cargohold wraps the driver's redirect capability the same
way, and only that. A ``BlobRedirects`` is asked for the URL a client should
fetch a blob from (None: the registry serves it). ``DriverRedirects`` asks the
driver (``StorageDriver.redirects``), and each configured middleware wraps
what the entry before it built, in the order of the file:

- ``cloudfront`` (``cloudfront.py``): a CloudFront signed URL for the blob's
  key, unless the client is inside AWS (``ipfilteredby``, ``awsips.py``);
  then whatever it wraps answers;
- ``redirect`` (``redirect.py``): ``baseurl`` followed by the blob's path
  in storage, whatever it wraps.

Neither needs the driver to hand out URLs: on a local disk, where the driver
has none, blob downloads are redirected all the same.

Example::

    redirects = build_redirects(config.middleware.storage, driver, key_root="")
    url = await redirects.redirect_url(path, "GET", client="203.0.113.7")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from cargohold.storage.driver.base import StorageDriver

if TYPE_CHECKING:
    from cargohold.config import StorageMiddlewareEntry

__all__ = ["BlobRedirects", "DriverRedirects", "build_redirects"]


class BlobRedirects(Protocol):
    """Where a client may fetch the content at a storage path itself."""

    async def redirect_url(self, path: str, method: str, client: str | None) -> str | None:
        """A URL for ``method`` on the content at ``path``, or None for this registry to serve.

        ``client`` is the client's address (Distribution's, with ``X-Forwarded-For``
        and ``X-Real-IP`` heeded), when known.
        """
        ...

    async def close(self) -> None:
        """Stop anything started in the background."""
        ...


class DriverRedirects:
    """The driver's own redirects (presigned URLs of an object store); None where it has none."""

    __slots__ = ("_driver",)

    def __init__(self, driver: StorageDriver) -> None:
        self._driver = driver

    async def redirect_url(self, path: str, method: str, client: str | None) -> str | None:
        # Asked each time: a driver's capability may change while a test reconfigures it.
        redirects = self._driver.redirects
        return None if redirects is None else await redirects.redirect_url(path, method)

    async def close(self) -> None:
        return None  # the driver is closed by its owner


def build_redirects(
    entries: Sequence[StorageMiddlewareEntry], driver: StorageDriver, key_root: str
) -> BlobRedirects | None:
    """The enabled middleware of ``entries`` around ``driver``'s redirects; None without any.

    ``key_root`` is what comes before a path in the key of its object in the
    bucket (an object store's ``rootdirectory``; nothing on a local disk):
    CloudFront serves objects by key.
    """
    from cargohold.config import CloudFrontOptions, RedirectOptions

    redirects: BlobRedirects | None = None
    for entry in entries:
        settings = entry.settings
        if settings is None:
            continue  # disabled (one cargohold lacks is refused at start: unsupported.py)
        inner = redirects if redirects is not None else DriverRedirects(driver)
        if isinstance(settings, CloudFrontOptions):
            from cargohold.storage.middleware.cloudfront import CloudFront

            redirects = CloudFront.from_options(inner, settings, key_root)
        elif isinstance(settings, RedirectOptions):
            from cargohold.storage.middleware.redirect import Redirect

            redirects = Redirect(inner, settings.baseurl)
    return redirects
