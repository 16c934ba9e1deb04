from __future__ import annotations

import itertools
import string

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cargohold.digest import Digest
from cargohold.errors import DigestInvalid, NameInvalid, ReferenceInvalid, TagInvalid
from cargohold.reference import Reference, parse_reference, validate_name, validate_tag

LOWER_ALNUM = string.ascii_lowercase + string.digits
TAG_CHARS = string.ascii_letters + string.digits + "_.-"
HEX = "0123456789abcdef"
HEX_LENGTH = {"sha256": 64, "sha384": 96, "sha512": 128}
SHA256 = "sha256:" + "f" * 64
SHA512 = "sha512:" + "f" * 128
FAST = settings(max_examples=300, deadline=None)
SINGLE_FAULTS = settings(max_examples=600, deadline=None)


# --- names: examples ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "0",
        "short",
        "simple/name",
        "library/ubuntu",
        "docker/stevvooe/app",
        "aa/aa/aa/aa/aa/aa/aa/aa/aa/bb/bb/bb/bb/bb/bb",
        "a/a/a/a",
        "a.b",
        "a_b",
        "a__b",
        "a-b",
        "a--b",
        "a---b",
        "do__cker/docker",
        "foo_bar.com",
        "test.example.com/my-app",
        "project--id.module--name.ver---sion--name",
        "192.168.1.1",
        "a/" * 127 + "a",
    ],
)
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "at least one component"),
        ("a" * 256, "not be more than 255"),
        ("a/" * 128 + "a", "not be more than 255"),
        ("Uppercase", "lowercase"),
        ("foo/Bar", "lowercase"),
        ("/", "invalid"),
        ("/a", "invalid"),
        ("a/", "invalid"),
        ("a//b", "invalid"),
        ("a..b", "invalid"),
        ("a/../b", "invalid"),
        ("..", "invalid"),
        (".", "invalid"),
        ("a.", "invalid"),
        (".a", "invalid"),
        ("a_", "invalid"),
        ("_a", "invalid"),
        ("a___b", "invalid"),
        ("a._b", "invalid"),
        ("a.-b", "invalid"),
        ("a-", "invalid"),
        ("-a", "invalid"),
        ("a b", "invalid"),
        ("a%2fb", "invalid"),
        ("a\x00b", "invalid"),
        ("abc\n", "invalid"),
        ("\nabc", "invalid"),
        ("a:b", "invalid"),
        ("a@b", "invalid"),
        ("aa/asdf$$^/aa", "invalid"),
        ("caf\u00e9", "invalid"),
        ("\u0661", "invalid"),  # ARABIC-INDIC DIGIT ONE: a digit to Unicode, not to us
    ],
)
def test_invalid_names(name: str, reason: str) -> None:
    with pytest.raises(NameInvalid, match=reason):
        validate_name(name)


# --- tags: examples ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "tag", ["latest", "v1.0", "1", "_", "_a", "A", "Uppercase", "x" * 128, "a-", "a.", "a__-..b"]
)
def test_valid_tags(tag: str) -> None:
    assert validate_tag(tag) == tag


@pytest.mark.parametrize(
    ("tag", "reason"),
    [
        ("", "empty"),
        ("x" * 129, "128"),
        (".a", "start"),
        ("-a", "start"),
        ("a:b", "invalid"),
        ("a/b", "invalid"),
        ("a b", "invalid"),
        ("a\n", "invalid"),
        ("a\x00", "invalid"),
        ("a@b", "invalid"),
        ("caf\u00e9", "invalid"),
        ("\u0661", "invalid"),
        ("stra\u00dfe", "invalid"),
    ],
)
def test_invalid_tags(tag: str, reason: str) -> None:
    with pytest.raises(TagInvalid, match=reason):
        validate_tag(tag)


# --- references: examples (the cases of Distribution's reference tests) ------------------


