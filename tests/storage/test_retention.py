"""Retention policies: which tags a collection removes, and when untagged manifests go.

- Repositories are named by glob: ``*`` within a component, ``**`` across them;
  the first policy matching a repository decides, and one matched by none keeps
  every tag.
- A tag stays when a ``keeptags`` rule keeps it: its patterns match the whole
  tag, and it is among the N most recently pushed or pulled, or was pushed or
  pulled within a duration (any of them); a rule with patterns alone keeps every
  tag they match.
- A tag younger than the grace period stays whatever the policy; so does one
  pushed again after it was judged.
- ``untagged`` deletes untagged manifests that old, with their referrers, and
  what they alone referenced goes with them; a dry run removes nothing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest

from cargohold.digest import Digest
from cargohold.manifest import OCI_MANIFEST
from cargohold.storage.driver.base import StorageDriver
from cargohold.storage.gc import collect_garbage, tag_states
from cargohold.storage.registry import RegistryOptions, StorageRegistry
from cargohold.storage.retention import (
    KeepRule,
    Retention,
    RetentionPolicy,
    TagState,
    compile_glob,
    compile_pattern,
)
from tests.storage.images import image_manifest, subject_json

DIGEST = Digest.parse("sha256:" + "a" * 64)


def policy(
    *globs: str, keep: list[KeepRule] | None = None, untagged: float | None = None
) -> Retention:
    rules = None if keep is None else tuple(keep)
    return Retention((RetentionPolicy(tuple(compile_glob(g) for g in globs), rules, untagged),))


def rule(*patterns: str, **conditions: float) -> KeepRule:
    return KeepRule(tuple(compile_pattern(p) for p in patterns), **conditions)  # type: ignore[arg-type]


def tags(*specs: tuple[str, float, float | None]) -> list[TagState]:
    return [TagState(tag, DIGEST, pushed, pulled) for tag, pushed, pulled in specs]


def removed(
    retention: Retention, name: str, states: list[TagState], now: float = 1000.0
) -> list[str]:
    chosen = retention.policy_for(name)
    return [] if chosen is None else [t.tag for t in chosen.removals(states, now, grace=0.0)]


# -- repository globs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "matches", "misses"),
    [
        ("team/*", ["team/app", "team/x"], ["team/app/sub", "team", "other/app"]),
        ("team/**", ["team/app", "team/app/sub/deep"], ["team", "teams/app"]),
        ("**/cache", ["cache", "a/cache", "a/b/cache"], ["a/cache/x", "acache"]),
        ("app-?", ["app-1", "app-x"], ["app-10", "app-"]),
        ("app-[0-9]", ["app-3"], ["app-x"]),
        ("app-[!0-9]", ["app-x"], ["app-3"]),
        ("exact.name", ["exact.name"], ["exactxname", "exact.name/x"]),
    ],
)
def test_globs(glob: str, matches: list[str], misses: list[str]) -> None:
    compiled = compile_glob(glob)
    assert [m for m in matches if compiled.fullmatch(m)] == matches
    assert [m for m in misses if compiled.fullmatch(m)] == []


@pytest.mark.parametrize("glob", ["", "app-[0-9", "[]"])
def test_bad_globs_are_refused(glob: str) -> None:
    with pytest.raises(ValueError, match="glob"):
        compile_glob(glob)


# -- which tags a policy removes ------------------------------------------------------------


def test_the_first_matching_policy_decides_and_none_keeps_everything() -> None:
    retention = Retention(
        (
            RetentionPolicy((compile_glob("prod/**"),), (rule("v.*"),)),
            RetentionPolicy((compile_glob("**"),), (rule("main"),)),
        )
    )
    states = tags(("v1", 1, None), ("main", 2, None), ("dev", 3, None))
    assert removed(retention, "prod/api", states) == ["dev", "main"]
    assert removed(retention, "ci/api", states) == ["dev", "v1"]
    narrow = policy("prod/*", keep=[rule("v.*")])
    assert removed(narrow, "ci/api", states) == []  # matched by none: every tag stays


def test_patterns_match_the_whole_tag() -> None:
    states = tags(("v1", 1, None), ("v1-rc", 2, None), ("not-v1", 3, None))
    assert removed(policy("**", keep=[rule("v[0-9]+")]), "a", states) == ["not-v1", "v1-rc"]


def test_most_recently_pushed_among_the_tags_a_rule_matches() -> None:
    states = tags(("v1", 10, None), ("v2", 20, None), ("v3", 30, None), ("latest", 5, None))
    retention = policy("**", keep=[rule("v.*", most_recently_pushed=2), rule("latest")])
    assert removed(retention, "a", states) == ["v1"]


def test_pushed_and_pulled_within_and_most_recently_pulled() -> None:
    now = 1000.0
    states = tags(
        ("fresh", now - 10, None),
        ("pulled", now - 500, now - 10),
        ("stale", now - 500, now - 400),
        ("never", now - 500, None),
    )
    within = policy("**", keep=[rule(pushed_within=100, pulled_within=100)])
    assert removed(within, "a", states, now) == ["never", "stale"]
    recent = policy("**", keep=[rule(most_recently_pulled=1)])
    assert removed(recent, "a", states, now) == ["fresh", "never", "stale"]
    both = policy("**", keep=[rule(most_recently_pulled=2)])
    assert removed(both, "a", states, now) == ["fresh", "never"]


def test_a_policy_without_keeptags_removes_no_tag() -> None:
    states = tags(("a", 1, None), ("b", 2, None))
    assert removed(policy("**", untagged=0), "x", states) == []


def test_a_tag_younger_than_the_grace_period_stays() -> None:
    retention = policy("**", keep=[rule("keep")])
    chosen = retention.policy_for("x")
    assert chosen is not None
    states = tags(("old", 100, None), ("young", 950, None))
    assert [t.tag for t in chosen.removals(states, 1000, grace=60)] == ["old"]


# -- in a collection ------------------------------------------------------------------------


@pytest.fixture
def serving(storage_driver: StorageDriver) -> StorageRegistry:
    options = RegistryOptions(delete_enabled=True, reuse_interval=0.0, pull_interval=0.0)
    return StorageRegistry(storage_driver, options=options)


async def later() -> float:
    """A moment strictly after everything done so far, and before anything done next.

    A file's time comes from the kernel's coarse clock, up to a tick (a few ms)
    behind ``time.time()``: a write after the moment is stamped after it still.
    """
    moment = time.time()
    await asyncio.sleep(0.02)
    return moment + 0.01


async def test_removed_tags_take_their_manifests_and_blobs_when_untagged_may_go(
    serving: StorageRegistry,
) -> None:
    repo = serving.repository("ci/app")
    images = {}
    for tag in ("v1", "v2", "v3"):
        images[tag] = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, [tag])
        await later()
    kept_only = policy("ci/**", keep=[rule("v.*", most_recently_pushed=1)], untagged=0)
    now = await later()

    dry = await collect_garbage(serving, dry_run=True, grace=0, now=now, retention=kept_only)
    assert [(n, t.tag) for n, t in dry.removed_tags] == [("ci/app", "v1"), ("ci/app", "v2")]
    assert sorted(dry.deleted_manifests) == sorted(
        [("ci/app", images["v1"].digest), ("ci/app", images["v2"].digest)]
    )
    assert await repo.tags.all() == ["v1", "v2", "v3"]  # a dry run removes nothing
    size = dry.manifest_sizes[("ci/app", images["v1"].digest)]
    assert size > len(images["v1"].payload)  # its own bytes and what it references

    result = await collect_garbage(serving, grace=0, now=now, retention=kept_only)
    assert [t.tag for _, t in result.removed_tags] == ["v1", "v2"]
    assert await repo.tags.all() == ["v3"]
    assert not await repo.manifests.exists(images["v1"].digest)
    assert await repo.manifests.exists(images["v3"].digest)
    # Each image's config and layers are its own: six of them went with two manifests.
    assert len(result.deleted_blobs) == 2 + 2 * 3
    assert result.reclaimed == sum(result.blob_sizes.values()) > 0


async def test_without_untagged_a_removed_tag_leaves_its_manifest(
    serving: StorageRegistry,
) -> None:
    repo = serving.repository("a")
    old = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["old"])
    now = await later()
    result = await collect_garbage(
        serving, grace=0, now=now, retention=policy("a", keep=[rule("new")])
    )
    assert [t.tag for _, t in result.removed_tags] == ["old"]
    assert result.deleted_manifests == []
    assert await repo.manifests.exists(old.digest)


async def test_untagged_waits_its_age(serving: StorageRegistry) -> None:
    repo = serving.repository("a")
    loose = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST)
    pushed = await later()
    waiting = policy("a", untagged=3600)
    result = await collect_garbage(serving, grace=0, now=pushed + 3599, retention=waiting)
    assert (result.deleted_manifests, result.young_manifests) == ([], 1)
    result = await collect_garbage(serving, grace=0, now=pushed + 3601, retention=waiting)
    assert result.deleted_manifests == [("a", loose.digest)]


async def test_referrers_of_a_removed_image_go_with_it_and_a_kept_ones_stay(
    serving: StorageRegistry,
) -> None:
    repo = serving.repository("a")
    gone = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["old"])
    kept = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["new"])
    signatures = []
    for subject in (gone, kept):
        signature = await image_manifest(
            repo, layers=1, artifactType="application/x-sig", subject=subject_json(subject.payload)
        )
        signatures.append(await repo.manifests.put(signature, OCI_MANIFEST))
    now = await later()
    retention = policy("a", keep=[rule("new")], untagged=0)
    result = await collect_garbage(serving, grace=0, now=now, retention=retention)
    assert sorted(result.deleted_manifests) == sorted(
        [("a", gone.digest), ("a", signatures[0].digest)]
    )
    assert await repo.manifests.exists(signatures[1].digest)


async def test_pulls_keep_tags_pulled_within_the_window(serving: StorageRegistry) -> None:
    repo = serving.repository("a")
    images = {
        tag: await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, [tag])
        for tag in ("used", "unused")
    }
    cut = await later()
    pulls = serving.pulls
    assert pulls is not None
    serving.note_pull("a", images["used"].digest)
    await pulls.flush()
    now = await later()
    states = {t.tag: t for t in await tag_states(serving, "a", pulls)}
    assert states["unused"].pulled is None
    pulled = states["used"].pulled
    assert pulled is not None
    assert cut < pulled < now
    retention = policy("a", keep=[rule(pulled_within=now - cut)])
    result = await collect_garbage(serving, grace=0, now=now, retention=retention)
    assert [t.tag for _, t in result.removed_tags] == ["unused"]
    assert await repo.tags.all() == ["used"]


async def test_a_pull_is_written_at_most_once_per_interval(storage_driver: StorageDriver) -> None:
    registry = StorageRegistry(storage_driver, options=RegistryOptions(pull_interval=3600))
    pulls = registry.pulls
    assert pulls is not None
    registry.note_pull("a", DIGEST)
    await pulls.flush()
    first = (await pulls.last_pulls("a"))[DIGEST]
    await later()
    registry.note_pull("a", DIGEST)
    await pulls.flush()
    assert (await pulls.last_pulls("a"))[DIGEST] == first


async def test_a_tag_pushed_again_after_it_was_judged_stays(
    serving: StorageRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Judged on its link as it was; pushed again (to the same manifest) before the removal."""
    repo = serving.repository("a")
    image = await repo.manifests.put(await image_manifest(repo), OCI_MANIFEST, ["t"])
    now = await later()
    judge = RetentionPolicy.removals

    def judged_before_the_push(
        self: RetentionPolicy, states: list[TagState], at: float, grace: float
    ) -> list[TagState]:
        return [replace(t, pushed=t.pushed - 1) for t in judge(self, states, at, grace)]

    monkeypatch.setattr(RetentionPolicy, "removals", judged_before_the_push)
    retention = policy("a", keep=[rule("other")], untagged=0)
    result = await collect_garbage(serving, grace=0, now=now, retention=retention)
    assert result.removed_tags == []
    assert await repo.tags.get("t") == image.digest
    assert await repo.manifests.exists(image.digest)
