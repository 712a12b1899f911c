"""Repository names and tags, per the distribution-spec grammar.

Every name and tag is checked here before it reaches SQL or the filesystem;
the grammar itself excludes ``..``, NUL, ``%`` and every other character a
path traversal or injection would need.
"""

from __future__ import annotations

import re

from .errors import NameInvalid, TagInvalid

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
NAME_PATTERN = rf"{_COMPONENT}(?:/{_COMPONENT})*"
TAG_PATTERN = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
# fullmatch, never ^…$: "$" also matches before a trailing newline.
_NAME_RE = re.compile(NAME_PATTERN)
_TAG_RE = re.compile(TAG_PATTERN)

# Clients limit "host[:port]/name" to 255 characters; a name alone may not exceed it either.
MAX_NAME_LENGTH = 255


def validate_name(name: str) -> str:
    if len(name) > MAX_NAME_LENGTH:
        raise NameInvalid(f"repository name longer than {MAX_NAME_LENGTH} characters")
    if not _NAME_RE.fullmatch(name):
        raise NameInvalid(f"invalid repository name: {name[:100]!r}")
    return name


def validate_tag(tag: str) -> str:
    if not _TAG_RE.fullmatch(tag):
        raise TagInvalid(f"invalid tag: {tag[:140]!r}")
    return tag


def is_valid_name(name: str) -> bool:
    return len(name) <= MAX_NAME_LENGTH and bool(_NAME_RE.fullmatch(name))


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG_RE.fullmatch(tag))
