"""Import jobs: start, follow, finish and read server-side imports; provenance and a repository's local tags.

The management API only parses, checks access and renders; this service owns
the job's lifetime. Jobs live in the database (``store.imports``), so any
worker — and a restarted server — can read them. The worker running an import
writes its progress about once a second (``PROGRESS_EVERY``), and every
``HEARTBEAT`` seconds while nothing moves; that write is the heartbeat, and a
running job whose heartbeat stopped reads as failed ("interrupted").

Finished jobs are pruned (``ImportJobStore.prune``) when a job is created, at
most once every ``PRUNE_EVERY`` seconds per worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ..config import Settings
from ..registry.ingest import Readable, nothing_readable
from ..registry.service import Registry
from ..store.imports import (
    INTERRUPTED,
    INTERRUPTED_CODE,
    ImportJobRecord,
    ImportJobStore,
    ProvenanceRecord,
    ProvenanceStore,
)
from ..upstream.client import Credentials
from .importer import Importer, ImportFailed, ImportResult, Target

__all__ = ["Audit", "ImportJobRecord", "ImportJobs", "ImportRequest", "LocalTag", "ProvenanceRecord"]

log = logging.getLogger("cargohold.transfer")

PROGRESS_EVERY = 1.0  # seconds between progress writes while bytes flow
HEARTBEAT = 10.0  # seconds between writes while nothing moves (a stalled source): the job is still alive
PRUNE_EVERY = 600.0  # seconds between prunes of old jobs, per worker

# Called once per target when a job ends: (target, "ok" | "failed", details); the API writes the audit log with it.
Audit = Callable[[Target, str, dict[str, object]], Awaitable[None]]


@dataclass(frozen=True)
class ImportRequest:
    """What to import and how; ``credentials`` are used for this import only."""

    source: str
    targets: list[Target]
    requested_by: str
    credentials: Credentials | None = None
    insecure: bool = False
    force: bool = False
    platforms: list[str] | None = None
    readable: Readable = nothing_readable  # the requester's pull rights, for the mount rule


@dataclass(frozen=True)
class LocalTag:
    """A tag the local store holds, the digest it names, and its newest provenance record (None: never imported)."""

    tag: str
    digest: str
    provenance: ProvenanceRecord | None


class _Progress:
    """A running job's counters, written to the database at most once a second (and every ``HEARTBEAT`` anyway).

    The importer calls ``progress`` per chunk; that only sets numbers. A loop writes them, so that a
    fast import costs a handful of writes and a stalled one still proves its worker is alive.
    """

    def __init__(self, store: ImportJobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self.bytes_done = self.blobs_done = 0
        self.bytes_total: int | None = None
        self.blobs_total: int | None = None
        self._dirty = False

    def progress(self, nbytes: int, blobs: int) -> None:
        self.bytes_done, self.blobs_done, self._dirty = nbytes, blobs, True

    def totals(self, nbytes: int, blobs: int) -> None:
        self.bytes_total, self.blobs_total, self._dirty = nbytes, blobs, True

    async def write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        written = loop.time()
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            if not self._dirty and loop.time() - written < HEARTBEAT:
                continue
            self._dirty = False
            try:
                await self.store.progress(
                    self.job_id, self.bytes_done, self.blobs_done, bytes_total=self.bytes_total, blobs_total=self.blobs_total
                )
                written = loop.time()
            except Exception:  # the database hiccuped: try again next round; the import itself goes on
                log.warning("import %s: could not record progress", self.job_id, exc_info=True)

    async def finish(self, state: str, *, result: ImportResult | None = None, error: str | None = None,
                     error_code: str | None = None) -> None:
        """Record the job's end with the counters as they are (or, on success, as the result says)."""
        await self.store.finish(
            self.job_id, state,
            bytes_done=result.fetched_bytes if result else self.bytes_done,
            blobs_done=result.blobs if result else self.blobs_done,
            bytes_total=self.bytes_total, blobs_total=self.blobs_total,
            source_digest=result.source_digest if result else None, error=error, error_code=error_code,
        )


