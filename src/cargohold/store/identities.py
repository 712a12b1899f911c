"""Access-control metadata: users, robots, scope maps, refresh tokens, login failures and audit events.

The SQL of the ``auth`` layer, kept beside the registry's (``metadata.py``)
on the same engine; every write bumps the shared generation so that cached
identities in every worker are dropped.
"""

from __future__ import annotations

import enum
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, delete, func, insert, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..oci.errors import DomainError
from .db import SqlStore
from .schema import audit_events, login_failures, refresh_tokens, robots, scope_maps, users


T = TypeVar("T")
# The PostgreSQL transaction lock that makes "count, then reserve" one step for every worker and replica.
_LOGIN_LOCK_KEY = 0x6C6F67696E  # "login"


class AlreadyExists(DomainError):
    """A user, robot, scope map, rule or credential set of that name exists already."""

    code = "ALREADY_EXISTS"


class InUse(DomainError):
    """Something still uses the object to delete (a scope map granted to users, a credential set used by rules)."""

    code = "IN_USE"


class LastAdmin(InUse):
    """Deleting or demoting this user would leave nobody able to administer the registry."""

    code = "LAST_ADMIN"


class UnknownScopeMap(DomainError, LookupError):
    """A user or robot names a scope map that does not exist."""

    code = "UNKNOWN_SCOPE_MAP"


@dataclass(frozen=True)
class UserRecord:
    name: str
    password_hash: str
    admin: bool
    scope_maps: list[str]
    created_at: datetime
    id: int = 0
    generation: str = "0"

    @property
    def subject_id(self) -> str:
        """What an access token names: this user as created (and since its last password change)."""
        return f"u{self.id}.{self.generation}"


@dataclass(frozen=True)
class RobotRecord:
    name: str
    scope_maps: list[str]
    expires_at: datetime | None
    created_by: str
    created_at: datetime
    id: int = 0
    generation: str = "0"

    @property
    def subject_id(self) -> str:
        return f"r{self.id}.{self.generation}"


@dataclass(frozen=True)
class ScopeMapRecord:
    name: str
    description: str
    rules: list[dict[str, Any]]
    created_at: datetime


class RefreshUse(enum.Enum):
    """What presenting a refresh token did."""

    ROTATED = "rotated"  # accepted, and replaced by its successor
    UNKNOWN = "unknown"
    REVOKED = "revoked"  # revoked or expired
    REUSED = "reused"  # already used: its family is now revoked
    STATIC = "static"  # accepted; a token that does not rotate (issued to the docker daemon) stays as it is


