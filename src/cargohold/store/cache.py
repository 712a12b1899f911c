"""The artifact cache's metadata: rules, credential sets, freshness, cached blobs and pins.

Two stores on the same engine. ``CacheConfigStore`` holds what operators
change rarely and every request consults (rules, credential sets): its
writes bump the ``cache-generation`` counter so that every worker reloads
its in-memory rule set. ``CacheStateStore`` holds what pulls change all the
time (freshness, last-pull times); its writes must not invalidate anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..oci.errors import DomainError
from .db import SqlStore
from .identities import AlreadyExists, InUse, aware
from .schema import (
    blobs,
    cache_blobs,
    cache_freshness,
    cache_pins,
    cache_rules,
    credential_sets,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    sync_rules,
    tags,
)

__all__ = ["AlreadyExists", "InUse", "UnknownCredentialSet", "CacheConfigStore", "CacheStateStore"]


class UnknownCredentialSet(DomainError, LookupError):
    """A rule names a credential set that does not exist."""

    code = "UNKNOWN_CREDENTIAL_SET"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RuleRecord:
    name: str
    source: str
    target: str
    credential_set: str | None
    tag_ttl_seconds: int
    eager_platforms: bool
    insecure: bool
    dockerhub_mirror: bool
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class CredentialSetRecord:
    name: str
    login_server: str
    username: str
    secret: str  # Fernet-encrypted; only cache/admin.py (through cache/secrets.py) decrypts it
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None
    last_login_ok: bool | None
    last_login_error: str | None
    ratelimit_limit: int | None
    ratelimit_remaining: int | None
    ratelimit_at: datetime | None


RULE_FIELDS = ("source", "target", "credential_set", "tag_ttl_seconds", "eager_platforms", "insecure", "dockerhub_mirror")


def _rule(row: Any) -> RuleRecord:
    return RuleRecord(
        row.name, row.source, row.target, row.credential_set, row.tag_ttl_seconds, bool(row.eager_platforms),
        bool(row.insecure), bool(row.dockerhub_mirror), aware(row.created_at), aware(row.updated_at),  # type: ignore[arg-type]
    )


def _credential_set(row: Any) -> CredentialSetRecord:
    return CredentialSetRecord(
        row.name, row.login_server, row.username, row.secret, aware(row.created_at), aware(row.updated_at),  # type: ignore[arg-type]
        aware(row.last_login_at), row.last_login_ok, row.last_login_error, row.ratelimit_limit,
        row.ratelimit_remaining, aware(row.ratelimit_at),
    )


async def check_credential_set(conn: AsyncConnection, name: str | None) -> None:
    """Inside a rule's write (cache or sync rule): the named set exists, so the foreign key cannot fail as a 500."""
    if name is None:
        return
    found = (await conn.execute(select(credential_sets.c.id).where(credential_sets.c.name == name))).first()
    if found is None:
        raise UnknownCredentialSet(f"credential set {name!r} does not exist")


