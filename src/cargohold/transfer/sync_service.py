"""Sync rules as operators manage them and as workers run them: validation, the lease, the schedule, the log.

Every change is checked before it is stored:

- the source is one upstream repository, stored in the spelling cache rules
  use (``docker.io/alpine`` → ``docker.io/library/alpine``); its host must
  not be this machine or its private network unless ``allow_private_upstreams``
  (the outbound guard checks every connection again anyway);
- the target is a local repository name; the tag regex and semver range
  compile (``tagfilter``); interval or cron parse (``schedule``);
- a credential set must exist and belong to the source's registry (like
  cache rules: credentials are only sent to their own login server).

Running: ``run_now`` (the API's "run now") and the scheduler both go through
``_start``/``_finish``: take the lease with one conditional UPDATE and a token
of this claim's own (a rule another worker or replica is running →
``RuleBusy``), mark runs a dead worker left ``running`` as failed, record the
run, renew the lease while it runs (a lease found lost stops the run: failed,
"lease lost"), then store the result, the next run time — computed from the
rule as it is *then*, so a schedule changed during the run holds — and give
the lease back. A 429's ``Retry-After`` pushes the next run back at least that
far. However a run ends (cancelled at shutdown, a store error), its record is
closed as failed with what it had done; reading the runs of a rule nobody
holds closes any a dead worker left ``running``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from ..auth.errors import InvalidName
from ..auth.service import NAME_PATTERN
from ..cache.rules import InvalidRule, Source
from ..config import Settings
from ..oci.errors import DomainError, NotFound
from ..oci.names import is_valid_name
from ..registry.service import Registry
from ..store.sync import RunRecord, RunState, SyncRuleRecord, SyncStore
from ..upstream.client import Credentials
from .schedule import InvalidSchedule, Schedule
from .importer import PLATFORM_PATTERN
from .sync import RunReport, SyncEngine, SyncSpec, registry_of
from .tagfilter import InvalidTagFilter, TagFilter

log = logging.getLogger("cargohold.sync")

_NAME = re.compile(NAME_PATTERN)
_PLATFORM = re.compile(PLATFORM_PATTERN)
MAX_BUDGET = 100000
CHANGES = frozenset(
    {"source", "target", "tag_regex", "semver", "interval_seconds", "cron", "credential_set", "insecure", "platforms",
     "request_budget", "enabled"}
)

__all__ = [
    "InvalidSchedule", "InvalidSyncRule", "InvalidTagFilter", "RuleBusy", "SyncService", "UnknownSyncRule",
]


class InvalidSyncRule(DomainError, ValueError):
    """A source, target, platform list or budget that cannot be a sync rule; the message says why."""

    code = "INVALID_SYNC_RULE"


class RuleBusy(DomainError, RuntimeError):
    """Another run (in this or another worker) holds the rule's lease."""

    code = "RUN_IN_PROGRESS"


class UnknownSyncRule(NotFound, LookupError):
    """No sync rule has that name."""


class CacheAdmin(Protocol):
    """What the sync service needs of the cache (``cache.admin.CacheAdmin`` provides it): credential sets, and
    which repositories cache rules own (a sync target may not be one)."""

    async def credentials_for(self, name: str) -> tuple[str, str]: ...

    async def check_not_cached(self, repository: str) -> None: ...

    async def check_credential_set(self, name: str | None, registry: str) -> None: ...

    async def check_upstream(self, registry: str, what: str) -> None: ...


@dataclass(frozen=True)
class CheckedRule:
    """A rule's values after validation, ready for the store."""

    values: dict[str, Any]
    schedule: Schedule
    tag_filter: TagFilter


def normalize_source(value: str) -> str:
    """``docker.io/alpine`` → ``docker.io/library/alpine``; one repository, no tag, no wildcard."""
    try:
        source = Source.parse(value)
    except InvalidRule as exc:
        raise InvalidSyncRule(str(exc)) from None
    if source.wildcard:
        raise InvalidSyncRule(f"source {value!r}: a sync rule mirrors one repository, not a namespace (no /*)")
    return str(source)


