"""Sync rules and their runs: the table rows, the lease that lets one worker run a rule, the run log.

The lease is the only coordination between workers and replicas: a run
owns a rule while ``lease_owner`` is its claim's token (one per claim, not
per worker, so a worker's old run cannot renew or release its next one's
lease) and ``lease_until`` is in the future. Claiming is one conditional UPDATE (``… WHERE name = ? AND
(lease_until IS NULL OR lease_until < now)``), atomic on SQLite and
PostgreSQL alike, so two workers never both win; a crashed worker's lease
simply runs out. Writes here do not bump the cache generation: nothing in a
worker's memory depends on sync rules.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, delete, exists, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from .cache import UnknownCredentialSet, check_credential_set
from .db import SqlStore
from .identities import AlreadyExists, aware
from .schema import sync_rules, sync_runs

__all__ = ["AlreadyExists", "RunRecord", "RunState", "SkipOutcome", "SyncRuleRecord", "SyncStore", "UnknownCredentialSet", "outcome_of"]

RUNS_KEPT = 100  # per rule; older runs are dropped when a new one starts
RULE_FIELDS = (
    "source", "target", "tag_regex", "semver", "interval_seconds", "cron", "credential_set", "insecure",
    "platforms", "request_budget", "enabled",
)


class RunState(StrEnum):
    """Where a run stands; stored as its value."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"  # every candidate checked, every change copied
    PARTIAL = "partial"  # something deferred or failed (see the skipped entries' outcomes)
    FAILED = "failed"  # the tags could not be listed, or the run broke off


class SkipOutcome(StrEnum):
    """Why a tag was not copied, as a kind the code acts on; the entry's ``reason`` is for people only.

    Stored as its value in each skipped entry's ``outcome``.
    """

    FILTERED = "filtered"  # the rule's filter (or the tag grammar) excludes it
    UNCHANGED = "unchanged"  # the local tag already names the upstream digest
    DEFERRED = "deferred"  # not checked this run (budget, rate limit, upstream down, list cut short): first next run
    FAILED = "failed"  # checked, and could not be copied (HEAD failed, gone upstream, copy failed)


# How runs recorded before skipped entries carried an ``outcome`` said it: by the reason's wording.
_LEGACY_PREFIXES: tuple[tuple[str | tuple[str, ...], SkipOutcome], ...] = (
    ("filtered", SkipOutcome.FILTERED),
    ("unchanged", SkipOutcome.UNCHANGED),
    (("copy failed", "HEAD failed", "gone upstream"), SkipOutcome.FAILED),
)


def outcome_of(entry: Mapping[str, Any]) -> SkipOutcome:
    """A skipped entry's outcome: its stored ``outcome``; for an entry recorded before there was one, read
    from its wording once, here (anything else was a budget, rate-limit or unavailable stop: deferred)."""
    try:
        return SkipOutcome(entry.get("outcome"))
    except ValueError:
        reason = str(entry.get("reason", ""))
        return next((o for prefix, o in _LEGACY_PREFIXES if reason.startswith(prefix)), SkipOutcome.DEFERRED)


def _with_outcome(entry: Any) -> Any:
    if isinstance(entry, dict) and "outcome" not in entry:
        return {**entry, "outcome": outcome_of(entry).value}
    return entry


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SyncRuleRecord:
    name: str
    source: str
    target: str
    tag_regex: str | None
    semver: str | None
    interval_seconds: int | None
    cron: str | None
    credential_set: str | None
    insecure: bool
    platforms: list[str] | None
    request_budget: int
    enabled: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None
    lease_owner: str | None
    lease_until: datetime | None


@dataclass(frozen=True)
class RunRecord:
    id: int
    rule: str
    trigger: str  # schedule | manual
    state: RunState
    started_at: datetime
    finished_at: datetime | None
    requests_used: int
    copied: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    error: str | None


def _rule(row: Any) -> SyncRuleRecord:
    return SyncRuleRecord(
        row.name, row.source, row.target, row.tag_regex, row.semver, row.interval_seconds, row.cron,
        row.credential_set, bool(row.insecure), json.loads(row.platforms) if row.platforms else None,
        row.request_budget, bool(row.enabled), row.created_by, aware(row.created_at), aware(row.updated_at),  # type: ignore[arg-type]
        aware(row.next_run_at), row.lease_owner, aware(row.lease_until),
    )


