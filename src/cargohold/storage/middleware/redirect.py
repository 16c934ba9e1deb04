"""The ``redirect`` storage middleware: blob downloads go to ``baseurl`` + the storage path.

As Distribution's, it builds the URL from the blob's path in storage alone
(``/docker/registry/v2/blobs/sha256/ab/ab12…/data``): the scheme and host of
``baseurl``, its path joined in front (Go's ``path.Join``, which cleans the
result), and nothing else of it (no user, query or fragment). It asks the
driver for nothing, so it redirects on a local disk as on S3; whoever serves
``baseurl`` (a proxy, a CDN over the storage) must find the blob there.
"""

from __future__ import annotations

import posixpath
from urllib.parse import quote, urlsplit

from cargohold.storage.middleware import BlobRedirects

__all__ = ["Redirect"]

#: What Go's URL.String leaves unescaped in a path, besides letters, digits and ``-._~``.
_PATH_SAFE = "/$&+,:;=@"


class Redirect:
    """``BlobRedirects`` to ``baseurl`` followed by the path; ``inner`` is never asked."""

    __slots__ = ("_base_path", "_inner", "_origin")

    def __init__(self, inner: BlobRedirects, baseurl: str) -> None:
        parts = urlsplit(baseurl)
        host = parts.netloc.rpartition("@")[2]
        if not parts.scheme or not host:
            raise ValueError(f"not SCHEME://HOST[/PATH]: {baseurl!r}")
        self._inner = inner
        self._origin = f"{parts.scheme.lower()}://{host}"
        self._base_path = parts.path

    def url(self, path: str) -> str:
        """The URL of the content at ``path``."""
        if self._base_path:
            path = posixpath.normpath(f"{self._base_path}/{path}")
            if path.startswith("//"):  # POSIX keeps two leading slashes; Go's Clean does not
                path = "/" + path.lstrip("/")
        return self._origin + quote(path, safe=_PATH_SAFE)

    async def redirect_url(self, path: str, method: str, client: str | None) -> str | None:
        return self.url(path)

    async def close(self) -> None:
        await self._inner.close()