def check_values(values: dict[str, Any], settings: Settings) -> CheckedRule:
    """Raises InvalidSyncRule, InvalidTagFilter or InvalidSchedule."""
    out = dict(values)
    out["source"] = normalize_source(values["source"])
    if len(out["source"]) > 1000:
        raise InvalidSyncRule("the source is longer than 1000 characters")
    target = values["target"]
    if not isinstance(target, str) or len(target) > 255 or not is_valid_name(target):
        raise InvalidSyncRule(f"target {str(target)[:100]!r} must be a local repository name (e.g. mirror/alpine)")
    tag_filter = TagFilter.build(values.get("tag_regex"), values.get("semver"))
    schedule = Schedule.build(values.get("interval_seconds"), values.get("cron"), settings.sync_min_interval_seconds)
    if schedule.cron is not None:
        out["cron"] = schedule.cron.text
    platforms = values.get("platforms")
    if platforms is not None:
        if not platforms:
            out["platforms"] = None
        for spec in platforms:
            if not _PLATFORM.fullmatch(spec):
                raise InvalidSyncRule(f"platform {spec[:40]!r} must be os/arch[/variant], e.g. linux/amd64")
    budget = values.get("request_budget", settings.sync_request_budget)
    if not 1 <= budget <= MAX_BUDGET:
        raise InvalidSyncRule(f"the request budget must be between 1 and {MAX_BUDGET}")
    out["request_budget"] = budget
    return CheckedRule(out, schedule, tag_filter)


def first_run(schedule: Schedule, at: datetime) -> datetime | None:
    """An interval rule runs at once, a cron rule at its next time, a manual rule never by itself."""
    if schedule.interval_seconds is not None:
        return at
    return schedule.next_after(at)


def lease_token() -> str:
    """A new token for one claim of a lease (≤ 64 characters): which host and process, and which claim."""
    return f"{socket.gethostname()[:32]}:{os.getpid()}:{uuid.uuid4().hex[:16]}"


def _schedule_of(rule: SyncRuleRecord) -> Schedule:
    try:
        return Schedule.build(rule.interval_seconds, rule.cron, minimum_interval=0)
    except InvalidSchedule:  # a stored cron this version cannot read: run it by hand until it is fixed
        log.error("sync rule %s: its schedule is invalid; it runs only when started by hand", rule.name)
        return Schedule()


