"""``/v2/<name>/tags/list`` and ``/v2/_catalog``, with ``n``/``last`` pagination and ``Link``."""

from __future__ import annotations

import json

from aiohttp import web

from .cache import CACHE_HEADER
from .common import access, next_link, page_after, page_size, registry, repository


def _json(payload: object, link: str | None, cache: str | None = None) -> web.Response:
    headers = {"Content-Type": "application/json"}
    if link:
        headers["Link"] = link
    if cache:
        headers[CACHE_HEADER] = cache
    return web.Response(body=json.dumps(payload).encode(), headers=headers)


async def list_tags(request: web.Request) -> web.Response:
    n, last = page_size(request), page_after(request)
    repo = repository(request)
    page, result = await repo.tags(n, last)
    link = next_link(request.path, n, page.items[-1]) if page.more and n else None
    return _json({"name": repo.name, "tags": page.items}, link, result)


async def catalog(request: web.Request) -> web.Response:
    n, last = page_size(request), page_after(request)
    page = await registry(request).listing.catalog(n, last, access(request).may_list)
    link = next_link(request.path, n, page.items[-1]) if page.more and n else None
    return _json({"repositories": page.items}, link)