@pytest.mark.parametrize(
    ("text", "domain", "name", "tag", "digest"),
    [
        ("test_com", None, "test_com", None, None),
        ("test.com:tag", None, "test.com", "tag", None),
        ("test.com:5000", None, "test.com", "5000", None),
        ("test.com/repo:tag", "test.com", "repo", "tag", None),
        ("test:5000/repo", "test:5000", "repo", None, None),
        ("test:5000/repo:tag", "test:5000", "repo", "tag", None),
        (f"test:5000/repo@{SHA256}", "test:5000", "repo", None, SHA256),
        (f"test:5000/repo:tag@{SHA256}", "test:5000", "repo", "tag", SHA256),
        ("lowercase:Uppercase", None, "lowercase", "Uppercase", None),
        # Distribution's Parse reads this "a" as a domain; ParseNormalizedNamed does not.
        (
            "a/" * 127 + "a:tag-puts-this-over-max",
            None,
            "a/" * 127 + "a",
            "tag-puts-this-over-max",
            None,
        ),
        ("sub-dom1.foo.com/bar/baz/quux", "sub-dom1.foo.com", "bar/baz/quux", None, None),
        (
            "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
            "sub-dom1.foo.com",
            "bar/baz/quux",
            "some-long-tag",
            None,
        ),
        (
            "b.gcr.io/test.example.com/my-app:test.example.com",
            "b.gcr.io",
            "test.example.com/my-app",
            "test.example.com",
            None,
        ),
        ("xn--n3h.com/myimage:xn--n3h.com", "xn--n3h.com", "myimage", "xn--n3h.com", None),
        (
            f"xn--7o8h.com/myimage:xn--7o8h.com@{SHA512}",
            "xn--7o8h.com",
            "myimage",
            "xn--7o8h.com",
            SHA512,
        ),
        ("foo_bar.com:8080", None, "foo_bar.com", "8080", None),
        ("foo/foo_bar.com:8080", None, "foo/foo_bar.com", "8080", None),
        ("192.168.1.1", None, "192.168.1.1", None, None),
        ("192.168.1.1:tag", None, "192.168.1.1", "tag", None),
        ("192.168.1.1:5000", None, "192.168.1.1", "5000", None),
        ("192.168.1.1/repo", "192.168.1.1", "repo", None, None),
        ("192.168.1.1:5000/repo", "192.168.1.1:5000", "repo", None, None),
        ("192.168.1.1:5000/repo:5050", "192.168.1.1:5000", "repo", "5050", None),
        ("[2001:db8::1]/repo", "[2001:db8::1]", "repo", None, None),
        ("[2001:db8:1:2:3:4:5:6]/repo:tag", "[2001:db8:1:2:3:4:5:6]", "repo", "tag", None),
        ("[2001:db8::1]:5000/repo", "[2001:db8::1]:5000", "repo", None, None),
        ("[2001:db8::1]:5000/repo:tag", "[2001:db8::1]:5000", "repo", "tag", None),
        (f"[2001:db8::1]:5000/repo@{SHA256}", "[2001:db8::1]:5000", "repo", None, SHA256),
        (f"[2001:db8::1]:5000/repo:tag@{SHA256}", "[2001:db8::1]:5000", "repo", "tag", SHA256),
        ("[2001:db8::]:5000/repo", "[2001:db8::]:5000", "repo", None, None),
        ("[::1]:5000/repo", "[::1]:5000", "repo", None, None),
        ("test-com:8080/foo", "test-com:8080", "foo", None, None),
        ("xn--n3h.com:18080/foo", "xn--n3h.com:18080", "foo", None, None),
        ("localhost/foo", "localhost", "foo", None, None),
        ("localhost:5000/foo/bar:1.0", "localhost:5000", "foo/bar", "1.0", None),
        ("localhost", None, "localhost", None, None),
        # Names are never upper case, so an upper-case first component is a host.
        ("Registry/foo", "Registry", "foo", None, None),
    ],
)
def test_parse_reference(
    text: str, domain: str | None, name: str, tag: str | None, digest: str | None
) -> None:
    reference = parse_reference(text)
    assert reference == Reference(domain, name, tag, None if digest is None else Digest(digest))
    assert str(reference) == text
    assert reference.digest is None or type(reference.digest) is Digest


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", NameInvalid),
        (":justtag", NameInvalid),
        (f"@{SHA256}", NameInvalid),
        ("repo@sha256:" + "f" * 34, DigestInvalid),
        ("validname@invaliddigest:" + "f" * 64, DigestInvalid),
        (f"repo@{SHA256.upper()}", DigestInvalid),
        ("repo@", DigestInvalid),
        ("repo@sha256:abc@sha256:abc", DigestInvalid),
        ("Uppercase:tag", NameInvalid),
        ("test:5000/Uppercase/lowercase:tag", NameInvalid),
        ("a/" * 128 + "a:tag", NameInvalid),
        ("aa/asdf$$^/aa", NameInvalid),
        ("[2001:db8::1]", NameInvalid),
        ("[2001:db8::1]:5000", NameInvalid),
        ("[2001:db8::1]:tag", NameInvalid),
        ("[0]/repo", NameInvalid),  # no ":", so not an address: Distribution agrees
        ("[fe80::1%eth0]:5000/repo", ReferenceInvalid),
        ("[fe80::1%@invalidzone]:5000/repo", ReferenceInvalid),
        ("2001:db8::1/repo", ReferenceInvalid),
        ("example.com:/foo", ReferenceInvalid),
        ("example.com:port/foo", ReferenceInvalid),
        ("-example.com/foo", ReferenceInvalid),
        ("example..com/foo", ReferenceInvalid),
        ("foo:bar/baz", ReferenceInvalid),
        ("example.com/", NameInvalid),
        ("example.com//foo", NameInvalid),
        ("example.com/foo/", NameInvalid),
        ("foo/bar\n", NameInvalid),
        ("foo:", TagInvalid),
        ("foo:a:b", TagInvalid),
        ("foo:.tag", TagInvalid),
        ("foo:" + "t" * 129, TagInvalid),
        ("foo:tag\n", TagInvalid),
        (f"foo@{SHA256}\n", DigestInvalid),
    ],
)
def test_parse_reference_refuses(text: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_reference(text)


def test_reference_fields_are_validated_on_construction() -> None:
    with pytest.raises(NameInvalid):
        Reference(None, "Foo")
    with pytest.raises(TagInvalid):
        Reference(None, "foo", ".tag")
    with pytest.raises(DigestInvalid):
        Reference(None, "foo", None, "sha256:abc")  # type: ignore[arg-type]
    with pytest.raises(ReferenceInvalid, match="domain"):
        Reference("exa mple.com", "foo")


@pytest.mark.parametrize(
    ("domain", "name"),
    [
        ("foo", "bar"),  # "foo/bar" would be read as one name
        (None, "example.com/bar"),  # "example.com" would be read as a domain
        (None, "localhost/bar"),
    ],
)
def test_reference_must_round_trip(domain: str | None, name: str) -> None:
    with pytest.raises(ReferenceInvalid):
        Reference(domain, name)


def test_reference_digest_given_as_text_becomes_a_digest() -> None:
    reference = Reference(None, "foo", digest=SHA256)  # type: ignore[arg-type]
    assert type(reference.digest) is Digest


# --- strategies: generated from the grammar ----------------------------------------------

alnum = st.text(LOWER_ALNUM, min_size=1, max_size=4)
separator = st.sampled_from([".", "_", "__", "-", "--", "---"])


@st.composite
def path_components(draw: st.DrawFn) -> str:
    parts = [draw(alnum)]
    for _ in range(draw(st.integers(0, 3))):
        parts += [draw(separator), draw(alnum)]
    return "".join(parts)


names = st.lists(path_components(), min_size=1, max_size=5).map("/".join)
long_names = st.lists(path_components(), min_size=30, max_size=80).map("/".join)
tags = st.tuples(
    st.sampled_from(string.ascii_letters + string.digits + "_"),
    st.text(TAG_CHARS, max_size=127),
).map("".join)
digests = st.sampled_from(["sha256", "sha384", "sha512"]).flatmap(
    lambda alg: st.text(HEX, min_size=HEX_LENGTH[alg], max_size=HEX_LENGTH[alg]).map(
        lambda hex_part: f"{alg}:{hex_part}"
    )
)
domain_component = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,5}[a-zA-Z0-9])?", fullmatch=True)
# Distribution checks only the characters of an address in brackets, and so do we.
ipv6ish = st.text("0123456789abcdefABCDEF:", min_size=1, max_size=39).filter(lambda a: ":" in a)
ports = st.integers(0, 65535).map(lambda port: f":{port}")
domains = st.one_of(
    st.just("localhost"),
    st.lists(domain_component, min_size=2, max_size=4).map(".".join),
    st.tuples(st.lists(domain_component, min_size=1, max_size=3).map(".".join), ports).map("".join),
    st.tuples(ipv6ish, ports | st.just("")).map(lambda parts: f"[{parts[0]}]{parts[1]}"),
    domain_component.filter(lambda c: c != c.lower()),
)


