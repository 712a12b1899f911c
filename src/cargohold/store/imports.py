"""Import jobs and provenance: what any worker, and a restarted server, can tell about imports.

``ImportJobStore`` keeps one row per server-side import. The worker that runs
an import writes its progress at most about once a second; ``updated_at`` is
the heartbeat. A job still ``running`` whose heartbeat stopped (its worker
died, the server restarted) is reported as failed when read — nothing has to
run at startup to clean it up, and a job that is merely slow is never touched
while its worker is alive.

``ProvenanceStore`` records where imported content came from: one row per
copy (an import or a sync run) and target tag. Rows are never updated; the
newest row for a tag is the tag's provenance.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update

from .db import SqlStore
from .identities import aware
from .schema import import_jobs, provenance

__all__ = [
    "INTERRUPTED",
    "INTERRUPTED_CODE",
    "ImportJobRecord",
    "ImportJobStore",
    "ProvenanceRecord",
    "ProvenanceStore",
]

RUNNING, SUCCEEDED, FAILED = "running", "succeeded", "failed"
INTERRUPTED = "interrupted: the server stopped while importing"
INTERRUPTED_CODE = "INTERRUPTED"
STALE_AFTER = timedelta(seconds=60)  # a running job whose heartbeat is older did not survive its worker
KEEP_JOBS = 1000  # finished jobs kept at most …
KEEP_FOR = timedelta(days=30)  # … and for at most this long


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ImportJobRecord:
    id: str
    state: str  # running | succeeded | failed
    source: str
    source_digest: str | None
    targets: list[str]
    requested_by: str
    bytes_done: int
    blobs_done: int
    bytes_total: int | None
    blobs_total: int | None
    error: str | None
    error_code: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    def as_seen(self, at: datetime, stale_after: timedelta = STALE_AFTER) -> ImportJobRecord:
        """The job as a reader should see it: a running job without heartbeat for ``stale_after`` has failed."""
        if self.state != RUNNING or at - self.updated_at <= stale_after:
            return self
        return replace(self, state=FAILED, error=INTERRUPTED, error_code=INTERRUPTED_CODE, finished_at=self.updated_at)


def _job(row: Any) -> ImportJobRecord:
    return ImportJobRecord(
        row.id, row.state, row.source, row.source_digest, json.loads(row.targets),  # written by create(): a list of str
        row.requested_by, row.bytes_done, row.blobs_done, row.bytes_total, row.blobs_total, row.error, row.error_code,
        aware(row.started_at), aware(row.updated_at), aware(row.finished_at),  # type: ignore[arg-type]
    )


class ImportJobStore(SqlStore):
    """The ``import_jobs`` table. Reads apply the heartbeat rule (``ImportJobRecord.as_seen``)."""

    stale_after = STALE_AFTER

    async def create(self, job_id: str, source: str, targets: list[str], requested_by: str) -> ImportJobRecord:
        at = _now()
        job = ImportJobRecord(
            job_id, RUNNING, source[:1000], None, [str(t) for t in targets], requested_by[:255], 0, 0, None, None,
            None, None, at, at, None,
        )
        async with self._write() as conn:
            await conn.execute(insert(import_jobs).values(
                id=job.id, state=job.state, source=job.source, source_digest=None, targets=json.dumps(job.targets),
                requested_by=job.requested_by, bytes_done=0, blobs_done=0, bytes_total=None, blobs_total=None,
                error=None, error_code=None, started_at=at, updated_at=at, finished_at=None,
            ))
        return job

    async def progress(
        self, job_id: str, bytes_done: int, blobs_done: int, *, bytes_total: int | None = None, blobs_total: int | None = None
    ) -> None:
        """Record progress (and the totals once known); also the heartbeat. Only a running job changes."""
        values: dict[str, Any] = {"bytes_done": bytes_done, "blobs_done": blobs_done, "updated_at": _now()}
        if bytes_total is not None:
            values["bytes_total"] = bytes_total
        if blobs_total is not None:
            values["blobs_total"] = blobs_total
        async with self._write() as conn:
            await conn.execute(
                update(import_jobs).where(import_jobs.c.id == job_id, import_jobs.c.state == RUNNING).values(**values)
            )

    async def finish(
        self,
        job_id: str,
        state: str,
        *,
        bytes_done: int,
        blobs_done: int,
        bytes_total: int | None = None,
        blobs_total: int | None = None,
        source_digest: str | None = None,
        error: str | None = None,
        error_code: str | None = None,
    ) -> None:
        """End a job; totals given here are kept (a job may end before its progress was ever written)."""
        if state not in (SUCCEEDED, FAILED):
            raise ValueError(f"a job finishes as {SUCCEEDED} or {FAILED}, not {state!r}")
        at = _now()
        values: dict[str, Any] = {
            "state": state, "bytes_done": bytes_done, "blobs_done": blobs_done, "source_digest": source_digest,
            "error": error[:4000] if error is not None else None, "error_code": error_code,
            "updated_at": at, "finished_at": at,
        }
        if bytes_total is not None:
            values["bytes_total"] = bytes_total
        if blobs_total is not None:
            values["blobs_total"] = blobs_total
        async with self._write() as conn:
            await conn.execute(update(import_jobs).where(import_jobs.c.id == job_id).values(**values))

    async def get(self, job_id: str) -> ImportJobRecord | None:
        async with self._read() as conn:
            row = (await conn.execute(select(import_jobs).where(import_jobs.c.id == job_id))).first()
        return _job(row).as_seen(_now(), self.stale_after) if row else None

    async def list_recent(self, requested_by: str | None = None, limit: int = 50) -> list[ImportJobRecord]:
        """The newest jobs first; only ``requested_by``'s when given."""
        query = select(import_jobs).order_by(import_jobs.c.started_at.desc(), import_jobs.c.id).limit(max(1, limit))
        if requested_by is not None:
            query = query.where(import_jobs.c.requested_by == requested_by)
        at = _now()
        async with self._read() as conn:
            return [_job(r).as_seen(at, self.stale_after) for r in await conn.execute(query)]

    async def prune(self, keep: int = KEEP_JOBS, keep_for: timedelta = KEEP_FOR) -> int:
        """Delete finished (or long dead) jobs beyond the newest ``keep`` or older than ``keep_for``; return how many."""
        at = _now()
        dead = or_(
            import_jobs.c.state != RUNNING,
            import_jobs.c.updated_at < at - self.stale_after,
        )
        async with self._write() as conn:
            removed = (await conn.execute(
                delete(import_jobs).where(dead, import_jobs.c.started_at < at - keep_for)
            )).rowcount or 0
            cutoff = (await conn.execute(
                select(import_jobs.c.started_at).order_by(import_jobs.c.started_at.desc()).offset(max(0, keep)).limit(1)
            )).scalar()
            if cutoff is not None:
                removed += (await conn.execute(
                    delete(import_jobs).where(dead, import_jobs.c.started_at <= cutoff)
                )).rowcount or 0
        return removed


