"""Cache rules: which local namespace is a cache of which upstream repositories.

A rule maps a *target* (a local repository, or a namespace ``hub/*``) to a
*source* (an upstream repository ``docker.io/library/alpine``, a namespace
``docker.io/library/*`` or a whole registry ``ghcr.io/*``). Both sides are
either a single repository or end in ``/*``. Nested targets are allowed and
the most specific one wins (``hub/special`` beside ``hub/*``); equal targets
are not. The same matching runs backwards for containerd's mirror mode
(``?ns=docker.io`` + ``library/alpine`` → ``hub/alpine``).

Pure logic, no I/O: the store keeps the rules, ``cache/service.py`` uses them.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..oci.errors import DomainError
from ..oci.names import is_valid_name
from ..oci.reference import DOCKER_HUB

DEFAULT_TAG_TTL_SECONDS = 60
_REGISTRY = re.compile(r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]{1,5})?|\[[0-9a-fA-F:.]+\](?::[0-9]{1,5})?")
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"})


class InvalidRule(DomainError, ValueError):
    """A source or target that cannot be a cache rule; the message says why."""

    code = "INVALID_CACHE_RULE"


class RuleConflict(DomainError, ValueError):
    """Another rule already serves this target."""

    code = "RULE_CONFLICT"


def normalize_registry(registry: str) -> str:
    registry = registry.lower()
    return DOCKER_HUB if registry in _DOCKER_HUB_ALIASES else registry


def _check_host_port(value: str, registry: str) -> None:
    """What the grammar lets through but no connection could use: a port past 65535, a malformed IPv6 literal."""
    host, port = registry, ""
    if not registry.endswith("]") and ":" in registry:
        host, _, port = registry.rpartition(":")
    if port and not 0 < int(port) <= 65535:
        raise InvalidRule(f"source {value!r}: port {port} is not between 1 and 65535")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise InvalidRule(f"source {value!r}: {host} is not an IPv6 address") from None


@dataclass(frozen=True, slots=True)
class Source:
    """``registry`` + ``path`` (no trailing ``/*``); ``wildcard`` when the rule covers everything under ``path``."""

    registry: str
    path: str
    wildcard: bool

    @classmethod
    def parse(cls, value: str) -> "Source":
        text = value.strip()
        wildcard = text.endswith("/*")
        if wildcard:
            text = text[:-2]
        registry, _, path = text.partition("/")
        if not registry or not _REGISTRY.fullmatch(registry) or ("." not in registry and ":" not in registry and registry != "localhost"):
            raise InvalidRule(f"source {value!r} must start with a registry host such as docker.io, ghcr.io or localhost:5001")
        _check_host_port(value, registry)
        registry = normalize_registry(registry)
        if registry == DOCKER_HUB and path and "/" not in path and not wildcard:
            path = f"library/{path}"
        if path and not is_valid_name(path):
            raise InvalidRule(f"source {value!r}: {path!r} is not a valid repository path")
        if not path and not wildcard:
            raise InvalidRule(f"source {value!r} names a registry but no repository; add /* to cache the whole registry")
        return cls(registry, path, wildcard)

    def __str__(self) -> str:
        if self.wildcard:
            return f"{self.registry}/{self.path}/*" if self.path else f"{self.registry}/*"
        return f"{self.registry}/{self.path}"

    def upstream_repository(self, suffix: str | None) -> str:
        """The upstream repository for a local one; ``suffix`` is what follows the target prefix (None for exact rules)."""
        if not self.wildcard or suffix is None:
            return self.path
        if not self.path and self.registry == DOCKER_HUB and "/" not in suffix:
            return f"library/{suffix}"  # Docker Hub's single names live under library/
        return f"{self.path}/{suffix}" if self.path else suffix

    def suffix_of(self, repository: str) -> str | None:
        """What follows this source's path in an upstream ``repository``; None if it does not match."""
        if not self.wildcard:
            return "" if repository == self.path else None
        if not self.path:
            return repository
        prefix = self.path + "/"
        return repository[len(prefix):] if repository.startswith(prefix) and len(repository) > len(prefix) else None


@dataclass(frozen=True, slots=True)
class Target:
    path: str
    wildcard: bool

    @classmethod
    def parse(cls, value: str) -> "Target":
        text = value.strip()
        wildcard = text.endswith("/*")
        if wildcard:
            text = text[:-2]
        if not text or not is_valid_name(text):
            raise InvalidRule(f"target {value!r} must be a local repository name, or a namespace ending in /*")
        return cls(text, wildcard)

    def __str__(self) -> str:
        return f"{self.path}/*" if self.wildcard else self.path

    def suffix_of(self, name: str) -> str | None:
        if not self.wildcard:
            return "" if name == self.path else None
        prefix = self.path + "/"
        return name[len(prefix):] if name.startswith(prefix) and len(name) > len(prefix) else None

    def local_name(self, suffix: str) -> str:
        return f"{self.path}/{suffix}" if self.wildcard else self.path

    def covers(self, other: "Target") -> bool:
        """Whether every name ``other`` matches is also matched by this target (for the overlap check)."""
        if not self.wildcard:
            return not other.wildcard and other.path == self.path
        return other.path.startswith(self.path + "/") or (other.wildcard and other.path == self.path)


@dataclass(frozen=True, slots=True)
class CacheRule:
    name: str
    source: Source
    target: Target
    credential_set: str | None = None
    tag_ttl_seconds: int = DEFAULT_TAG_TTL_SECONDS
    eager_platforms: bool = False
    insecure: bool = False
    dockerhub_mirror: bool = False

    @classmethod
    def build(
        cls,
        name: str,
        source: str,
        target: str,
        credential_set: str | None = None,
        tag_ttl_seconds: int = DEFAULT_TAG_TTL_SECONDS,
        eager_platforms: bool = False,
        insecure: bool = False,
        dockerhub_mirror: bool = False,
    ) -> "CacheRule":
        src, tgt = Source.parse(source), Target.parse(target)
        if src.wildcard != tgt.wildcard:
            raise InvalidRule("source and target must both name one repository, or both end in /*")
        if tag_ttl_seconds < 0:
            raise InvalidRule("tag TTL must be 0 or more seconds")
        if dockerhub_mirror and src.registry != DOCKER_HUB:
            raise InvalidRule("only a rule whose source is on docker.io can be the Docker Hub mirror")
        return cls(name, src, tgt, credential_set, tag_ttl_seconds, eager_platforms, insecure, dockerhub_mirror)


@dataclass(frozen=True, slots=True)
class Route:
    """A local repository served by a rule, and where its content comes from upstream."""

    rule: CacheRule
    local: str
    upstream_repository: str

    @property
    def registry(self) -> str:
        return self.rule.source.registry


class RuleSet:
    """All rules, indexed for the per-request question "is this repository a cache?"."""

    def __init__(self, rules: list[CacheRule]) -> None:
        self.rules = rules
        # Most specific first: exact targets, then longer prefixes.
        self._by_target = sorted(rules, key=lambda r: (r.target.wildcard, -len(r.target.path)))
        self._by_source = sorted(rules, key=lambda r: (r.source.wildcard, -len(r.source.path)))
        self.dockerhub_mirror = next((r for r in rules if r.dockerhub_mirror), None)

    def __bool__(self) -> bool:
        return bool(self.rules)

    def route(self, name: str) -> Route | None:
        """The rule that owns local repository ``name``, if any."""
        for rule in self._by_target:
            suffix = rule.target.suffix_of(name)
            if suffix is not None:
                return Route(rule, name, rule.source.upstream_repository(suffix if rule.target.wildcard else None))
        return None

    def route_upstream(self, registry: str, repository: str) -> Route | None:
        """Mirror mode: the local name for ``repository`` on ``registry`` (containerd's ``?ns=``)."""
        registry = normalize_registry(registry)
        if registry == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"
        for rule in self._by_source:
            if rule.source.registry != registry:
                continue
            suffix = rule.source.suffix_of(repository)
            if suffix is None:
                continue
            if rule.source.wildcard and not rule.source.path and registry == DOCKER_HUB and suffix.startswith("library/"):
                suffix = suffix[len("library/"):]  # the local name drops library/ as the forward mapping adds it
            local = rule.target.local_name(suffix)
            if is_valid_name(local):
                return Route(rule, local, repository)
        return None

    def check_new(self, rule: CacheRule, replacing: str | None = None) -> None:
        """Refuse a rule whose target another rule (other than ``replacing``) already has."""
        for other in self.rules:
            if other.name == replacing:
                continue
            if other.target == rule.target:
                raise RuleConflict(f"target {rule.target} is already served by rule {other.name!r}")
            if rule.dockerhub_mirror and other.dockerhub_mirror:
                raise RuleConflict(f"rule {other.name!r} is already the Docker Hub mirror")
