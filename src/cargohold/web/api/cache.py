"""``/api/v1/cache/…``: warm-up, statistics, pins and eviction of the artifact cache.

Warming is a pull done ahead of time, so it needs what a pull needs:
``content/read`` on the cache repository. Pins and eviction change what the
cache keeps for everyone and are for admins; statistics are for admins too
(they name upstreams and rules).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from aiohttp import web
from pydantic import Field

from ...auth.scopes import READ
from ...cache.evict import enforce_quota
from ...cache.metrics import summary
from ...cache.service import NotCached
from ...oci.digest import Digest
from ...oci.errors import Denied, NotFound, RegistryError
from ...oci.names import is_valid_name, is_valid_tag
from ..codes import InvalidReference
from ..keys import CACHE
from .common import Call, InModel, Operation, OutModel, QueryModel, created, no_content, render

ImageReference = Annotated[
    str,
    Field(
        min_length=3, max_length=400, pattern=r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127}|@[a-z0-9]+:[a-f0-9]{32,128})$",
        description="a local repository with a tag or digest, e.g. hub/alpine:3.20 or hub/alpine@sha256:…",
    ),
]


def _is_digest(text: str) -> bool:
    try:
        Digest.parse(text)
    except RegistryError:
        return False
    return True


def split_reference(value: str) -> tuple[str, str]:
    """``hub/alpine:3.20`` → (``hub/alpine``, ``3.20``); ``hub/alpine@sha256:…`` → (``hub/alpine``, ``sha256:…``)."""
    if "@" in value:
        name, _, reference = value.partition("@")
    else:
        name, _, reference = value.rpartition(":")
    if not name or not reference or not is_valid_name(name) or not (is_valid_tag(reference) or _is_digest(reference)):
        raise InvalidReference(f"{value!r} is not REPOSITORY:TAG or REPOSITORY@DIGEST")
    return name, reference


class WarmRequest(InModel):
    reference: ImageReference


class WarmResult(OutModel):
    reference: str
    manifests: int = Field(description="manifests in the image, its platforms and referrers")
    blobs: int
    fetched_bytes: int = Field(description="bytes downloaded from the upstream now (0 when all was cached)")


class PinRequest(InModel):
    reference: ImageReference


class PinQuery(QueryModel):
    reference: str = Field(max_length=400)


class Pin(OutModel):
    repository: str
    reference: str
    created_by: str
    created_at: datetime


class EvictRequest(InModel):
    quota_bytes: int | None = Field(None, ge=0, le=2**62, description="evict down to this many bytes; default: the configured quota")


class EvictionResult(OutModel):
    used_bytes: int
    quota_bytes: int
    evicted_blobs: int
    evicted_bytes: int
    kept_pinned: int
    kept_shared: int


class RuleStats(OutModel):
    HIT: int
    MISS: int
    REVALIDATED: int
    STALE: int
    upstream_pulls_saved: int


class UpstreamStats(OutModel):
    requests: dict[str, int] = Field(description='"METHOD STATUS" → count')
    bytes: int
    ratelimit_remaining: int | None


class CacheStats(OutModel):
    rules: dict[str, RuleStats]
    upstream_pulls_saved: int = Field(description="requests answered without an upstream GET (hits, revalidations, stale copies)")
    upstreams: dict[str, UpstreamStats]
    cache_bytes: int
    quota_bytes: int
    evicted_bytes: int
    cached_blobs: int


async def warm(call: Call) -> web.Response:
    body: WarmRequest = call.body
    name, reference = split_reference(body.reference)
    if not call.caller.may(name, READ):
        raise Denied(f"{call.actor} may not read {name}")
    report = await call.request.app[CACHE].warm(name, reference)
    return render(WarmResult(reference=body.reference, manifests=report.manifests, blobs=report.blobs, fetched_bytes=report.fetched_bytes))


async def stats(call: Call) -> web.Response:
    cache = call.request.app[CACHE]
    await cache.flush_pulls()
    count, used = await cache.state.usage()
    figures: dict[str, Any] = summary()
    figures["cache_bytes"] = used
    figures["cached_blobs"] = count
    figures["quota_bytes"] = cache.settings.cache_quota_bytes
    return render(CacheStats.model_validate(figures))


async def list_pins(call: Call) -> web.Response:
    pins = await call.request.app[CACHE].state.list_pins()
    return render([Pin(repository=p.repository, reference=p.reference, created_by=p.created_by, created_at=p.created_at) for p in pins])


async def add_pin(call: Call) -> web.Response:
    body: PinRequest = call.body
    name, reference = split_reference(body.reference)
    cache = call.request.app[CACHE]
    if await cache.route(name) is None:
        raise NotCached(f"{name} is not covered by any cache rule")
    pin = await cache.state.add_pin(name, reference, call.actor)
    await call.audit("cache.pin", body.reference, "ok")
    return created(Pin(repository=pin.repository, reference=pin.reference, created_by=pin.created_by, created_at=pin.created_at), "/cache/pins")


async def delete_pin(call: Call) -> web.Response:
    query: PinQuery = call.query
    name, reference = split_reference(query.reference)
    if not await call.request.app[CACHE].state.remove_pin(name, reference):
        raise NotFound(f"no pin on {query.reference}")
    await call.audit("cache.unpin", query.reference, "ok")
    return no_content()


async def evict(call: Call) -> web.Response:
    body: EvictRequest = call.body
    report = await enforce_quota(call.request.app[CACHE], body.quota_bytes)
    await call.audit("cache.evict", str(report.quota_bytes), "ok", {"evicted_bytes": report.evicted_bytes})
    return render(EvictionResult(**report.__dict__))


OPERATIONS = [
    Operation(
        "POST", "/cache/warm", warm, "warmCache", "Fetch an image into the cache now: all platforms, blobs and referrers",
        "cache", body=WarmRequest, response=WarmResult, access="authenticated",
        answers={
            403: "The caller may not read the cache repository",
            502: "The upstream failed and the image is not cached",
        },
        description="Needs content/read on the cache repository. Answers when everything is cached.",
    ),
    Operation("GET", "/cache/stats", stats, "getCacheStats", "Cache hits, misses, upstream requests and bytes", "cache", response=CacheStats),
    Operation("GET", "/cache/pins", list_pins, "listCachePins", "List pinned images (never evicted)", "cache", response=list[Pin]),
    Operation(
        "POST", "/cache/pins", add_pin, "addCachePin", "Pin an image so that eviction keeps it", "cache", status=201,
        body=PinRequest, response=Pin, location=True, action="cache.pin",
    ),
    Operation(
        "DELETE", "/cache/pins", delete_pin, "deleteCachePin", "Unpin an image", "cache", status=204, query=PinQuery,
        action="cache.unpin",
    ),
    Operation(
        "POST", "/cache/evict", evict, "evictCache", "Evict least recently pulled content down to the quota now", "cache",
        body=EvictRequest, response=EvictionResult, action="cache.evict",
    ),
]
