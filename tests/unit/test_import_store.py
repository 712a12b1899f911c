"""Import jobs and provenance in the database (``store.imports``), on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from servers import POSTGRES_URL, drop_postgres_schema_async
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncEngine

from cargohold.config import Settings
from cargohold.store.db import create_engine
from cargohold.store.imports import (
    INTERRUPTED,
    ImportJobStore,
    ProvenanceRecord,
    ProvenanceStore,
)
from cargohold.store.migrate import migrate
from cargohold.store.schema import import_jobs
from cargohold.transfer import jobs as jobs_module
from cargohold.transfer.importer import ImportFailed, ImportResult, SourceNotFound, Target
from cargohold.transfer.jobs import ImportJobs, ImportRequest

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


@pytest.fixture(params=["sqlite", "postgres"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    schema = f"i_{secrets.token_hex(6)}" if request.param == "postgres" else None
    settings = Settings(
        data_dir=tmp_path, database_url=POSTGRES_URL if schema else None, database_schema=schema,
    )
    created = create_engine(settings)
    try:
        await migrate(created, schema)
        yield created
    finally:
        await created.dispose()
        if schema:
            await drop_postgres_schema_async(schema)


def job_id() -> str:
    return secrets.token_hex(16)


async def age(engine: AsyncEngine, job: str, *, started: timedelta | None = None, updated: timedelta | None = None) -> None:
    """Move a job's timestamps into the past, as if time had passed."""
    now = datetime.now(UTC)
    values = {}
    if started is not None:
        values["started_at"] = now - started
    if updated is not None:
        values["updated_at"] = now - updated
    async with engine.begin() as conn:
        await conn.execute(update(import_jobs).where(import_jobs.c.id == job).values(**values))


async def test_job_lifecycle(engine: AsyncEngine) -> None:
    store = ImportJobStore(engine)
    created = await store.create(job_id(), "docker.io/library/alpine:3.20", ["library/alpine:3.20"], "alice")
    assert created.state == "running" and created.targets == ["library/alpine:3.20"] and created.bytes_total is None
    assert created.started_at.tzinfo is not None and created.finished_at is None
    assert await store.get(created.id) == created  # the record create() builds is the row it wrote

    await store.progress(created.id, 100, 1, bytes_total=1000, blobs_total=3)
    await store.progress(created.id, 400, 2)  # totals stay once known
    got = await store.get(created.id)
    assert got is not None
    assert (got.bytes_done, got.blobs_done, got.bytes_total, got.blobs_total) == (400, 2, 1000, 3)
    assert got.updated_at >= created.updated_at

    await store.finish(created.id, "succeeded", bytes_done=1000, blobs_done=3, source_digest=D1)
    await store.progress(created.id, 5, 0)  # a late progress write from the worker changes nothing
    done = await store.get(created.id)
    assert done is not None and done.state == "succeeded" and done.source_digest == D1
    assert (done.bytes_done, done.blobs_done) == (1000, 3) and done.finished_at is not None and done.error is None

    failed = await store.create(job_id(), "x/y:1", ["y:1"], "bob")
    await store.finish(failed.id, "failed", bytes_done=0, blobs_done=0, error="gone", error_code="SOURCE_NOT_FOUND")
    seen = await store.get(failed.id)
    assert seen is not None and (seen.state, seen.error, seen.error_code) == ("failed", "gone", "SOURCE_NOT_FOUND")
    with pytest.raises(ValueError):
        await store.finish(failed.id, "running", bytes_done=0, blobs_done=0)
    assert await store.get(job_id()) is None


