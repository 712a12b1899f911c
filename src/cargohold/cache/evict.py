"""Keep cached content under its byte quota: least recently pulled first, pins and shared blobs kept.

Only blobs the cache fetched are candidates (``cache_blobs``), and of those
only the ones no pushed repository links: a layer a team's own image shares
with a cached base image is theirs as much as the cache's. Blobs reachable
from a pinned tag or digest stay too. An evicted blob is unlinked from its
cache namespaces, so the next pull of it is a MISS that fetches it again;
the manifests (small) stay, so tags keep resolving offline.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from ..oci.digest import Digest
from . import metrics
from .rules import RuleSet
from .service import CacheService

log = logging.getLogger("cargohold.cache")


@dataclass(frozen=True)
class EvictionReport:
    used_bytes: int
    quota_bytes: int
    evicted_blobs: int
    evicted_bytes: int
    kept_pinned: int
    kept_shared: int


def _shared(rules: RuleSet, repositories: list[str]) -> bool:
    return any(rules.route(name) is None for name in repositories)


async def enforce_quota(service: CacheService, quota: int | None = None) -> EvictionReport:
    """Evict until the cached bytes fit ``quota`` (default: the configured one; 0 means no quota)."""
    quota = service.settings.cache_quota_bytes if quota is None else quota
    await service.flush_pulls()
    _, used = await service.state.usage()
    metrics.CACHE_QUOTA.set(quota)
    evicted = evicted_bytes = pinned_kept = shared_kept = 0
    if quota and used > quota:
        rules = await service.rules()
        pinned = await service.state.pinned_blobs()
        for blob in await service.state.least_recently_pulled():
            if used <= quota:
                break
            if blob.digest in pinned:
                pinned_kept += 1
                continue
            linking = await service.state.linking_repositories(blob.digest)
            if _shared(rules, linking):
                shared_kept += 1
                continue
            if await service.state.evict_blob(blob.digest, linking):
                await asyncio.to_thread(service.registry.stores.blobs.delete, Digest.parse(blob.digest))
            used -= blob.size
            evicted += 1
            evicted_bytes += blob.size
        if evicted:
            service.registry.stores.generation.bump()  # manifests cached in workers may name unlinked blobs
            metrics.EVICTED.inc(evicted_bytes)
            log.info("evicted %d cached blobs (%d bytes) to stay under the %d-byte quota", evicted, evicted_bytes, quota)
    metrics.CACHE_BYTES.set(used)
    return EvictionReport(used, quota, evicted, evicted_bytes, pinned_kept, shared_kept)


async def evict_forever(service: CacheService, interval: float) -> None:
    """Every worker runs this; eviction is idempotent, and cheap when under quota."""
    while True:
        await asyncio.sleep(interval)
        try:
            await enforce_quota(service)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cache eviction failed")
