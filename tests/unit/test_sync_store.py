"""The sync-rule store on SQLite and PostgreSQL: CRUD, the lease (one winner, expiry), due rules, the run log."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cargohold.config import Settings
from cargohold.store.cache import CacheConfigStore, UnknownCredentialSet
from cargohold.store.db import create_engine
from cargohold.store.identities import AlreadyExists
from cargohold.store.migrate import migrate
from cargohold.store.sync import SyncStore
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
    assert await store.rules_using("hub") == ["withcreds"]


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
    assert done.skipped == [{"tag": "x", "reason": "request budget exhausted"}] and done.error == "stopped"
    await store.fail_abandoned_runs("r")
    states = [r.state for r in await store.list_runs("r")]
    assert states == ["partial", "failed", "failed"]
