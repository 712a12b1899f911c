"""``/api/v1/imports``: server-side import of images, indexes and artifacts from another registry.

Importing writes, so every target needs ``content/write`` on its repository.
Source credentials are given inline (``username`` + ``password``, used for this
import only and never stored or echoed) or as a credential set — credential
sets are the operators' logins, so only admins may name one, and only for
the registry it belongs to.

Jobs live in the database (``store.imports``), so any worker — and a
restarted server — answers ``GET /imports/{id}``. The worker running an import
writes its progress about once a second; that write is the heartbeat, and a
running job whose heartbeat stopped is reported as failed ("interrupted").
Provenance — source, source digest, who, when — is recorded by the importer
(``GET /provenance``); the audit log also has who imported what.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field

from ...auth.scopes import WRITE
from ...cache.admin import normalize_login_server
from ...cache.secrets import SecretKeyError
from ...oci.errors import RegistryError
from ...oci.names import is_valid_name, is_valid_tag
from ...oci.reference import Reference
from ...store.cache import UnknownCredentialSet
from ...store.imports import (
    INTERRUPTED,
    INTERRUPTED_CODE,
    ImportJobRecord,
    ImportJobStore,
)
from ...transfer.importer import Importer, ImportFailed, Target
from ...upstream.client import Credentials
from ..keys import CACHE, REGISTRY, SETTINGS
from .common import (
    TEXT_PATTERN,
    ApiError,
    Call,
    InModel,
    Operation,
    OutModel,
    QueryModel,
    render,
)

log = logging.getLogger("cargohold.transfer")

PROGRESS_EVERY = 1.0  # seconds between progress writes while bytes flow
HEARTBEAT = 10.0  # seconds between writes while nothing moves (a stalled source): the job is still alive
_PLATFORM = r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$"

SourceReference = Annotated[
    str, Field(min_length=1, max_length=1000, pattern=TEXT_PATTERN,
               description="any registry reference: docker.io/library/alpine:3.20, host:5000/x:1, …@sha256:…")
]
TargetReference = Annotated[
    str, Field(min_length=1, max_length=400, description="a local REPOSITORY[:TAG]; without a tag, the source's tag")
]


class ImportRequest(InModel):
    source: SourceReference
    targets: list[TargetReference] | None = Field(
        None, max_length=20, description="default: the source's repository path and tag (library/alpine:3.20)"
    )
    credential_set: str | None = Field(None, max_length=64, description="an admin's credential set for the source registry")
    username: str | None = Field(None, max_length=255, pattern=TEXT_PATTERN)
    password: str | None = Field(None, max_length=8192, description="used for this import only; never stored")
    insecure: bool = Field(False, description="plain http to the source")
    force: bool = Field(False, description="move a target tag that points elsewhere")
    platforms: list[Annotated[str, Field(pattern=_PLATFORM)]] | None = Field(
        None, max_length=32, description="only these os/arch[/variant] of an index (default: all)"
    )
    wait: bool = Field(True, description="answer when done (201), or at once with the running job (202)")


class ImportJob(OutModel):
    id: str
    state: Literal["running", "succeeded", "failed"]
    source: str
    source_digest: str | None
    targets: list[str]
    bytes_done: int = Field(description="bytes fetched from the source so far")
    blobs_done: int = Field(description="blobs in place so far (fetched, linked, or already there)")
    bytes_total: int | None = Field(description="bytes to fetch at most; null until the graph is known")
    blobs_total: int | None = Field(description="blobs to put in place; null until the graph is known")
    error: str | None
    error_code: str | None = Field(description="e.g. SOURCE_NOT_FOUND, SOURCE_AUTH_FAILED, TARGET_EXISTS, INTERRUPTED")
    requested_by: str
    started_at: datetime
    updated_at: datetime = Field(description="the heartbeat of a running job")
    finished_at: datetime | None


class ImportListQuery(QueryModel):
    limit: int = Field(50, ge=1, le=1000, description="jobs to list, newest first")


def _view(job: ImportJobRecord) -> ImportJob:
    return ImportJob(
        id=job.id, state=job.state, source=job.source, source_digest=job.source_digest,  # type: ignore[arg-type]
        targets=job.targets, bytes_done=job.bytes_done, blobs_done=job.blobs_done, bytes_total=job.bytes_total,
        blobs_total=job.blobs_total, error=job.error, error_code=job.error_code, requested_by=job.requested_by,
        started_at=job.started_at, updated_at=job.updated_at, finished_at=job.finished_at,
    )


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


_TASKS: set[asyncio.Task[None]] = set()


def _invalid(detail: str, code: str = "INVALID_IMPORT") -> ApiError:
    return ApiError(422, "Unprocessable content", detail, code)


def _targets(body: ImportRequest, source: Reference) -> list[Target]:
    if not body.targets:
        return [Target(source.repository, source.tag if source.tag or source.digest else "latest")]
    found = []
    for text in body.targets:
        name, tag = text, None
        colon, slash = text.rfind(":"), text.rfind("/")
        if colon > slash:
            name, tag = text[:colon], text[colon + 1 :]
            if not is_valid_tag(tag):
                raise _invalid(f"{text!r}: {tag!r} is not a valid tag", "INVALID_REFERENCE")
        if not is_valid_name(name):
            raise _invalid(f"{text!r} is not REPOSITORY[:TAG]", "INVALID_REFERENCE")
        found.append(Target(name, tag if tag is not None else source.tag))
    return list(dict.fromkeys(found))


async def _credentials(call: Call, body: ImportRequest, source: Reference) -> Credentials | None:
    if body.credential_set is not None:
        if body.username is not None or body.password is not None:
            raise _invalid("give a credential set or a username and password, not both")
        if not call.caller.admin:
            raise ApiError(403, "Forbidden", f"{call.actor} may not use credential sets (admins only)", "DENIED")
        admin = call.request.app[CACHE].admin
        info = await admin.get_credential_set(body.credential_set)
        if info is None:
            raise UnknownCredentialSet(f"credential set {body.credential_set!r} does not exist")
        if normalize_login_server(info.login_server) != source.registry:
            raise _invalid(
                f"credential set {body.credential_set!r} is for {info.login_server}, not {source.registry}",
                "CREDENTIAL_SET_MISMATCH",
            )
        try:
            username, password = await admin.credentials_for(body.credential_set)
        except SecretKeyError:
            raise _invalid("the server cannot decrypt that credential set (its secret key changed)") from None
        return Credentials(username, password)
    if (body.username is None) != (body.password is None):
        raise _invalid("give both username and password")
    if body.username is not None and body.password is not None:
        return Credentials(body.username, body.password)
    return None


async def _run(
    call: Call, store: ImportJobStore, job: ImportJobRecord, targets: list[Target], importer: Importer,
    body: ImportRequest, credentials: Credentials | None,
) -> ImportFailed | None:
    """Run the import and record its end; the failure (for a waiting request to answer with), or None."""
    client = call.client  # read now: a background import outlives its request

    async def audit(target: Target, outcome: str, detail: dict[str, object]) -> None:
        if call.auth is not None:
            await call.auth.audit(call.actor, client, "import", str(target)[:100], outcome, detail)

    counters = _Progress(store, job.id)
    writer: asyncio.Task[None] = asyncio.ensure_future(counters.write_loop())
    try:
        result = await importer.run(
            body.source, targets, credentials, insecure=body.insecure, force=body.force, platforms=body.platforms,
            progress=counters.progress, totals=counters.totals, requested_by=call.actor, via="import", job=job.id,
        )
    except ImportFailed as exc:
        await _stop(writer)
        await store.finish(
            job.id, "failed", bytes_done=counters.bytes_done, blobs_done=counters.blobs_done,
            bytes_total=counters.bytes_total, blobs_total=counters.blobs_total, error=str(exc), error_code=exc.code,
        )
        for target in targets:
            await audit(target, "failed", {"import_id": job.id, "source": body.source, "error": str(exc)[:500]})
        return exc
    except asyncio.CancelledError:  # the server is stopping: say so now rather than when the heartbeat is old
        await _stop(writer)
        try:
            await asyncio.shield(store.finish(
                job.id, "failed", bytes_done=counters.bytes_done, blobs_done=counters.blobs_done,
                bytes_total=counters.bytes_total, blobs_total=counters.blobs_total,
                error=INTERRUPTED, error_code=INTERRUPTED_CODE,
            ))
        except Exception:  # the database may be gone already; readers will tell by the heartbeat
            log.warning("import %s: could not record that it was interrupted", job.id, exc_info=True)
        raise
    except Exception as exc:  # a bug; still end the job, so that nobody polls forever
        await _stop(writer)
        log.exception("import %s failed", job.id)
        await store.finish(
            job.id, "failed", bytes_done=counters.bytes_done, blobs_done=counters.blobs_done,
            bytes_total=counters.bytes_total, blobs_total=counters.blobs_total,
            error=f"internal error: {type(exc).__name__}", error_code="INTERNAL_ERROR",
        )
        raise
    finally:
        writer.cancel()
    await _stop(writer)
    await store.finish(
        job.id, "succeeded", bytes_done=result.fetched_bytes, blobs_done=result.blobs,
        bytes_total=counters.bytes_total, blobs_total=counters.blobs_total, source_digest=result.source_digest,
    )
    for target in targets:
        await audit(target, "ok", {
            "import_id": job.id, "source": body.source, "source_digest": result.source_digest,
            "fetched_bytes": result.fetched_bytes,
        })
    return None


async def _stop(writer: asyncio.Task[None]) -> None:
    """Stop the progress writer and wait for it, so that its last write cannot land after the end."""
    writer.cancel()
    await asyncio.gather(writer, return_exceptions=True)


def _store(call: Call) -> ImportJobStore:
    return ImportJobStore(call.request.app[REGISTRY].stores.engine)


async def create_import(call: Call) -> web.Response:
    body: ImportRequest = call.body
    try:
        source = Reference.parse(body.source)
    except RegistryError as exc:
        raise _invalid(f"{body.source[:200]!r} is not an image reference: {exc.message}", "INVALID_REFERENCE") from None
    targets = _targets(body, source)
    for target in targets:
        if not call.caller.may(target.repository, WRITE):
            await call.audit("import", str(target)[:100], "denied", {"source": body.source})
            raise ApiError(403, "Forbidden", f"{call.actor} may not write to {target.repository}", "DENIED")
        await call.request.app[CACHE].admin.check_not_cached(target.repository)
    credentials = await _credentials(call, body, source)
    app = call.request.app
    importer = Importer(app[REGISTRY], app[SETTINGS])
    store = _store(call)
    try:
        await store.prune()
    except Exception:  # housekeeping must not stop an import
        log.warning("could not prune old import jobs", exc_info=True)
    job = await store.create(uuid.uuid4().hex, body.source, [str(t) for t in targets], call.actor)
    location = {"Location": f"/api/v1/imports/{job.id}"}
    if not body.wait:
        task = asyncio.ensure_future(_run(call, store, job, targets, importer, body, credentials))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
        return render(_view(job), 202, location)
    failure = await _run(call, store, job, targets, importer, body, credentials)
    if failure is not None:
        raise ApiError(failure.status, "Import failed", str(failure), failure.code, {"import_id": job.id})
    finished = await store.get(job.id)
    assert finished is not None
    return render(_view(finished), 201, location)


_ID = re.compile(r"^[0-9a-f]{32}$")


async def get_import(call: Call) -> web.Response:
    job_id = call.request.match_info["id"]
    job = await _store(call).get(job_id) if _ID.fullmatch(job_id) else None
    if job is None or (job.requested_by != call.actor and not call.caller.admin):
        raise ApiError(404, "Not found", f"no import {job_id[:40]!r}", "NOT_FOUND")
    return render(_view(job))


async def list_imports(call: Call) -> web.Response:
    q: ImportListQuery = call.query
    jobs = await _store(call).list_recent(None if call.caller.admin else call.actor, q.limit)
    return render([_view(j) for j in jobs])


OPERATIONS = [
    Operation(
        "POST", "/imports", create_import, "createImport",
        "Import an image, index or artifact from another registry (all platforms, referrers included)", "imports",
        status=201, body=ImportRequest, response=ImportJob, access="authenticated", location=True,
        answers={
            202: "wait=false: the job runs on; poll GET /imports/{id}",
            403: "The caller may not write to a target repository, or names a credential set without being an admin",
            502: "The source registry failed (unreachable, 5xx, or broke off); no target tag was set",
        },
        conflict="a target tag points to another digest (TARGET_EXISTS; use force), or a target is in a cache rule's namespace (TARGET_IS_CACHE)",
        description="Needs content/write on every target repository. 202 with wait=false. Failures: 404 source missing, "
        "409 target tag elsewhere, 422 bad input or credentials refused, 502 the source failed. No target tag is set "
        "unless everything was copied.",
    ),
    Operation(
        "GET", "/imports", list_imports, "listImports", "Recent imports, newest first (an admin's: everybody's)",
        "imports", query=ImportListQuery, response=list[ImportJob], access="authenticated",
        description="Non-admins see the imports they started; admins see all. Finished jobs are kept for 30 days, "
        "1000 at most.",
    ),
    Operation(
        "GET", "/imports/{id}", get_import, "getImport", "An import's state, bytes and blobs done, and why it failed",
        "imports", response=ImportJob, access="authenticated",
        path_params={"id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}},
        description="Any worker answers. A running job whose worker stopped (no heartbeat for 60 s) is reported as "
        "failed, error_code INTERRUPTED. Non-admins see only their own imports (404 otherwise).",
    ),
]
