"""Sync-rule tag filters: regex (whole tag) and semver ranges (AND, OR, ^, ~, x-ranges, prereleases)."""

from __future__ import annotations

import pytest

from cargohold.transfer.tagfilter import InvalidTagFilter, SemverRange, TagFilter, Version


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.19", Version(3, 19, 0)),
        ("v3.19.1", Version(3, 19, 1)),
        ("3", Version(3, 0, 0)),
        ("0.0.1", Version(0, 0, 1)),
        ("3.20.0-rc1", Version(3, 20, 0, ("rc1",))),
        ("1.2.3+build.5", Version(1, 2, 3)),
        ("latest", None),
        ("edge", None),
        ("1.2.3.4", None),
        ("01.2", None),
        ("", None),
        ("v", None),
    ],
)
def test_version_parse(text: str, expected: Version | None) -> None:
    assert Version.parse(text) == expected


def test_version_order() -> None:
    ordered = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.10.0", "2.0.0"]
    versions = [Version.parse(t) for t in ordered]
    assert versions == sorted(versions)  # type: ignore[type-var]


CASES = [
    # range, matching tags, non-matching tags
    (">=3.19 <4", ["3.19", "3.19.0", "v3.19.1", "3.20", "3.99.99"], ["3.18.9", "4", "4.0.0", "2", "latest", "3.20.0-rc1", "4.0.0-rc1"]),
    ("3.x", ["3", "3.0.1", "3.19"], ["2.9", "4.0", "3.1.0-beta"]),
    ("3.19.*", ["3.19", "3.19.7"], ["3.20.0", "3.18.0"]),
    ("3.19", ["3.19.0", "3.19.5"], ["3.20.0", "3.18.0"]),
    ("=3.19.2", ["3.19.2", "v3.19.2"], ["3.19.1", "3.19.3"]),
    ("3.19.2", ["3.19.2"], ["3.19.3"]),
    ("^1.2.3", ["1.2.3", "1.9.0"], ["1.2.2", "2.0.0", "2.0.0-rc1"]),
    ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0", "0.2.2"]),
    ("^0.0.3", ["0.0.3"], ["0.0.4"]),
    ("^1.2", ["1.2.0", "1.5"], ["2.0", "1.1"]),
    ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0", "1.2.2"]),
    ("~1.2", ["1.2.0", "1.2.9"], ["1.3.0"]),
    ("~1", ["1.0", "1.9.9"], ["2.0.0"]),
    (">3.19", ["3.20.0", "4"], ["3.19.5", "3.19.0"]),
    (">3.19.0", ["3.19.1"], ["3.19.0"]),
    ("<=3.19", ["3.19.9", "3.0"], ["3.20.0"]),
    ("<3.19", ["3.18.9"], ["3.19.0", "3.19.0-rc1"]),
    ("<1.2.3", ["1.2.2"], ["1.2.3"]),
    ("1.x || >=3", ["1.0.0", "1.5.2", "3.0", "7.1"], ["2.0.0", "0.9"]),
    (">= 3.19 < 4", ["3.19.0"], ["4.0.0"]),
    ("*", ["0.0.1", "5", "100.2.3"], ["latest", "1.0.0-rc1"]),
    (">=3.20.0-rc1 <4", ["3.20.0-rc1", "3.20.0-rc2", "3.20.0", "3.21"], ["3.20.0-beta", "3.21.0-rc1"]),
    ("=3.20.0-rc1", ["3.20.0-rc1"], ["3.20.0-rc2", "3.20.0"]),
]


@pytest.mark.parametrize(("spec", "good", "bad"), CASES)
def test_semver_ranges(spec: str, good: list[str], bad: list[str]) -> None:
    parsed = SemverRange.parse(spec)
    for tag in good:
        assert parsed.matches(tag), (spec, tag)
    for tag in bad:
        assert not parsed.matches(tag), (spec, tag)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (">=3.19 ||", "empty alternative"),
        ("|| 3", "empty alternative"),
        (">=abc", "not a version"),
        ("3.x.1", "after a wildcard"),
        ("1.2-rc1", "full major.minor.patch"),
        ("=>3", "not a version"),
        (">=1.2.3.4", "not a version"),
        ("x" * 300, "longer than"),
    ],
)
def test_invalid_ranges(spec: str, words: str) -> None:
    with pytest.raises(InvalidTagFilter, match=words):
        SemverRange.parse(spec)


