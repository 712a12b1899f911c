"""``/api/v1``: the management API (users, robot tokens, scope maps, refresh tokens, keys, audit, cache rules,
credential sets).

One small module per resource; each lists its operations, and this route
table is all the router and the OpenAPI document know about.
"""

from __future__ import annotations

from aiohttp import web

from . import audit, cache, cache_rules, credential_sets, keys, me, openapi, refresh_tokens, scope_maps, tokens, users
from . import imports, provenance, repositories, sync_rules
from .common import API_PREFIX, Operation, endpoint, served_without_auth

RESOURCES: list[Operation] = [
    *me.OPERATIONS,
    *users.OPERATIONS,
    *tokens.OPERATIONS,
    *scope_maps.OPERATIONS,
    *audit.OPERATIONS,
    *refresh_tokens.OPERATIONS,
    *keys.OPERATIONS,
    *served_without_auth(cache_rules.OPERATIONS),
    *served_without_auth(credential_sets.OPERATIONS),
    *served_without_auth(cache.OPERATIONS),
    *served_without_auth(imports.OPERATIONS),
    *served_without_auth(provenance.OPERATIONS),
    *served_without_auth(repositories.OPERATIONS),
    *served_without_auth(sync_rules.OPERATIONS),
]
OPERATIONS: list[Operation] = [*RESOURCES, openapi.operation(RESOURCES)]


def add_routes(app: web.Application) -> None:
    for op in OPERATIONS:
        app.router.add_route(op.method, API_PREFIX + op.path, endpoint(op))