def _run(row: Any) -> RunRecord:
    return RunRecord(
        row.id, row.rule, row.trigger, RunState(row.state), aware(row.started_at), aware(row.finished_at),  # type: ignore[arg-type]
        row.requests_used, json.loads(row.copied), [_with_outcome(e) for e in json.loads(row.skipped)], row.error,
    )


def _values(values: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(values) - set(RULE_FIELDS) - {"next_run_at"}
    if unknown:
        raise TypeError(f"unexpected sync rule fields: {', '.join(sorted(unknown))}")
    out = dict(values)
    if "platforms" in out:
        out["platforms"] = json.dumps(out["platforms"]) if out["platforms"] else None
    return out


class SyncStore(SqlStore):
    # ---- rules ---------------------------------------------------------------------------------

    async def list_rules(self) -> list[SyncRuleRecord]:
        async with self._read() as conn:
            return [_rule(r) for r in await conn.execute(select(sync_rules).order_by(sync_rules.c.name))]

    async def get_rule(self, name: str) -> SyncRuleRecord | None:
        async with self._read() as conn:
            row = (await conn.execute(select(sync_rules).where(sync_rules.c.name == name))).first()
        return _rule(row) if row else None

    async def create_rule(self, name: str, values: Mapping[str, Any], created_by: str) -> SyncRuleRecord:
        """Raises AlreadyExists or UnknownCredentialSet."""
        at = now()
        row = _values(values)
        try:
            async with self._write() as conn:
                await check_credential_set(conn, row.get("credential_set"))
                await conn.execute(
                    insert(sync_rules).values(name=name, created_by=created_by, created_at=at, updated_at=at, **row)
                )
        except IntegrityError:
            raise AlreadyExists(f"a sync rule named {name!r} already exists") from None
        found = await self.get_rule(name)
        assert found is not None
        return found

    async def update_rule(self, name: str, values: Mapping[str, Any]) -> SyncRuleRecord | None:
        row = _values(values)
        async with self._write() as conn:
            if "credential_set" in row:
                await check_credential_set(conn, row["credential_set"])
            result = await conn.execute(update(sync_rules).where(sync_rules.c.name == name).values(updated_at=now(), **row))
            if result.rowcount == 0:
                return None
        return await self.get_rule(name)

    async def delete_rule(self, name: str) -> bool:
        """The rule and its run log."""
        async with self._write() as conn:
            await conn.execute(delete(sync_runs).where(sync_runs.c.rule == name))
            return (await conn.execute(delete(sync_rules).where(sync_rules.c.name == name))).rowcount > 0

    # ---- schedule and lease --------------------------------------------------------------------

    async def due(self, at: datetime | None = None) -> list[str]:
        """Enabled rules whose next run time has come and that nobody holds, soonest first."""
        at = at or now()
        free = or_(sync_rules.c.lease_until.is_(None), sync_rules.c.lease_until < at)
        query = (
            select(sync_rules.c.name)
            .where(sync_rules.c.enabled.is_(True), sync_rules.c.next_run_at.is_not(None), sync_rules.c.next_run_at <= at, free)
            .order_by(sync_rules.c.next_run_at)
        )
        async with self._read() as conn:
            return list((await conn.execute(query)).scalars().all())

    async def claim(self, name: str, owner: str, seconds: float, *, due_only: bool = False) -> bool:
        """Take the rule's lease for ``seconds`` if nobody holds it (and, with ``due_only``, if it is due and enabled)."""
        at = now()
        condition = and_(
            sync_rules.c.name == name, or_(sync_rules.c.lease_until.is_(None), sync_rules.c.lease_until < at)
        )
        if due_only:
            condition = and_(
                condition, sync_rules.c.enabled.is_(True), sync_rules.c.next_run_at.is_not(None), sync_rules.c.next_run_at <= at
            )
        async with self._write() as conn:
            result = await conn.execute(
                update(sync_rules).where(condition).values(lease_owner=owner, lease_until=at + timedelta(seconds=seconds))
            )
            return result.rowcount == 1

    async def renew(self, name: str, owner: str, seconds: float) -> bool:
        """Extend a lease this owner holds; False when it was lost (expired and taken, or the rule deleted)."""
        async with self._write() as conn:
            result = await conn.execute(
                update(sync_rules)
                .where(sync_rules.c.name == name, sync_rules.c.lease_owner == owner)
                .values(lease_until=now() + timedelta(seconds=seconds))
            )
            return result.rowcount == 1

    async def release(
        self, name: str, owner: str, next_run_at: datetime | None, *, keep_schedule: bool = False,
        updated_at: datetime | None = None,
    ) -> bool:
        """Give the lease back and set when the rule runs next (unless ``keep_schedule``); whether it was done.

        With ``updated_at``, only if the rule has not changed since (the next run time was computed from
        that version of the rule): False then, and the lease is still held, so the caller can recompute."""
        values: dict[str, Any] = {"lease_owner": None, "lease_until": None}
        if not keep_schedule:
            values["next_run_at"] = next_run_at
        condition = and_(sync_rules.c.name == name, sync_rules.c.lease_owner == owner)
        if updated_at is not None:
            condition = and_(condition, sync_rules.c.updated_at == updated_at)
        async with self._write() as conn:
            result = await conn.execute(update(sync_rules).where(condition).values(**values))
            return result.rowcount == 1

    # ---- runs ----------------------------------------------------------------------------------

    async def start_run(self, rule: str, trigger: str, keep: int = RUNS_KEPT) -> RunRecord:
        """A new ``running`` run; the rule's runs beyond the newest ``keep`` are dropped."""
        at = now()
        async with self._write() as conn:
            result = await conn.execute(
                insert(sync_runs).values(
                    rule=rule, trigger=trigger, state=RunState.RUNNING.value, started_at=at, requests_used=0, copied="[]", skipped="[]"
                )
            )
            run_id = result.inserted_primary_key[0]  # type: ignore[index]
            old = (
                await conn.execute(
                    select(sync_runs.c.id).where(sync_runs.c.rule == rule).order_by(sync_runs.c.id.desc()).offset(keep)
                )
            ).scalars().all()
            if old:
                await conn.execute(delete(sync_runs).where(sync_runs.c.id.in_(old)))
        return RunRecord(run_id, rule, trigger, RunState.RUNNING, at, None, 0, [], [], None)

    async def finish_run(
        self, run_id: int, state: RunState, requests_used: int, copied: list[dict[str, Any]], skipped: list[dict[str, Any]],
        error: str | None = None,
    ) -> RunRecord | None:
        async with self._write() as conn:
            await conn.execute(
                update(sync_runs).where(sync_runs.c.id == run_id).values(
                    state=RunState(state).value, finished_at=now(), requests_used=requests_used, copied=json.dumps(copied),
                    skipped=json.dumps(skipped), error=(error or None) and error[:2000],
                )
            )
        return await self.get_run(run_id)

    async def get_run(self, run_id: int) -> RunRecord | None:
        async with self._read() as conn:
            row = (await conn.execute(select(sync_runs).where(sync_runs.c.id == run_id))).first()
        return _run(row) if row else None

    async def list_runs(self, rule: str, limit: int = RUNS_KEPT) -> list[RunRecord]:
        """Newest first."""
        async with self._read() as conn:
            query = select(sync_runs).where(sync_runs.c.rule == rule).order_by(sync_runs.c.id.desc()).limit(limit)
            return [_run(r) for r in await conn.execute(query)]

    async def last_run(self, rule: str, states: tuple[RunState, ...]) -> RunRecord | None:
        """The rule's newest run in one of ``states``."""
        query = (
            select(sync_runs).where(sync_runs.c.rule == rule, sync_runs.c.state.in_([RunState(s).value for s in states]))
            .order_by(sync_runs.c.id.desc()).limit(1)
        )
        async with self._read() as conn:
            row = (await conn.execute(query)).first()
        return _run(row) if row else None

    async def fail_abandoned_runs(self, rule: str, *, unless_leased: bool = False) -> int:
        """Runs left ``running`` by a worker that died: failed, so the log does not show them running forever.

        ``unless_leased``: only when nobody holds the rule's lease now (for readers, who hold no lease:
        a run in progress keeps its lease alive). How many runs were marked."""
        condition = and_(sync_runs.c.rule == rule, sync_runs.c.state == RunState.RUNNING.value)
        at = now()
        if unless_leased:
            live = exists().where(sync_rules.c.name == rule, sync_rules.c.lease_until.is_not(None), sync_rules.c.lease_until >= at)
            condition = and_(condition, ~live)
        async with self._write() as conn:
            result = await conn.execute(
                update(sync_runs).where(condition)
                .values(state=RunState.FAILED.value, finished_at=at, error="the worker running it stopped (lease expired)")
            )
            return result.rowcount
