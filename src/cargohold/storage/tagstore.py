"""Tags: named pointers to manifests, kept as links under ``_manifests/tags/<tag>/``.

``current/link`` names the manifest the tag points at now; ``index/<alg>/<hex>/link``
records every manifest it has ever pointed at (Distribution keeps that history).
On local files, the sorted list of a large repository's tags is kept while
unchanged (``taglists.TagLists``), so a page of tags/list costs its page.
"""

from __future__ import annotations

import asyncio

from cargohold.digest import Digest
from cargohold.errors import DigestInvalid, ManifestUnknown, NameUnknown, PathNotFound
from cargohold.reference import validate_tag
from cargohold.storage.driver.base import ImmediateFiles, StorageDriver
from cargohold.storage.paths import (
    LINK_LIMIT,
    REPOSITORY_MARKERS,
    RepositoryDir,
    TagCurrentLink,
    TagDir,
    TagIndexLink,
    TagsDir,
    link_content,
    parse_link,
    path_for,
)
from cargohold.storage.taglists import TagLists


class TagStore:
    """The tags of repository ``name``.

    ``lookup_limit`` bounds how many tags ``lookup`` reads at once
    (Distribution's ``storage.tag.concurrencylimit``); ``kept``, the registry's
    kept tag lists, if its driver has local files.
    """

    def __init__(
        self,
        name: str,
        driver: StorageDriver,
        lookup_limit: int = 8,
        kept: TagLists | None = None,
    ) -> None:
        self.name = name
        self._driver = driver
        self._lookup_limit = max(1, lookup_limit)
        self._kept = kept

    async def get(self, tag: str) -> Digest:
        path = path_for(TagCurrentLink(self.name, validate_tag(tag)))
        try:
            content = await self._driver.get_content(path)
        except PathNotFound:
            raise ManifestUnknown(f"unknown tag {tag!r}", {"tag": tag}) from None
        try:
            return parse_link(content)
        except DigestInvalid:
            raise ManifestUnknown(f"tag {tag!r} has a damaged link", {"tag": tag}) from None

    async def tag(self, tag: str, digest: Digest) -> None:
        await self._driver.put_contents(self.tag_writes(tag, digest))

    def tag_writes(self, tag: str, digest: Digest) -> list[tuple[str, bytes]]:
        """The file writes that point ``tag`` at ``digest``, in order, for a batch."""
        validate_tag(tag)
        # The index entry first, as Distribution does: a crash between the two
        # writes leaves history without a move, never a move without history.
        return [
            (path_for(TagIndexLink(self.name, tag, digest)), link_content(digest)),
            (path_for(TagCurrentLink(self.name, tag)), link_content(digest)),
        ]

    async def untag(self, tag: str) -> None:
        try:
            await self._driver.delete(path_for(TagDir(self.name, validate_tag(tag))))
        except PathNotFound:
            raise ManifestUnknown(f"unknown tag {tag!r}", {"tag": tag}) from None

    async def all(self) -> list[str]:
        """Every tag, sorted. A kept list is handed out as it is: it must not be changed."""
        if self._kept is not None:
            kept = await self._kept.tags(self.name)
            if kept is not None:
                return kept
        try:
            paths = await self._driver.list(path_for(TagsDir(self.name)))
        except PathNotFound:
            if await self._repository_exists():
                return []
            raise NameUnknown(f"repository {self.name!r} not known", {"name": self.name}) from None
        return sorted(path.rpartition("/")[2] for path in paths)

    async def lookup(self, digest: Digest) -> list[str]:
        try:
            tags = await self.all()
        except NameUnknown:
            return []

        reading = asyncio.Semaphore(self._lookup_limit)

        async def points_at_digest(tag: str) -> bool:
            async with reading:
                try:
                    return await self.get(tag) == digest
                except ManifestUnknown:
                    return False

        found = await asyncio.gather(*(points_at_digest(tag) for tag in tags))
        return [tag for tag, hit in zip(tags, found, strict=True) if hit]

    async def _repository_exists(self) -> bool:
        try:
            children = await self._driver.list(path_for(RepositoryDir(self.name)))
        except PathNotFound:
            return False
        return any(child.rpartition("/")[2] in REPOSITORY_MARKERS for child in children)


# -- at once, for the fast path (``registry.ImmediateReads``) -----------------------------


def tag_now(files: ImmediateFiles, name: str, tag: str) -> Digest | None:
    """``TagStore.get``, when the tag's link can be read at once and is sound."""
    content = files.read_now(path_for(TagCurrentLink(name, tag)), LINK_LIMIT)
    if content is None:
        return None
    try:
        return parse_link(content)
    except DigestInvalid:
        return None


def tags_now(files: ImmediateFiles, name: str) -> list[str] | None:
    """``TagStore.all``, when the repository has a tags folder that can be listed at once."""
    names = files.list_now(path_for(TagsDir(name)))
    return None if names is None else sorted(names)
