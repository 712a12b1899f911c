"""``/api/v1/imports``: server-side import of images, indexes and artifacts from another registry.

Importing writes, so every target needs ``content/write`` on its repository.
Source credentials are given inline (``username`` + ``password``, used for this
import only and never stored or echoed) or as a credential set — credential
sets are the operators' logins, so only admins may name one, and only for
the registry it belongs to.

Job status lives in the memory of the worker process that ran the import (a
first step): ``GET /imports/{id}`` answers from that worker only, so with
several workers a ``wait: false`` import may be polled through another worker
that does not know it (404). Waiting imports (the default) need no polling.
Provenance — source, source digest, who, when — goes to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
from ...transfer.importer import Importer, ImportFailed, Target
from ...upstream.client import Credentials
from ..keys import CACHE, REGISTRY, SETTINGS
from .common import TEXT_PATTERN, ApiError, Call, InModel, Operation, OutModel, render

log = logging.getLogger("cargohold.transfer")

MAX_JOBS = 1000  # finished jobs kept per worker; the oldest finished ones go first
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
    bytes_done: int
    blobs_done: int
    error: str | None
    requested_by: str
    started_at: datetime
    finished_at: datetime | None


@dataclass
class _Job:
    id: str
    source: str
    targets: list[Target]
    requested_by: str
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    state: str = "running"
    source_digest: str | None = None
    bytes_done: int = 0
    blobs_done: int = 0
    error: str | None = None
    finished_at: datetime | None = None
    failure: ImportFailed | None = None

    def view(self) -> ImportJob:
        return ImportJob(
            id=self.id, state=self.state, source=self.source, source_digest=self.source_digest,  # type: ignore[arg-type]
            targets=[str(t) for t in self.targets], bytes_done=self.bytes_done, blobs_done=self.blobs_done,
            error=self.error, requested_by=self.requested_by, started_at=self.started_at, finished_at=self.finished_at,
        )

    def progress(self, nbytes: int, blobs: int) -> None:
        self.bytes_done, self.blobs_done = nbytes, blobs


_JOBS: dict[str, _Job] = {}
_TASKS: set[asyncio.Task[None]] = set()


def _remember(job: _Job) -> None:
    if len(_JOBS) >= MAX_JOBS:
        for key in [k for k, j in _JOBS.items() if j.state != "running"][: len(_JOBS) - MAX_JOBS + 1]:
            del _JOBS[key]
    _JOBS[job.id] = job


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


async def _run(call: Call, job: _Job, importer: Importer, body: ImportRequest, credentials: Credentials | None) -> None:
    client = call.client  # read now: a background import outlives its request

    async def audit(target: Target, outcome: str, detail: dict[str, object]) -> None:
        if call.auth is not None:
            await call.auth.audit(call.actor, client, "import", str(target)[:100], outcome, detail)

    try:
        result = await importer.run(
            body.source, job.targets, credentials, insecure=body.insecure, force=body.force,
            platforms=body.platforms, progress=job.progress,
        )
    except ImportFailed as exc:
        job.state, job.error, job.failure = "failed", str(exc), exc
        job.finished_at = datetime.now(UTC)
        for target in job.targets:
            await audit(target, "failed", {"import_id": job.id, "source": body.source, "error": str(exc)[:500]})
        return
    except Exception as exc:  # a bug; still end the job, so that nobody polls forever
        log.exception("import %s failed", job.id)
        job.state, job.error = "failed", f"internal error: {type(exc).__name__}"
        job.finished_at = datetime.now(UTC)
        raise
    job.state, job.source_digest = "succeeded", result.source_digest
    job.bytes_done = result.fetched_bytes
    job.finished_at = datetime.now(UTC)
    for target in job.targets:
        await audit(target, "ok", {
            "import_id": job.id, "source": body.source, "source_digest": result.source_digest,
            "finished_at": job.finished_at.isoformat(), "fetched_bytes": result.fetched_bytes,
        })


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
    credentials = await _credentials(call, body, source)
    app = call.request.app
    importer = Importer(app[REGISTRY], app[SETTINGS])
    job = _Job(uuid.uuid4().hex, body.source, targets, call.actor)
    _remember(job)
    if not body.wait:
        task = asyncio.ensure_future(_run(call, job, importer, body, credentials))
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
        return render(job.view(), 202, {"Location": f"/api/v1/imports/{job.id}"})
    await _run(call, job, importer, body, credentials)
    if job.failure is not None:
        failure = job.failure
        raise ApiError(failure.status, "Import failed", str(failure), failure.code, {"import_id": job.id})
    return render(job.view(), 201, {"Location": f"/api/v1/imports/{job.id}"})


_ID = re.compile(r"^[0-9a-f]{32}$")


async def get_import(call: Call) -> web.Response:
    job_id = call.request.match_info["id"]
    job = _JOBS.get(job_id) if _ID.fullmatch(job_id) else None
    if job is None or (job.requested_by != call.actor and not call.caller.admin):
        raise ApiError(404, "Not found", f"no import {job_id[:40]!r} in this worker", "NOT_FOUND")
    return render(job.view())


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
        conflict="a target tag points to another digest (use force)",
        description="Needs content/write on every target repository. 202 with wait=false. Failures: 404 source missing, "
        "409 target tag elsewhere, 422 bad input or credentials refused, 502 the source failed. No target tag is set "
        "unless everything was copied.",
    ),
    Operation(
        "GET", "/imports/{id}", get_import, "getImport", "An import's state (from the worker that runs it)", "imports",
        response=ImportJob, access="authenticated",
        path_params={"id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}},
    ),
]
