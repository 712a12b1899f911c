"""The aiohttp application: routes, the error middleware and the registry's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import ipaddress

from aiohttp import web

from ..auth.service import AuthService
from ..config import Settings
from ..registry.service import Registry
from . import api, token
from .auth import allow_list, v2_auth_middleware
from .errors import API_VERSION_HEADER, error_middleware
from .keys import AUTH, REGISTRY, SETTINGS
from .v2 import routes as v2_routes
from .v2.blobs import digest_etag

log = logging.getLogger("cargohold")


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith("/v2"):
        response.headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
        digest_etag(response)



async def _purge_forever(registry: Registry, interval: float) -> None:
    """Drop abandoned upload sessions; every worker may run it, the operation is idempotent."""
    while True:
        await asyncio.sleep(interval)
        try:
            removed = await asyncio.to_thread(registry.uploads.purge)
            if removed:
                log.info("purged %d abandoned upload sessions", removed)
        except Exception:
            log.exception("upload purge failed")


def create_app(settings: Settings) -> web.Application:
    # Only manifest PUTs read a whole body; blob uploads stream and are not bound by this.
    middlewares = [error_middleware]
    if settings.allowed_clients:
        middlewares.insert(0, allow_list([ipaddress.ip_network(c, strict=False) for c in settings.allowed_clients]))
    if settings.auth:
        middlewares.append(v2_auth_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=settings.manifest_max_bytes + 1)
    app[SETTINGS] = settings
    v2_routes.add_routes(app)
    if settings.auth:
        token.add_routes(app)
    api.add_routes(app)  # /api/v1; without auth only openapi.json answers, the rest is 404
    app.on_response_prepare.append(_on_prepare)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        registry = Registry.open(settings)
        app[REGISTRY] = registry
        if settings.auth:
            app[AUTH] = AuthService.open(settings, registry.stores)
        task = asyncio.create_task(_purge_forever(registry, settings.upload_purge_interval_seconds))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await registry.close()

    app.cleanup_ctx.append(lifetime)
    return app
