"""The aiohttp application: routes, the error middleware and the registry's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

import ipaddress

from aiohttp import web

from ..auth.service import AuthService
from ..cache.evict import evict_forever
from ..cache.service import CacheService
from ..config import Settings
from ..registry.service import Registry
from ..transfer.jobs import ImportJobs
from ..transfer.sync_service import SyncService
from . import api, metrics, token
from .auth import allow_list, v2_auth_middleware
from .bodies import body_idle_timeout
from .clients import public_location
from .disconnects import client_disconnects
from .errors import API_VERSION_HEADER, error_middleware
from .keys import AUTH, CACHE, IMPORTS, REGISTRY, SETTINGS, SYNC
from .v2 import routes as v2_routes
from .v2.blobs import digest_etag
from .v2.cache import cache_routing

log = logging.getLogger("cargohold")


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    public_location(request, response)
    if request.path.startswith("/v2"):
        response.headers[API_VERSION_HEADER[0]] = API_VERSION_HEADER[1]
        digest_etag(response)



async def _flush_pulls_forever(cache: CacheService, interval: float = 5.0) -> None:
    """Last-pull times of cache hits are batched in memory; eviction reads them from the database."""
    while True:
        await asyncio.sleep(interval)
        try:
            await cache.flush_pulls()
        except Exception:
            log.exception("recording cache pulls failed")


async def _purge_forever(registry: Registry, cache: CacheService, interval: float, max_age: float) -> None:
    """Drop abandoned upload sessions and cache fills; every worker may run it, the operation is idempotent."""
    while True:
        await asyncio.sleep(interval)
        try:
            removed = await asyncio.to_thread(registry.uploads.purge)
            if removed:
                log.info("purged %d abandoned upload sessions", removed)
            removed = await asyncio.to_thread(cache.fills.purge, max_age, time.time())
            if removed:
                log.info("purged %d abandoned partial cache fills", removed)
        except Exception:
            log.exception("purge failed")


def create_app(settings: Settings) -> web.Application:
    # Only manifest PUTs read a whole body; blob uploads stream and are not bound by this.
    middlewares = [body_idle_timeout(settings.body_idle_timeout_seconds), error_middleware, cache_routing]
    if settings.allowed_clients:
        middlewares.insert(0, allow_list([ipaddress.ip_network(c, strict=False) for c in settings.allowed_clients]))
    middlewares.insert(0, client_disconnects)  # outermost: a client gone mid-request is an INFO line, not an ERROR
    if settings.auth:
        middlewares.append(v2_auth_middleware)
    app = web.Application(middlewares=middlewares, client_max_size=settings.manifest_max_bytes + 1)
    app[SETTINGS] = settings
    v2_routes.add_routes(app)
    if settings.auth:
        token.add_routes(app)
    api.add_routes(app)  # /api/v1; without auth only openapi.json answers, the rest is 404
    metrics.add_routes(app)
    app.on_response_prepare.append(_on_prepare)

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        registry = Registry.open(settings)
        app[REGISTRY] = registry
        if settings.auth:
            app[AUTH] = AuthService.open(settings, registry.stores)
        cache = CacheService.open(settings, registry)
        app[CACHE] = cache
        sync = SyncService.open(settings, registry, cache.admin)
        app[SYNC] = sync
        imports = ImportJobs.open(settings, registry)
        app[IMPORTS] = imports
        tasks = [
            asyncio.create_task(
                _purge_forever(registry, cache, settings.upload_purge_interval_seconds, settings.upload_max_age_seconds)
            ),
            asyncio.create_task(_flush_pulls_forever(cache)),
            asyncio.create_task(evict_forever(cache, settings.cache_evict_interval_seconds)),
            asyncio.create_task(sync.schedule_forever()),  # due sync rules; the lease lets one worker run each
        ]
        yield
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await imports.close()  # background imports record themselves as interrupted
        await sync.close()  # runs in flight get a few seconds to record themselves
        await cache.close()
        await registry.close()

    app.cleanup_ctx.append(lifetime)
    return app
