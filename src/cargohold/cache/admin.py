"""Cache rules and credential sets as operators manage them: the layer between ``/api/v1`` and the store.

Every change is checked here before it is stored:

- a rule is built with ``CacheRule.build`` (the grammar of sources and
  targets), checked against the other rules (``RuleSet.check_new``: one rule
  per target, one Docker Hub mirror) and stored in its normalized spelling
  (``str(rule.source)``, ``str(rule.target)``), so what the API answers is
  what the cache matches;
- a rule's upstream must not be this machine or its private network (SSRF):
  the source host is resolved and every address checked with
  ``OutboundGuard`` unless ``allow_private_upstreams`` is set. A host that
  does not resolve *now* is accepted (DNS may only work later, or only from
  the servers that run the cache) and logged: the guard runs again on every
  connection the cache makes, so nothing private is ever reached either way;
- a credential set a rule names must exist, and its login server must be the
  rule's upstream registry: credentials are only ever sent where they belong;
- a credential set's password is sealed (``SecretBox``) before it reaches the
  store, and nothing this module returns carries it, sealed or not, except
  ``credentials_for``, which the cache service calls to log in upstream.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..auth.errors import InvalidName
from ..auth.service import NAME_PATTERN
from ..config import Settings
from ..oci.errors import DomainError
from ..store.cache import (
    AlreadyExists,
    CacheConfigStore,
    CredentialSetRecord,
    InUse,
    RuleRecord,
    UnknownCredentialSet,
)
from ..upstream.guard import (
    OutboundGuard,
    PrivateTargetRefused,
    UpstreamRefused,
    is_ip_literal,
)
from .rules import DEFAULT_TAG_TTL_SECONDS, CacheRule, InvalidRule, RuleConflict, RuleSet, Source
from .secrets import SecretBox

log = logging.getLogger("cargohold.cache")

# Column widths of cache_rules.source/target and credential_sets.login_server/username.
MAX_STORED = 255
MAX_PASSWORD = 8192  # a GCP service-account key (`_json_key`) is a ~2.3 KiB password
RESOLVE_TIMEOUT = 5.0
_NAME = re.compile(NAME_PATTERN)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

__all__ = [
    "CacheAdmin",
    "CacheNamespaceRefused",
    "CredentialSetInUse",
    "CredentialSetInfo",
    "CredentialSetMismatch",
    "InvalidCredentialSet",
    "TargetIsCached",
    "UnknownCredentialSet",
    "UpstreamNotAllowed",
]


class UpstreamNotAllowed(DomainError, ValueError):
    """A rule's source is on a loopback, private, link-local or otherwise refused address; the message says which."""

    code = "UPSTREAM_NOT_ALLOWED"


class InvalidCredentialSet(DomainError, ValueError):
    """A login server, user name or password that cannot be stored; the message says why."""

    code = "INVALID_CREDENTIAL_SET"


class CredentialSetMismatch(DomainError, ValueError):
    """A rule names a credential set for another registry than its source's."""

    code = "CREDENTIAL_SET_MISMATCH"


class TargetIsCached(DomainError, ValueError):
    """An import or sync target inside a cache rule's namespace: the cache would serve, revalidate and overwrite it."""

    code = "TARGET_IS_CACHE"


class CacheNamespaceRefused(DomainError, ValueError):
    """A change meant for local repositories (a repository delete) on one a cache rule serves."""

    code = "CACHE_NAMESPACE"


class CredentialSetInUse(InUse):
    """The login server of a credential set that rules on the old registry use cannot change."""


@dataclass(frozen=True)
class CredentialSetInfo:
    """A credential set as anyone but the cache service sees it: no password, not even sealed."""

    name: str
    login_server: str
    username: str
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None
    last_login_ok: bool | None
    last_login_error: str | None
    ratelimit_limit: int | None
    ratelimit_remaining: int | None
    ratelimit_at: datetime | None

    @classmethod
    def of(cls, record: CredentialSetRecord) -> CredentialSetInfo:
        return cls(
            record.name, record.login_server, record.username, record.created_at, record.updated_at,
            record.last_login_at, record.last_login_ok, record.last_login_error,
            record.ratelimit_limit, record.ratelimit_remaining, record.ratelimit_at,
        )


