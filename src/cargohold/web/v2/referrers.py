"""``/v2/<name>/referrers/<digest>``: always an OCI index, possibly empty, optionally filtered."""

from __future__ import annotations

from aiohttp import web

from ...oci import mediatypes as mt
from .cache import CACHE_HEADER
from .common import repository


async def list_referrers(request: web.Request) -> web.Response:
    artifact_type = request.query.get("artifactType") or None
    body, result = await repository(request).referrers(request.match_info["digest"], artifact_type)
    headers = {"Content-Type": mt.OCI_INDEX}
    if artifact_type:
        headers["OCI-Filters-Applied"] = "artifactType"
    if result is not None:
        headers[CACHE_HEADER] = result
    return web.Response(body=body, headers=headers)
