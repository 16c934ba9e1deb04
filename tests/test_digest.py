from __future__ import annotations

import hashlib
import itertools
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cargohold.digest import (
    DEFAULT_ALGORITHM,
    EMPTY_JSON_SHA256,
    EMPTY_SHA256,
    EMPTY_SHA512,
    SUPPORTED_ALGORITHMS,
    Digest,
    Digester,
    Verifier,
    digest_of,
)
from cargohold.errors import DigestInvalid

HEX = "0123456789abcdef"
SHA256_HEX = "e58fcf7418d4390dec8e8fb69d88c06ec07039d651fedd3aa72af9972e7d046b"
SHA384_HEX = (
    "d3fc7881460b7e22e3d172954463dddd7866d17597e7248453c48b3e9d26d959"
    "6bf9c4a9cf8072c9d5bad76e19af801d"
)
SHA512_HEX = "f" * 128
FAST = settings(max_examples=300, deadline=None)


# --- parsing: examples -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [f"sha256:{SHA256_HEX}", f"sha384:{SHA384_HEX}", f"sha512:{SHA512_HEX}", f"sha256:{'0' * 64}"],
)
def test_parse_accepts_supported_digests(text: str) -> None:
    digest = Digest.parse(text)
    assert digest == text
    assert str(digest) == text
    assert type(digest) is Digest
    algorithm, _, encoded = text.partition(":")
    assert (digest.algorithm, digest.encoded) == (algorithm, encoded)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "malformed"),
        ("sha256", "malformed"),
        ("sha256:", "malformed"),
        (f":{SHA256_HEX}", "malformed"),
        (SHA256_HEX, "malformed"),
        (f"SHA256:{SHA256_HEX}", "malformed"),
        (f"sha256:{SHA256_HEX}\n", "malformed"),
        (f"sha256:{SHA256_HEX} ", "malformed"),
        (f" sha256:{SHA256_HEX}", "malformed"),
        (f"sha256 :{SHA256_HEX}", "malformed"),
        (f"sha256::{SHA256_HEX}", "malformed"),
        (f"sha256:{SHA256_HEX[:-1]}\x00", "malformed"),
        (f"sha256:{SHA256_HEX[:-1]}😁", "malformed"),
        (f"sha256:{SHA256_HEX}:{SHA256_HEX}", "malformed"),
        (f"-sha256:{SHA256_HEX}", "malformed"),
        (f"sha256-:{SHA256_HEX}", "malformed"),
        (f"sha..256:{SHA256_HEX}", "malformed"),
        ("foo:d41d8cd98f00b204e9800998ecf8427e", "unsupported digest algorithm 'foo'"),
        ("md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported digest algorithm 'md5'"),
        ("sha256+b64:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", "unsupported"),
        ("multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8", "unsupported"),
        ("blake3:" + "a" * 64, "unsupported"),
        (f"sha256:{SHA256_HEX[:-1]}", "wrong length"),
        (f"sha256:{SHA256_HEX}0", "wrong length"),
        ("sha256:" + "f" * 34, "wrong length"),
        (f"sha512:{SHA256_HEX}", "wrong length"),
        (f"sha256:{SHA256_HEX.upper()}", "not lower-case hex"),
        (f"sha256:{SHA256_HEX[:-1]}g", "not lower-case hex"),
        ("sha256:" + "_" * 64, "not lower-case hex"),
    ],
)
def test_parse_refuses_and_says_why(text: str, reason: str) -> None:
    with pytest.raises(DigestInvalid, match=reason):
        Digest.parse(text)
    with pytest.raises(DigestInvalid):
        Digest(text)


def test_error_message_does_not_echo_huge_input() -> None:
    with pytest.raises(DigestInvalid) as caught:
        Digest.parse("x" * 100_000)
    assert len(caught.value.message) < 200


def test_constructor_validates_and_trusted_does_not() -> None:
    assert Digest(f"sha256:{SHA256_HEX}") == f"sha256:{SHA256_HEX}"
    assert Digest.trusted("anything") == "anything"


def test_parse_of_a_digest_returns_it() -> None:
    digest = Digest.parse(f"sha256:{SHA256_HEX}")
    assert Digest.parse(digest) is digest


def test_digest_behaves_as_its_string() -> None:
    text = f"sha256:{SHA256_HEX}"
    digest = Digest.parse(text)
    assert {text: 1}[digest] == 1
    assert hash(digest) == hash(text)
    assert repr(digest) == f"Digest('{text}')"
    assert pickle.loads(pickle.dumps(digest)) == digest


def test_supported_algorithms() -> None:
    assert dict(SUPPORTED_ALGORITHMS) == {"sha256": 64, "sha384": 96, "sha512": 128}
    assert DEFAULT_ALGORITHM == "sha256"
    for algorithm, length in SUPPORTED_ALGORITHMS.items():
        assert len(hashlib.new(algorithm).hexdigest()) == length


def test_empty_digests() -> None:
    expected_256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert expected_256 == EMPTY_SHA256
    assert hashlib.sha512(b"").hexdigest() == EMPTY_SHA512.encoded
    assert EMPTY_SHA512.startswith("sha512:cf83e1357eefb8bd")
    expected_json = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    assert expected_json == EMPTY_JSON_SHA256
    for digest in (EMPTY_SHA256, EMPTY_SHA512, EMPTY_JSON_SHA256):
        assert Digest.parse(str(digest)) == digest


