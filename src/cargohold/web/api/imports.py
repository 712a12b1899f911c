"""``/api/v1/imports``: server-side import of images, indexes and artifacts from another registry.

Importing writes, so every target needs ``content/write`` on its repository.
Source credentials are given inline (``username`` + ``password``, used for this
import only and never stored or echoed) or as a credential set — credential
sets are the operators' logins, so only admins may name one, and only for
the registry it belongs to.

The job's lifetime (progress, heartbeat, end, pruning) is the
``transfer.jobs.ImportJobs`` service's; this module parses, checks access and
renders. Jobs live in the database, so any worker — and a
restarted server — answers ``GET /imports/{id}``. The worker running an import
writes its progress about once a second; that write is the heartbeat, and a
running job whose heartbeat stopped is reported as failed ("interrupted").
Provenance — source, source digest, who, when — is recorded by the importer
(``GET /provenance``); the audit log also has who imported what.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field

from ...auth.scopes import READ, WRITE
from ...cache.secrets import SecretKeyError
from ...oci.errors import Denied, NotFound, RegistryError
from ...oci.names import is_valid_name, is_valid_tag
from ...oci.reference import Reference
from ...transfer.importer import InvalidImport, Target
from ...transfer.jobs import Audit, ImportJobRecord
from ...transfer.jobs import ImportRequest as JobRequest
from ...upstream.client import Credentials
from ..codes import InvalidReference
from ..keys import CACHE, IMPORTS
from .common import (
    TEXT_PATTERN,
    Call,
    InModel,
    Operation,
    OutModel,
    QueryModel,
    api_problem,
    render,
)

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
                raise InvalidReference(f"{text!r}: {tag!r} is not a valid tag")
        if not is_valid_name(name):
            raise InvalidReference(f"{text!r} is not REPOSITORY[:TAG]")
        found.append(Target(name, tag if tag is not None else source.tag))
    return list(dict.fromkeys(found))


async def _credentials(call: Call, body: ImportRequest, source: Reference) -> Credentials | None:
    if body.credential_set is not None:
        if body.username is not None or body.password is not None:
            raise InvalidImport("give a credential set or a username and password, not both")
        if not call.caller.admin:
            raise Denied(f"{call.actor} may not use credential sets (admins only)")
        admin = call.request.app[CACHE].admin
        await admin.check_credential_set(body.credential_set, source.registry)
        try:
            username, password = await admin.credentials_for(body.credential_set)
        except SecretKeyError:
            raise InvalidImport("the server cannot decrypt that credential set (its secret key changed)") from None
        return Credentials(username, password)
    if (body.username is None) != (body.password is None):
        raise InvalidImport("give both username and password")
    if body.username is not None and body.password is not None:
        return Credentials(body.username, body.password)
    return None


def _audit(call: Call) -> Audit | None:
    """Writes the audit log when the job ends; read now, a background import outlives its request."""
    auth, actor, client = call.auth, call.actor, call.client
    if auth is None:
        return None

    async def audit(target: Target, outcome: str, detail: dict[str, object]) -> None:
        await auth.audit(actor, client, "import", str(target)[:100], outcome, detail)

    return audit


async def create_import(call: Call) -> web.Response:
    body: ImportRequest = call.body
    try:
        source = Reference.parse(body.source)
    except RegistryError as exc:
        raise InvalidReference(f"{body.source[:200]!r} is not an image reference: {exc.message}") from None
    targets = _targets(body, source)
    for target in targets:
        if not call.caller.may(target.repository, WRITE):
            await call.audit("import", str(target)[:100], "denied", {"source": body.source})
            raise Denied(f"{call.actor} may not write to {target.repository}")
        await call.request.app[CACHE].admin.check_not_cached(target.repository)
    credentials = await _credentials(call, body, source)
    jobs = call.request.app[IMPORTS]
    job = await jobs.create(body.source, targets, call.actor)
    caller = call.caller
    request = JobRequest(
        body.source, targets, call.actor, credentials, body.insecure, body.force, body.platforms,
        readable=lambda repository: caller.may(repository, READ),
    )
    location = {"Location": f"/api/v1/imports/{job.id}"}
    if not body.wait:
        jobs.start(job, request, _audit(call))
        return render(_view(job), 202, location)
    failure = await jobs.run(job, request, _audit(call))
    if failure is not None:
        return api_problem(failure, {"import_id": job.id})
    finished = await jobs.get(job.id)
    assert finished is not None
    return render(_view(finished), 201, location)


_ID = re.compile(r"^[0-9a-f]{32}$")


async def get_import(call: Call) -> web.Response:
    job_id = call.request.match_info["id"]
    job = await call.request.app[IMPORTS].get(job_id) if _ID.fullmatch(job_id) else None
    if job is None or (job.requested_by != call.actor and not call.caller.admin):
        raise NotFound(f"no import {job_id[:40]!r}")
    return render(_view(job))


async def list_imports(call: Call) -> web.Response:
    q: ImportListQuery = call.query
    jobs = await call.request.app[IMPORTS].list_recent(None if call.caller.admin else call.actor, q.limit)
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
