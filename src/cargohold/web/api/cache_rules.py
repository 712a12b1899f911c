"""``/api/v1/cache-rules``: which local namespace is a pull-through cache of which upstream repositories.

A rule maps a *target* (``hub/*``, or one repository) to a *source*
(``docker.io/library/*``, ``ghcr.io/*``, or one upstream repository); the
answer shows both in the normalized spelling the cache matches
(``docker.io/alpine`` → ``docker.io/library/alpine``). ``cache/admin.py``
checks everything: the grammar, overlaps with other rules, the credential
set, and that the upstream is not a private address.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import Field

from ...cache.admin import CacheAdmin
from ...cache.rules import DEFAULT_TAG_TTL_SECONDS
from ...store.cache import RuleRecord
from ..keys import CACHE
from .common import TEXT_PATTERN, Call, InModel, Name, Operation, OutModel, created, no_content, not_found, render

Platforms = Literal["eager", "on-demand"]
SourceText = Annotated[
    str,
    Field(
        min_length=1, max_length=255, pattern=TEXT_PATTERN,
        description="upstream: registry/repository, registry/namespace/* or registry/* (docker.io/library/*, ghcr.io/*)",
    ),
]
TargetText = Annotated[
    str,
    Field(
        min_length=1, max_length=255, pattern=TEXT_PATTERN,
        description="local repository, or namespace ending in /* (hub/*); the most specific rule wins",
    ),
]
TagTtl = Annotated[
    int, Field(ge=0, le=2**31 - 1, description="how long a tag is served without asking upstream (HEAD) again; 0: every pull")
]
PLATFORMS_DESCRIPTION = "eager: fetch every platform of a multi-arch index on first pull; on-demand: only what clients pull"


def cache_admin(call: Call) -> CacheAdmin:
    """The cache service's admin (``cache/admin.py``), which every cache-rule and credential-set operation goes through."""
    return call.request.app[CACHE].admin


class CacheRule(OutModel):
    name: str
    source: str = Field(description="normalized upstream (docker.io/alpine reads docker.io/library/alpine)")
    target: str
    credential_set: str | None = Field(description="the upstream login used, if any")
    tag_ttl_seconds: int
    platforms: Platforms = Field(description=PLATFORMS_DESCRIPTION)
    insecure: bool = Field(description="talk to the upstream over plain HTTP (a host:port on a trusted network)")
    dockerhub_mirror: bool = Field(description="the rule that answers Docker Hub mirror requests (registry-mirrors)")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: RuleRecord) -> CacheRule:
        return cls(
            name=record.name, source=record.source, target=record.target, credential_set=record.credential_set,
            tag_ttl_seconds=record.tag_ttl_seconds, platforms="eager" if record.eager_platforms else "on-demand",
            insecure=record.insecure, dockerhub_mirror=record.dockerhub_mirror,
            created_at=record.created_at, updated_at=record.updated_at,
        )


class CacheRuleCreate(InModel):
    name: Name
    source: SourceText
    target: TargetText
    credential_set: Name | None = Field(None, description="a credential set whose login server is the source's registry")
    tag_ttl_seconds: TagTtl = DEFAULT_TAG_TTL_SECONDS
    platforms: Platforms = Field("on-demand", description=PLATFORMS_DESCRIPTION)
    insecure: bool = False
    dockerhub_mirror: bool = False


class CacheRuleUpdate(InModel):
    """Only the fields given change; ``credential_set: null`` removes the credential set."""

    source: SourceText | None = None
    target: TargetText | None = None
    credential_set: Name | None = Field(None, description="null: no credential set; absent: unchanged")
    tag_ttl_seconds: TagTtl | None = None
    platforms: Platforms | None = None
    insecure: bool | None = None
    dockerhub_mirror: bool | None = None


def _detail(record: RuleRecord) -> dict[str, Any]:
    """What the audit log keeps of a rule."""
    return {
        "source": record.source, "target": record.target, "credential_set": record.credential_set,
        "tag_ttl_seconds": record.tag_ttl_seconds, "eager_platforms": record.eager_platforms,
        "insecure": record.insecure, "dockerhub_mirror": record.dockerhub_mirror,
    }


async def list_rules(call: Call) -> web.Response:
    return render([CacheRule.of(r) for r in await cache_admin(call).list_rules()])


async def create_rule(call: Call) -> web.Response:
    body: CacheRuleCreate = call.body
    record = await cache_admin(call).create_rule(
        body.name, body.source, body.target, credential_set=body.credential_set, tag_ttl_seconds=body.tag_ttl_seconds,
        eager_platforms=body.platforms == "eager", insecure=body.insecure, dockerhub_mirror=body.dockerhub_mirror,
    )
    await call.audit("cache_rule.create", record.name, "ok", _detail(record))
    return created(CacheRule.of(record), f"/cache-rules/{record.name}")


async def get_rule(call: Call) -> web.Response:
    name = call.name("cache rule")
    record = await cache_admin(call).get_rule(name)
    if record is None:
        raise not_found("cache rule", name)
    return render(CacheRule.of(record))


async def update_rule(call: Call) -> web.Response:
    name = call.name("cache rule")
    body: CacheRuleUpdate = call.body
    changes: dict[str, Any] = {}
    for field in ("source", "target", "tag_ttl_seconds", "insecure", "dockerhub_mirror"):
        value = getattr(body, field)
        if value is not None:
            changes[field] = value
    if body.platforms is not None:
        changes["eager_platforms"] = body.platforms == "eager"
    if "credential_set" in body.model_fields_set:
        changes["credential_set"] = body.credential_set
    record = await cache_admin(call).update_rule(name, **changes)
    if record is None:
        raise not_found("cache rule", name)
    await call.audit("cache_rule.update", name, "ok", _detail(record))
    return render(CacheRule.of(record))


async def delete_rule(call: Call) -> web.Response:
    name = call.name("cache rule")
    if not await cache_admin(call).delete_rule(name):
        raise not_found("cache rule", name)
    await call.audit("cache_rule.delete", name)
    return no_content()


CONFLICT = "another rule has that name or target (or is already the Docker Hub mirror), or a sync rule copies into a repository the target would cover"
OPERATIONS = [
    Operation("GET", "/cache-rules", list_rules, "listCacheRules", "List cache rules", "cache-rules", response=list[CacheRule]),
    Operation(
        "POST", "/cache-rules", create_rule, "createCacheRule", "Create a cache rule", "cache-rules", status=201,
        body=CacheRuleCreate, response=CacheRule, conflict=CONFLICT, action="cache_rule.create", location=True,
        description="A source on a loopback, private or link-local address is refused (422 UPSTREAM_NOT_ALLOWED) "
        "unless the server allows private upstreams.",
    ),
    Operation("GET", "/cache-rules/{name}", get_rule, "getCacheRule", "Show a cache rule", "cache-rules", response=CacheRule),
    Operation(
        "PATCH", "/cache-rules/{name}", update_rule, "updateCacheRule",
        "Change a cache rule (effective at once, in every worker)", "cache-rules",
        body=CacheRuleUpdate, response=CacheRule, conflict=CONFLICT, action="cache_rule.update",
    ),
    Operation(
        "DELETE", "/cache-rules/{name}", delete_rule, "deleteCacheRule",
        "Delete a cache rule", "cache-rules", status=204, action="cache_rule.delete",
    ),
]