@dataclass(frozen=True)
class RefreshRecord:
    id: str
    principal: str
    expires_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    client: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any] | None


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything here is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class IdentityStore(SqlStore):
    async def _one(self, query: Select[Any], mapper: Callable[[Any], T]) -> T | None:
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return mapper(row) if row else None

    async def _all(self, query: Select[Any], mapper: Callable[[Any], T]) -> list[T]:
        async with self._read() as conn:
            return [mapper(r) for r in await conn.execute(query)]

    @asynccontextmanager
    async def _write_quietly(self) -> AsyncIterator[AsyncConnection]:
        """A write that changes no identity (audit, login failures): caches stay."""
        async with self.engine.begin() as conn:
            yield conn

    # ---- users ---------------------------------------------------------------------------------

    async def create_user(self, name: str, password_hash: str, admin: bool, maps: list[str]) -> UserRecord:
        created = now()
        generation = new_generation()
        try:
            async with self._write() as conn:
                await self._check_name_free(conn, name)
                await self._check_maps_exist(conn, maps)
                result = await conn.execute(
                    insert(users).values(
                        name=name,
                        password_hash=password_hash,
                        admin=admin,
                        scope_maps=json.dumps(maps),
                        created_at=created,
                        generation=generation,
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"{name!r} already exists") from None
        return UserRecord(name, password_hash, admin, maps, created, int(result.inserted_primary_key[0]), generation)

    async def get_user(self, name: str) -> UserRecord | None:
        return await self._one(select(users).where(users.c.name == name), _user)

    async def list_users(self) -> list[UserRecord]:
        return await self._all(select(users).order_by(users.c.name), _user)

    async def update_user(
        self, name: str, *, password_hash: str | None = None, admin: bool | None = None, maps: list[str] | None = None
    ) -> UserRecord | None:
        values: dict[str, Any] = {}
        if password_hash is not None:
            values["password_hash"] = password_hash
            values["generation"] = new_generation()  # access tokens issued before the change stop working
        if admin is not None:
            values["admin"] = admin
        if maps is not None:
            values["scope_maps"] = json.dumps(maps)
        async with self._write() as conn:
            if maps is not None:
                await self._check_maps_exist(conn, maps)
            if admin is False:
                await self._check_not_last_admin(conn, name, "demote")
            if values:
                await conn.execute(update(users).where(users.c.name == name).values(**values))
            row = (await conn.execute(select(users).where(users.c.name == name))).first()
        return _user(row) if row else None

    async def delete_user(self, name: str) -> bool:
        """Delete a user and revoke its refresh tokens; raises LastAdmin rather than remove the last admin."""
        async with self._write() as conn:
            await self._check_not_last_admin(conn, name, "delete")
            result = await conn.execute(delete(users).where(users.c.name == name))
            await _revoke_refresh_tokens(conn, name)
            return result.rowcount > 0

    async def count_admins(self) -> int:
        async with self._read() as conn:
            return (await conn.execute(select(func.count()).select_from(users).where(users.c.admin.is_(True)))).scalar_one()

    # ---- robots --------------------------------------------------------------------------------

    async def create_robot(
        self, name: str, token_hash: str, maps: list[str], expires_at: datetime | None, created_by: str
    ) -> RobotRecord:
        created = now()
        generation = new_generation()
        try:
            async with self._write() as conn:
                await self._check_name_free(conn, name)
                await self._check_maps_exist(conn, maps)
                result = await conn.execute(
                    insert(robots).values(
                        name=name,
                        token_hash=token_hash,
                        scope_maps=json.dumps(maps),
                        expires_at=expires_at,
                        created_by=created_by,
                        created_at=created,
                        generation=generation,
                    )
                )
        except IntegrityError:
            raise AlreadyExists(f"{name!r} already exists") from None
        return RobotRecord(name, maps, expires_at, created_by, created, int(result.inserted_primary_key[0]), generation)

    async def robot_by_token(self, token_hash: str) -> RobotRecord | None:
        return await self._one(select(robots).where(robots.c.token_hash == token_hash), _robot)

    async def get_robot(self, name: str) -> RobotRecord | None:
        return await self._one(select(robots).where(robots.c.name == name), _robot)

    async def list_robots(self) -> list[RobotRecord]:
        return await self._all(select(robots).order_by(robots.c.name), _robot)

    async def delete_robot(self, name: str) -> bool:
        async with self._write() as conn:
            result = await conn.execute(delete(robots).where(robots.c.name == name))
            await _revoke_refresh_tokens(conn, name)
            return result.rowcount > 0

    # ---- scope maps ----------------------------------------------------------------------------

    async def create_scope_map(self, name: str, description: str, rules: list[dict[str, Any]]) -> ScopeMapRecord:
        created = now()
        try:
            async with self._write() as conn:
                await conn.execute(
                    insert(scope_maps).values(name=name, description=description, rules=json.dumps(rules), created_at=created)
                )
        except IntegrityError:
            raise AlreadyExists(f"scope map {name!r} already exists") from None
        return ScopeMapRecord(name, description, rules, created)

    async def replace_scope_map(self, name: str, description: str, rules: list[dict[str, Any]]) -> ScopeMapRecord | None:
        """Replace a scope map's description and rules; None if there is no such scope map."""
        async with self._write() as conn:
            result = await conn.execute(
                update(scope_maps).where(scope_maps.c.name == name).values(description=description, rules=json.dumps(rules))
            )
            if result.rowcount == 0:
                return None
            row = (await conn.execute(select(scope_maps).where(scope_maps.c.name == name))).first()
        return _scope_map(row) if row else None

    async def get_scope_map(self, name: str) -> ScopeMapRecord | None:
        return await self._one(select(scope_maps).where(scope_maps.c.name == name), _scope_map)

    async def list_scope_maps(self) -> list[ScopeMapRecord]:
        return await self._all(select(scope_maps).order_by(scope_maps.c.name), _scope_map)

    async def scope_maps_named(self, names: list[str]) -> list[ScopeMapRecord]:
        if not names:
            return []
        async with self._read() as conn:
            rows = await conn.execute(select(scope_maps).where(scope_maps.c.name.in_(names)))
            return [_scope_map(r) for r in rows]

    async def delete_scope_map(self, name: str) -> bool:
        async with self._write() as conn:
            users_using = [r.name for r in await conn.execute(select(users.c.name, users.c.scope_maps)) if name in json.loads(r.scope_maps)]
            robots_using = [r.name for r in await conn.execute(select(robots.c.name, robots.c.scope_maps)) if name in json.loads(r.scope_maps)]
            if users_using or robots_using:
                raise InUse(f"scope map {name!r} is used by {', '.join(users_using + robots_using)}")
            result = await conn.execute(delete(scope_maps).where(scope_maps.c.name == name))
            return result.rowcount > 0

    # ---- refresh tokens ------------------------------------------------------------------------

    async def add_refresh_token(
        self, token_id: str, token_hash: str, principal: str, expires_at: datetime, rotates: bool = True
    ) -> None:
        """A new refresh token, the first of its family; ``rotates=False`` for a client that cannot rotate."""
        async with self._write_quietly() as conn:
            await conn.execute(
                insert(refresh_tokens).values(
                    id=token_id, token_hash=token_hash, principal=principal, expires_at=expires_at, created_at=now(),
                    family=token_id, rotates=rotates,
                )
            )

    async def use_refresh_token(
        self, token_hash: str, successor_id: str, successor_hash: str, expires_at: datetime
    ) -> tuple[RefreshUse, RefreshRecord | None]:
        """Redeem a refresh token once, replacing it by its successor in the same transaction.

        Marking it used is a conditional update, so of two concurrent uses at most one succeeds
        (SQLite serializes writers; PostgreSQL re-checks the condition after the row lock). A token
        presented after it was used is a stolen copy or a replay: the whole family is revoked."""
        async with self._write_quietly() as conn:
            row = (await conn.execute(select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash))).first()
            if row is None:
                return RefreshUse.UNKNOWN, None
            record = _refresh(row)
            family = row.family or row.id
            if record.revoked_at is not None or record.expires_at <= now():
                return RefreshUse.REVOKED, record
            if not row.rotates:
                return RefreshUse.STATIC, record
            claimed = await conn.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.id == row.id, refresh_tokens.c.used_at.is_(None), refresh_tokens.c.revoked_at.is_(None))
                .values(used_at=now())
            )
            if claimed.rowcount == 0:
                await _revoke_family(conn, family)
                return RefreshUse.REUSED, record
            await conn.execute(
                insert(refresh_tokens).values(
                    id=successor_id, token_hash=successor_hash, principal=row.principal, expires_at=expires_at,
                    created_at=now(), family=family,
                )
            )
            return RefreshUse.ROTATED, record

    async def refresh_token(self, token_hash: str) -> RefreshRecord | None:
        async with self._read() as conn:
            row = (await conn.execute(select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash))).first()
        return _refresh(row) if row is not None else None

    async def refresh_token_by_id(self, token_id: str) -> RefreshRecord | None:
        async with self._read() as conn:
            row = (await conn.execute(select(refresh_tokens).where(refresh_tokens.c.id == token_id))).first()
        return _refresh(row) if row is not None else None

    async def list_refresh_tokens(self, principal: str | None = None) -> list[RefreshRecord]:
        """The refresh tokens not yet used (a used one lives on only as its successor)."""
        query = select(refresh_tokens).where(refresh_tokens.c.used_at.is_(None)).order_by(refresh_tokens.c.created_at)
        if principal is not None:
            query = query.where(refresh_tokens.c.principal == principal)
        async with self._read() as conn:
            return [_refresh(r) for r in await conn.execute(query)]

    async def revoke_refresh_token(self, token_id: str) -> bool:
        """Revoke a refresh token and every token of its rotation family; whether any was live."""
        async with self._write_quietly() as conn:
            row = (await conn.execute(select(refresh_tokens.c.id, refresh_tokens.c.family).where(refresh_tokens.c.id == token_id))).first()
            if row is None:
                return False
            return await _revoke_family(conn, row.family or row.id) > 0

    async def revoke_refresh_tokens(self, principal: str) -> int:
        """Revoke every live refresh token of ``principal`` (after a password change); how many were revoked."""
        async with self._write_quietly() as conn:
            return await _revoke_refresh_tokens(conn, principal)

    # ---- login failures and audit ----------------------------------------------------------------

    async def reserve_login_attempt(
        self, client: str, username: str | None, since: datetime, limit: int
    ) -> tuple[int, int] | None:
        """Count a login attempt as failed *before* it is checked, unless the throttle is already reached.

        Atomic across workers and replicas (SQLite's ``BEGIN IMMEDIATE``, a PostgreSQL transaction lock):
        N parallel guesses cannot all see "under the limit" and all go on to a password check. Returns
        ``(attempt id, earlier failures from this client)``, or None when ``client`` (or ``username``, if
        given) already has ``limit`` failures or attempts in flight since ``since``. A successful check
        takes its attempt back with ``forget_login_attempt``.
        """
        async with self._write_quietly() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOGIN_LOCK_KEY})
            by_client = (
                await conn.execute(
                    select(func.count()).select_from(login_failures).where(login_failures.c.client == client, login_failures.c.at >= since)
                )
            ).scalar_one()
            if by_client >= limit:
                return None
            if username:
                by_user = (
                    await conn.execute(
                        select(func.count())
                        .select_from(login_failures)
                        .where(login_failures.c.username == username[:255], login_failures.c.at >= since)
                    )
                ).scalar_one()
                if by_user >= limit:
                    return None
            result = await conn.execute(insert(login_failures).values(at=now(), client=client[:64], username=(username or "")[:255]))
            # Keep the table small: failures older than a day no longer throttle anyone.
            await conn.execute(delete(login_failures).where(login_failures.c.at < now() - timedelta(days=1)))
            return int(result.inserted_primary_key[0]), int(by_client)

    async def forget_login_attempt(self, attempt: int) -> None:
        """The attempt succeeded: it no longer counts against its client or username."""
        async with self._write_quietly() as conn:
            await conn.execute(delete(login_failures).where(login_failures.c.id == attempt))

    async def audit(self, actor: str, client: str, action: str, target: str, outcome: str, detail: dict[str, Any] | None) -> None:
        async with self._write_quietly() as conn:
            await conn.execute(
                insert(audit_events).values(
                    at=now(),
                    actor=actor[:255],
                    client=client[:64],
                    action=action,
                    target=target[:512],
                    outcome=outcome,
                    detail=json.dumps(detail) if detail else None,
                )
            )

    async def audit_events(
        self, limit: int, before_id: int | None = None, actor: str | None = None, action: str | None = None
    ) -> list[AuditRecord]:
        query = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(audit_events.c.id < before_id)
        if actor is not None:
            query = query.where(audit_events.c.actor == actor)
        if action is not None:
            query = query.where(audit_events.c.action == action)
        async with self._read() as conn:
            return [
                AuditRecord(
                    r.id, aware(r.at), r.actor, r.client, r.action, r.target, r.outcome,  # type: ignore[arg-type]
                    json.loads(r.detail) if r.detail else None,
                )
                for r in await conn.execute(query)
            ]

    # ---- helpers -------------------------------------------------------------------------------

    @staticmethod
    async def _check_name_free(conn: AsyncConnection, name: str) -> None:
        """Users and robots share one namespace: a Basic-auth username names exactly one of them."""
        taken = (
            await conn.execute(
                select(users.c.name).where(users.c.name == name).union_all(select(robots.c.name).where(robots.c.name == name))
            )
        ).first()
        if taken:
            raise AlreadyExists(f"{name!r} already exists")

    @staticmethod
    async def _check_not_last_admin(conn: AsyncConnection, name: str, verb: str) -> None:
        """Inside the write: the admin rows are locked (PostgreSQL) or the database is (SQLite ``BEGIN IMMEDIATE``),
        so two requests removing two different admins cannot both succeed."""
        admins = set((await conn.execute(select(users.c.name).where(users.c.admin.is_(True)).with_for_update())).scalars())
        if name in admins and admins == {name}:
            raise LastAdmin(f"refusing to {verb} {name!r}: it is the last admin")

    @staticmethod
    async def _check_maps_exist(conn: AsyncConnection, maps: list[str]) -> None:
        if not maps:
            return
        found = set((await conn.execute(select(scope_maps.c.name).where(scope_maps.c.name.in_(maps)))).scalars())
        missing = sorted(set(maps) - found)
        if missing:
            raise UnknownScopeMap(f"unknown scope map(s): {', '.join(missing)}")


