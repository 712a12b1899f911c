"""The sync-rule store on SQLite and PostgreSQL: CRUD, the lease (one winner, expiry), due rules, the run log;
and the sync service's run lifecycle and engine pieces that need no upstream."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from cargohold.config import Settings
from cargohold.oci.digest import Digest
from cargohold.registry.service import Registry
from cargohold.store.cache import CacheConfigStore, UnknownCredentialSet
from cargohold.store.db import create_engine
from cargohold.store.identities import AlreadyExists
from cargohold.store.migrate import migrate
from cargohold.store.schema import sync_rules
from cargohold.store.sync import SyncStore
from cargohold.transfer.importer import Importer
from cargohold.transfer.schedule import Cron
from cargohold.store.sync import RunState, SkipOutcome, outcome_of
from cargohold.transfer.sync import RunReport, SyncEngine, SyncSpec, deferred_tags
from cargohold.transfer.sync_service import SyncService
from cargohold.transfer.tagfilter import TagFilter
from cargohold.upstream.client import Endpoint
from servers import POSTGRES_URL, drop_postgres_schema_async

RULE = {
    "source": "docker.io/library/alpine", "target": "mirror/alpine", "tag_regex": None, "semver": ">=3.19 <4",
    "interval_seconds": 3600, "cron": None, "credential_set": None, "insecure": False, "platforms": ["linux/amd64"],
    "request_budget": 50, "enabled": True,
}


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SyncStore]:
    schema = f"s_{secrets.token_hex(6)}" if request.param == "postgres" else None
    settings = Settings(data_dir=tmp_path, database_url=POSTGRES_URL if schema else None, database_schema=schema)
    engine = create_engine(settings)
    try:
        await migrate(engine, schema)
        yield SyncStore(engine)
    finally:
        await engine.dispose()
        if schema:
            await drop_postgres_schema_async(schema)


async def test_crud(store: SyncStore) -> None:
    created = await store.create_rule("alpine", RULE, "admin")
    assert created.source == "docker.io/library/alpine" and created.platforms == ["linux/amd64"]
    assert created.created_by == "admin" and created.next_run_at is None and created.enabled
    with pytest.raises(AlreadyExists):
        await store.create_rule("alpine", RULE, "admin")
    with pytest.raises(UnknownCredentialSet):
        await store.create_rule("other", {**RULE, "credential_set": "nope"}, "admin")
    updated = await store.update_rule("alpine", {"semver": None, "tag_regex": "3\\..*", "platforms": None})
    assert updated is not None and updated.semver is None and updated.tag_regex == "3\\..*" and updated.platforms is None
    assert await store.update_rule("missing", {"enabled": False}) is None
    assert [r.name for r in await store.list_rules()] == ["alpine"]
    run = await store.start_run("alpine", "manual")
    await store.finish_run(run.id, "succeeded", 3, [{"tag": "3.19", "digest": "sha256:" + "a" * 64, "previous": None}], [])
    assert await store.delete_rule("alpine")
    assert await store.get_rule("alpine") is None
    assert await store.list_runs("alpine") == []  # the run log goes with the rule
    assert not await store.delete_rule("alpine")


async def test_credential_set_reference(store: SyncStore) -> None:
    await CacheConfigStore(store.engine).create_credential_set("hub", "docker.io", "me", "sealed")
    rule = await store.create_rule("withcreds", {**RULE, "credential_set": "hub"}, "admin")
    assert rule.credential_set == "hub"
    assert await CacheConfigStore(store.engine).credential_set_users("hub") == "sync rule(s) withcreds"


async def test_lease_one_winner_and_expiry(store: SyncStore) -> None:
    await store.create_rule("r", RULE, "admin")
    results = await asyncio.gather(*(store.claim("r", f"w{i}", 60) for i in range(8)))
    assert results.count(True) == 1
    winner = f"w{results.index(True)}"
    assert not await store.claim("r", "late", 60)
    assert await store.renew("r", winner, 60)
    assert not await store.renew("r", "late", 60)
    await store.release("r", winner, None, keep_schedule=True)
    assert await store.claim("r", "next", 0.2)  # a short lease: the holder "crashes"
    await asyncio.sleep(0.4)
    assert await store.claim("r", "rescuer", 60)  # the expired lease is taken over
    assert not await store.renew("r", "next", 60)  # the crashed holder has lost it
    await store.release("r", "next", None)  # not the holder: changes nothing
    assert (await store.get_rule("r")).lease_owner == "rescuer"  # type: ignore[union-attr]


async def test_due_rules(store: SyncStore) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    future = datetime.now(UTC) + timedelta(hours=1)
    await store.create_rule("due", {**RULE, "next_run_at": past}, "admin")
    await store.create_rule("later", {**RULE, "next_run_at": future}, "admin")
    await store.create_rule("off", {**RULE, "next_run_at": past, "enabled": False}, "admin")
    await store.create_rule("manual", RULE, "admin")
    assert await store.due() == ["due"]
    assert not await store.claim("later", "w", 60, due_only=True)
    assert not await store.claim("off", "w", 60, due_only=True)
    assert await store.claim("due", "w", 60, due_only=True)
    assert await store.due() == []  # leased
    await store.release("due", "w", future)
    assert await store.due() == []
    assert (await store.get_rule("due")).next_run_at == future  # type: ignore[union-attr]


async def test_runs_newest_first_and_capped(store: SyncStore) -> None:
    await store.create_rule("r", RULE, "admin")
    ids = [(await store.start_run("r", "schedule", keep=3)).id for _ in range(5)]
    runs = await store.list_runs("r")
    assert [r.id for r in runs] == ids[::-1][:3]
    assert runs[0].state == "running" and runs[0].copied == [] and runs[0].skipped == []
    done = await store.finish_run(ids[-1], "partial", 7, [], [{"tag": "x", "reason": "request budget exhausted"}], "stopped")
    assert done is not None and done.state == "partial" and done.requests_used == 7 and done.finished_at is not None
    # An entry written without an outcome (as runs were recorded before there was one) is read with it.
    assert done.skipped == [{"tag": "x", "reason": "request budget exhausted", "outcome": "deferred"}] and done.error == "stopped"
    await store.fail_abandoned_runs("r")
    states = [r.state for r in await store.list_runs("r")]
    assert states == ["partial", "failed", "failed"]


# ---- the service's run lifecycle (fake engine): lease per claim, no run left "running", schedule kept --------


class _BlockingEngine:
    """Copies one tag, spends 3 requests, then waits for ``go`` (forever unless set)."""

    def __init__(self) -> None:
        self.go = asyncio.Event()
        self.started = asyncio.Event()

    async def run(self, spec: Any, credentials: Any, *, run_id: int, previous_skipped: Any, report: RunReport) -> RunReport:
        report.copied.append({"tag": "1", "digest": "sha256:" + "b" * 64, "previous": None})
        report.requests_used = 3
        self.started.set()
        await self.go.wait()
        return report


class _NoCache:
    async def credentials_for(self, name: str) -> tuple[str, str]:  # pragma: no cover - no rule here has one
        raise LookupError(name)


def _service(store: SyncStore, tmp_path: Path) -> tuple[SyncService, _BlockingEngine]:
    settings = Settings(data_dir=tmp_path, sync_lease_seconds=5)
    service = SyncService(settings, None, store, _NoCache())  # type: ignore[arg-type]
    engine = _BlockingEngine()
    service.engine = engine  # type: ignore[assignment]
    return service, engine


async def test_a_run_cancelled_at_shutdown_is_recorded_failed_with_what_it_did(store: SyncStore, tmp_path: Path) -> None:
    await store.create_rule("r", RULE, "admin")
    service, engine = _service(store, tmp_path)
    run, _ = await service.start_now("r")
    await engine.started.wait()
    await service.close(grace=0.05)
    done = await store.get_run(run.id)
    assert done is not None and done.state == "failed" and "interrupted" in (done.error or ""), done
    assert done.requests_used == 3 and [c["tag"] for c in done.copied] == ["1"]
    assert (await store.get_rule("r")).lease_owner is None  # type: ignore[union-attr]


async def test_a_failing_finish_is_retried_and_abandoned_runs_show_failed_when_read(
    store: SyncStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.create_rule("r", RULE, "admin")
    service, engine = _service(store, tmp_path)
    engine.go.set()
    real = store.finish_run
    calls = 0

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database went away")
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "finish_run", flaky)
    run, finished = await service.start_now("r")
    with pytest.raises(RuntimeError):
        await finished
    done = await store.get_run(run.id)
    assert done is not None and done.state == "failed" and done.error == "interrupted: RuntimeError" and done.requests_used == 3
    assert (await store.get_rule("r")).lease_owner is None  # type: ignore[union-attr]

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database went away")

    monkeypatch.setattr(store, "finish_run", broken)  # the record cannot be closed at all: left "running"
    run, finished = await service.start_now("r")
    with pytest.raises(RuntimeError):
        await finished
    assert (await store.get_run(run.id)).state == "running"  # type: ignore[union-attr]
    # Nobody holds the rule: a reader sees it failed, not running for ever.
    assert (await service.list_runs("r"))[0].state == "failed"
    seen = await service.get_run("r", run.id)
    assert seen is not None and seen.state == "failed" and "stopped" in (seen.error or "")


async def test_reading_runs_does_not_fail_a_run_in_progress(store: SyncStore, tmp_path: Path) -> None:
    await store.create_rule("r", RULE, "admin")
    service, engine = _service(store, tmp_path)
    run, finished = await service.start_now("r")
    await engine.started.wait()
    assert (await service.get_run("r", run.id)).state == "running"  # type: ignore[union-attr]
    assert [r.state for r in await service.list_runs("r")] == ["running"]
    engine.go.set()
    assert (await finished).state == "succeeded"


async def test_leases_are_per_claim_and_a_lost_lease_stops_the_run(store: SyncStore, tmp_path: Path) -> None:
    await store.create_rule("r", RULE, "admin")
    service, engine = _service(store, tmp_path)
    _, finished = await service.start_now("r")
    await engine.started.wait()
    first = (await store.get_rule("r")).lease_owner  # type: ignore[union-attr]
    async with store.engine.begin() as conn:  # another worker takes the rule over (e.g. after a long stall)
        await conn.execute(update(sync_rules).where(sync_rules.c.name == "r").values(lease_owner="thief"))
    done = await asyncio.wait_for(finished, 10)
    assert done.state == "failed" and "lease was lost" in (done.error or "") and done.requests_used == 3
    assert (await store.get_rule("r")).lease_owner == "thief"  # type: ignore[union-attr]  # not released by the loser
    # The same worker claiming the rule again gets a token of its own.
    async with store.engine.begin() as conn:
        await conn.execute(update(sync_rules).where(sync_rules.c.name == "r").values(lease_owner=None, lease_until=None))
    engine.go.set()
    _, finished = await service.start_now("r")
    assert (await store.get_rule("r")).lease_owner not in (None, first)  # type: ignore[union-attr]
    await finished


async def test_a_schedule_changed_during_a_run_is_kept(store: SyncStore, tmp_path: Path) -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    await store.create_rule("r", {**RULE, "next_run_at": past}, "admin")
    service, engine = _service(store, tmp_path)
    running = asyncio.ensure_future(service.run_due())
    await engine.started.wait()
    changed = await service.update_rule("r", {"interval_seconds": None, "cron": "0 3 * * *"})
    assert changed is not None and changed.next_run_at is not None
    engine.go.set()
    assert await running == 1
    rule = await store.get_rule("r")
    assert rule is not None and rule.cron == "0 3 * * *" and rule.lease_owner is None
    assert rule.next_run_at == changed.next_run_at == Cron.parse("0 3 * * *").next_after(changed.updated_at)


async def test_release_only_if_unchanged(store: SyncStore) -> None:
    rule = await store.create_rule("r", RULE, "admin")
    assert await store.claim("r", "t1", 60)
    later = datetime.now(UTC) + timedelta(hours=1)
    await store.update_rule("r", {"enabled": False})
    assert not await store.release("r", "t1", later, updated_at=rule.updated_at)  # changed since: not released
    current = await store.get_rule("r")
    assert current is not None and current.lease_owner == "t1"
    assert await store.release("r", "t1", later, updated_at=current.updated_at)
    assert (await store.get_rule("r")).next_run_at == later  # type: ignore[union-attr]


async def test_last_run_in_states(store: SyncStore) -> None:
    await store.create_rule("r", RULE, "admin")
    ids = [(await store.start_run("r", "schedule")).id for _ in range(3)]
    await store.finish_run(ids[0], "partial", 1, [], [])
    await store.finish_run(ids[1], "failed", 1, [], [])
    found = await store.last_run("r", ("partial", "succeeded"))
    assert found is not None and found.id == ids[0]
    assert await store.last_run("other", ("partial",)) is None


# ---- the engine: local digests from metadata, one client per run, partial reports kept ----------------


async def test_digest_of_reads_metadata_only(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    registry = Registry.open(settings)
    try:
        await migrate(registry.stores.engine, None)
        blob = {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + "c" * 64, "size": 1}
        config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "d" * 64, "size": 2}
        body = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config, "layers": [blob]}).encode()
        pushed = await registry.manifests.put("m/x", "1", body, "application/vnd.oci.image.manifest.v1+json", lazy=True)
        assert pushed.digest == str(Digest.of(body))
        assert await registry.manifests.digest_of("m/x", "1") == pushed.digest
        assert await registry.manifests.digest_of("m/x", "2") is None
        assert await registry.manifests.digest_of("m/nothing", "1") is None
        assert await registry.manifests.digest_of("m/x", "not a tag") is None
        assert registry.manifests._cache.get("m/x", "1") is None  # the /v2 manifest cache is left alone
        engine = SyncEngine(registry, settings)
        assert await engine._local_digest("m/x", "1") == pushed.digest
        assert await engine._local_digest("Bad Name", "1") is None
        assert registry.manifests._cache.get("m/x", "1") is None
    finally:
        await registry.close()


async def test_the_importer_uses_a_client_it_is_given(tmp_path: Path) -> None:
    importer = Importer(None, Settings(data_dir=tmp_path))  # type: ignore[arg-type]
    given = object()
    async with importer._client(given, Endpoint("example.com"), None, None, 0.0) as client:  # type: ignore[arg-type]
        assert client is given
    async with importer._client(None, Endpoint("example.com"), None, None, 0.0) as client:
        assert client is not given and client._max_retry_after == 0.0  # type: ignore[attr-defined]


async def test_a_run_that_breaks_off_keeps_its_partial_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = SyncEngine(None, Settings(data_dir=tmp_path))  # type: ignore[arg-type]

    async def broken(self: SyncEngine, spec: Any, credentials: Any, run_id: int, previous: Any, counter: Any,
                     report: RunReport, on_progress: Any) -> None:
        report.copied.append({"tag": "1", "digest": "sha256:" + "e" * 64, "previous": None})
        counter.request("GET", 200)
        counter.request("HEAD", 200)
        raise KeyError("a bug")

    monkeypatch.setattr(SyncEngine, "_run", broken)
    spec = SyncSpec("r", "example.com/a/b", "m/b", TagFilter.build(), False, None, 10)
    kept = RunReport()
    report = await engine.run(spec, None, run_id=1, report=kept)
    assert report is kept and report.state == "failed" and report.error == "internal error: KeyError"
    assert report.requests_used == 2 and [c["tag"] for c in report.copied] == ["1"]


# ---- outcomes are enums, never the wording of a message --------------------------------------------


def test_skipped_entries_carry_their_outcome_and_the_state_follows_from_it() -> None:
    report = RunReport()
    report.skip("a", "unchanged", SkipOutcome.UNCHANGED)
    report.skip("b", "filtered: does not match", SkipOutcome.FILTERED)
    report.close()
    assert report.state is RunState.SUCCEEDED
    assert [e["outcome"] for e in report.skipped] == ["unchanged", "filtered"]
    # The wording does not matter: a failure whose message reads like a filter still makes the run partial.
    report = RunReport()
    report.skip("c", "filtered out by the upstream's proxy: 502", SkipOutcome.FAILED)
    report.close()
    assert report.state is RunState.PARTIAL


def test_deferred_tags_are_told_by_outcome_not_wording() -> None:
    previous = [
        {"tag": "a", "reason": "upstream went away mid-run", "outcome": "deferred"},
        {"tag": "b", "reason": "request budget exhausted (but recorded as a failure)", "outcome": "failed"},
        {"tag": "c", "reason": "unchanged", "outcome": "unchanged"},
        {"tag": "*", "reason": "tag list cut short", "outcome": "deferred"},
    ]
    assert deferred_tags(previous) == ["a"]


def test_entries_recorded_before_outcomes_are_read_by_their_old_wording() -> None:
    legacy = {
        "filtered: no match": SkipOutcome.FILTERED, "unchanged": SkipOutcome.UNCHANGED,
        "copy failed: boom": SkipOutcome.FAILED, "HEAD failed: 500": SkipOutcome.FAILED,
        "gone upstream (listed, but the HEAD found no manifest)": SkipOutcome.FAILED,
        "request budget exhausted (3 of 3 requests used)": SkipOutcome.DEFERRED,
        "rate-limited (429, no Retry-After)": SkipOutcome.DEFERRED, "upstream unavailable: timeout": SkipOutcome.DEFERRED,
    }
    for reason, outcome in legacy.items():
        assert outcome_of({"tag": "t", "reason": reason}) is outcome, reason
    assert deferred_tags([{"tag": "t", "reason": "rate-limited (retry after 5 s)"}]) == ["t"]


async def test_run_states_are_stored_as_their_values(store: SyncStore) -> None:
    await store.create_rule("s", RULE, "admin")
    run = await store.start_run("s", "manual")
    assert run.state is RunState.RUNNING
    done = await store.finish_run(run.id, RunState.PARTIAL, 1, [], [])
    assert done is not None and done.state is RunState.PARTIAL and done.state == "partial"
    assert (await store.last_run("s", (RunState.PARTIAL,))) == done
