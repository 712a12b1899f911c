"""Actions, scope-map rules and Docker token scopes: pure functions, no I/O.

A rule grants actions on a repository pattern: an exact name, ``ns/*`` (every
repository below ``ns``, at any depth) or ``*`` (everything). Docker's token
actions map onto ours: ``pull`` → content/read, ``push`` → content/write,
``delete`` → content/delete, ``*`` → all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..oci.errors import DomainError
from ..oci.names import is_valid_name

READ = "content/read"
WRITE = "content/write"
DELETE = "content/delete"
METADATA = "metadata/read"
ACTIONS = (READ, WRITE, DELETE, METADATA)
ANONYMOUS_ACTIONS = frozenset({READ, METADATA})
ANONYMOUS_SCOPE_MAP = "anonymous"
# ``registry:management:*``: the scope that makes an admin's access token a management credential.
MANAGEMENT = "management"

DOCKER_TO_ACTION = {"pull": READ, "push": WRITE, "delete": DELETE}
ACTION_TO_DOCKER = {v: k for k, v in DOCKER_TO_ACTION.items()}

_PATTERN = re.compile(r"\*|[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*(?:/\*)?")
_SCOPE = re.compile(r"(repository|registry):([^:]+):([a-z*,]*)")
# The grammar of a rule's repository pattern, anchored, for schemas (the management API's OpenAPI document).
REPOSITORY_PATTERN = f"^(?:{_PATTERN.pattern})$"


class InvalidRule(DomainError, ValueError):
    """A scope-map rule naming an invalid repository pattern or unknown actions."""

    code = "INVALID_RULE"


@dataclass(frozen=True, slots=True)
class Rule:
    repository: str
    actions: frozenset[str]

    def matches(self, repository: str) -> bool:
        if self.repository == "*":
            return True
        if self.repository.endswith("/*"):
            return repository.startswith(self.repository[:-1])
        return repository == self.repository

    @classmethod
    def create(cls, repository: str, actions: list[str] | tuple[str, ...]) -> "Rule":
        if not _PATTERN.fullmatch(repository) or len(repository) > 255:
            raise InvalidRule(f"invalid repository pattern {repository[:100]!r}: a name, ns/* or *")
        unknown = set(actions) - set(ACTIONS)
        if unknown or not actions:
            raise InvalidRule(f"actions must be some of {', '.join(ACTIONS)}")
        return cls(repository, frozenset(actions))


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking, and everything their scope maps let them do."""

    kind: str  # "user" | "robot" | "anonymous"
    name: str
    admin: bool = False
    rules: tuple[Rule, ...] = field(default=())
    sid: str = ""  # the identity as created (id + generation): what access tokens name besides ``sub``

    @property
    def authenticated(self) -> bool:
        return self.kind != "anonymous"

    def may(self, repository: str, action: str) -> bool:
        if self.admin:
            return True
        return any(action in r.actions and r.matches(repository) for r in self.rules)

    def allowed_actions(self, repository: str) -> frozenset[str]:
        if self.admin:
            return frozenset(ACTIONS)
        out: set[str] = set()
        for r in self.rules:
            if r.matches(repository):
                out |= r.actions
        return frozenset(out)


ANONYMOUS = Principal("anonymous", "anonymous")


@dataclass(frozen=True, slots=True)
class Scope:
    """One Docker token scope: ``repository:team/app:pull,push`` or ``registry:catalog:*``."""

    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"


def parse_scopes(values: list[str]) -> list[Scope]:
    """Parse ``scope`` parameters (each may hold several space-separated scopes); ignore malformed ones."""
    out: list[Scope] = []
    for value in values:
        for part in value.split():
            m = _SCOPE.fullmatch(part)
            if m:
                out.append(Scope(m.group(1), m.group(2), tuple(a for a in m.group(3).split(",") if a)))
    return out


def grant(principal: Principal, requested: list[Scope]) -> list[dict[str, object]]:
    """The access claims of a token: each requested scope cut down to what ``principal`` may do."""
    access: list[dict[str, object]] = []
    for scope in requested:
        if scope.type == "registry":
            if scope.name == "catalog" and principal.authenticated:
                access.append({"type": "registry", "name": "catalog", "actions": ["*"]})
            elif scope.name == MANAGEMENT and principal.admin:
                access.append({"type": "registry", "name": MANAGEMENT, "actions": ["*"]})
            continue
        if not is_valid_name(scope.name):
            continue  # no repository can have this name: nothing to grant
        allowed = principal.allowed_actions(scope.name)
        wanted = set(scope.actions)
        if "*" in wanted:
            wanted = {"pull", "push", "delete"}
        granted = sorted(a for a in wanted if DOCKER_TO_ACTION.get(a) in allowed)
        if METADATA in allowed and "pull" in wanted and "pull" not in granted:
            granted.append("metadata")  # may list tags, not pull content
        if granted:
            access.append({"type": "repository", "name": scope.name, "actions": sorted(granted)})
    return access


def token_allows(access: list[dict[str, object]], repository: str, action: str) -> bool:
    """Whether a token's access claims cover ``action`` on ``repository``."""
    docker = ACTION_TO_DOCKER.get(action)
    for entry in access:
        if entry.get("type") != "repository" or entry.get("name") != repository:
            continue
        actions = entry.get("actions") or []
        if docker in actions or "*" in actions:
            return True
        if action == METADATA and ("pull" in actions or "metadata" in actions):
            return True
    return False


def token_allows_catalog(access: list[dict[str, object]]) -> bool:
    return any(e.get("type") == "registry" and e.get("name") == "catalog" for e in access)


def token_principal(holder: Principal, access: list[dict[str, object]]) -> Principal:
    """What an access token lets its holder do on the management API: the holder's live rights cut down to
    the token's ``access`` claim. Admin only with ``registry:management:*`` in the claim, so an admin's
    token issued for ``repository:x:pull`` is a pull credential for ``x`` and nothing more."""
    admin = holder.admin and any(e.get("type") == "registry" and e.get("name") == MANAGEMENT for e in access)
    if admin:
        return holder
    rules: list[Rule] = []
    for entry in access:
        name = entry.get("name")
        if entry.get("type") != "repository" or not isinstance(name, str):
            continue
        actions = {a for a in ACTIONS if token_allows(access, name, a)} & holder.allowed_actions(name)
        if actions:
            rules.append(Rule(name, frozenset(actions)))
    return Principal(holder.kind, holder.name, False, tuple(rules), holder.sid)
