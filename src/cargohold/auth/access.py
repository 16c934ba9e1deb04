"""Access records: what a request needs, what a credential grants, and how scopes spell them.

An access record is a resource (a type and a name) and one action on it:
``repository:library/alpine:pull``. A request needs a few records, a credential
grants a set of them, and the two meet in :meth:`Grant.permits`.

Which records a request needs follows Distribution's ``appendAccessRecords``
(registry/handlers/app.go), so that a token minted for the Go registry opens the
same doors here:

=====================  =====================================================
request                needs
=====================  =====================================================
GET, HEAD on a name    ``pull``            (blobs, manifests, tags, referrers,
                                           upload status)
POST, PUT, PATCH       ``pull`` and ``push`` (uploads, manifest and tag PUT)
DELETE on a name       ``delete``          (blobs, manifests, and cancelling
                                           an upload, as in Distribution)
GET ``/v2/_catalog``   ``registry:catalog:*``
GET ``/v2/``           nothing but being authenticated
=====================  =====================================================

A cross-repository mount (``POST …/uploads/?mount=&from=``) does not need pull
on ``from`` here, unlike Distribution: without it the mount quietly becomes a
plain upload (see ``api/uploads.py``), so a client learns nothing about a
repository it may not read.

Scopes are the text form (``type:name:action,action``, several separated by
spaces) used in challenges and token requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "CATALOG",
    "Access",
    "Grant",
    "Resource",
    "format_scope",
    "parse_scope",
    "quote",
    "repository_access",
]

PULL = "pull"
PUSH = "push"
DELETE = "delete"
#: The action that stands for every action, in a token's claims and in an ACL.
ANY = "*"


@dataclass(frozen=True, slots=True)
class Resource:
    """A typed, named resource: ``repository`` + a repository name, or ``registry`` + ``catalog``.

    Distribution's tokens may also carry a ``class`` (``repository(plugin)``);
    like Distribution's verifier, cargohold ignores it when matching.
    """

    type: str
    name: str


@dataclass(frozen=True, slots=True)
class Access:
    """One action on one resource."""

    resource: Resource
    action: str

    @classmethod
    def of(cls, type_: str, name: str, action: str) -> Access:
        return cls(Resource(type_, name), action)

    def record(self) -> dict[str, str]:
        """The record as Distribution puts it in an ``UNAUTHORIZED`` reply's ``detail``.

        Go encodes ``auth.Access`` with its field names, the embedded resource flattened.
        """
        return {
            "Type": self.resource.type,
            "Class": "",
            "Name": self.resource.name,
            "Action": self.action,
        }


CATALOG = Access.of("registry", "catalog", ANY)


def repository_access(method: str, name: str) -> tuple[Access, ...]:
    """What ``method`` on repository ``name`` needs (Distribution's ``appendAccessRecords``)."""
    resource = Resource("repository", name)
    if method in ("GET", "HEAD"):
        return (Access(resource, PULL),)
    if method in ("POST", "PUT", "PATCH"):
        return (Access(resource, PULL), Access(resource, PUSH))
    if method == "DELETE":
        return (Access(resource, DELETE),)
    return ()


def format_scope(access: Iterable[Access]) -> str:
    """Scopes for a challenge: ``repository:a:pull,push repository:b:pull``.

    Resources keep the order they were first named in, actions the order they
    were asked for, so the same request always gets the same challenge.
    """
    actions: dict[Resource, list[str]] = {}
    for item in access:
        listed = actions.setdefault(item.resource, [])
        if item.action not in listed:
            listed.append(item.action)
    return " ".join(f"{r.type}:{r.name}:{','.join(acts)}" for r, acts in actions.items())


def parse_scope(text: str) -> list[Access]:
    """The access records of one scope or several (separated by spaces).

    ``type:name:actions``: the type is up to the first colon, the actions after
    the last, the name in between (a name may hold a registry's ``host:port``).
    A type may carry a class in parentheses (``repository(plugin)``), which is
    dropped. A scope that is not of this shape is skipped, as Distribution's
    token server skips it: the token then simply lacks that access.
    """
    found: list[Access] = []
    for scope in text.split():
        type_, colon, rest = scope.partition(":")
        name, colon2, actions = rest.rpartition(":")
        if not (colon and colon2 and type_ and name and actions):
            continue
        type_ = type_.partition("(")[0]
        found.extend(Access.of(type_, name, action) for action in actions.split(",") if action)
    return found


@dataclass(frozen=True, slots=True)
class Grant:
    """What a credential allows: the subject's name and the actions per resource.

    ``resources`` None means everything (htpasswd and silly grant every action
    to any valid user, as Distribution does); a token grants exactly its
    ``access`` claim, where the action ``*`` stands for every action.
    """

    subject: str
    resources: Mapping[Resource, frozenset[str]] | None = None

    def permits(self, access: Access) -> bool:
        if self.resources is None:
            return True
        actions = self.resources.get(access.resource)
        return actions is not None and (access.action in actions or ANY in actions)

    @classmethod
    def of(cls, subject: str, access: Iterable[Access]) -> Grant:
        resources: dict[Resource, set[str]] = {}
        for item in access:
            resources.setdefault(item.resource, set()).add(item.action)
        return cls(subject, {r: frozenset(acts) for r, acts in resources.items()})


#: What a registry without access control allows: everything, to nobody in particular.
EVERYTHING = Grant("")


def quote(text: str) -> str:
    """``text`` fit inside a quoted-string of a header (RFC 9110 5.6.4)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')