@dataclass(frozen=True)
class ProvenanceRecord:
    repository: str
    tag: str | None
    digest: str  # what the target holds: the top manifest's digest
    source: str  # the source reference, normalized (registry/repository[:tag][@digest])
    source_digest: str  # the digest the source served; equal to ``digest`` (bytes are copied byte-exact)
    via: str  # import | sync
    job: str | None  # the import job's id, or "sync-rule#run"
    requested_by: str
    imported_at: datetime


def _provenance(row: Any) -> ProvenanceRecord:
    return ProvenanceRecord(
        row.repository, row.tag, row.digest, row.source, row.source_digest, row.via, row.job, row.requested_by,
        aware(row.imported_at),  # type: ignore[arg-type]
    )


class ProvenanceStore(SqlStore):
    """The ``provenance`` table: append-only; newest first on every read."""

    async def record(self, records: Iterable[ProvenanceRecord]) -> None:
        rows = [
            {
                "repository": r.repository, "tag": r.tag, "digest": r.digest, "source": r.source[:1000],
                "source_digest": r.source_digest, "via": r.via[:16], "job": r.job[:64] if r.job else None,
                "requested_by": r.requested_by[:255], "imported_at": r.imported_at,
            }
            for r in records
        ]
        if not rows:
            return
        async with self._write() as conn:
            await conn.execute(insert(provenance), rows)

    async def history(self, repository: str, tag: str | None = None, limit: int = 100) -> list[ProvenanceRecord]:
        """Every record for the repository (or one tag of it), newest first."""
        query = select(provenance).where(provenance.c.repository == repository)
        if tag is not None:
            query = query.where(provenance.c.tag == tag)
        query = query.order_by(provenance.c.imported_at.desc(), provenance.c.id.desc()).limit(max(1, limit))
        async with self._read() as conn:
            return [_provenance(r) for r in await conn.execute(query)]

    async def latest(self, repository: str, tag: str | None = None) -> list[ProvenanceRecord]:
        """The newest record per tag (by-digest imports, tag None, count as one more "tag"), newest first."""
        newest = (
            select(func.max(provenance.c.id))
            .where(provenance.c.repository == repository)
            .group_by(provenance.c.tag)
        )
        if tag is not None:
            newest = newest.where(provenance.c.tag == tag)
        query = (
            select(provenance)
            .where(and_(provenance.c.repository == repository, provenance.c.id.in_(newest.scalar_subquery())))
            .order_by(provenance.c.imported_at.desc(), provenance.c.id.desc())
        )
        async with self._read() as conn:
            return [_provenance(r) for r in await conn.execute(query)]
