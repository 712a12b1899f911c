"""oci/digest.py: only well-formed sha256/sha512 digests parse; everything else is DigestInvalid."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from cargohold.oci.digest import ALGORITHMS, Digest, new_hasher
from cargohold.oci.errors import DigestInvalid

HEX = "0123456789abcdef"


def hex_of(length: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=HEX, min_size=length, max_size=length)


algorithms = st.sampled_from(sorted(ALGORITHMS))


@st.composite
def valid_digests(draw: st.DrawFn) -> str:
    algorithm = draw(algorithms)
    return f"{algorithm}:{draw(hex_of(ALGORITHMS[algorithm]))}"


@given(valid_digests())
def test_valid_digest_parses_and_round_trips(value: str) -> None:
    digest = Digest.parse(value)
    algorithm, _, encoded = value.partition(":")
    assert digest.algorithm == algorithm
    assert digest.hex == encoded
    assert str(digest) == value
    assert Digest.parse(str(digest)) == digest
    assert Digest.is_valid(value)


@given(algorithms, st.data())
def test_wrong_length_is_invalid(algorithm: str, data: st.DataObject) -> None:
    expected = ALGORITHMS[algorithm]
    length = data.draw(st.integers(min_value=0, max_value=2 * expected + 2).filter(lambda n: n != expected))
    value = f"{algorithm}:{data.draw(hex_of(length))}"
    with pytest.raises(DigestInvalid):
        Digest.parse(value)
    assert not Digest.is_valid(value)


@given(valid_digests(), st.data())
def test_uppercase_hex_is_invalid(value: str, data: st.DataObject) -> None:
    algorithm, _, encoded = value.partition(":")
    letters = [i for i, c in enumerate(encoded) if c in "abcdef"]
    assume(letters)
    i = data.draw(st.sampled_from(letters))
    upper = encoded[:i] + encoded[i].upper() + encoded[i + 1 :]
    with pytest.raises(DigestInvalid):
        Digest.parse(f"{algorithm}:{upper}")


def test_fully_uppercase_hex_and_algorithm_are_invalid() -> None:
    good = "sha256:" + "ab" * 32
    with pytest.raises(DigestInvalid):
        Digest.parse(good.upper())
    with pytest.raises(DigestInvalid):
        Digest.parse("sha256:" + ("ab" * 32).upper())
    with pytest.raises(DigestInvalid):
        Digest.parse("SHA256:" + "ab" * 32)


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha384", "sha3-256", "blake3", "sha256+b64u", "multihash+base58"])
def test_unknown_algorithms_are_invalid(algorithm: str) -> None:
    with pytest.raises(DigestInvalid, match="unsupported"):
        Digest.parse(f"{algorithm}:" + "a" * 64)
    with pytest.raises(DigestInvalid):
        new_hasher(algorithm)


@given(st.from_regex(r"\A[a-z0-9]+(?:[.+_-][a-z0-9]+)*\Z"), hex_of(64))
def test_grammatical_but_unregistered_algorithms_are_invalid(algorithm: str, encoded: str) -> None:
    assume(algorithm not in ALGORITHMS)
    with pytest.raises(DigestInvalid):
        Digest.parse(f"{algorithm}:{encoded}")


GOOD = "sha256:" + "0" * 64


@pytest.mark.parametrize(
    "value",
    [
        "",
        ":",
        "sha256",
        "sha256:",
        ":" + "a" * 64,
        "a" * 64,
        "sha256;" + "a" * 64,
        "sha256::" + "a" * 64,
        "sha256:" + "a" * 63 + "g",
        "sha256:" + "a" * 63 + "/",
        "sha256:../../../../etc/passwd",
        "sha256:" + "a" * 32 + "/" + "a" * 31,
        " " + GOOD,
        GOOD + " ",
        GOOD + "\n",
        GOOD + "\x00",
        "sha256\n:" + "a" * 64,
        "sha256 :" + "a" * 64,
        "sha256:" + "a" * 63 + "\u0661",  # an Arabic-Indic digit: \d-ish, not hex
        "sha512:" + "a" * 64,
        "sha256:" + "a" * 128,
        GOOD + "@" + GOOD,
    ],
)
def test_garbage_is_invalid(value: str) -> None:
    with pytest.raises(DigestInvalid):
        Digest.parse(value)
    assert not Digest.is_valid(value)


@given(st.text(max_size=300))
@example("sha256:" + "a" * 64 + "\n")
@example("sha256:" + "\uff41" * 64)  # full-width 'a'
def test_arbitrary_text_parses_only_if_well_formed(value: str) -> None:
    """No input raises anything but DigestInvalid, and whatever parses is exactly algorithm:lowercase-hex."""
    try:
        digest = Digest.parse(value)
    except DigestInvalid:
        return
    assert digest.algorithm in ALGORITHMS
    assert len(digest.hex) == ALGORITHMS[digest.algorithm]
    assert set(digest.hex) <= set(HEX)
    assert str(digest) == value


@given(st.binary(max_size=4096), algorithms)
@example(b"", "sha256")
@example(b"", "sha512")
def test_of_matches_hashlib(data: bytes, algorithm: str) -> None:
    digest = Digest.of(data, algorithm)
    assert digest.algorithm == algorithm
    assert digest.hex == hashlib.new(algorithm, data).hexdigest()
    assert Digest.parse(str(digest)) == digest


def test_of_defaults_to_sha256() -> None:
    assert str(Digest.of(b"hello")) == "sha256:" + hashlib.sha256(b"hello").hexdigest()
    assert str(Digest.of(b"")) == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@given(st.lists(st.binary(max_size=512), max_size=8), algorithms)
def test_incremental_hasher_matches_of(chunks: list[bytes], algorithm: str) -> None:
    h = Digest.of(b"", algorithm).hasher()
    for chunk in chunks:
        h.update(chunk)
    assert f"{algorithm}:{h.hexdigest()}" == str(Digest.of(b"".join(chunks), algorithm))


def test_of_rejects_unknown_algorithm() -> None:
    with pytest.raises(DigestInvalid):
        Digest.of(b"x", "md5")


def test_digest_is_hashable_and_comparable() -> None:
    a = Digest.parse(GOOD)
    assert a == Digest("sha256", "0" * 64)
    assert len({a, Digest.parse(GOOD)}) == 1
    assert a != Digest.parse("sha256:" + "1" * 64)
