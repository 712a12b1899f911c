"""``/api/v1/sync-rules``: scheduled mirroring of one upstream repository's tags into a local repository.

Admins only (a rule spends the server's upstream requests and may use its
credential sets). ``transfer/sync_service.py`` checks everything; this module
parses, maps its exceptions to problems and renders. A run can be started at
once (``POST …/runs``, waiting by default); each run's record says what it
copied, what it skipped and why.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field

from ...store.sync import RunRecord, RunState, SkipOutcome, SyncRuleRecord, outcome_of
from ...transfer.importer import PLATFORM_PATTERN
from ...oci.errors import NotFound
from ...transfer.sync_service import SyncService, UnknownSyncRule
from ..keys import SYNC
from .common import TEXT_PATTERN, Call, InModel, Name, Operation, OutModel, QueryModel, created, no_content, not_found, render

LISTED_SKIPS = 50  # skipped entries per run in a list of runs; GET …/runs/{id} answers them all
SourceText = Annotated[
    str, Field(min_length=1, max_length=1000, pattern=TEXT_PATTERN,
               description="one upstream repository: docker.io/library/alpine (docker.io/alpine reads the same), ghcr.io/org/app")
]
TargetText = Annotated[str, Field(min_length=1, max_length=255, pattern=TEXT_PATTERN, description="the local repository")]
Regex = Annotated[str, Field(min_length=1, max_length=512, pattern=TEXT_PATTERN, description="tags must match it whole (RE2 syntax: no backreferences or lookaround)")]
Semver = Annotated[
    str, Field(min_length=1, max_length=255, pattern=TEXT_PATTERN,
               description="tags must be versions in this range: '>=3.19 <4', '^1.2 || ~2.0', '3.x'; prereleases only if named")
]
Interval = Annotated[int, Field(ge=1, le=2**31 - 1, description="seconds between runs (the server's minimum applies, default 60)")]
Cron = Annotated[
    str, Field(min_length=1, max_length=128, pattern=TEXT_PATTERN,
               description="5-field cron in UTC: minute hour day-of-month month day-of-week ('0 3 * * *')")
]
Platform = Annotated[str, Field(pattern=PLATFORM_PATTERN)]
Budget = Annotated[int, Field(ge=1, le=100000, description="upstream requests one run may spend (tag list, HEADs, copies)")]


def sync_service(call: Call) -> SyncService:
    return call.request.app[SYNC]


class SyncRule(OutModel):
    name: str
    source: str = Field(description="normalized upstream repository (docker.io/alpine reads docker.io/library/alpine)")
    target: str = Field(description="the local repository the tags are copied to")
    tag_regex: str | None
    semver: str | None
    interval_seconds: int | None
    cron: str | None
    credential_set: str | None
    insecure: bool
    platforms: list[str] | None = Field(description="os/arch[/variant] copied of multi-arch images; null: all")
    request_budget: int
    enabled: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None = Field(description="when the scheduler runs it next; null: manual runs only")
    running: bool = Field(description="a run holds the rule's lease now")

    @classmethod
    def of(cls, r: SyncRuleRecord) -> SyncRule:
        running = r.lease_until is not None and r.lease_until > datetime.now(UTC)
        return cls(
            name=r.name, source=r.source, target=r.target, tag_regex=r.tag_regex, semver=r.semver,
            interval_seconds=r.interval_seconds, cron=r.cron, credential_set=r.credential_set, insecure=r.insecure,
            platforms=r.platforms, request_budget=r.request_budget, enabled=r.enabled, created_by=r.created_by,
            created_at=r.created_at, updated_at=r.updated_at, next_run_at=r.next_run_at, running=running,
        )


class SyncRuleList(OutModel):
    sync_rules: list[SyncRule]


class SyncRuleCreate(InModel):
    name: Name
    source: SourceText
    target: TargetText
    tag_regex: Regex | None = None
    semver: Semver | None = None
    interval_seconds: Interval | None = Field(None, description="give this or cron, or neither for manual runs only")
    cron: Cron | None = None
    credential_set: Name | None = Field(None, description="a credential set whose login server is the source's registry")
    insecure: bool = Field(False, description="plain http to the source")
    platforms: list[Platform] | None = Field(None, max_length=32, description="only these os/arch[/variant] (default: all)")
    request_budget: Budget | None = Field(None, description="default: the server's sync_request_budget (100)")
    enabled: bool = True


class SyncRuleUpdate(InModel):
    """Only the fields given change; null removes an optional one. Setting an interval clears the cron and vice versa."""

    source: SourceText | None = None
    target: TargetText | None = None
    tag_regex: Regex | None = None
    semver: Semver | None = None
    interval_seconds: Interval | None = None
    cron: Cron | None = None
    credential_set: Name | None = None
    insecure: bool | None = None
    platforms: list[Platform] | None = Field(None, max_length=32)
    request_budget: Budget | None = None
    enabled: bool | None = None


class CopiedTag(OutModel):
    tag: str
    digest: str
    previous: str | None = Field(description="the digest the local tag had before (null: the tag is new)")


class SkippedTag(OutModel):
    tag: str = Field(description="'*' for a summary entry that counts tags not listed one by one")
    reason: str = Field(description="for people: filtered: …, unchanged, request budget exhausted …, copy failed: …")
    outcome: SkipOutcome = Field(
        description="for programs: filtered, unchanged, deferred (budget, rate limit, upstream down: checked first next run), "
        "failed (HEAD or copy failed)"
    )
    count: int | None = None


class SyncRun(OutModel):
    id: int
    rule: str
    trigger: Literal["schedule", "manual"]
    state: RunState
    started_at: datetime
    finished_at: datetime | None
    requests_used: int = Field(description="requests sent to the source registry (token requests not counted)")
    copied: list[CopiedTag]
    skipped: list[SkippedTag]
    error: str | None
    counts: dict[str, int] = Field(description="copied, unchanged, filtered, deferred (budget / rate limit), failed")
    skipped_truncated: bool = Field(
        False, description=f"in a list of runs, only the first {LISTED_SKIPS} skipped entries; GET the run for all"
    )

    @classmethod
    def of(cls, r: RunRecord, max_skipped: int | None = None) -> SyncRun:
        counts = {"copied": len(r.copied), **{o.value: 0 for o in SkipOutcome}}
        for entry in r.skipped:
            counts[outcome_of(entry).value] += int(entry.get("count") or 1)
        skipped = r.skipped if max_skipped is None else r.skipped[:max_skipped]
        return cls(
            id=r.id, rule=r.rule, trigger=r.trigger, state=r.state, started_at=r.started_at,  # type: ignore[arg-type]
            finished_at=r.finished_at, requests_used=r.requests_used, copied=[CopiedTag(**c) for c in r.copied],
            skipped=[SkippedTag(**s) for s in skipped], error=r.error, counts=counts,
            skipped_truncated=len(skipped) < len(r.skipped),
        )


class SyncRunList(OutModel):
    runs: list[SyncRun]


class RunsQuery(QueryModel):
    limit: int = Field(20, ge=1, le=100, description="runs to answer, newest first")


class RunNowQuery(QueryModel):
    wait: bool = Field(True, description="answer when the run is done (201), or at once with the running run (202)")


def _detail(r: SyncRuleRecord) -> dict[str, Any]:
    return {
        "source": r.source, "target": r.target, "tag_regex": r.tag_regex, "semver": r.semver,
        "interval_seconds": r.interval_seconds, "cron": r.cron, "credential_set": r.credential_set,
        "enabled": r.enabled, "request_budget": r.request_budget,
    }


async def list_rules(call: Call) -> web.Response:
    return render(SyncRuleList(sync_rules=[SyncRule.of(r) for r in await sync_service(call).list_rules()]))


async def create_rule(call: Call) -> web.Response:
    body: SyncRuleCreate = call.body
    values = body.model_dump(exclude={"name"})
    if values["request_budget"] is None:
        del values["request_budget"]
    record = await sync_service(call).create_rule(body.name, values, call.actor)  # 422s: their codes in web/codes.py
    await call.audit("sync_rule.create", record.name, "ok", _detail(record))
    return created(SyncRule.of(record), f"/sync-rules/{record.name}")


async def get_rule(call: Call) -> web.Response:
    name = call.name("sync rule")
    record = await sync_service(call).get_rule(name)
    if record is None:
        raise not_found("sync rule", name)
    return render(SyncRule.of(record))


async def update_rule(call: Call) -> web.Response:
    name = call.name("sync rule")
    body: SyncRuleUpdate = call.body
    given = body.model_fields_set
    changes: dict[str, Any] = {}
    for field in ("source", "target", "insecure", "request_budget", "enabled"):
        if field in given and getattr(body, field) is not None:
            changes[field] = getattr(body, field)
    for field in ("tag_regex", "semver", "interval_seconds", "cron", "credential_set", "platforms"):
        if field in given:
            changes[field] = getattr(body, field)
    if changes.get("interval_seconds") is not None and "cron" not in given:
        changes["cron"] = None
    if changes.get("cron") is not None and "interval_seconds" not in given:
        changes["interval_seconds"] = None
    record = await sync_service(call).update_rule(name, changes)
    if record is None:
        raise not_found("sync rule", name)
    await call.audit("sync_rule.update", name, "ok", _detail(record))
    return render(SyncRule.of(record))


async def delete_rule(call: Call) -> web.Response:
    name = call.name("sync rule")
    if not await sync_service(call).delete_rule(name):
        raise not_found("sync rule", name)
    await call.audit("sync_rule.delete", name)
    return no_content()


async def run_rule(call: Call) -> web.Response:
    name = call.name("sync rule")
    query: RunNowQuery = call.query
    service = sync_service(call)
    try:
        run, finished = await service.start_now(name)
    except UnknownSyncRule:
        raise not_found("sync rule", name) from None
    await call.audit("sync_rule.run", name, "ok", {"run": run.id})
    location = {"Location": f"/api/v1/sync-rules/{name}/runs/{run.id}"}
    if not query.wait:
        return render(SyncRun.of(run), 202, location)
    record = await asyncio.shield(finished)
    return render(SyncRun.of(record), 201, location)


async def list_runs(call: Call) -> web.Response:
    name = call.name("sync rule")
    query: RunsQuery = call.query
    service = sync_service(call)
    if await service.get_rule(name) is None:
        raise not_found("sync rule", name)
    runs = await service.list_runs(name, query.limit)
    return render(SyncRunList(runs=[SyncRun.of(r, LISTED_SKIPS) for r in runs]))


async def get_run(call: Call) -> web.Response:
    name = call.name("sync rule")
    raw = call.request.match_info["id"]
    run = await sync_service(call).get_run(name, int(raw)) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else None
    if run is None:
        raise NotFound(f"sync rule {name!r} has no run {raw[:20]!r}")
    return render(SyncRun.of(run))


RUN_ID = {"id": {"type": "string", "pattern": "^[0-9]{1,9}$"}}
OPERATIONS = [
    Operation("GET", "/sync-rules", list_rules, "listSyncRules", "List sync rules", "sync-rules", response=SyncRuleList),
    Operation(
        "POST", "/sync-rules", create_rule, "createSyncRule", "Create a sync rule", "sync-rules", status=201,
        body=SyncRuleCreate, response=SyncRule, conflict="a sync rule with that name exists (ALREADY_EXISTS), or the target is in a cache rule's namespace (TARGET_IS_CACHE)", action="sync_rule.create",
        location=True,
        description="422 for a bad regex (INVALID_TAG_FILTER), semver range (INVALID_TAG_FILTER), interval or cron "
        "(INVALID_SCHEDULE), source or target (INVALID_SYNC_RULE), credential set, or a private upstream "
        "(UPSTREAM_NOT_ALLOWED). An interval rule runs at once, then every interval; a cron rule at its next time.",
    ),
    Operation("GET", "/sync-rules/{name}", get_rule, "getSyncRule", "Show a sync rule", "sync-rules", response=SyncRule),
    Operation(
        "PATCH", "/sync-rules/{name}", update_rule, "updateSyncRule", "Change a sync rule", "sync-rules",
        body=SyncRuleUpdate, response=SyncRule, action="sync_rule.update",
        conflict="the new target is in a cache rule's namespace (TARGET_IS_CACHE)",
    ),
    Operation(
        "DELETE", "/sync-rules/{name}", delete_rule, "deleteSyncRule", "Delete a sync rule and its run log",
        "sync-rules", status=204, action="sync_rule.delete",
    ),
    Operation(
        "POST", "/sync-rules/{name}/runs", run_rule, "runSyncRule", "Run a sync rule now", "sync-rules", status=201,
        query=RunNowQuery, response=SyncRun, action="sync_rule.run", location=True,
        conflict="a run of this rule is in progress (in this or another worker)",
        answers={202: "wait=false: the run goes on; poll GET /sync-rules/{name}/runs/{id}"},
        description="Answers the finished run record: state, what was copied, what was skipped and why. "
        "A failed run is still 201 (its state says failed).",
    ),
    Operation(
        "GET", "/sync-rules/{name}/runs", list_runs, "listSyncRuns", "A sync rule's recent runs, newest first",
        "sync-rules", query=RunsQuery, response=SyncRunList,
        description=f"Each run lists at most {LISTED_SKIPS} skipped entries (skipped_truncated says when there are more; "
        "counts covers them all); GET /sync-rules/{name}/runs/{id} answers a run in full.",
    ),
    Operation(
        "GET", "/sync-rules/{name}/runs/{id}", get_run, "getSyncRun", "One run of a sync rule", "sync-rules",
        response=SyncRun, path_params=RUN_ID,
    ),
]
