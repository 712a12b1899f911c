"""Which upstream tags a sync rule copies: a regular expression and/or a semver range.

Pure logic, no I/O. A tag passes when it passes every filter given (no filter:
every tag passes).

- **Regex**: RE2 syntax (Python's, less backreferences and lookaround, which
  are refused), matched against the *whole* tag (``fullmatch``), so ``3\\.19``
  does not pick ``3.19.1``. RE2 runs in linear time: no pattern can make the
  filter backtrack for ever on a long tag (``(a+)+b``).
- **Semver range**: space-separated comparators are ANDed, ``||`` separates
  alternatives (``>=3.19 <4 || =2.7.1``). Comparators: ``>= > <= < =`` (or a
  bare version, meaning ``=``), ``^1.2.3`` (same left-most non-zero part),
  ``~1.2.3`` (same minor; ``~1`` same major) and x-ranges (``3.x``, ``3.19.*``,
  ``3``, ``*``). Versions have 1–3 numeric parts and an optional ``v``
  (``v3.19`` ≡ ``3.19.0``); a ``-prerelease`` suffix is allowed, ``+build`` is
  ignored.

Tags that do not parse as versions (``latest``, ``edge``, ``1.2.3.4``) never
match a semver filter. A *prerelease* tag (``3.20.0-rc1``; by the grammar also
``3.19-alpine``) matches only when a comparator of the alternative it is tested
against names a prerelease of the same major.minor.patch, as npm does (only a
prerelease the user wrote counts: ``>3.18``, read as ``>=3.19.0-0``, names none):
``>=3.20.0-rc1`` takes ``3.20.0-rc2`` but not ``3.21.0-rc1``, and ``>=3.19``
takes no prerelease at all. That keeps a mirror of "the 3.x releases" free of
release candidates and flavour tags; add a regex rule for those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import re2
from functools import total_ordering

from ..oci.errors import DomainError

MAX_REGEX = 512
MAX_RANGE = 255
MAX_VERSION_PART = 18  # digits in one numeric part: a longer "version" (9999…) is not one
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False

_VERSION = re.compile(
    r"^v?(?P<major>0|[1-9][0-9]*)(?:\.(?P<minor>0|[1-9][0-9]*)(?:\.(?P<patch>0|[1-9][0-9]*))?)?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$"
)
_PARTIAL = re.compile(
    r"^v?(?P<major>[0-9]+|[xX*])(?:\.(?P<minor>[0-9]+|[xX*])(?:\.(?P<patch>[0-9]+|[xX*]))?)?"
    r"(?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?$"
)
_COMPARATOR = re.compile(r"^(?P<op>>=|<=|>|<|=|\^|~)?(?P<version>.+)$")
_WILD = {"x", "X", "*"}


class InvalidTagFilter(DomainError, ValueError):
    """A regex or semver range that cannot be used; the message says which part and why."""

    code = "INVALID_TAG_FILTER"


def _pre_key(pre: tuple[str, ...]) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in pre)


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Version | None":
        """The version a tag names, or None when it is not one (``latest``, ``1.2.3.4``)."""
        m = _VERSION.match(text)
        if m is None or any(len(m[p] or "") > MAX_VERSION_PART for p in ("major", "minor", "patch")):
            return None
        pre = tuple(m["pre"].split(".")) if m["pre"] else ()
        return cls(int(m["major"]), int(m["minor"] or 0), int(m["patch"] or 0), pre)

    @property
    def release(self) -> tuple[int, int, int]:
        return (self.major, self.minor, self.patch)

    def _key(self) -> tuple[tuple[int, int, int], int, tuple[tuple[int, int | str], ...]]:
        # A release sorts after its prereleases: 1.0.0-rc1 < 1.0.0.
        return (self.release, 0 if self.pre else 1, _pre_key(self.pre))

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self._key() < other._key()

    def __str__(self) -> str:
        text = f"{self.major}.{self.minor}.{self.patch}"
        return f"{text}-{'.'.join(self.pre)}" if self.pre else text


@dataclass(frozen=True)
class _Comparator:
    op: str  # >= > <= < =
    version: Version
    named_pre: bool = False  # the user wrote this prerelease (not the -0 a partial version's bound is made of)

    def test(self, v: Version) -> bool:
        if self.op == ">=":
            return v >= self.version
        if self.op == ">":
            return v > self.version
        if self.op == "<=":
            return v <= self.version
        if self.op == "<":
            return v < self.version
        return v == self.version


def _bump(parts: list[int], index: int) -> Version:
    """The first version past everything that starts with ``parts[:index+1]``."""
    head = parts[: index + 1]
    head[index] += 1
    head += [0] * (3 - len(head))
    return Version(head[0], head[1], head[2], ("0",))  # x.y.z-0: below every prerelease of the bumped version


def _expand(token: str, whole: str) -> list[_Comparator]:
    m = _COMPARATOR.match(token)
    if m is None:  # pragma: no cover - the pattern matches any non-empty token
        raise InvalidTagFilter(f"semver range {whole!r}: {token!r} is not a comparator")
    op, text = m["op"] or "=", m["version"]
    p = _PARTIAL.match(text)
    if p is None:
        raise InvalidTagFilter(
            f"semver range {whole!r}: {token!r} is not a version (1 to 3 numeric parts, optional v, x-ranges such as 3.x)"
        )
    raw = [p["major"], p["minor"], p["patch"]]
    given: list[int] = []
    for part in raw:
        if part is None or part in _WILD:
            break
        given.append(int(part))
    for later in raw[len(given) + 1 :]:
        if later is not None and later not in _WILD:
            raise InvalidTagFilter(f"semver range {whole!r}: {token!r} has a number after a wildcard")
    pre = tuple(p["pre"].split(".")) if p["pre"] else ()
    if pre and len(given) < 3:
        raise InvalidTagFilter(f"semver range {whole!r}: {token!r}: a prerelease needs a full major.minor.patch")
    if any(n > 10**MAX_VERSION_PART for n in given):
        raise InvalidTagFilter(f"semver range {whole!r}: {token!r} has a number longer than {MAX_VERSION_PART} digits")
    full = given + [0] * (3 - len(given))
    low = Version(full[0], full[1], full[2], pre)
    named = bool(pre)
    if op in ("^", "~"):
        if not given:
            return []  # ^* / ~*: anything
        if op == "~":
            upper = _bump(list(given), 0 if len(given) == 1 else 1)
        else:
            first_nonzero = next((i for i, n in enumerate(given) if n != 0), len(given) - 1)
            upper = _bump(list(given), first_nonzero)
        return [_Comparator(">=", low, named), _Comparator("<", upper)]
    if len(given) == 3:
        return [_Comparator(op, low, named)]
    # A partial version is a range: 3.19 ≡ [3.19.0, 3.20.0-0).
    if not given:
        return [] if op in ("=", ">=", "<=") else [_Comparator("<", Version(0, 0, 0, ("0",)))]  # >* / <*: nothing
    upper = _bump(list(given), len(given) - 1)
    if op == "=":
        return [_Comparator(">=", low), _Comparator("<", upper)]
    if op == ">=":
        return [_Comparator(">=", low)]
    if op == ">":
        return [_Comparator(">=", upper)]
    if op == "<":
        return [_Comparator("<", Version(*low.release, ("0",)))]
    return [_Comparator("<", upper)]  # <=


@dataclass(frozen=True)
class SemverRange:
    """A parsed range: alternatives (OR) of comparator sets (AND)."""

    text: str
    alternatives: tuple[tuple[_Comparator, ...], ...]

    @classmethod
    def parse(cls, text: str) -> "SemverRange":
        whole = text.strip()
        if not whole:
            raise InvalidTagFilter("the semver range is empty")
        if len(whole) > MAX_RANGE:
            raise InvalidTagFilter(f"the semver range is longer than {MAX_RANGE} characters")
        alternatives = []
        for alternative in whole.split("||"):
            # ">= 3.19" (operator and version apart) reads as ">=3.19".
            tokens = re.sub(r"(>=|<=|>|<|=|\^|~)\s+", r"\1", alternative.strip()).split()
            if not tokens:
                raise InvalidTagFilter(f"semver range {whole!r}: an empty alternative around '||'")
            comparators: list[_Comparator] = []
            for token in tokens:
                comparators.extend(_expand(token, whole))
            alternatives.append(tuple(comparators))
        return cls(whole, tuple(alternatives))

    def matches(self, tag: str) -> bool:
        version = Version.parse(tag)
        if version is None:
            return False
        for comparators in self.alternatives:
            if not all(c.test(version) for c in comparators):
                continue
            if version.pre and not any(c.named_pre and c.version.release == version.release for c in comparators):
                continue  # prereleases only where the range names one of the same release
            return True
        return False


@dataclass(frozen=True)
class TagFilter:
    """A sync rule's filter; ``reject`` says why a tag does not pass (None: it passes)."""

    regex: Any = None  # a compiled re2 pattern
    semver: SemverRange | None = None

    @classmethod
    def build(cls, regex: str | None = None, semver: str | None = None) -> "TagFilter":
        """Raises InvalidTagFilter for a regex that does not compile or a range that does not parse."""
        pattern = None
        if regex is not None:
            if not regex or len(regex) > MAX_REGEX:
                raise InvalidTagFilter(f"the tag regex must have 1 to {MAX_REGEX} characters")
            pattern = compile_regex(regex)
        return cls(pattern, SemverRange.parse(semver) if semver is not None else None)

    def reject(self, tag: str) -> str | None:
        if self.regex is not None and self.regex.fullmatch(tag) is None:
            return f"filtered: does not match regex {self.regex.pattern!r}"
        if self.semver is not None and not self.semver.matches(tag):
            if Version.parse(tag) is None:
                return f"filtered: not a version (semver range {self.semver.text!r})"
            return f"filtered: outside semver range {self.semver.text!r}"
        return None

    def passes(self, tag: str) -> bool:
        return self.reject(tag) is None


def compile_regex(regex: str) -> Any:
    """The tag regex compiled with RE2 (linear time); InvalidTagFilter for what RE2 refuses, saying why."""
    try:
        return re2.compile(regex, _RE2_OPTIONS)
    except (re2.error, ValueError, TypeError, OverflowError) as exc:
        detail = exc.args[0] if exc.args else exc
        if isinstance(detail, bytes):
            detail = detail.decode("utf-8", "replace")
        hint = ""
        if re.search(r"\\[1-9]|\(\?P=|\(\?<?[=!]", regex):
            hint = " (backreferences and lookahead/lookbehind are not supported: the filter uses RE2, which runs in linear time)"
        raise InvalidTagFilter(f"tag regex {regex[:100]!r} does not compile: {detail}{hint}") from None
