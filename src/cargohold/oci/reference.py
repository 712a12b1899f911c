"""Image references such as ``docker.io/library/alpine:3.20@sha256:…``.

Parsing follows the distribution reference grammar, including Docker Hub's
conventions (no host means ``docker.io``, a single-component name gets
``library/``), so that later layers (cache rules, import, rewriting) can speak
about upstream images without each reinventing the rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .digest import Digest
from .errors import NameInvalid
from .names import validate_name, validate_tag

DOCKER_HUB = "docker.io"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
_HOST_RE = re.compile(_HOST)


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed reference; ``tag`` and ``digest`` may both be present."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def identifier(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or "latest"

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out

    @classmethod
    def parse(cls, value: str, default_registry: str = DOCKER_HUB) -> "Reference":
        if not value or len(value) > 4096:
            raise NameInvalid("empty or oversized reference")
        rest, digest = value, None
        if "@" in rest:
            rest, _, raw_digest = rest.partition("@")
            digest = Digest.parse(raw_digest)
        registry = default_registry
        first, slash, remainder = rest.partition("/")
        if slash and (("." in first or ":" in first or first == "localhost") or first != first.lower()):
            if not _HOST_RE.fullmatch(first):
                raise NameInvalid(f"invalid registry host: {first[:100]!r}")
            registry, rest = first, remainder
        tag = None
        last_slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > last_slash:
            rest, tag = rest[:colon], validate_tag(rest[colon + 1 :])
        registry = _normalize_registry(registry)
        if registry == DOCKER_HUB and "/" not in rest:
            rest = f"library/{rest}"
        return cls(registry, validate_name(rest), tag, digest)


def _normalize_registry(registry: str) -> str:
    if registry in ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"):
        return DOCKER_HUB
    return registry
