"""Typed keys for what the application carries between handlers."""

from __future__ import annotations

from aiohttp import web

from ..auth.service import AuthService
from ..cache.service import CacheService
from ..config import Settings
from ..registry.service import Registry
from ..transfer.jobs import ImportJobs
from ..transfer.sync_service import SyncService

SETTINGS = web.AppKey("settings", Settings)
REGISTRY = web.AppKey("registry", Registry)
AUTH = web.AppKey("auth", AuthService)
CACHE = web.AppKey("cache", CacheService)
SYNC = web.AppKey("sync", SyncService)
IMPORTS = web.AppKey("imports", ImportJobs)
