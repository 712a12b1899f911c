"""``/v2/<name>/referrers/<digest>``: always an OCI index, possibly empty, optionally filtered."""

from __future__ import annotations

import json

from aiohttp import web

from ...oci import mediatypes as mt
from .cache import CACHE_HEADER
from .common import repository


async def list_referrers(request: web.Request) -> web.Response:
    artifact_type = request.query.get("artifactType") or None
    # No stored artifact type holds a control character (manifests with one are refused), and PostgreSQL cannot
    # even compare a NUL: such a filter matches nothing, answered without asking the store to match it.
    matches_nothing = artifact_type is not None and not artifact_type.isprintable()
    body, result = await repository(request).referrers(request.match_info["digest"], None if matches_nothing else artifact_type)
    if matches_nothing:
        body = json.dumps({**json.loads(body), "manifests": []}).encode()
    headers = {"Content-Type": mt.OCI_INDEX}
    if artifact_type:
        headers["OCI-Filters-Applied"] = "artifactType"
    if result is not None:
        headers[CACHE_HEADER] = result
    return web.Response(body=body, headers=headers)