def with_one_fault(valid: st.SearchStrategy[str], faults: list[str]) -> st.SearchStrategy[str]:
    """Valid text with one snippet inserted or put in place of a character.

    One fault at a time, so that the check has to catch each on its own rather than
    being rescued by some other, more obvious, mistake in the same text.
    """

    @st.composite
    def faulty(draw: st.DrawFn) -> str:
        text = draw(valid)
        # The ends are where anchoring bugs live ("$" matches before a final newline).
        where = draw(st.sampled_from(["end", "start", "inside"]))
        at = {"start": 0, "end": len(text)}.get(where)
        if at is None:
            at = draw(st.integers(0, len(text)))
        snippet = draw(st.sampled_from(faults))
        replace = draw(st.booleans())
        return text[:at] + snippet + text[at + replace :]

    return faulty()


@st.composite
def names_near_the_limit(draw: st.DrawFn) -> str:
    """A generated name padded to 250-260 characters."""
    length = draw(st.integers(250, 260))
    name = draw(names)[: length - 2].rstrip("._-")
    return f"{name}/{'a' * (length - len(name) - 1)}"


# --- names and tags: nothing outside the grammar -----------------------------------------


def component_is_valid(component: str) -> bool:
    """The path-component rule, restated as runs of characters instead of a regex."""
    runs = ["".join(run) for _, run in itertools.groupby(component, lambda c: c in LOWER_ALNUM)]
    if not runs or runs[0][0] not in LOWER_ALNUM or runs[-1][0] not in LOWER_ALNUM:
        return False
    separators = (run for run in runs if run[0] not in LOWER_ALNUM)
    return all(run in (".", "_", "__") or set(run) == {"-"} for run in separators)


