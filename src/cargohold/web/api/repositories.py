"""``/api/v1/repositories``: delete a repository; ``/api/v1/repositories/tags``: its local tags and provenance.

What ``cargohold repository show`` prints, in one request. The answer comes
from the local store only — no cache routing, no upstream request, no manifest
bytes read — so on a cache namespace it lists what was pulled (or imported),
not what the upstream has (``/v2/NAME/tags/list`` answers that). The
repository is a query parameter because repository names contain slashes.
Reading needs ``content/read`` or ``metadata/read`` on the repository.

Deleting (``cargohold repository delete``) needs ``content/delete`` on the
repository, the right that deletes its manifests one by one over ``/v2``, and
is audited. A cache namespace is refused: its content is the upstream's,
evicted with ``cargohold cache evict``, and a deleted copy would simply be
pulled again.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from ...auth.scopes import DELETE, METADATA, READ
from ...cache.admin import CacheNamespaceRefused
from ...oci.errors import Denied, NameUnknown, NotFound
from ...oci.names import NAME_PATTERN
from ..keys import CACHE, IMPORTS, REGISTRY
from .common import Call, Operation, OutModel, QueryModel, render
from .provenance import Provenance
from .provenance import _view as provenance_view

MAX_TAGS = 1000


class TagsQuery(QueryModel):
    repository: str = Field(pattern=f"^{NAME_PATTERN}$", max_length=255, description="a local repository, e.g. library/alpine")
    limit: int = Field(200, ge=1, le=MAX_TAGS, description="tags at most, in tag order")


class RepositoryQuery(QueryModel):
    repository: str = Field(pattern=f"^{NAME_PATTERN}$", max_length=255, description="a local repository, e.g. team/app")


class DeletedRepository(OutModel):
    repository: str
    tags: int = Field(description="tags deleted with it")
    manifests: int = Field(description="manifests deleted with it (their blobs stay in the store, shared by digest)")


class LocalTag(OutModel):
    tag: str
    digest: str = Field(description="the manifest the tag names in the local store")
    provenance: Provenance | None = Field(description="the tag's newest import or sync record; null if never imported")


class RepositoryTags(OutModel):
    repository: str
    tags: list[LocalTag]
    more_tags: bool = Field(description="more tags follow than limit allowed")
    untagged_imports: list[Provenance] = Field(description="the newest import by digest only (no tag), if any")


async def list_tags(call: Call) -> web.Response:
    q: TagsQuery = call.query
    if not (call.caller.may(q.repository, READ) or call.caller.may(q.repository, METADATA)):
        raise Denied(f"{call.actor} may not read {q.repository}")
    try:
        tags, more, untagged = await call.request.app[IMPORTS].local_tags(q.repository, q.limit)
    except NameUnknown:
        raise NotFound(f"no repository {q.repository!r}") from None
    return render(RepositoryTags(
        repository=q.repository,
        tags=[LocalTag(tag=t.tag, digest=t.digest, provenance=provenance_view(t.provenance) if t.provenance else None)
              for t in tags],
        more_tags=more,
        untagged_imports=[provenance_view(r) for r in untagged],
    ))


async def delete_repository(call: Call) -> web.Response:
    name = call.query.repository
    if not call.caller.may(name, DELETE):
        await call.audit("repository.delete", name, "denied")
        raise Denied(f"{call.actor} may not delete {name}")
    route = await call.request.app[CACHE].route(name)
    if route is not None:
        raise CacheNamespaceRefused(
            f"{name} is in a cache namespace (cache rule {route.rule.name!r}): its content is the upstream's; "
            "use `cargohold cache evict` to drop cached copies"
        )
    try:
        removed = await call.request.app[REGISTRY].repositories.delete(name)
    except NameUnknown:
        raise NotFound(f"no repository {name!r}") from None
    await call.audit("repository.delete", name, "ok", {"tags": removed.tags, "manifests": removed.manifests})
    return render(DeletedRepository(repository=name, tags=removed.tags, manifests=removed.manifests))


OPERATIONS = [
    Operation(
        "DELETE", "/repositories", delete_repository, "deleteRepository",
        "Delete a repository with its tags, manifests and blob links", "repositories",
        query=RepositoryQuery, response=DeletedRepository, access="authenticated", conflict="a cache namespace",
        description="Needs content/delete on the repository; audited as repository.delete. The repository is a query "
        "parameter because names contain slashes. 404 for a repository the store does not hold; 409 "
        "(CACHE_NAMESPACE) for a repository a cache rule serves.",
    ),
    Operation(
        "GET", "/repositories/tags", list_tags, "listRepositoryTags",
        "A repository's local tags with their digests and current provenance (no upstream request)", "imports",
        query=TagsQuery, response=RepositoryTags, access="authenticated",
        description="Needs content/read or metadata/read on the repository. Local store only: on a cache namespace, "
        "the tags pulled so far, never the upstream's. 404 for a repository the store does not hold.",
    ),
]
