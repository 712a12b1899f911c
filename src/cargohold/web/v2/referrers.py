"""``/v2/<name>/referrers/<digest>``: always an OCI index, possibly empty, optionally filtered."""

from __future__ import annotations

from aiohttp import web

from ...oci import mediatypes as mt
from .cache import CACHE_HEADER, cache_route, cache_service
from .common import name, registry


async def list_referrers(request: web.Request) -> web.Response:
    artifact_type = request.query.get("artifactType") or None
    route = cache_route(request)
    result = None
    if route is not None:
        result = await cache_service(request).refresh_referrers(route, request.match_info["digest"])
    body = await registry(request).referrers.index(name(request), request.match_info["digest"], artifact_type)
    headers = {"Content-Type": mt.OCI_INDEX}
    if artifact_type:
        headers["OCI-Filters-Applied"] = "artifactType"
    if result is not None:
        headers[CACHE_HEADER] = result
    return web.Response(body=body, headers=headers)
