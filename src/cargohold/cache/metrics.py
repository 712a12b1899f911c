"""Prometheus metrics of the cache and its upstreams, summed over every worker process.

Workers are separate processes, so counters live in prometheus_client's
multiprocess files under ``PROMETHEUS_MULTIPROC_DIR`` (``<data-dir>/metrics``,
set by the server before it starts the workers and emptied at start-up).
Without that variable (a single in-process app, as in some tests) the same
code counts in process memory.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client import multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
RESULTS = ("HIT", "MISS", "REVALIDATED", "STALE")

CACHE_REQUESTS = Counter(
    "cargohold_cache_requests",
    "Requests for cached content by rule, kind (manifest, blob, referrers, tags) and result",
    ["rule", "kind", "result"],
)
UPSTREAM_REQUESTS = Counter(
    "cargohold_upstream_requests",
    "HTTP requests sent to upstream registries (method TOKEN: token endpoint; status 0: no answer)",
    ["upstream", "credential_set", "method", "status"],
)
UPSTREAM_BYTES = Counter("cargohold_upstream_received_bytes", "Body bytes received from upstreams", ["upstream"])
UPSTREAM_RATELIMIT = Gauge(
    "cargohold_upstream_ratelimit_remaining",
    "The last ratelimit-remaining an upstream announced",
    ["upstream", "credential_set"],
    multiprocess_mode="mostrecent",
)
CACHE_BYTES = Gauge("cargohold_cache_bytes", "Bytes of content fetched by cache rules and kept", multiprocess_mode="mostrecent")
CACHE_QUOTA = Gauge("cargohold_cache_quota_bytes", "The cache's byte quota (0: none)", multiprocess_mode="mostrecent")
EVICTED = Counter("cargohold_cache_evicted_bytes", "Bytes evicted to keep the cache under its quota")


def cache_result(rule: str, kind: str, result: str) -> None:
    CACHE_REQUESTS.labels(rule, kind, result).inc()


def _registry() -> CollectorRegistry:
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    from prometheus_client import REGISTRY

    return REGISTRY


def exposition() -> tuple[bytes, str]:
    """The text format for ``/metrics``, and its content type."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def summary() -> dict[str, Any]:
    """The same figures arranged for a person (``cargohold cache stats``)."""
    rules: dict[str, dict[str, int]] = defaultdict(lambda: {r: 0 for r in RESULTS})
    upstreams: dict[str, dict[str, Any]] = defaultdict(lambda: {"requests": defaultdict(int), "bytes": 0, "ratelimit_remaining": None})
    cache_bytes = quota = evicted = 0
    for family in _registry().collect():
        for sample in family.samples:
            labels, value = sample.labels, sample.value
            if sample.name == "cargohold_cache_requests_total":
                rules[labels["rule"]][labels["result"]] = rules[labels["rule"]].get(labels["result"], 0) + int(value)
            elif sample.name == "cargohold_upstream_requests_total":
                key = f'{labels["method"]} {labels["status"]}'
                upstreams[labels["upstream"]]["requests"][key] += int(value)
            elif sample.name == "cargohold_upstream_received_bytes_total":
                upstreams[labels["upstream"]]["bytes"] += int(value)
            elif sample.name == "cargohold_upstream_ratelimit_remaining":
                upstreams[labels["upstream"]]["ratelimit_remaining"] = int(value)
            elif sample.name == "cargohold_cache_bytes":
                cache_bytes = int(value)
            elif sample.name == "cargohold_cache_quota_bytes":
                quota = int(value)
            elif sample.name == "cargohold_cache_evicted_bytes_total":
                evicted = int(value)
    per_rule = {
        name: {**counts, "upstream_pulls_saved": counts["HIT"] + counts["REVALIDATED"] + counts["STALE"]}
        for name, counts in sorted(rules.items())
    }
    return {
        "rules": per_rule,
        "upstream_pulls_saved": sum(r["upstream_pulls_saved"] for r in per_rule.values()),
        "upstreams": {name: {**u, "requests": dict(u["requests"])} for name, u in sorted(upstreams.items())},
        "cache_bytes": cache_bytes,
        "quota_bytes": quota,
        "evicted_bytes": evicted,
    }


class UpstreamCounter:
    """The upstream client's observer: counts into the metrics and reports logins and rate limits to ``status``."""

    def __init__(self, upstream: str, credential_set: str | None, status: Any = None) -> None:
        self.upstream = upstream
        self.credential_set = credential_set or ""
        self._status = status  # has .login(name, ok, error) and .ratelimit(name, limit, remaining); may be None

    def request(self, method: str, status: int | None) -> None:
        UPSTREAM_REQUESTS.labels(self.upstream, self.credential_set, method, str(status or 0)).inc()

    def received(self, nbytes: int) -> None:
        UPSTREAM_BYTES.labels(self.upstream).inc(nbytes)

    def ratelimit(self, limit: int | None, remaining: int | None) -> None:
        if remaining is not None:
            UPSTREAM_RATELIMIT.labels(self.upstream, self.credential_set).set(remaining)
        if self._status is not None and self.credential_set:
            self._status.ratelimit(self.credential_set, limit, remaining)

    def login(self, ok: bool, error: str | None) -> None:
        if self._status is not None and self.credential_set:
            self._status.login(self.credential_set, ok, error)