# What update_rule accepts; the keys of RuleRecord that a rule's owner may change (the name may not).
RULE_CHANGES = frozenset(
    {"source", "target", "credential_set", "tag_ttl_seconds", "eager_platforms", "insecure", "dockerhub_mirror"}
)


def _check_name(name: str, kind: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidName(f"{kind} names match {NAME_PATTERN}")


def _stored(rule: CacheRule) -> dict[str, Any]:
    """The store's values of a rule: source and target in their normalized spelling."""
    source, target = str(rule.source), str(rule.target)
    for what, text in (("source", source), ("target", target)):
        if len(text) > MAX_STORED:
            raise InvalidRule(f"{what} {text[:80]!r}… is longer than {MAX_STORED} characters")
    return {
        "source": source,
        "target": target,
        "credential_set": rule.credential_set,
        "tag_ttl_seconds": rule.tag_ttl_seconds,
        "eager_platforms": rule.eager_platforms,
        "insecure": rule.insecure,
        "dockerhub_mirror": rule.dockerhub_mirror,
    }


def _build(name: str, values: dict[str, Any]) -> CacheRule:
    return CacheRule.build(
        name,
        values["source"],
        values["target"],
        credential_set=values.get("credential_set"),
        tag_ttl_seconds=values.get("tag_ttl_seconds", DEFAULT_TAG_TTL_SECONDS),
        eager_platforms=values.get("eager_platforms", False),
        insecure=values.get("insecure", False),
        dockerhub_mirror=values.get("dockerhub_mirror", False),
    )


def _rule_of(record: RuleRecord) -> CacheRule:
    return CacheRule.build(
        record.name, record.source, record.target, record.credential_set, record.tag_ttl_seconds,
        record.eager_platforms, record.insecure, record.dockerhub_mirror,
    )


def host_of(registry: str) -> str:
    """``ghcr.io`` → ``ghcr.io``, ``localhost:5001`` → ``localhost``, ``[::1]:5000`` → ``::1``."""
    if registry.startswith("["):
        return registry[1 : registry.index("]")]
    return registry.rsplit(":", 1)[0]


def normalize_login_server(value: str) -> str:
    """A credential set's login server, normalized like a rule's source registry (``index.docker.io`` → ``docker.io``)."""
    text = value.strip()
    if "://" in text or "/" in text:
        raise InvalidCredentialSet(f"login server {text[:100]!r} must be a registry host[:port] such as docker.io, not a URL or path")
    try:
        registry = Source.parse(f"{text}/*").registry
    except InvalidRule:
        raise InvalidCredentialSet(
            f"login server {text[:100]!r} must be a registry host[:port] such as docker.io, ghcr.io or localhost:5001"
        ) from None
    if len(registry) > MAX_STORED:
        raise InvalidCredentialSet(f"login server is longer than {MAX_STORED} characters")
    return registry


def _check_username(username: str) -> str:
    if not username or len(username) > MAX_STORED:
        raise InvalidCredentialSet(f"the user name must have 1 to {MAX_STORED} characters")
    if _CONTROL.search(username) or ":" in username:
        raise InvalidCredentialSet("the user name must not contain ':' or control characters")
    return username


def _check_password(password: str) -> str:
    if not password or len(password) > MAX_PASSWORD:
        raise InvalidCredentialSet(f"the password must have 1 to {MAX_PASSWORD} characters")
    if "\x00" in password:
        raise InvalidCredentialSet("the password must not contain NUL characters")
    return password


class CacheAdmin:
    """Create, change, list and delete cache rules and credential sets; the one reader of upstream passwords."""

    def __init__(self, store: CacheConfigStore, box: SecretBox, settings: Settings) -> None:
        self.store = store
        self.box = box
        self.settings = settings
        self.guard = OutboundGuard(allow_private=settings.allow_private_upstreams)

    # ---- rules ---------------------------------------------------------------------------------

    async def check_not_cached(self, repository: str) -> None:
        """Raises TargetIsCached when a cache rule owns ``repository`` (imports and sync rules write only elsewhere)."""
        route = (await load_rule_set(self.store)).route(repository)
        if route is not None:
            raise TargetIsCached(
                f"{repository} is in the namespace {route.rule.target} of cache rule {route.rule.name!r}, which mirrors "
                f"{route.registry}; import or sync into a repository outside it"
            )

    async def list_rules(self) -> list[RuleRecord]:
        return await self.store.list_rules()

    async def get_rule(self, name: str) -> RuleRecord | None:
        return await self.store.get_rule(name)

    async def create_rule(
        self,
        name: str,
        source: str,
        target: str,
        credential_set: str | None = None,
        tag_ttl_seconds: int = DEFAULT_TAG_TTL_SECONDS,
        eager_platforms: bool = False,
        insecure: bool = False,
        dockerhub_mirror: bool = False,
    ) -> RuleRecord:
        """The stored rule. Raises InvalidName, InvalidRule, RuleConflict, AlreadyExists, UnknownCredentialSet,
        CredentialSetMismatch or UpstreamNotAllowed."""
        _check_name(name, "cache rule")
        rule = CacheRule.build(
            name, source, target, credential_set, tag_ttl_seconds, eager_platforms, insecure, dockerhub_mirror
        )
        values = _stored(rule)
        existing = await self.store.list_rules()
        if any(r.name == name for r in existing):
            raise AlreadyExists(f"a cache rule named {name!r} already exists")
        RuleSet([_rule_of(r) for r in existing]).check_new(rule)
        await self._check_sync_targets(rule)
        await self._check_credential_set(rule)
        await self._check_upstream(rule)
        return await self.store.create_rule(name, values)

    async def update_rule(self, name: str, **changes: Any) -> RuleRecord | None:
        """None for an unknown rule; only the given fields change (``credential_set=None`` removes the set).

        Raises what ``create_rule`` raises; the upstream is checked again only when the source changes."""
        unknown = set(changes) - RULE_CHANGES
        if unknown:
            raise TypeError(f"update_rule() got unexpected changes: {', '.join(sorted(unknown))}")
        current = await self.store.get_rule(name)
        if current is None:
            return None
        values = {field: getattr(current, field) for field in RULE_CHANGES}
        values.update(changes)
        rule = _build(name, values)
        stored = _stored(rule)
        existing = await self.store.list_rules()
        RuleSet([_rule_of(r) for r in existing if r.name != name]).check_new(rule, replacing=name)
        if stored["target"] != current.target:
            await self._check_sync_targets(rule)
        if stored["credential_set"] is not None and (
            stored["credential_set"] != current.credential_set or stored["source"] != current.source
        ):
            await self._check_credential_set(rule)
        if stored["source"] != current.source:
            await self._check_upstream(rule)
        if all(getattr(current, field) == value for field, value in stored.items()):
            return current  # nothing to write: no reload in every worker, no upstream token caches lost
        return await self.store.update_rule(name, stored)

    async def delete_rule(self, name: str) -> bool:
        return await self.store.delete_rule(name)

    async def _check_sync_targets(self, rule: CacheRule) -> None:
        """The mirror image of ``check_not_cached``: a cache target may not cover a repository a sync rule fills."""
        for sync_rule, repository in await self.store.sync_targets():
            if rule.target.suffix_of(repository) is not None:
                raise RuleConflict(
                    f"sync rule {sync_rule!r} copies into {repository}, which target {rule.target} would turn into a "
                    "read-only cache; choose another target, or move or delete the sync rule first"
                )

    async def _check_credential_set(self, rule: CacheRule) -> None:
        await self.check_credential_set(rule.credential_set, rule.source.registry)

    async def check_credential_set(self, name: str | None, registry: str) -> None:
        """A rule (cache or sync) on ``registry`` may name only an existing set for that registry: credentials
        are never sent to another login server. Raises UnknownCredentialSet or CredentialSetMismatch."""
        if name is None:
            return
        record = await self.store.get_credential_set(name)
        if record is None:
            raise UnknownCredentialSet(f"credential set {name!r} does not exist")
        if record.login_server != registry:
            raise CredentialSetMismatch(
                f"credential set {record.name!r} is for {record.login_server}, but the source is on "
                f"{registry}: credentials are only sent to their own login server"
            )

    async def _check_upstream(self, rule: CacheRule) -> None:
        await self.check_upstream(rule.source.registry, f"cache rule {rule.name}")

    async def check_upstream(self, registry: str, what: str) -> None:
        """Refuse a source on an address the server may not reach (UpstreamNotAllowed); see the module docstring
        for unresolvable hosts. ``what`` names the rule in the log."""
        host = host_of(registry)
        try:
            addresses = [host] if is_ip_literal(host) else await self._resolve(host)
            if addresses is None:
                return
            self.guard.check(host, addresses)
        except PrivateTargetRefused as exc:
            raise UpstreamNotAllowed(str(exc)) from None
        except UpstreamRefused as exc:  # resolved to nothing at all: as good as unresolvable
            log.info("%s: %s; the guard checks it again on every connection", what, exc)

    async def _resolve(self, host: str) -> list[str] | None:
        """The addresses ``host`` resolves to now; None (and a log line) when it does not resolve."""
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT)
        except (OSError, TimeoutError, UnicodeError) as exc:
            log.info(
                "upstream %s does not resolve now (%s); accepted, the guard checks every connection",
                host, type(exc).__name__,
            )
            return None
        return [str(info[4][0]) for info in infos]

    # ---- credential sets -----------------------------------------------------------------------

    async def list_credential_sets(self) -> list[CredentialSetInfo]:
        return [CredentialSetInfo.of(r) for r in await self.store.list_credential_sets()]

    async def get_credential_set(self, name: str) -> CredentialSetInfo | None:
        record = await self.store.get_credential_set(name)
        return CredentialSetInfo.of(record) if record else None

    async def create_credential_set(self, name: str, login_server: str, username: str, password: str) -> CredentialSetInfo:
        """Raises InvalidName, InvalidCredentialSet or AlreadyExists."""
        _check_name(name, "credential set")
        server = normalize_login_server(login_server)
        sealed = self.box.seal(_check_password(password))
        record = await self.store.create_credential_set(name, server, _check_username(username), sealed)
        return CredentialSetInfo.of(record)

    async def update_credential_set(
        self, name: str, login_server: str | None = None, username: str | None = None, password: str | None = None
    ) -> CredentialSetInfo | None:
        """None for an unknown set; what is not given stays. Any change forgets the last login's outcome.

        Raises InvalidCredentialSet, or CredentialSetInUse when rules on another registry use the set."""
        values: dict[str, Any] = {}
        if login_server is not None:
            values["login_server"] = normalize_login_server(login_server)
        if username is not None:
            values["username"] = _check_username(username)
        if password is not None:
            values["secret"] = self.box.seal(_check_password(password))
        current = await self.store.get_credential_set(name)
        if current is None:
            return None
        if all(getattr(current, field) == value for field, value in values.items()):
            return CredentialSetInfo.of(current)  # nothing changes (a new password always does: sealing is randomized)
        if values.get("login_server", current.login_server) != current.login_server:
            users = await self.store.credential_set_users(name)
            if users:
                raise CredentialSetInUse(
                    f"credential set {name!r} is used by {users} on "
                    f"{current.login_server}; its login server cannot change to {values['login_server']}"
                )
        record = await self.store.update_credential_set(name, values)
        return CredentialSetInfo.of(record) if record else None

    async def delete_credential_set(self, name: str) -> bool:
        """False for an unknown set; raises InUse while a rule names it."""
        return await self.store.delete_credential_set(name)

    async def credentials_for(self, name: str) -> tuple[str, str]:
        """``(username, password)`` of a credential set, decrypted: for the cache service's upstream logins only.

        Raises UnknownCredentialSet, or ``cache.secrets.SecretKeyError`` when the server's key does not
        decrypt the stored password (the key changed)."""
        record = await self.store.get_credential_set(name)
        if record is None:
            raise UnknownCredentialSet(f"credential set {name!r} does not exist")
        return record.username, self.box.open(record.secret)


async def load_rule_set(store: CacheConfigStore) -> RuleSet:
    """Every stored rule, ready for routing; a row that no longer validates is skipped (and logged), not fatal."""
    rules = []
    for record in await store.list_rules():
        try:
            rules.append(_rule_of(record))
        except InvalidRule as exc:
            log.error("cache rule %r is invalid and ignored: %s", record.name, exc)
    return RuleSet(rules)
