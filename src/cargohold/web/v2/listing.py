"""``/v2/<name>/tags/list`` and ``/v2/_catalog``, with ``n``/``last`` pagination and ``Link``."""

from __future__ import annotations

import json

from aiohttp import web

from .cache import CACHE_HEADER, cache_route, cache_service
from .common import access, name, next_link, page_size, registry


def _json(payload: object, link: str | None, cache: str | None = None) -> web.Response:
    headers = {"Content-Type": "application/json"}
    if link:
        headers["Link"] = link
    if cache:
        headers[CACHE_HEADER] = cache
    return web.Response(body=json.dumps(payload).encode(), headers=headers)


async def list_tags(request: web.Request) -> web.Response:
    repository, n, last = name(request), page_size(request), request.query.get("last") or None
    route = cache_route(request)
    if route is not None:
        # A cache namespace lists what the upstream has (what a client could pull), not only what was pulled.
        upstream, result = await cache_service(request).tags(route)
        if upstream is not None:
            items = sorted(t for t in set(upstream) if last is None or t > last)
            page, more = (items[:n], len(items) > n) if n is not None else (items, False)
            link = next_link(request.path, n, page[-1]) if more and n else None
            return _json({"name": repository, "tags": page}, link, result)
    else:
        result = None
    page = await registry(request).listing.tags(repository, n, last)
    link = next_link(request.path, n, page.items[-1]) if page.more and n else None
    return _json({"name": repository, "tags": page.items}, link, result)


async def catalog(request: web.Request) -> web.Response:
    n, last = page_size(request), request.query.get("last") or None
    page = await registry(request).listing.catalog(n, last, access(request).may_list)
    link = next_link(request.path, n, page.items[-1]) if page.more and n else None
    return _json({"repositories": page.items}, link)
