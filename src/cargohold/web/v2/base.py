"""``GET /v2/``: the API version check clients start with."""

from __future__ import annotations

from aiohttp import web


async def version_check(request: web.Request) -> web.Response:
    return web.Response(body=b"{}", headers={"Content-Type": "application/json"})
