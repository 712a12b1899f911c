"""``/api/v1/audit``: who did what, from where, newest first, a page at a time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import Field

from .common import Call, FilterText, Operation, OutModel, QueryModel, render

_MAX_ID = 2**31 - 1  # audit_events.id is a 32-bit INTEGER column


class AuditQuery(QueryModel):
    limit: int = Field(100, ge=1, le=1000, description="events per page")
    before: int | None = Field(None, ge=1, le=_MAX_ID, description="only events older than this id (the previous page's next)")
    actor: FilterText | None = Field(None, description="only events by this actor")
    action: FilterText | None = Field(None, description="only events of this action, e.g. user.create")


class AuditEvent(OutModel):
    id: int
    at: datetime
    actor: str
    client: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any] | None


class AuditPage(OutModel):
    events: list[AuditEvent]
    next: int | None = Field(description="pass as before= for the next page; null on the last page")


async def list_events(call: Call) -> web.Response:
    q: AuditQuery = call.query
    rows = await call.auth.identities.audit_events(q.limit + 1, q.before, q.actor, q.action)
    events = [AuditEvent.model_validate(r, from_attributes=True) for r in rows[: q.limit]]
    return render(AuditPage(events=events, next=events[-1].id if len(rows) > q.limit else None))


OPERATIONS = [
    Operation("GET", "/audit", list_events, "listAuditEvents", "Audit events, newest first", "audit", query=AuditQuery, response=AuditPage),
]