async def test_a_job_without_heartbeat_reads_as_interrupted(engine: AsyncEngine) -> None:
    store = ImportJobStore(engine)
    alive = await store.create(job_id(), "a/b:1", ["b:1"], "alice")
    dead = await store.create(job_id(), "a/b:2", ["b:2"], "alice")
    await age(engine, dead.id, started=timedelta(minutes=5), updated=timedelta(minutes=2))
    await age(engine, alive.id, updated=timedelta(seconds=30))
    got = await store.get(dead.id)
    assert got is not None and got.state == "failed" and got.error == INTERRUPTED and got.error_code == "INTERRUPTED"
    assert got.finished_at == got.updated_at
    still = await store.get(alive.id)
    assert still is not None and still.state == "running" and still.error is None
    listed = {j.id: j.state for j in await store.list_recent("alice")}
    assert listed == {alive.id: "running", dead.id: "failed"}


async def test_list_recent_newest_first_and_per_user(engine: AsyncEngine) -> None:
    store = ImportJobStore(engine)
    ids = []
    for n in range(3):
        job = await store.create(job_id(), f"s/r:{n}", [f"r:{n}"], "carol" if n != 1 else "dave")
        await age(engine, job.id, started=timedelta(minutes=10 - n))
        ids.append(job.id)
    assert [j.id for j in await store.list_recent()] == ids[::-1]
    assert [j.id for j in await store.list_recent("carol")] == [ids[2], ids[0]]
    assert [j.id for j in await store.list_recent("carol", limit=1)] == [ids[2]]


async def test_prune_keeps_running_and_recent_jobs(engine: AsyncEngine) -> None:
    store = ImportJobStore(engine)
    old_done = await store.create(job_id(), "s/r:old", ["r:old"], "erin")
    await store.finish(old_done.id, "succeeded", bytes_done=0, blobs_done=0, source_digest=D1)
    await age(engine, old_done.id, started=timedelta(days=40), updated=timedelta(days=40))
    old_running = await store.create(job_id(), "s/r:slow", ["r:slow"], "erin")  # alive: a heartbeat just now
    await age(engine, old_running.id, started=timedelta(days=40))
    finished = []
    for n in range(4):
        job = await store.create(job_id(), f"s/r:{n}", [f"r:{n}"], "erin")
        await store.finish(job.id, "failed", bytes_done=0, blobs_done=0, error="x")
        await age(engine, job.id, started=timedelta(minutes=10 - n))
        finished.append(job.id)
    removed = await store.prune(keep=3)
    left = {j.id for j in await store.list_recent()}
    assert old_done.id not in left  # too old
    assert old_running.id in left  # running, with a live heartbeat: never pruned
    assert finished[0] not in left  # beyond the newest 3
    assert {finished[1], finished[2], finished[3]} <= left
    assert removed == 2


async def test_provenance_history_and_latest_per_tag(engine: AsyncEngine) -> None:
    store = ProvenanceStore(engine)
    at = datetime.now(UTC)

    def record(tag: str | None, digest: str, minutes: int, via: str = "import", repo: str = "team/app") -> ProvenanceRecord:
        return ProvenanceRecord(repo, tag, digest, f"src.example/team/app:{tag}", digest, via, "job", "alice",
                                at - timedelta(minutes=minutes))

    await store.record([record("1", D1, 30), record("2", D1, 20)])
    await store.record([record("1", D2, 10, via="sync"), record(None, D3, 5), record("1", D3, 1, repo="other/app")])
    await store.record([])

    history = await store.history("team/app")
    assert [(r.tag, r.digest) for r in history] == [(None, D3), ("1", D2), ("2", D1), ("1", D1)]
    assert history[1].via == "sync" and history[1].imported_at.tzinfo is not None
    assert [r.digest for r in await store.history("team/app", "1")] == [D2, D1]
    assert len(await store.history("team/app", limit=2)) == 2

    latest = await store.latest("team/app")
    assert [(r.tag, r.digest) for r in latest] == [(None, D3), ("1", D2), ("2", D1)]
    assert [(r.tag, r.digest) for r in await store.latest("team/app", "1")] == [("1", D2)]
    assert await store.latest("nothing/here") == [] and await store.history("nothing/here") == []


