"""``/api/v1/provenance``: where a repository's imported content came from.

Every import and every sync run records, per target tag, the source reference,
the digest the source served, when, who asked and how (``via``: import or
sync). The repository is a query parameter, not a path segment, because
repository names contain slashes. Reading needs ``content/read`` on the
repository — the same right that lets one pull what the records describe.
"""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import Field

from ...auth.scopes import READ
from ...oci.errors import Denied
from ...oci.names import NAME_PATTERN, TAG_PATTERN
from ...transfer.jobs import ProvenanceRecord
from ..keys import IMPORTS
from .common import Call, Operation, OutModel, QueryModel, render


class ProvenanceQuery(QueryModel):
    repository: str = Field(pattern=f"^{NAME_PATTERN}$", max_length=255, description="a local repository, e.g. library/alpine")
    tag: str | None = Field(None, pattern=f"^{TAG_PATTERN}$", description="only this tag's records")
    latest: bool = Field(False, description="only the newest record per tag (the tag's current provenance)")
    limit: int = Field(100, ge=1, le=1000, description="records at most (without latest)")


class Provenance(OutModel):
    repository: str
    tag: str | None = Field(description="null for an import by digest only")
    digest: str = Field(description="what the import stored (the top manifest)")
    source: str = Field(description="the source reference, normalized: registry/repository[:tag][@digest]")
    source_digest: str = Field(description="the digest the source served; equal to digest, manifests are copied byte-exact")
    via: str = Field(description="import or sync")
    job: str | None = Field(description="the import job id, or RULE#RUN for a sync")
    requested_by: str
    imported_at: datetime


def _view(record: ProvenanceRecord) -> Provenance:
    return Provenance(
        repository=record.repository, tag=record.tag, digest=record.digest, source=record.source,
        source_digest=record.source_digest, via=record.via, job=record.job, requested_by=record.requested_by,
        imported_at=record.imported_at,
    )


async def list_provenance(call: Call) -> web.Response:
    q: ProvenanceQuery = call.query
    if not call.caller.may(q.repository, READ):
        raise Denied(f"{call.actor} may not read {q.repository}")
    records = await call.request.app[IMPORTS].provenance(q.repository, q.tag, latest=q.latest, limit=q.limit)
    return render([_view(r) for r in records])


OPERATIONS = [
    Operation(
        "GET", "/provenance", list_provenance, "listProvenance",
        "Where a repository's imported tags came from: source, source digest, when, who, via import or sync", "imports",
        query=ProvenanceQuery, response=list[Provenance], access="authenticated",
        description="Needs content/read on the repository. Newest first; with latest=true one record per tag. "
        "An empty list: nothing was imported into it (or it does not exist).",
    ),
]
