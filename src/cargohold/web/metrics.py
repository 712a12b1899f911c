"""``/metrics``: Prometheus text format, summed over all workers.

Open to any client the allow-list admits (as Prometheus scrapes expect);
it shows counts per rule and upstream, never credentials or content names.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from ..cache import metrics


async def get_metrics(_request: web.Request) -> web.Response:
    body, content_type = await asyncio.to_thread(metrics.exposition)
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", get_metrics)
