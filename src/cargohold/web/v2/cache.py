"""Which /v2 requests belong to a cache namespace, before anyone checks rights on the name.

Runs ahead of the auth middleware because mirror mode changes the name:
containerd asks ``/v2/library/alpine/manifests/3.20?ns=docker.io`` and the
Docker daemon (``registry-mirrors``) asks ``/v2/library/alpine/...`` with no
hint at all; both mean the local cache repository (``hub/alpine``), and it
is on that name that rights are checked and content is stored.
"""

from __future__ import annotations

from aiohttp import web

from ...cache.rules import Route
from ...cache.service import CacheService
from ...oci.errors import NameUnknown
from ..auth import Handler
from ..keys import CACHE

CACHE_HEADER = "X-Cache"
ROUTE = "cache_route"


def cache_service(request: web.Request) -> CacheService:
    return request.app[CACHE]


def cache_route(request: web.Request) -> Route | None:
    return request.get(ROUTE)


@web.middleware
async def cache_routing(request: web.Request, handler: Handler) -> web.StreamResponse:
    name = request.match_info.get("name")
    if name is None or not request.path.startswith("/v2/"):
        return await handler(request)
    service = cache_service(request)
    rules = await service.rules()
    if not rules:
        return await handler(request)
    namespace = request.query.get("ns")
    route = None
    if namespace:
        route = rules.route_upstream(namespace, name)
        if route is None:
            raise NameUnknown(f"no cache rule serves {namespace}/{name}", detail={"ns": namespace, "name": name})
    else:
        route = rules.route(name)
        if route is None and rules.dockerhub_mirror is not None:
            mirrored = rules.route_upstream("docker.io", name)
            if mirrored is not None and mirrored.rule is rules.dockerhub_mirror:
                route = mirrored
    if route is not None:
        request.match_info["name"] = route.local
        request[ROUTE] = route
    return await handler(request)