async def _revoke_family(conn: AsyncConnection, family: str) -> int:
    result = await conn.execute(
        update(refresh_tokens)
        .where(or_(refresh_tokens.c.family == family, refresh_tokens.c.id == family), refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now())
    )
    return result.rowcount


def _refresh(row: Any) -> RefreshRecord:
    return RefreshRecord(row.id, row.principal, aware(row.expires_at), aware(row.revoked_at))  # type: ignore[arg-type]


async def _revoke_refresh_tokens(conn: AsyncConnection, principal: str) -> int:
    result = await conn.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.principal == principal, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now())
    )
    return result.rowcount


def new_generation() -> str:
    return secrets.token_hex(8)


def _user(row: Any) -> UserRecord:
    return UserRecord(
        row.name, row.password_hash, bool(row.admin), json.loads(row.scope_maps), aware(row.created_at),  # type: ignore[arg-type]
        row.id, row.generation,
    )


def _robot(row: Any) -> RobotRecord:
    return RobotRecord(
        row.name, json.loads(row.scope_maps), aware(row.expires_at), row.created_by, aware(row.created_at),  # type: ignore[arg-type]
        row.id, row.generation,
    )


def _scope_map(row: Any) -> ScopeMapRecord:
    return ScopeMapRecord(row.name, row.description, json.loads(row.rules), aware(row.created_at))  # type: ignore[arg-type]