# --- parsing: properties -----------------------------------------------------------------


def is_digest_independently(text: str) -> bool:
    """The rule restated without regular expressions."""
    algorithm, colon, encoded = text.partition(":")
    lengths = {"sha256": 64, "sha384": 96, "sha512": 128}
    return (
        colon == ":"
        and algorithm in lengths
        and len(encoded) == lengths[algorithm]
        and all(char in HEX for char in encoded)
    )


def digests_of(algorithm: str) -> st.SearchStrategy[str]:
    length = SUPPORTED_ALGORITHMS[algorithm]
    encoded = st.text(HEX, min_size=length, max_size=length)
    return encoded.map(lambda hex_part: f"{algorithm}:{hex_part}")


valid_digests = st.sampled_from(sorted(SUPPORTED_ALGORITHMS)).flatmap(digests_of)


DIGEST_FAULTS = ["\n", "", " ", "\x00", ":", "A", "F", "g", "+", ".", "-", "_", "=", "0", "\u0661"]


@st.composite
def near_digests(draw: st.DrawFn) -> str:
    """A valid digest with one fault: where a lax parser would slip."""
    text = draw(valid_digests)
    # The ends are where anchoring bugs live ("$" matches before a final newline).
    where = draw(st.sampled_from(["end", "start", "inside", "upper"]))
    if where == "upper":
        return text.upper()
    at = {"start": 0, "end": len(text)}.get(where)
    if at is None:
        at = draw(st.integers(0, len(text)))
    replace = draw(st.booleans())
    return text[:at] + draw(st.sampled_from(DIGEST_FAULTS)) + text[at + replace :]


def assert_parse_agrees(text: str) -> None:
    try:
        digest = Digest.parse(text)
    except DigestInvalid:
        assert not is_digest_independently(text)
    else:
        assert is_digest_independently(text)
        assert str(digest) == text
        assert digest.algorithm in SUPPORTED_ALGORITHMS
        assert len(digest.encoded) == SUPPORTED_ALGORITHMS[digest.algorithm]
        assert set(digest.encoded) <= set(HEX)


@FAST
@given(st.text() | st.text(":" + HEX + "ABCDEFsh25") | valid_digests)
def test_parse_accepts_exactly_the_grammar(text: str) -> None:
    assert_parse_agrees(text)


@settings(max_examples=600, deadline=None)
@given(near_digests())
def test_parse_catches_every_single_fault(text: str) -> None:
    assert_parse_agrees(text)


@FAST
@given(valid_digests)
def test_every_valid_digest_round_trips(text: str) -> None:
    assert str(Digest.parse(text)) == text


# --- hashing -----------------------------------------------------------------------------


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    data = draw(st.binary(max_size=4096))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=150, deadline=None)
@given(chunked(), st.sampled_from(sorted(SUPPORTED_ALGORITHMS)))
def test_streaming_equals_hashing_the_whole(
    data_and_chunks: tuple[bytes, list[bytes]], algorithm: str
) -> None:
    data, chunks = data_and_chunks
    digester = Digester(algorithm)
    verifier = Verifier(digest_of(data, algorithm))
    for chunk in chunks:
        digester.update(memoryview(chunk) if len(chunk) % 2 else chunk)
        verifier.update(chunk)
    expected = f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"
    assert digester.digest() == expected
    assert digester.size == len(data)
    assert verifier.verified()


def test_digester_defaults_to_sha256() -> None:
    digester = Digester()
    assert digester.algorithm == "sha256"
    assert digester.digest() == EMPTY_SHA256
    assert type(digester.digest()) is Digest


def test_digester_counts_bytes_of_a_wide_memoryview() -> None:
    words = memoryview(bytes(range(16))).cast("I")
    digester = Digester()
    digester.update(words)
    assert digester.size == 16
    assert digester.digest() == digest_of(bytes(range(16)))


def test_digester_copy_is_independent() -> None:
    original = Digester("sha512")
    original.update(b"abc")
    clone = original.copy()
    clone.update(b"def")
    assert original.digest() == digest_of(b"abc", "sha512")
    assert clone.digest() == digest_of(b"abcdef", "sha512")
    assert (original.size, clone.size, clone.algorithm) == (3, 6, "sha512")


@pytest.mark.parametrize("algorithm", ["md5", "SHA256", "", "sha3_256", "blake2b"])
def test_unsupported_algorithm_is_refused(algorithm: str) -> None:
    with pytest.raises(DigestInvalid, match="unsupported"):
        Digester(algorithm)
    with pytest.raises(DigestInvalid, match="unsupported"):
        digest_of(b"", algorithm)


def test_verifier_refuses_other_content() -> None:
    verifier = Verifier(digest_of(b"hello"))
    verifier.update(b"hellO")
    assert not verifier.verified()


def test_verifier_follows_the_expected_algorithm() -> None:
    verifier = Verifier(EMPTY_SHA512)
    assert verifier.verified()
    verifier.update(b"x")
    assert not verifier.verified()


def test_verifier_refuses_an_invalid_expected_digest() -> None:
    with pytest.raises(DigestInvalid):
        Verifier(Digest.trusted("md5:d41d8cd98f00b204e9800998ecf8427e"))
