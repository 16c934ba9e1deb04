"""Repository names, tags and image references, in CNCF Distribution's grammar.

::

    reference        := [domain "/"] name [":" tag] ["@" digest]
    domain           := host [":" port]
    host             := domain-name | "[" ipv6-chars "]"
    domain-name      := domain-component ("." domain-component)*
    domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
    port             := [0-9]+
    name             := path-component ("/" path-component)*    at most 255 characters
    path-component   := [a-z0-9]+ (separator [a-z0-9]+)*
    separator        := "." | "_" | "__" | "-"+
    tag              := [A-Za-z0-9_] [A-Za-z0-9_.-]{0,127}
    digest           := see cargohold.digest (only supported algorithms are accepted)

The server only ever sees a *name* (the path of ``/v2/<name>/...``) and a tag or digest;
full references are for the CLI and the client. The grammar alone cannot tell a domain
from a first path component (``foo/bar``), so the first component is a domain exactly when
Distribution's ``ParseNormalizedNamed`` would take it as one: it is ``localhost``, or it
contains ``.`` or ``:``, or it has an upper-case letter (names never do). Unlike Docker,
cargohold adds no ``docker.io`` and no ``library/``: ``ubuntu`` is the repository
``ubuntu`` on whichever registry the caller talks to.

Like current Distribution, the 255-character limit applies to the name without its domain;
a tag is at most 128 characters and a digest's length is fixed by its algorithm, so no
other limit on the whole reference is needed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from cargohold.digest import Digest
from cargohold.errors import NameInvalid, ReferenceInvalid, TagInvalid

__all__ = [
    "NAME_TOTAL_LENGTH_MAX",
    "TAG_LENGTH_MAX",
    "Reference",
    "parse_reference",
    "validate_name",
    "validate_tag",
]

NAME_TOTAL_LENGTH_MAX: Final = 255
TAG_LENGTH_MAX: Final = 128

_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")
# Spelled out rather than \w: Python's \w matches any Unicode letter or digit, Go's is ASCII.
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_DOMAIN_COMPONENT = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
# Distribution allows IPv6 in brackets but no zone (``%eth0``) and no IPv4-mapped form.
_DOMAIN = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
)


def _quote(text: str) -> str:
    # Messages end up in logs and error bodies: never echo an unbounded input.
    return repr(text[:80]) + ("..." if len(text) > 80 else "")


def _is_domain(component: str) -> bool:
    # Distribution's splitDockerDomain rule, so that a reference means the same to both.
    return (
        component == "localhost"
        or "." in component
        or ":" in component
        or component != component.lower()
    )


def validate_name(name: str) -> str:
    """Return ``name`` if it is a repository name, else raise NameInvalid saying why."""
    if len(name) > NAME_TOTAL_LENGTH_MAX:
        raise NameInvalid(
            f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
        )
    if _NAME.fullmatch(name) is None:
        raise NameInvalid(_why_name_invalid(name))
    return name


def _why_name_invalid(name: str) -> str:
    if not name:
        return "repository name must have at least one component"
    lowered = name.lower()
    if lowered != name and _NAME.fullmatch(lowered):
        return f"repository name must be lowercase: {_quote(name)}"
    return f"invalid repository name {_quote(name)}"


def validate_tag(tag: str) -> str:
    """Return ``tag`` if it is a tag, else raise TagInvalid saying why."""
    if _TAG.fullmatch(tag) is None:
        raise TagInvalid(_why_tag_invalid(tag))
    return tag


def _why_tag_invalid(tag: str) -> str:
    if not tag:
        return "tag must not be empty"
    if len(tag) > TAG_LENGTH_MAX:
        return f"tag must not be more than {TAG_LENGTH_MAX} characters"
    if tag[0] in ".-":
        return f"tag must not start with {tag[0]!r}: {_quote(tag)}"
    return f"invalid tag {_quote(tag)}: only A-Z, a-z, 0-9, '_', '.' and '-' are allowed"


@dataclass(frozen=True, slots=True)
class Reference:
    """An image reference ``[domain/]name[:tag][@digest]``; ``str()`` gives it back.

    Every field is validated on construction, including that ``str()`` parses back to the
    same value: a ``domain`` must look like one, and without a domain the name's first
    component must not.
    """

    domain: str | None
    name: str
    tag: str | None = None
    digest: Digest | None = None

    def __post_init__(self) -> None:
        if self.domain is not None and not (
            _is_domain(self.domain) and _DOMAIN.fullmatch(self.domain)
        ):
            raise ReferenceInvalid(f"invalid domain {_quote(self.domain)}")
        validate_name(self.name)
        if self.domain is None:
            first, slash, _ = self.name.partition("/")
            if slash and _is_domain(first):
                raise ReferenceInvalid(
                    f"{_quote(self.name)} needs a domain: {first!r} would be read as one"
                )
        if self.tag is not None:
            validate_tag(self.tag)
        if self.digest is not None:
            # A plain str is accepted and stored as a Digest, once it has been checked.
            object.__setattr__(self, "digest", Digest.parse(self.digest))

    def __str__(self) -> str:
        text = self.name if self.domain is None else f"{self.domain}/{self.name}"
        if self.tag is not None:
            text = f"{text}:{self.tag}"
        if self.digest is not None:
            text = f"{text}@{self.digest}"
        return text


def parse_reference(text: str) -> Reference:
    """Parse ``[domain/]name[:tag][@digest]``.

    Raises NameInvalid, TagInvalid, DigestInvalid or ReferenceInvalid (a bad domain).
    """
    domain: str | None = None
    rest = text
    first, slash, after = text.partition("/")
    if slash and _is_domain(first):
        domain, rest = first, after
    # Neither a name nor a tag may contain "@" or a name ":", so the first of each splits.
    rest, at, digest = rest.partition("@")
    name, colon, tag = rest.partition(":")
    return Reference(
        domain=domain,
        name=name,
        tag=tag if colon else None,
        digest=Digest.parse(digest) if at else None,
    )