class ImportJobs:
    """Server-side import jobs of one worker, over the shared job and provenance tables."""

    def __init__(self, settings: Settings, registry: Registry, jobs: ImportJobStore, provenance: ProvenanceStore,
                 prune_every: float = PRUNE_EVERY) -> None:
        self.settings, self.registry = settings, registry
        self.jobs, self.provenance_store = jobs, provenance
        self.prune_every = prune_every
        self._pruned_at: float | None = None
        self._tasks: set[asyncio.Task[ImportFailed | None]] = set()

    @classmethod
    def open(cls, settings: Settings, registry: Registry) -> ImportJobs:
        engine = registry.stores.engine
        return cls(settings, registry, ImportJobStore(engine), ProvenanceStore(engine))

    # ---- running ------------------------------------------------------------------------------

    async def create(self, source: str, targets: list[Target], requested_by: str) -> ImportJobRecord:
        """A new running job (and, at most once every ``prune_every`` seconds, old jobs pruned)."""
        await self._maybe_prune()
        return await self.jobs.create(uuid.uuid4().hex, source, [str(t) for t in targets], requested_by)

    async def _maybe_prune(self) -> None:
        now = time.monotonic()
        if self._pruned_at is not None and now - self._pruned_at < self.prune_every:
            return
        self._pruned_at = now
        try:
            await self.jobs.prune()
        except Exception:  # housekeeping must not stop an import
            log.warning("could not prune old import jobs", exc_info=True)

    def start(self, job: ImportJobRecord, request: ImportRequest, audit: Audit | None = None) -> None:
        """Run the job in the background (the caller polls ``get``)."""
        task = asyncio.ensure_future(self.run(job, request, audit))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, job: ImportJobRecord, request: ImportRequest, audit: Audit | None = None) -> ImportFailed | None:
        """Run the import and record its end; the failure (for a waiting request to answer with), or None."""
        counters = _Progress(self.jobs, job.id)
        importer = Importer(self.registry, self.settings)
        try:
            writer = asyncio.ensure_future(counters.write_loop())
            try:
                result = await importer.run(
                    request.source, request.targets, request.credentials, insecure=request.insecure,
                    force=request.force, platforms=request.platforms, progress=counters.progress,
                    totals=counters.totals, requested_by=request.requested_by, via="import", job=job.id,
                    readable=request.readable,
                )
            finally:  # stop the writer and wait for it, so that its last write cannot land after the end
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
        except ImportFailed as exc:
            try:
                await counters.finish("failed", error=str(exc), error_code=exc.code)
            except Exception:  # the answer still names the import's own failure; the log has both
                # exc is the import's failure; the traceback logged is the failed write's
                log.exception("import %s failed (%s: %s), and recording that failed too", job.id, exc.code, exc)  # noqa: TRY401
            await self._audit(audit, request, "failed", {"import_id": job.id, "source": request.source,
                                                         "error": str(exc)[:500]})
            return exc
        except asyncio.CancelledError:  # the server is stopping: say so now rather than when the heartbeat is old
            try:
                await asyncio.shield(counters.finish("failed", error=INTERRUPTED, error_code=INTERRUPTED_CODE))
            except Exception:  # the database may be gone already; readers will tell by the heartbeat
                log.warning("import %s: could not record that it was interrupted", job.id, exc_info=True)
            raise
        except Exception as exc:  # a bug; still end the job, so that nobody polls forever
            log.exception("import %s failed", job.id)
            await counters.finish("failed", error=f"internal error: {type(exc).__name__}", error_code="INTERNAL_ERROR")
            raise
        await counters.finish("succeeded", result=result)
        await self._audit(audit, request, "ok", {
            "import_id": job.id, "source": request.source, "source_digest": result.source_digest,
            "fetched_bytes": result.fetched_bytes,
        })
        return None

    @staticmethod
    async def _audit(audit: Audit | None, request: ImportRequest, outcome: str, detail: dict[str, object]) -> None:
        if audit is not None:
            for target in request.targets:
                await audit(target, outcome, detail)

    async def close(self) -> None:
        """Stop background imports (each records itself as interrupted) before the database goes away."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ---- reading ------------------------------------------------------------------------------

    async def get(self, job_id: str) -> ImportJobRecord | None:
        return await self.jobs.get(job_id)

    async def list_recent(self, requested_by: str | None, limit: int) -> list[ImportJobRecord]:
        return await self.jobs.list_recent(requested_by, limit)

    async def provenance(self, repository: str, tag: str | None = None, *, latest: bool = False,
                         limit: int = 100) -> list[ProvenanceRecord]:
        """Newest first; with ``latest`` one record per tag (the tag's current provenance)."""
        if latest:
            return await self.provenance_store.latest(repository, tag)
        return await self.provenance_store.history(repository, tag, limit)

    async def local_tags(self, repository: str, limit: int) -> tuple[list[LocalTag], bool, list[ProvenanceRecord]]:
        """The first ``limit`` tags the local store holds, each with its digest and newest provenance;
        whether more tags follow; and the newest by-digest import record (tag None), if any.

        Local metadata only: no cache routing, no upstream request, no manifest bytes read. Raises
        ``NameUnknown`` for a repository the store does not hold.
        """
        page = await self.registry.listing.tags(repository, limit, None)
        latest = await self.provenance_store.latest(repository)
        by_tag = {r.tag: r for r in latest}
        found = []
        for tag in page.items:
            digest = await self.registry.manifests.digest_of(repository, tag)
            if digest is not None:  # deleted between the listing and now
                found.append(LocalTag(tag, digest, by_tag.get(tag)))
        return found, page.more, [r for r in latest if r.tag is None]
