"""Which external URLs a layer descriptor may name: Distribution's ``validation.manifests.urls``.

A foreign (Docker) or non-distributable (OCI) layer is fetched by clients from its ``urls``,
not from the registry, so the registry does not require the blob; instead every URL must be
``http`` or ``https``, carry no fragment, match one of the ``allow`` expressions when any are
configured, and match none of the ``deny`` expressions. Expressions are searched for
anywhere in the URL, as Go's ``Regexp.MatchString`` does (anchor them with ``^``/``$``);
Distribution joins each list with ``|``, which is the same as matching any one of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from cargohold.errors import ConfigError

__all__ = ["URLPolicy"]

# Go's url.Parse refuses control characters and malformed %-escapes; Python's does not.
_UNPARSABLE = re.compile(r"[\x00-\x20\x7f]|%(?![0-9A-Fa-f]{2})")


def _compile(patterns: Iterable[str], key: str) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for i, pattern in enumerate(patterns):
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ConfigError(f"{key}[{i}]", f"invalid regular expression: {exc}") from exc
    return tuple(compiled)


@dataclass(frozen=True, slots=True)
class URLPolicy:
    """The ``allow`` and ``deny`` expressions for layer URLs; both empty allows any http(s) URL."""

    allow: tuple[re.Pattern[str], ...] = ()
    deny: tuple[re.Pattern[str], ...] = ()
    #: With ``validation.disabled``, Distribution checks no URL at all.
    checked: bool = True

    @classmethod
    def permissive(cls) -> URLPolicy:
        """The policy of a registry whose validation is disabled: any URL passes."""
        return cls(checked=False)

    @classmethod
    def compile(cls, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> URLPolicy:
        """Build a policy from configuration strings; a bad expression is a ConfigError."""
        return cls(
            _compile(allow, "validation.manifests.urls.allow"),
            _compile(deny, "validation.manifests.urls.deny"),
        )

    def refusal(self, url: str) -> str | None:
        """Why ``url`` is refused, or None when it is allowed."""
        if not self.checked:
            return None
        if _UNPARSABLE.search(url):
            return "not a valid URL"
        try:
            parts = urlsplit(url)
        except ValueError:
            return "not a valid URL"
        if parts.scheme.lower() not in ("http", "https"):
            return "scheme is not http or https"
        if parts.fragment:
            return "has a fragment"
        if self.allow and not any(p.search(url) for p in self.allow):
            return "not allowed by validation.manifests.urls.allow"
        if any(p.search(url) for p in self.deny):
            return "denied by validation.manifests.urls.deny"
        return None

    def permits(self, url: str) -> bool:
        return self.refusal(url) is None