# ---- the service over the store (transfer.jobs) --------------------------------------------------------


def service(engine: AsyncEngine, store: ImportJobStore | None = None) -> ImportJobs:
    return ImportJobs(Settings(), None, store or ImportJobStore(engine), ProvenanceStore(engine))  # type: ignore[arg-type]


async def test_jobs_prune_at_most_once_per_interval(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ImportJobStore(engine)
    calls = []

    async def prune() -> int:
        calls.append(1)
        return 0

    monkeypatch.setattr(store, "prune", prune)
    jobs = service(engine, store)
    for n in range(3):
        await jobs.create(f"s/r:{n}", [Target("r", str(n))], "erin")
    assert len(calls) == 1
    assert jobs._pruned_at is not None
    jobs._pruned_at -= jobs.prune_every + 1  # the interval has passed
    created = await jobs.create("s/r:9", [Target("r", "9")], "erin")
    assert len(calls) == 2 and created.targets == ["r:9"] and (await jobs.get(created.id)) == created


class FakeImporter:
    outcome: Any = None

    def __init__(self, registry: Any, settings: Any) -> None:
        pass

    async def run(self, source: str, targets: list[Target], credentials: Any, **kwargs: Any) -> ImportResult:
        kwargs["totals"](30, 3)
        kwargs["progress"](10, 1)
        if isinstance(FakeImporter.outcome, BaseException):
            raise FakeImporter.outcome
        return FakeImporter.outcome  # type: ignore[no-any-return]


async def test_jobs_run_records_the_end_once_and_audits_each_target(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_module, "Importer", FakeImporter)
    jobs = service(engine)
    audited: list[tuple[str, str]] = []

    async def audit(target: Target, outcome: str, detail: dict[str, object]) -> None:
        audited.append((str(target), outcome))

    targets = [Target("r", "1"), Target("r", "2")]
    FakeImporter.outcome = ImportResult(D1, 1, 3, 3, 30)
    job = await jobs.create("s/r:1", targets, "erin")
    assert await jobs.run(job, ImportRequest("s/r:1", targets, "erin"), audit) is None
    done = await jobs.get(job.id)
    assert done is not None and done.state == "succeeded" and done.source_digest == D1
    assert (done.bytes_done, done.blobs_done, done.bytes_total, done.blobs_total) == (30, 3, 30, 3)
    assert audited == [("r:1", "ok"), ("r:2", "ok")]

    FakeImporter.outcome = ImportFailed("the source broke off")
    job = await jobs.create("s/r:1", targets, "erin")
    failure = await jobs.run(job, ImportRequest("s/r:1", targets, "erin"))
    assert failure is FakeImporter.outcome
    failed = await jobs.get(job.id)
    assert failed is not None and (failed.state, failed.error, failed.error_code) == (
        "failed", "the source broke off", "SOURCE_FAILED")
    assert (failed.bytes_done, failed.blobs_done, failed.bytes_total, failed.blobs_total) == (10, 1, 30, 3)


async def test_a_failed_import_whose_end_cannot_be_recorded_logs_the_real_error(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(jobs_module, "Importer", FakeImporter)
    store = ImportJobStore(engine)
    jobs = service(engine, store)
    job = await jobs.create("s/r:1", [Target("r", "1")], "erin")

    async def finish(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the database is gone")

    monkeypatch.setattr(store, "finish", finish)
    FakeImporter.outcome = SourceNotFound("manifest unknown upstream")
    with caplog.at_level(logging.ERROR, logger="cargohold.transfer"):
        failure = await jobs.run(job, ImportRequest("s/r:1", [Target("r", "1")], "erin"))
    assert failure is FakeImporter.outcome  # the caller still answers with the import's own failure
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert "SOURCE_NOT_FOUND" in record.getMessage() and "manifest unknown upstream" in record.getMessage()
    assert record.exc_info is not None and "the database is gone" in str(record.exc_info[1])