class SyncService:
    """One per worker: manages rules and runs them (now, or when due)."""

    def __init__(self, settings: Settings, registry: Registry, store: SyncStore, cache: CacheAdmin) -> None:
        self.settings = settings
        self.store = store
        self.cache = cache
        self.engine = SyncEngine(registry, settings)
        self._running: set[asyncio.Task[Any]] = set()

    @classmethod
    def open(cls, settings: Settings, registry: Registry, cache: CacheAdmin) -> "SyncService":
        return cls(settings, registry, SyncStore(registry.stores.engine), cache)

    # ---- management ----------------------------------------------------------------------------

    async def list_rules(self) -> list[SyncRuleRecord]:
        return await self.store.list_rules()

    async def get_rule(self, name: str) -> SyncRuleRecord | None:
        return await self.store.get_rule(name)

    async def create_rule(self, name: str, values: dict[str, Any], created_by: str) -> SyncRuleRecord:
        """Raises InvalidName, InvalidSyncRule, InvalidTagFilter, InvalidSchedule, UnknownCredentialSet,
        CredentialSetMismatch, UpstreamNotAllowed or AlreadyExists."""
        if not _NAME.fullmatch(name):
            raise InvalidName(f"sync rule names match {NAME_PATTERN}")
        values = {"insecure": False, "enabled": True, "platforms": None, "credential_set": None, **values}
        checked = check_values(values, self.settings)
        await self.cache.check_not_cached(checked.values["target"])
        await self.cache.check_credential_set(checked.values["credential_set"], registry_of(checked.values["source"]))
        await self.cache.check_upstream(registry_of(checked.values["source"]), f"sync rule {name}")
        stored = dict(checked.values)
        stored["next_run_at"] = first_run(checked.schedule, datetime.now(UTC))
        return await self.store.create_rule(name, stored, created_by)

    async def update_rule(self, name: str, changes: dict[str, Any]) -> SyncRuleRecord | None:
        """None for an unknown rule; only the given fields change. Raises what ``create_rule`` raises."""
        unknown = set(changes) - CHANGES
        if unknown:
            raise TypeError(f"update_rule() got unexpected changes: {', '.join(sorted(unknown))}")
        current = await self.store.get_rule(name)
        if current is None:
            return None
        values = {f: getattr(current, f) for f in CHANGES}
        values.update(changes)
        checked = check_values(values, self.settings)
        stored = {k: v for k, v in checked.values.items() if getattr(current, k) != v}
        if "target" in stored:
            await self.cache.check_not_cached(checked.values["target"])
        if "credential_set" in stored or ("source" in stored and checked.values["credential_set"] is not None):
            await self.cache.check_credential_set(checked.values["credential_set"], registry_of(checked.values["source"]))
        if "source" in stored:
            await self.cache.check_upstream(registry_of(checked.values["source"]), f"sync rule {name}")
        if {"interval_seconds", "cron"} & set(stored) or ("enabled" in stored and stored["enabled"]):
            stored["next_run_at"] = first_run(checked.schedule, datetime.now(UTC))
        if not stored:
            return current
        return await self.store.update_rule(name, stored)

    async def delete_rule(self, name: str) -> bool:
        return await self.store.delete_rule(name)

    async def list_runs(self, name: str, limit: int = 20) -> list[RunRecord]:
        runs = await self.store.list_runs(name, limit)
        if any(r.state is RunState.RUNNING for r in runs) and await self.store.fail_abandoned_runs(name, unless_leased=True):
            runs = await self.store.list_runs(name, limit)
        return runs

    # ---- running -------------------------------------------------------------------------------

    async def get_run(self, name: str, run_id: int) -> RunRecord | None:
        run = await self.store.get_run(run_id)
        if run is not None and run.rule == name and run.state is RunState.RUNNING:
            if await self.store.fail_abandoned_runs(name, unless_leased=True):
                run = await self.store.get_run(run_id)
        return run if run is not None and run.rule == name else None

    async def start_now(self, name: str) -> tuple[RunRecord, asyncio.Future[RunRecord]]:
        """Start a run at once, whatever the schedule: the ``running`` record, and the finished one to come.

        Raises UnknownSyncRule, or RuleBusy when a run (in any worker) holds the lease. The run goes on
        if nobody awaits it (a client that hangs up, ``wait=false``)."""
        if await self.store.get_rule(name) is None:
            raise UnknownSyncRule(f"no sync rule named {name!r}")
        token = lease_token()
        if not await self.store.claim(name, token, self.settings.sync_lease_seconds):
            if await self.store.get_rule(name) is None:
                raise UnknownSyncRule(f"no sync rule named {name!r}")
            raise RuleBusy(f"sync rule {name!r} is running (in this or another worker); try again when it is done")
        return await self._start(name, "manual", token)

    async def run_now(self, name: str) -> RunRecord:
        """``start_now`` and wait for the end."""
        _, finished = await self.start_now(name)
        return await asyncio.shield(finished)

    async def run_due(self) -> int:
        """Run every rule that is due and that this worker manages to lease, one after the other; how many ran."""
        ran = 0
        for name in await self.store.due():
            token = lease_token()
            if await self.store.claim(name, token, self.settings.sync_lease_seconds, due_only=True):
                try:
                    _, finished = await self._start(name, "schedule", token)
                except UnknownSyncRule:
                    continue
                await asyncio.shield(finished)
                ran += 1
        return ran

    async def _start(self, name: str, trigger: str, token: str) -> tuple[RunRecord, asyncio.Future[RunRecord]]:
        """With the lease held: record the run and start it in a task of its own; the lease is given back at its end."""
        try:
            rule = await self.store.get_rule(name)
            if rule is None:
                raise UnknownSyncRule(f"no sync rule named {name!r}")
            await self.store.fail_abandoned_runs(name)
            # The last run that got as far as the tags: the one whose deferred tags this run checks first.
            previous = await self.store.last_run(name, (RunState.PARTIAL, RunState.SUCCEEDED))
            run = await self.store.start_run(name, trigger)
        except BaseException:
            await self.store.release(name, token, None, keep_schedule=True)
            raise
        task = asyncio.ensure_future(self._finish(rule, run, previous, trigger, token))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return run, task

    async def _finish(
        self, rule: SyncRuleRecord, run: RunRecord, previous: RunRecord | None, trigger: str, token: str
    ) -> RunRecord:
        report = RunReport()  # filled as the run goes: what it did is kept however it ends
        work = asyncio.ensure_future(self._execute(rule, run, previous, report))
        lost = asyncio.Event()
        renewer = asyncio.create_task(self._renew(rule.name, token, work, lost))
        retry_after: float | None = None
        try:
            try:
                record, retry_after = await work
            except asyncio.CancelledError:
                if not lost.is_set():
                    raise
                record = await self._record_report(run, report, "stopped: the lease was lost (the rule was deleted, or "
                                                   "another worker took it over after this one failed to renew it)")
            return record
        except BaseException as exc:
            # Cancelled (shutdown) or the record could not be written: do not leave the run "running".
            why = "interrupted (the worker stopped)" if isinstance(exc, asyncio.CancelledError) else (
                f"interrupted: {type(exc).__name__}")
            await _best_effort(self._record_report(run, report, why), f"sync rule {rule.name}: closing run {run.id}")
            raise
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            if not lost.is_set():
                await _best_effort(self._release(rule, token, trigger, retry_after), f"sync rule {rule.name}: releasing")

    async def _release(self, started: SyncRuleRecord, token: str, trigger: str, retry_after: float | None) -> None:
        """Give the lease back; the next run time is computed from the rule as it is now (a PATCH during the
        run holds), and stored only if the rule has not changed again in between (else computed again)."""
        for attempt in range(3):
            current = await self.store.get_rule(started.name)
            if current is None:
                return  # deleted while it ran
            now = datetime.now(UTC)
            keep = trigger == "manual"
            if (current.interval_seconds, current.cron, current.enabled) != (started.interval_seconds, started.cron, started.enabled):
                keep = True  # changed during the run: the change set the next run time
            next_run = current.next_run_at if keep else _schedule_of(current).next_after(now)
            if retry_after is not None and next_run is not None:
                next_run, keep = max(next_run, now + timedelta(seconds=retry_after)), False
            conditional = current.updated_at if attempt < 2 else None
            if await self.store.release(started.name, token, next_run, keep_schedule=keep, updated_at=conditional):
                return

    async def _execute(
        self, rule: SyncRuleRecord, run: RunRecord, previous: RunRecord | None, report: RunReport
    ) -> tuple[RunRecord, float | None]:
        """The finished run record, and the upstream's Retry-After (seconds) if it rate-limited the run."""
        try:
            spec = SyncSpec(
                rule.name, rule.source, rule.target, TagFilter.build(rule.tag_regex, rule.semver), rule.insecure,
                rule.platforms, rule.request_budget,
            )
            credentials = None
            if rule.credential_set is not None:
                username, password = await self.cache.credentials_for(rule.credential_set)
                credentials = Credentials(username, password)
            report = await self.engine.run(
                spec, credentials, run_id=run.id, previous_skipped=previous.skipped if previous else [], report=report,
            )
        except Exception as exc:  # an undecryptable credential set, a rule that no longer validates, a bug
            log.exception("sync rule %s: run %d failed", rule.name, run.id)
            detail = str(exc) if isinstance(exc, (ValueError, LookupError)) else f"internal error: {type(exc).__name__}"
            return await self._record(run, RunState.FAILED, report.requests_used, report.copied, report.skipped, detail), None
        error = report.error
        if error is None and report.retry_after is not None:
            error = f"stopped: the upstream rate-limited the run (retry after {report.retry_after:g} s)"
        found = await self._record(run, report.state, report.requests_used, report.copied, report.skipped, error)
        if report.copied or report.state is not RunState.SUCCEEDED:
            log.info(
                "sync rule %s run %d: %s, %d copied, %d skipped, %d requests", rule.name, run.id, report.state,
                len(report.copied), len(report.skipped), report.requests_used,
            )
        return found, report.retry_after

    async def _record_report(self, run: RunRecord, report: RunReport, error: str) -> RunRecord:
        """A run that did not end by itself: failed, with what it had done (copies, requests, skips) by then."""
        return await self._record(run, RunState.FAILED, report.requests_used, list(report.copied), list(report.skipped), error)

    async def _record(
        self, run: RunRecord, state: RunState, requests_used: int, copied: list[dict[str, Any]], skipped: list[dict[str, Any]],
        error: str | None,
    ) -> RunRecord:
        """Store the finished run; a rule deleted while it ran took its log along, so the record is made up."""
        found = await self.store.finish_run(run.id, state, requests_used, copied, skipped, error)
        if found is not None:
            return found
        return replace(run, state=state, finished_at=datetime.now(UTC), requests_used=requests_used, copied=copied,
                       skipped=skipped, error=error)

    async def _renew(self, name: str, token: str, work: asyncio.Future[Any], lost: asyncio.Event) -> None:
        """Keep the lease while ``work`` runs; when it is found lost, stop the run (``lost`` says why it stopped)."""
        period = max(1.0, self.settings.sync_lease_seconds / 3)
        while True:
            await asyncio.sleep(period)
            try:
                if await self.store.renew(name, token, self.settings.sync_lease_seconds):
                    continue
            except Exception:
                log.exception("sync rule %s: renewing the lease failed", name)
                continue
            log.warning("sync rule %s: the lease was lost while running (deleted, or taken over); stopping the run", name)
            lost.set()
            work.cancel()
            return

    # ---- the scheduler -------------------------------------------------------------------------

    async def schedule_forever(self) -> None:
        """Every ``sync_poll_seconds``: run the rules that are due. Every worker runs it; the lease picks one."""
        while True:
            await asyncio.sleep(self.settings.sync_poll_seconds)
            try:
                await self.run_due()
            except Exception:
                log.exception("running due sync rules failed")

    async def close(self, grace: float = 10.0) -> None:
        """Give runs in flight ``grace`` seconds to finish and record themselves, then cancel them.

        A cancelled run records itself failed ("interrupted"), with what it had done, and gives its lease back."""
        if not self._running:
            return
        _, pending = await asyncio.wait(set(self._running), timeout=grace)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


async def _best_effort(step: Awaitable[Any], what: str) -> None:
    """Finish ``step`` even if the caller is being cancelled (shielded); log, never raise, a failure."""
    task = asyncio.ensure_future(step)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:  # cancelled again while waiting: the step goes on by itself
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
    except Exception:
        log.exception("%s failed", what)
