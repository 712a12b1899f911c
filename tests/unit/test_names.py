"""oci/names.py: repository names and tags follow the distribution-spec grammar exactly.

    name      = component ("/" component)*            (at most 255 characters)
    component = [a-z0-9]+ (separator [a-z0-9]+)*
    separator = "." | "_" | "__" | "-"+
    tag       = [a-zA-Z0-9_] [a-zA-Z0-9._-]{0,127}
"""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from cargohold.oci.errors import NameInvalid, TagInvalid
from cargohold.oci.names import MAX_NAME_LENGTH, is_valid_name, is_valid_tag, validate_name, validate_tag

ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"
TAG_CHARS = ALNUM + "ABCDEFGHIJKLMNOPQRSTUVWXYZ._-"
# An independent statement of the grammar, with \Z so that nothing may trail.
SPEC_NAME = re.compile(r"\A[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*\Z")
SPEC_TAG = re.compile(r"\A[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}\Z")

alnum_runs = st.text(alphabet=ALNUM, min_size=1, max_size=12)
separators = st.one_of(st.sampled_from([".", "_", "__"]), st.integers(1, 4).map(lambda n: "-" * n))


@st.composite
def components(draw: st.DrawFn) -> str:
    out = draw(alnum_runs)
    for _ in range(draw(st.integers(0, 4))):
        out += draw(separators) + draw(alnum_runs)
    return out


@st.composite
def grammar_names(draw: st.DrawFn) -> str:
    """Any name the grammar derives, regardless of length."""
    return "/".join(draw(st.lists(components(), min_size=1, max_size=6)))


valid_names = grammar_names().filter(lambda n: len(n) <= MAX_NAME_LENGTH)
positions = st.integers(min_value=0, max_value=1000)  # taken modulo len+1: every insertion point
valid_tags = st.from_regex(SPEC_TAG.pattern, fullmatch=True)

# Characters that appear nowhere in the name grammar; each one poisons a name wherever it goes.
name_poison = st.one_of(
    st.sampled_from(list("ABCZ :@%?#\\\x00\n\r\t+=!*'\"$&;,<>|~`[](){}^")),
    st.characters(min_codepoint=0x80, max_codepoint=0x2FFFF),
)
tag_poison = st.one_of(
    st.sampled_from(list(" :@%?#/\\\x00\n\r\t+=!*'\"$&;,<>|~`[](){}^")),
    st.characters(min_codepoint=0x80, max_codepoint=0x2FFFF),
)


# ---- names ----------------------------------------------------------------


@given(valid_names)
@example("a")
@example("library/alpine")
@example("a__b/c-----d/e.f_g")
@example("a" * MAX_NAME_LENGTH)
def test_grammar_names_validate(name: str) -> None:
    assert SPEC_NAME.match(name)  # the generator really follows the grammar
    assert validate_name(name) == name
    assert is_valid_name(name)


@given(valid_names, name_poison, positions)
@example("library/alpine", "\n", len("library/alpine"))
@example("library/alpine", "\x00", 7)
def test_invalid_character_anywhere_is_rejected(name: str, poison: str, position: int) -> None:
    i = position % (len(name) + 1)
    mutated = name[:i] + poison + name[i:]
    assume(len(mutated) <= MAX_NAME_LENGTH)
    with pytest.raises(NameInvalid):
        validate_name(mutated)
    assert not is_valid_name(mutated)


@given(valid_names, positions)
@example("a/b", 2)
def test_double_dot_anywhere_is_rejected(name: str, position: int) -> None:
    i = position % (len(name) + 1)
    mutated = name[:i] + ".." + name[i:]
    assume(len(mutated) <= MAX_NAME_LENGTH)
    with pytest.raises(NameInvalid):
        validate_name(mutated)


@given(valid_names, st.sampled_from(["/", ".", "_", "__", "-", "--", "./", "../", "/."]))
def test_leading_or_trailing_separator_is_rejected(name: str, sep: str) -> None:
    for mutated in (sep + name, name + sep):
        if len(mutated) <= MAX_NAME_LENGTH:
            with pytest.raises(NameInvalid):
                validate_name(mutated)


