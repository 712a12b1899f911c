"""``/v2/<name>/tags/list`` and ``/v2/_catalog``, with ``n``/``last`` pagination and ``Link``."""

from __future__ import annotations

import json

from aiohttp import web

from .common import access, name, next_link, page_size, registry


def _json(payload: object, link: str | None) -> web.Response:
    headers = {"Content-Type": "application/json"}
    if link:
        headers["Link"] = link
    return web.Response(body=json.dumps(payload).encode(), headers=headers)


async def list_tags(request: web.Request) -> web.Response:
    repository, n, last = name(request), page_size(request), request.query.get("last") or None
    page = await registry(request).listing.tags(repository, n, last)
    link = next_link(request.path, n, page.items[-1]) if page.more and n else None
    return _json({"name": repository, "tags": page.items}, link)


async def catalog(request: web.Request) -> web.Response:
    n, last = page_size(request), request.query.get("last") or None
    page = await registry(request).listing.catalog(n, last, access(request).may_list)
    link = next_link(request.path, n, page.items[-1]) if page.more and n else None
    return _json({"repositories": page.items}, link)
