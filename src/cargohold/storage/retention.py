"""Retention policies: which tags a collection removes, and how long untagged manifests stay.

In the spirit of Zot's retention, on Distribution's layout. A policy names
repositories by glob (``*`` within one path component, ``**`` across them,
``?`` one character, ``[…]`` a class); the first policy matching a repository
decides for it, and a repository matched by none keeps every tag.

A policy with ``keeptags`` keeps a tag when one of its rules does, and removes
every other tag. A rule applies to the tags matching one of its ``patterns``
(regular expressions matching the whole tag; every tag without patterns).
Among those it keeps every tag when it has no other condition, else each tag
meeting any of them: among the ``mostrecentlypushed`` or ``mostrecentlypulled``
most recent, pushed within ``pushedwithin``, pulled within ``pulledwithin``.
A tag's push is when its link was last written; its pull, when the manifest it
points at was last pulled (``pulls.py``). ``untagged`` deletes the manifests
no tag points at once they are that old (and past the grace period), as
``deleteuntagged`` does for every repository.

A tag younger than the grace period is never removed, whatever the policy: a
client that has just pushed it is told it exists.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from cargohold.digest import Digest

__all__ = [
    "KeepRule",
    "Retention",
    "RetentionPolicy",
    "TagState",
    "compile_glob",
    "compile_pattern",
]


def compile_glob(glob: str) -> re.Pattern[str]:
    """The repository names ``glob`` matches, as a regular expression; ``ValueError`` if bad."""
    if not glob:
        raise ValueError("an empty repository glob matches nothing")
    out, i = [], 0
    while i < len(glob):
        char = glob[i]
        if glob.startswith("**", i):
            # ``a/**`` matches ``a/b`` and ``a/b/c``; ``**/x`` matches ``x`` too.
            if glob.startswith("**/", i):
                out.append("(?:.*/)?")
                i += 3
            else:
                out.append(".*")
                i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = glob.find("]", i + 2 if glob.startswith(("[!", "[^"), i) else i + 1)
            if end < 0:
                raise ValueError(f"repository glob {glob!r}: '[' without its ']'")
            body = glob[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body}]")
            i = end + 1
            continue
        else:
            out.append(re.escape(char))
        i += 1
    try:
        return re.compile("".join(out))
    except re.error as exc:
        raise ValueError(f"repository glob {glob!r}: {exc}") from None


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """A tag pattern (a regular expression); ``ValueError`` naming it if it does not compile."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"tag pattern {pattern!r}: {exc}") from None


@dataclass(frozen=True)
class TagState:
    """One tag as retention judges it."""

    tag: str
    digest: Digest
    #: When its link was last written (epoch seconds).
    pushed: float
    #: When the manifest it points at was last pulled; None: never recorded.
    pulled: float | None


@dataclass(frozen=True)
class KeepRule:
    """One ``keeptags`` rule."""

    patterns: tuple[re.Pattern[str], ...] = ()
    most_recently_pushed: int | None = None
    most_recently_pulled: int | None = None
    pushed_within: float | None = None
    pulled_within: float | None = None

    def applies(self, tag: str) -> bool:
        return not self.patterns or any(p.fullmatch(tag) for p in self.patterns)

    def kept(self, tags: Sequence[TagState], now: float) -> set[str]:
        """The tags of ``tags`` this rule keeps."""
        mine = [t for t in tags if self.applies(t.tag)]
        conditions = (
            self.most_recently_pushed,
            self.most_recently_pulled,
            self.pushed_within,
            self.pulled_within,
        )
        if all(c is None for c in conditions):
            return {t.tag for t in mine}
        kept: set[str] = set()
        if self.most_recently_pushed is not None:
            newest = sorted(mine, key=lambda t: (-t.pushed, t.tag))
            kept.update(t.tag for t in newest[: self.most_recently_pushed])
        if self.most_recently_pulled is not None:
            pulled = [t for t in mine if t.pulled is not None]
            newest = sorted(pulled, key=lambda t: (-(t.pulled or 0.0), t.tag))
            kept.update(t.tag for t in newest[: self.most_recently_pulled])
        if self.pushed_within is not None:
            kept.update(t.tag for t in mine if t.pushed >= now - self.pushed_within)
        if self.pulled_within is not None:
            since = now - self.pulled_within
            kept.update(t.tag for t in mine if t.pulled is not None and t.pulled >= since)
        return kept


@dataclass(frozen=True)
class RetentionPolicy:
    """One policy: the repositories it governs and what it keeps there."""

    repositories: tuple[re.Pattern[str], ...]
    #: None: every tag stays.
    keep_tags: tuple[KeepRule, ...] | None = None
    #: Untagged manifests go once this old (seconds); None: as ``deleteuntagged`` says.
    untagged: float | None = None

    def governs(self, name: str) -> bool:
        return any(glob.fullmatch(name) for glob in self.repositories)

    def removals(self, tags: Sequence[TagState], now: float, grace: float) -> list[TagState]:
        """The tags of a repository this policy removes at ``now``, sorted by name."""
        if self.keep_tags is None:
            return []
        kept: set[str] = set()
        for rule in self.keep_tags:
            kept |= rule.kept(tags, now)
        return sorted(
            (t for t in tags if t.tag not in kept and t.pushed <= now - grace),
            key=lambda t: t.tag,
        )

    @property
    def uses_pulls(self) -> bool:
        rules = self.keep_tags or ()
        return any(r.most_recently_pulled is not None or r.pulled_within is not None for r in rules)


@dataclass(frozen=True)
class Retention:
    """The policies, in order: the first one governing a repository decides for it."""

    policies: tuple[RetentionPolicy, ...] = field(default_factory=tuple)

    def policy_for(self, name: str) -> RetentionPolicy | None:
        return next((p for p in self.policies if p.governs(name)), None)

    @property
    def uses_pulls(self) -> bool:
        """Whether any policy reads when tags were pulled (so pulls must be recorded)."""
        return any(p.uses_pulls for p in self.policies)

    @property
    def shortest_pull_window(self) -> float | None:
        windows = [
            r.pulled_within
            for p in self.policies
            for r in p.keep_tags or ()
            if r.pulled_within is not None
        ]
        return min(windows) if windows else None