@given(valid_names, st.sampled_from(["//", "___", "._", "_.", "-.", ".-", "_-", "-_", "/-", "-/", "/_", "_/"]), positions)
def test_bad_separator_sequences_are_rejected(name: str, bad: str, position: int) -> None:
    i = position % (len(name) + 1)
    mutated = name[:i] + bad + name[i:]
    assume(len(mutated) <= MAX_NAME_LENGTH)
    with pytest.raises(NameInvalid):
        validate_name(mutated)


def _lengthen(name: str) -> str:
    """Still in the grammar, now over the limit: add one more component long enough."""
    return name if len(name) > MAX_NAME_LENGTH else f"{name}/{'a' * (MAX_NAME_LENGTH - len(name))}"


@given(grammar_names().map(_lengthen) | st.integers(256, 2000).map(lambda n: "a" * n))
@example("a" * (MAX_NAME_LENGTH + 1))
def test_names_over_255_characters_are_rejected(name: str) -> None:
    assert SPEC_NAME.match(name)
    with pytest.raises(NameInvalid):
        validate_name(name)
    assert not is_valid_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "/",
        "Library/alpine",
        "library/Alpine",
        "a/../b",
        "..",
        "../etc/passwd",
        "a/./b",
        "a//b",
        "/a",
        "a/",
        "a\x00b",
        "a\x00",
        "\x00",
        "a\n",  # a trailing newline: `$` in a regex matches before it, the grammar does not allow it
        "library/alpine\n",
        "a\nb",
        "\na",
        "a b",
        "a%2fb",
        "a:b",
        "a@b",
        "ａ",  # full-width
        "café",
    ],
)
def test_invalid_names(name: str) -> None:
    with pytest.raises(NameInvalid):
        validate_name(name)
    assert not is_valid_name(name)


@given(st.text(max_size=300))
@example("a\n")
@example("a/b\n")
def test_arbitrary_text_agrees_with_the_grammar(name: str) -> None:
    expected = bool(SPEC_NAME.match(name)) and len(name) <= MAX_NAME_LENGTH
    assert is_valid_name(name) == expected
    if expected:
        assert validate_name(name) == name
    else:
        with pytest.raises(NameInvalid):
            validate_name(name)


# ---- tags -----------------------------------------------------------------


@given(valid_tags)
@example("latest")
@example("_")
@example("v1.2.3-rc.1_build")
@example("A" * 128)
def test_grammar_tags_validate(tag: str) -> None:
    assert validate_tag(tag) == tag
    assert is_valid_tag(tag)


@given(valid_tags, tag_poison, positions)
@example("latest", "\n", len("latest"))
@example("latest", "\x00", 3)
def test_tag_with_invalid_character_is_rejected(tag: str, poison: str, position: int) -> None:
    i = position % (len(tag) + 1)
    mutated = tag[:i] + poison + tag[i:]
    with pytest.raises(TagInvalid):
        validate_tag(mutated)
    assert not is_valid_tag(mutated)


@given(valid_tags, st.sampled_from([".", "-"]))
def test_tag_may_not_start_with_dot_or_dash(tag: str, lead: str) -> None:
    with pytest.raises(TagInvalid):
        validate_tag(lead + tag)


@given(st.text(alphabet=TAG_CHARS, min_size=128, max_size=400), st.sampled_from(list(ALNUM + "_")))
@example("a" * 128, "a")
def test_tags_over_128_characters_are_rejected(rest: str, first: str) -> None:
    tag = first + rest  # at least 129 characters, every one of them allowed
    with pytest.raises(TagInvalid):
        validate_tag(tag)
    assert not is_valid_tag(tag)


@pytest.mark.parametrize(
    "tag",
    ["", ".", "-", ".hidden", "-x", "a/b", "a:b", "a@b", "a b", "a\x00", "latest\n", "a" * 128 + "\n", "\nlatest", "ünïcode"],
)
def test_invalid_tags(tag: str) -> None:
    with pytest.raises(TagInvalid):
        validate_tag(tag)
    assert not is_valid_tag(tag)


@given(st.text(max_size=200))
@example("latest\n")
def test_arbitrary_text_agrees_with_the_tag_grammar(tag: str) -> None:
    assert is_valid_tag(tag) == bool(SPEC_TAG.match(tag))