def test_regex_is_whole_match() -> None:
    f = TagFilter.build(regex=r"3\.19")
    assert f.passes("3.19")
    assert not f.passes("3.19.1")
    assert f.reject("3.19.1") == "filtered: does not match regex '3\\\\.19'"


@pytest.mark.parametrize("regex", ["(", "[a-", "*x", "a{2,1}", ""])
def test_invalid_regex(regex: str) -> None:
    with pytest.raises(InvalidTagFilter):
        TagFilter.build(regex=regex)


def test_both_filters_must_pass() -> None:
    f = TagFilter.build(regex=r"[0-9.]+", semver=">=3.19 <4")
    assert f.passes("3.19.1")
    assert not f.passes("v3.19.1")  # the regex refuses the v
    assert not f.passes("4.0")
    assert f.reject("latest") is not None and f.reject("latest").startswith("filtered: does not match regex")  # type: ignore[union-attr]


def test_no_filter_passes_everything() -> None:
    f = TagFilter.build()
    assert f.passes("latest") and f.passes("3.19")


def test_reject_reasons_name_the_filter() -> None:
    f = TagFilter.build(semver=">=3.19 <4")
    assert f.reject("edge") == "filtered: not a version (semver range '>=3.19 <4')"
    assert f.reject("3.18") == "filtered: outside semver range '>=3.19 <4'"
    assert f.reject("3.19") is None


# ---- review fixes: RE2, prereleases only when written, hostile tags ---------------------------------


def test_regex_runs_in_linear_time() -> None:
    import time

    pathological = TagFilter.build(regex="(a+)+b")  # catastrophic backtracking in a backtracking engine
    started = time.monotonic()
    assert pathological.reject("a" * 128) is not None
    assert pathological.passes("a" * 127 + "b")
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize("regex", [r"(a)\1", r"(?P<x>a)(?P=x)", r"(?=3)3\..*", r"(?!rc).*", r"(?<=v)1", r"(?<!v)1"])
def test_regex_features_re2_lacks_are_refused_clearly(regex: str) -> None:
    with pytest.raises(InvalidTagFilter, match="does not compile.*not supported"):
        TagFilter.build(regex=regex)


def test_regex_still_matches_the_whole_tag() -> None:
    f = TagFilter.build(regex=r"3\.19")
    assert f.passes("3.19") and not f.passes("3.19.1") and not f.passes("x3.19")


@pytest.mark.parametrize(
    ("range_", "tag", "passes"),
    [
        (">3.18", "3.19.0", True),
        (">3.18", "3.19-alpine", False),  # >3.18 is >=3.19.0-0: that -0 is no prerelease the user named
        (">3.18", "3.19.0-rc1", False),
        ("<=3.18", "3.19.0-0", False),
        ("3.19", "3.19.0-rc1", False),
        ("^1.2", "1.3.0-rc1", False),
        ("~1.2", "1.2.5-beta", False),
        ("<4", "4.0.0-rc1", False),
        (">=3.19.0-rc1 <4", "3.19.0-rc2", True),  # written by the user: counts
        (">3.18 <=3.19.0-rc5", "3.19.0-rc2", True),
        (">3.18 <=3.19.0-rc5", "3.19-alpine", True),  # 3.19.0-alpine: a prerelease of the release named
    ],
)
def test_only_prereleases_the_user_wrote_count(range_: str, tag: str, passes: bool) -> None:
    assert SemverRange.parse(range_).matches(tag) is passes


def test_huge_numbers_are_not_versions() -> None:
    assert Version.parse("9" * 5000) is None
    assert Version.parse("1." + "9" * 40) is None
    f = TagFilter.build(semver=">=1")
    assert f.reject("9" * 5000) == "filtered: not a version (semver range '>=1')"