def name_is_valid(name: str) -> bool:
    return 0 < len(name) <= 255 and all(map(component_is_valid, name.split("/")))


def tag_is_valid(tag: str) -> bool:
    return 0 < len(tag) <= 128 and tag[0] not in ".-" and all(c in TAG_CHARS for c in tag)


def assert_name_check_agrees(text: str) -> None:
    try:
        validate_name(text)
    except NameInvalid:
        assert not name_is_valid(text)
        return
    assert name_is_valid(text)
    assert ".." not in text
    assert "//" not in text
    assert not text.startswith("/")
    assert not text.endswith("/")
    assert text == text.lower()
    assert text.isascii()
    assert not any(c.isspace() for c in text)
    assert "%" not in text
    assert "\x00" not in text
    assert len(text) <= 255


def assert_tag_check_agrees(text: str) -> None:
    try:
        validate_tag(text)
    except TagInvalid:
        assert not tag_is_valid(text)
        return
    assert tag_is_valid(text)
    assert len(text) <= 128
    assert text[0] not in ".-"


NAME_FAULTS = ["\n", "", " ", "\t", "\x00", "%", "%2f", "A", ":", "@", "/", "//", "/.", "."]
NAME_FAULTS += ["..", "._", "_.", "-.", "_-", "___", "\u0661", "\u00e9"]
TAG_FAULTS = ["\n", "", " ", "\x00", ":", "/", "@", ".", "-", "\u0661", "\u00e9", "\u212a"]


@FAST
@given(st.text() | st.text("abz09._-/A %\x00\n\t:@", max_size=40) | names_near_the_limit())
def test_validate_name_accepts_exactly_the_grammar(text: str) -> None:
    assert_name_check_agrees(text)


@SINGLE_FAULTS
@given(with_one_fault(names, NAME_FAULTS))
def test_validate_name_catches_every_single_fault(text: str) -> None:
    assert_name_check_agrees(text)


tags_near_the_limit = st.tuples(st.just("v"), st.text(TAG_CHARS, min_size=126, max_size=129)).map(
    "".join
)


def test_every_separator_run_is_judged_like_the_grammar() -> None:
    # Few enough to try them all: every run of one to four of "._-/" between alphanumerics.
    for length in range(1, 5):
        for run in map("".join, itertools.product("._-/", repeat=length)):
            for name in (f"a{run}b", f"x/a{run}b", f"a{run}b/x"):
                assert_name_check_agrees(name)


@FAST
@given(st.text() | st.text(TAG_CHARS + " \n\x00:/", max_size=20) | tags_near_the_limit)
def test_validate_tag_accepts_exactly_the_grammar(text: str) -> None:
    assert_tag_check_agrees(text)


@SINGLE_FAULTS
@given(with_one_fault(tags, TAG_FAULTS))
def test_validate_tag_catches_every_single_fault(text: str) -> None:
    assert_tag_check_agrees(text)


# --- generated from the grammar: accepted, and round-trips -------------------------------


@FAST
@given(names)
def test_generated_names_are_accepted(name: str) -> None:
    assert validate_name(name) == name


@settings(max_examples=50, deadline=None)
@given(long_names)
def test_generated_names_are_accepted_up_to_the_limit(name: str) -> None:
    if len(name) <= 255:
        assert validate_name(name) == name
    else:
        with pytest.raises(NameInvalid, match="255"):
            validate_name(name)


@FAST
@given(tags)
def test_generated_tags_are_accepted(tag: str) -> None:
    assert validate_tag(tag) == tag


@FAST
@given(domains | st.none(), names, tags | st.none(), digests | st.none())
def test_generated_references_round_trip(
    domain: str | None, name: str, tag: str | None, digest: str | None
) -> None:
    if domain is None:
        first, slash, _ = name.partition("/")
        assume(not slash or ("." not in first and first != "localhost"))
    text = (
        (f"{domain}/" if domain else "")
        + name
        + (f":{tag}" if tag else "")
        + (f"@{digest}" if digest else "")
    )
    reference = parse_reference(text)
    assert (reference.domain, reference.name, reference.tag, reference.digest) == (
        domain,
        name,
        tag,
        digest,
    )
    assert str(reference) == text
    assert parse_reference(str(reference)) == reference
