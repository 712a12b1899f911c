"""``/api/v1/scope-maps``: named sets of rules (repository pattern → actions) that users and robots hold.

The scope map named ``anonymous`` is what callers without credentials may do;
it may only grant ``content/read`` and ``metadata/read``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from aiohttp import web
from pydantic import Field

from ...auth.scopes import REPOSITORY_PATTERN
from ...store.identities import ScopeMapRecord
from .common import TEXT_PATTERN, Call, InModel, Name, Operation, OutModel, created, no_content, not_found, render

Action = Literal["content/read", "content/write", "content/delete", "metadata/read"]
Description = Annotated[str, Field(max_length=1024, pattern=TEXT_PATTERN)]


class Rule(InModel):
    repository: str = Field(
        max_length=255, pattern=REPOSITORY_PATTERN, description="a repository name, ns/* (everything below ns) or *"
    )
    actions: list[Action] = Field(min_length=1, max_length=8)


Rules = Annotated[list[Rule], Field(max_length=100)]


class ScopeMap(OutModel):
    name: str
    description: str
    rules: list[Rule]
    created_at: datetime

    @classmethod
    def of(cls, record: ScopeMapRecord) -> "ScopeMap":
        return cls.model_validate(
            {"name": record.name, "description": record.description, "rules": record.rules, "created_at": record.created_at}
        )


class ScopeMapCreate(InModel):
    name: Name
    description: Description = ""
    rules: Rules


class ScopeMapReplace(InModel):
    description: Description = ""
    rules: Rules


def _rules(rules: list[Rule]) -> list[dict[str, object]]:
    return [{"repository": r.repository, "actions": list(r.actions)} for r in rules]


async def list_scope_maps(call: Call) -> web.Response:
    return render([ScopeMap.of(m) for m in await call.auth.identities.list_scope_maps()])


async def create_scope_map(call: Call) -> web.Response:
    body: ScopeMapCreate = call.body
    record = await call.auth.create_scope_map(
        body.name, body.description, _rules(body.rules), actor=call.actor, client=call.client
    )
    return created(ScopeMap.of(record), f"/scope-maps/{record.name}")


async def get_scope_map(call: Call) -> web.Response:
    name = call.name("scope map")
    record = await call.auth.identities.get_scope_map(name)
    if record is None:
        raise not_found("scope map", name)
    return render(ScopeMap.of(record))


async def replace_scope_map(call: Call) -> web.Response:
    name = call.name("scope map")
    body: ScopeMapReplace = call.body
    record = await call.auth.replace_scope_map(name, body.description, _rules(body.rules), actor=call.actor, client=call.client)
    if record is None:
        raise not_found("scope map", name)
    return render(ScopeMap.of(record))


async def delete_scope_map(call: Call) -> web.Response:
    name = call.name("scope map")
    if not await call.auth.delete_scope_map(name, actor=call.actor, client=call.client):
        raise not_found("scope map", name)
    return no_content()


OPERATIONS = [
    Operation("GET", "/scope-maps", list_scope_maps, "listScopeMaps", "List scope maps", "scope-maps", response=list[ScopeMap]),
    Operation(
        "POST", "/scope-maps", create_scope_map, "createScopeMap", "Create a scope map", "scope-maps", status=201,
        body=ScopeMapCreate, response=ScopeMap, conflict="a scope map of that name exists", action="scope_map.create",
        location=True,
    ),
    Operation("GET", "/scope-maps/{name}", get_scope_map, "getScopeMap", "Show a scope map", "scope-maps", response=ScopeMap),
    Operation(
        "PUT", "/scope-maps/{name}", replace_scope_map, "replaceScopeMap",
        "Replace a scope map's description and rules (effective at once, in every worker)", "scope-maps",
        body=ScopeMapReplace, response=ScopeMap, action="scope_map.update",
    ),
    Operation(
        "DELETE", "/scope-maps/{name}", delete_scope_map, "deleteScopeMap", "Delete a scope map nobody uses", "scope-maps",
        status=204, conflict="a user or robot uses the scope map", action="scope_map.delete",
    ),
]
