"""Access records, scopes and ACL patterns: the vocabulary every access controller shares."""

from __future__ import annotations

import pytest

from cargohold.auth.access import (
    CATALOG,
    Access,
    Grant,
    format_scope,
    parse_scope,
    repository_access,
)
from cargohold.auth.issuer import compile_pattern


def test_each_method_needs_what_distribution_asks() -> None:
    # registry/handlers/app.go, appendAccessRecords.
    table = {
        "GET": ["pull"],
        "HEAD": ["pull"],
        "POST": ["pull", "push"],
        "PUT": ["pull", "push"],
        "PATCH": ["pull", "push"],
        "DELETE": ["delete"],
        "OPTIONS": [],
    }
    for method, actions in table.items():
        assert [a.action for a in repository_access(method, "team/app")] == actions, method
    assert Access.of("registry", "catalog", "*") == CATALOG


def test_scopes_are_written_per_resource_in_the_order_asked() -> None:
    wanted = [
        *repository_access("POST", "team/b"),
        Access.of("repository", "team/a", "pull"),
    ]
    assert format_scope(wanted) == "repository:team/b:pull,push repository:team/a:pull"
    assert format_scope([CATALOG]) == "registry:catalog:*"
    assert format_scope([]) == ""


def test_scopes_are_read_as_the_token_specification_writes_them() -> None:
    assert parse_scope("repository:team/app:pull,push registry:catalog:*") == [
        Access.of("repository", "team/app", "pull"),
        Access.of("repository", "team/app", "push"),
        Access.of("registry", "catalog", "*"),
    ]
    # A name may hold host:port; a class in the type is dropped; a malformed scope is skipped.
    assert parse_scope("repository:localhost:5000/app:pull") == [
        Access.of("repository", "localhost:5000/app", "pull")
    ]
    assert parse_scope("repository(plugin):team/app:pull") == [
        Access.of("repository", "team/app", "pull")
    ]
    assert parse_scope("repository:team/app  nonsense ::: repository::pull") == []


def test_a_grant_allows_its_actions_and_star_allows_all() -> None:
    grant = Grant.of(
        "alice",
        [Access.of("repository", "a", "pull"), Access.of("repository", "b", "*")],
    )
    assert grant.permits(Access.of("repository", "a", "pull"))
    assert not grant.permits(Access.of("repository", "a", "push"))
    assert not grant.permits(Access.of("repository", "a/b", "pull"))
    assert not grant.permits(Access.of("registry", "a", "pull"))
    assert grant.permits(Access.of("repository", "b", "delete"))
    assert Grant("htpasswd user").permits(Access.of("repository", "anything", "delete"))


PATTERNS = [
    # pattern, name, matches?
    ("a/*", "a/b", True),
    ("a/*", "ab/c", False),  # a prefix of a component is not the component
    ("a/*", "a/b/c", False),  # one * stays within one component
    ("a/*", "a", False),
    ("a/**", "a/b/c", True),  # ** crosses components
    ("a/**", "a", False),
    ("a/**", "ab/c", False),
    ("**", "anything/at/all", True),
    ("*", "top", True),
    ("*", "team/app", False),
    ("team/app", "team/app", True),
    ("team/app", "team/apps", False),
    ("a.b/*", "axb/c", False),  # a dot is a dot, not "any character"
    ("a+/*", "aa/c", False),
    ("*/app", "team/app", True),
    ("*/app", "team/sub/app", False),
]


@pytest.mark.parametrize(("pattern", "name", "matches"), PATTERNS)
def test_acl_patterns_match_whole_names_component_by_component(
    pattern: str, name: str, matches: bool
) -> None:
    compiled = compile_pattern(pattern)
    assert compiled is not None
    assert (compiled.fullmatch(name) is not None) is matches


def test_an_account_pattern_matches_only_that_account() -> None:
    own = compile_pattern("${account}/**", "bob")
    assert own is not None
    assert own.fullmatch("bob/app")
    assert not own.fullmatch("bobby/app")
    assert not own.fullmatch("alice/bob/app")
    # An account name is literal, whatever characters it holds; anonymous has none.
    dotted = compile_pattern("${account}/*", "b.b")
    assert dotted is not None
    assert not dotted.fullmatch("bxb/app")
    assert compile_pattern("${account}/*", None) is None