class CacheConfigStore(SqlStore):
    # ---- rules ---------------------------------------------------------------------------------

    async def list_rules(self) -> list[RuleRecord]:
        async with self._read() as conn:
            return [_rule(r) for r in await conn.execute(select(cache_rules).order_by(cache_rules.c.name))]

    async def get_rule(self, name: str) -> RuleRecord | None:
        async with self._read() as conn:
            row = (await conn.execute(select(cache_rules).where(cache_rules.c.name == name))).first()
        return _rule(row) if row else None

    async def create_rule(self, name: str, values: Mapping[str, Any]) -> RuleRecord:
        at = now()
        try:
            async with self._write() as conn:
                await check_credential_set(conn, values.get("credential_set"))
                await conn.execute(insert(cache_rules).values(name=name, created_at=at, updated_at=at, **values))
        except IntegrityError:
            raise AlreadyExists(f"a cache rule named {name!r} or with target {values.get('target')!r} already exists") from None
        found = await self.get_rule(name)
        assert found is not None
        return found

    async def update_rule(self, name: str, values: Mapping[str, Any]) -> RuleRecord | None:
        try:
            async with self._write() as conn:
                if "credential_set" in values:
                    await check_credential_set(conn, values["credential_set"])
                result = await conn.execute(
                    update(cache_rules).where(cache_rules.c.name == name).values(updated_at=now(), **values)
                )
                if result.rowcount == 0:
                    return None
        except IntegrityError:
            raise AlreadyExists(f"another cache rule already has target {values.get('target')!r}") from None
        return await self.get_rule(name)

    async def delete_rule(self, name: str) -> bool:
        async with self._write() as conn:
            return (await conn.execute(delete(cache_rules).where(cache_rules.c.name == name))).rowcount > 0

    # ---- credential sets -----------------------------------------------------------------------

    async def list_credential_sets(self) -> list[CredentialSetRecord]:
        async with self._read() as conn:
            query = select(credential_sets).order_by(credential_sets.c.name)
            return [_credential_set(r) for r in await conn.execute(query)]

    async def get_credential_set(self, name: str) -> CredentialSetRecord | None:
        async with self._read() as conn:
            row = (await conn.execute(select(credential_sets).where(credential_sets.c.name == name))).first()
        return _credential_set(row) if row else None

    async def create_credential_set(self, name: str, login_server: str, username: str, secret: str) -> CredentialSetRecord:
        at = now()
        try:
            async with self._write() as conn:
                await conn.execute(
                    insert(credential_sets).values(
                        name=name, login_server=login_server, username=username, secret=secret, created_at=at, updated_at=at
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"a credential set named {name!r} already exists") from None
        found = await self.get_credential_set(name)
        assert found is not None
        return found

    async def update_credential_set(self, name: str, values: Mapping[str, Any]) -> CredentialSetRecord | None:
        """Change login server, user name or secret; the last-login status is reset (it described the old login)."""
        reset = {"last_login_at": None, "last_login_ok": None, "last_login_error": None}
        async with self._write() as conn:
            result = await conn.execute(
                update(credential_sets).where(credential_sets.c.name == name).values(updated_at=now(), **reset, **values)
            )
            if result.rowcount == 0:
                return None
        return await self.get_credential_set(name)

    async def delete_credential_set(self, name: str) -> bool:
        async with self._write() as conn:
            users = await self._credential_set_users(conn, name)
            if users:
                raise InUse(f"credential set {name!r} is used by {users}")
            return (await conn.execute(delete(credential_sets).where(credential_sets.c.name == name))).rowcount > 0

    async def sync_targets(self) -> list[tuple[str, str]]:
        """(sync rule, target repository) pairs: a cache rule may not take over a repository a sync rule fills."""
        async with self._read() as conn:
            rows = await conn.execute(select(sync_rules.c.name, sync_rules.c.target).order_by(sync_rules.c.name))
            return [(row.name, row.target) for row in rows]

    async def credential_set_users(self, name: str) -> str:
        async with self._read() as conn:
            return await self._credential_set_users(conn, name)

    @staticmethod
    async def _credential_set_users(conn: AsyncConnection, name: str) -> str:
        """The cache and sync rules that name a credential set, as one phrase ("" when none): the foreign keys' view."""
        parts = []
        for table, what in ((cache_rules, "cache rule(s)"), (sync_rules, "sync rule(s)")):
            names = (await conn.execute(select(table.c.name).where(table.c.credential_set == name))).scalars().all()
            if names:
                parts.append(f"{what} {', '.join(sorted(names))}")
        return " and ".join(parts)

    async def record_login(self, name: str, ok: bool, error: str | None) -> None:
        """Status only: no worker caches it, so the generation is left alone."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(credential_sets)
                .where(credential_sets.c.name == name)
                .values(last_login_at=now(), last_login_ok=ok, last_login_error=(error or None) and error[:512])
            )

    async def record_ratelimit(self, name: str, limit: int | None, remaining: int | None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(credential_sets)
                .where(credential_sets.c.name == name)
                .values(ratelimit_limit=limit, ratelimit_remaining=remaining, ratelimit_at=now())
            )


@dataclass(frozen=True)
class Freshness:
    digest: str | None
    checked_at: datetime


@dataclass(frozen=True)
class CachedBlob:
    digest: str
    size: int
    last_pulled_at: datetime


@dataclass(frozen=True)
class PinRecord:
    repository: str
    reference: str
    created_by: str
    created_at: datetime


class CacheStateStore:
    """Freshness, cached blobs and pins. Writes here invalidate no in-process cache."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        if engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert
        self._upsert = upsert

    # ---- freshness -----------------------------------------------------------------------------

    async def freshness(self, repository: str, key: str) -> Freshness | None:
        query = select(cache_freshness.c.digest, cache_freshness.c.checked_at).where(
            cache_freshness.c.repository == repository, cache_freshness.c.key == key
        )
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return Freshness(row.digest, aware(row.checked_at)) if row else None  # type: ignore[arg-type]

    async def mark_fresh(self, repository: str, key: str, digest: str | None, at: datetime | None = None) -> None:
        stmt = self._upsert(cache_freshness).values(repository=repository, key=key, digest=digest, checked_at=at or now())
        stmt = stmt.on_conflict_do_update(
            index_elements=["repository", "key"], set_={"digest": stmt.excluded.digest, "checked_at": stmt.excluded.checked_at}
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt)

    # ---- cached blobs --------------------------------------------------------------------------

    async def record_blob(self, digest: str, size: int) -> None:
        at = now()
        stmt = self._upsert(cache_blobs).values(digest=digest, size=size, fetched_at=at, last_pulled_at=at)
        async with self.engine.begin() as conn:
            await conn.execute(stmt.on_conflict_do_update(index_elements=["digest"], set_={"last_pulled_at": at}))

    async def touch(self, pulls: Mapping[str, datetime]) -> None:
        """Record last-pull times collected in memory (one transaction for a batch of hits)."""
        if not pulls:
            return
        async with self.engine.begin() as conn:
            for digest, at in pulls.items():
                await conn.execute(
                    update(cache_blobs).where(cache_blobs.c.digest == digest).values(last_pulled_at=at)
                )

    async def usage(self) -> tuple[int, int]:
        """(blob count, bytes) of cached content."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(func.count(), func.coalesce(func.sum(cache_blobs.c.size), 0)))).one()
        return int(row[0]), int(row[1])

    async def least_recently_pulled(self) -> list[CachedBlob]:
        query = select(cache_blobs.c.digest, cache_blobs.c.size, cache_blobs.c.last_pulled_at).order_by(
            cache_blobs.c.last_pulled_at, cache_blobs.c.digest
        )
        async with self.engine.connect() as conn:
            return [CachedBlob(r.digest, r.size, aware(r.last_pulled_at)) for r in await conn.execute(query)]  # type: ignore[arg-type]

    async def linking_repositories(self, digest: str) -> list[str]:
        """Every repository that links ``digest`` (as a blob or as a manifest)."""
        links = select(repositories.c.name).select_from(
            repository_blobs.join(repositories, repositories.c.id == repository_blobs.c.repository_id)
        ).where(repository_blobs.c.digest == digest)
        as_manifest = select(repositories.c.name).select_from(
            manifests.join(repositories, repositories.c.id == manifests.c.repository_id)
        ).where(manifests.c.digest == digest)
        async with self.engine.connect() as conn:
            names = set((await conn.execute(links)).scalars()) | set((await conn.execute(as_manifest)).scalars())
        return sorted(names)

    async def evict_blob(self, digest: str, repositories_to_unlink: Iterable[str]) -> bool:
        """Forget a cached blob: unlink it from the given (cache) repositories, drop its rows if nothing links it.

        Returns True when no link is left, i.e. the caller may delete the file.
        """
        names = list(repositories_to_unlink)
        async with self.engine.begin() as conn:
            if names:
                ids = select(repositories.c.id).where(repositories.c.name.in_(names))
                await conn.execute(
                    delete(repository_blobs).where(repository_blobs.c.digest == digest, repository_blobs.c.repository_id.in_(ids))
                )
            await conn.execute(delete(cache_blobs).where(cache_blobs.c.digest == digest))
            still_linked = (
                await conn.execute(select(func.count()).select_from(repository_blobs).where(repository_blobs.c.digest == digest))
            ).scalar_one()
            as_manifest = (
                await conn.execute(select(func.count()).select_from(manifests).where(manifests.c.digest == digest))
            ).scalar_one()
            if still_linked or as_manifest:
                return False
            await conn.execute(delete(blobs).where(blobs.c.digest == digest))
            return True

    # ---- pins ----------------------------------------------------------------------------------

    async def add_pin(self, repository: str, reference: str, created_by: str) -> PinRecord:
        at = now()
        stmt = self._upsert(cache_pins).values(repository=repository, reference=reference, created_by=created_by, created_at=at)
        async with self.engine.begin() as conn:
            await conn.execute(stmt.on_conflict_do_nothing(index_elements=["repository", "reference"]))
        return PinRecord(repository, reference, created_by, at)

    async def remove_pin(self, repository: str, reference: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(cache_pins).where(cache_pins.c.repository == repository, cache_pins.c.reference == reference)
            )
            return result.rowcount > 0

    async def list_pins(self) -> list[PinRecord]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(cache_pins).order_by(cache_pins.c.repository, cache_pins.c.reference))
            return [PinRecord(r.repository, r.reference, r.created_by, aware(r.created_at)) for r in rows]  # type: ignore[arg-type]

    async def pinned_blobs(self) -> set[str]:
        """Every digest reachable from a pinned tag or digest: manifests, index children, layers, configs."""
        async with self.engine.connect() as conn:
            pins = (await conn.execute(select(cache_pins.c.repository, cache_pins.c.reference))).all()
            keep: set[str] = set()
            for repository, reference in pins:
                repo_id = (
                    await conn.execute(select(repositories.c.id).where(repositories.c.name == repository))
                ).scalar_one_or_none()
                if repo_id is None:
                    continue
                if ":" in reference:
                    roots = [reference]
                else:
                    roots = list(
                        (
                            await conn.execute(
                                select(tags.c.digest).where(tags.c.repository_id == repo_id, tags.c.name == reference)
                            )
                        ).scalars()
                    )
                frontier = [r for r in roots if r not in keep]
                keep.update(frontier)
                while frontier:
                    children = (
                        await conn.execute(
                            select(manifest_references.c.child).where(
                                manifest_references.c.repository_id == repo_id, manifest_references.c.digest.in_(frontier)
                            )
                        )
                    ).scalars().all()
                    frontier = [c for c in children if c not in keep]
                    keep.update(frontier)
        return keep
