"""One run of a sync rule: list the source's tags, filter them, HEAD each candidate, copy what is new or moved.

Upstream requests are spent like money:

- A run first lists the source's tags, then HEADs one candidate
  at a time and compares the digest with the local tag. An unchanged tag costs
  exactly one HEAD and no GET. A new or moved tag is copied with the
  ``Importer`` (all platforms or the rule's, referrers included, ``force`` so
  that a moved tag follows upstream).
- Listing reads at most half the request budget in pages (and at most
  ``MAX_TAGS`` tags), so a huge repository cannot spend every run on its tag
  list alone; a cut-short list is recorded (a ``*`` entry, state ``partial``).
  Listed names that are not OCI tags are dropped (``filtered: not a valid
  tag``). One client (one session, one token cache) serves the whole run: the
  tag list, the HEADs and the copies.
- The **request budget** counts every request the run sends to the source
  registry — tag-list pages, HEADs and the copies' own requests (token-service
  requests excluded). Before each HEAD the run checks what is left; once the
  budget is spent, the remaining candidates are skipped with reason
  ``request budget exhausted`` and the next run checks them *first* (they are
  read back from the previous run's log), so a large repository is covered
  over several runs. A copy that has started is not cut off half-way: the
  budget may be overdrawn by the last copy.
- ``RateLimit-Remaining`` below the reserve, or a ``429`` (``Retry-After``
  is not waited for inline, not even during a copy), stops the run: the rest
  is skipped with the reason, and ``retry_after`` tells the scheduler not to
  come back earlier.

One failed copy is recorded (skipped, with the error) and the run goes on.
State: ``succeeded`` (every candidate checked, every change copied),
``partial`` (something skipped for budget, rate limit or an error),
``failed`` (the tags could not even be listed, or the run broke off: what it
had done by then — copies, requests used — is kept in the record).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


from ..config import Settings
from ..oci.errors import RegistryError
from ..oci.names import is_valid_tag
from ..registry.service import Registry
from ..store.sync import RunState, SkipOutcome, outcome_of
from ..upstream import errors as up
from ..upstream.client import MAX_PAGES, Credentials, Endpoint, NullObserver, UpstreamClient
from ..upstream.guard import UpstreamRefused
from ..upstream.http import guarded_session
from .importer import Importer, ImportFailed, SourceRateLimited, Target
from .tagfilter import TagFilter

log = logging.getLogger("cargohold.sync")

_COUNTED = (SkipOutcome.FILTERED, SkipOutcome.UNCHANGED)  # routine: past LIST_CAP only counted, never make a run partial
LIST_CAP = 200  # individual entries per kind (filtered, unchanged) kept in a run record; the rest is counted
DEFERRED_CAP = 10000  # budget/rate-limit skips are all listed (the next run starts with them), up to this many
BUDGET_EXHAUSTED = "request budget exhausted"
MAX_TAGS = 100_000  # tags read from the source's list per run; the rest is not looked at (and the run says so)
LISTED_TAG_CHARS = 140  # a skipped name that is not a valid tag is recorded cut to this


def registry_of(source: str) -> str:
    """``registry/repository`` (a stored source) → ``registry``."""
    return source.split("/", 1)[0]


class RequestCounter(NullObserver):
    """Counts a run's requests to the source registry (into ``report.requests_used`` too, when given) and
    remembers the last ``RateLimit-Remaining`` seen."""

    def __init__(self, report: "RunReport | None" = None) -> None:
        self.requests = 0
        self.remaining: int | None = None
        self._report = report

    def request(self, method: str, status: int | None) -> None:
        if method != "TOKEN":
            self.requests += 1
            if self._report is not None:
                self._report.requests_used = self.requests

    def ratelimit(self, limit: int | None, remaining: int | None) -> None:
        if remaining is not None:
            self.remaining = remaining


@dataclass(frozen=True)
class SyncSpec:
    """What the engine needs of a rule."""

    name: str
    source: str  # registry/repository, normalized
    target: str
    tag_filter: TagFilter
    insecure: bool
    platforms: list[str] | None
    request_budget: int

    @property
    def registry(self) -> str:
        return registry_of(self.source)

    @property
    def repository(self) -> str:
        return self.source.split("/", 1)[1]


@dataclass
class RunReport:
    state: RunState = RunState.SUCCEEDED
    requests_used: int = 0
    copied: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    retry_after: float | None = None  # seconds; the next run not before now + this
    _counts: dict[str, int] = field(default_factory=dict)

    def skip(self, tag: str, reason: str, outcome: SkipOutcome) -> None:
        """Record a skipped tag; filtered and unchanged entries past LIST_CAP are only counted."""
        if outcome in _COUNTED:
            n = self._counts[outcome] = self._counts.get(outcome, 0) + 1
            if n > LIST_CAP:
                return
        elif len(self.skipped) >= DEFERRED_CAP + 2 * (LIST_CAP + 1):
            return
        self.skipped.append({"tag": tag, "reason": reason, "outcome": outcome.value})

    def close(self) -> None:
        """Summary entries for the counted-only kinds; the state follows from the outcomes."""
        for outcome, n in self._counts.items():
            if n > LIST_CAP:
                self.skipped.append({
                    "tag": "*", "reason": f"{outcome.value}: {n - LIST_CAP} more tags not listed", "count": n - LIST_CAP,
                    "outcome": outcome.value,
                })
        if self.state is not RunState.FAILED and any(outcome_of(e) not in _COUNTED for e in self.skipped):
            self.state = RunState.PARTIAL


def deferred_tags(previous_skipped: list[dict[str, Any]]) -> list[str]:
    """The tags a previous run left unchecked (budget, rate limit): this run checks them first."""
    return [
        entry["tag"] for entry in previous_skipped
        if isinstance(entry, dict) and isinstance(entry.get("tag"), str) and entry.get("tag") != "*"
        and outcome_of(entry) is SkipOutcome.DEFERRED
    ]


def order_candidates(candidates: list[str], first: list[str]) -> list[str]:
    """``first`` (those still candidates) in their order, then the rest sorted."""
    wanted = set(candidates)
    head = [t for t in dict.fromkeys(first) if t in wanted]
    seen = set(head)
    return head + sorted(t for t in candidates if t not in seen)


class SyncEngine:
    """Runs sync rules; one instance per worker, ``run`` may be called concurrently for different rules."""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings
        self.importer = Importer(registry, settings)

    async def run(
        self,
        spec: SyncSpec,
        credentials: Credentials | None,
        *,
        run_id: int,
        previous_skipped: list[dict[str, Any]] | None = None,
        on_progress: Callable[[], None] | None = None,
        report: RunReport | None = None,
    ) -> RunReport:
        """The run's report. ``report``: fill this one (the caller keeps what was done if the run is cancelled);
        ``requests_used`` is kept current as the run goes."""
        report = report if report is not None else RunReport()
        counter = RequestCounter(report)
        try:
            await self._run(spec, credentials, run_id, previous_skipped or [], counter, report, on_progress)
        except _ListingFailed as exc:
            report.state, report.error = RunState.FAILED, str(exc)
        except Exception as exc:  # a bug: keep what the run did so far
            log.exception("sync rule %s: run %d broke off", spec.name, run_id)
            report.state, report.error = RunState.FAILED, f"internal error: {type(exc).__name__}"
        report.requests_used = counter.requests
        report.close()
        return report

    async def _run(
        self, spec: SyncSpec, credentials: Credentials | None, run_id: int, previous: list[dict[str, Any]],
        counter: RequestCounter, report: RunReport, on_progress: Callable[[], None] | None,
    ) -> None:
        reserve = self.settings.sync_ratelimit_reserve
        try:
            endpoint = Endpoint(spec.registry, spec.insecure)
        except ValueError as exc:
            raise _ListingFailed(f"source {spec.source!r}: {exc}") from None
        async with guarded_session(self.settings, limit=8) as session:
            client = UpstreamClient(
                session, endpoint, credentials, observer=counter, retries=self.settings.upstream_retries,
                timeout=self.settings.upstream_timeout_seconds, max_retry_after=0.0,  # a 429 ends the run, it is not slept on
            )
            max_pages = max(1, min(MAX_PAGES, spec.request_budget // 2))
            try:
                tags, cut = await client.some_tags(spec.repository, max_pages=max_pages, max_tags=MAX_TAGS)
            except up.UpstreamRateLimited as exc:
                report.retry_after = exc.retry_after
                raise _ListingFailed(f"listing the tags: {_rate_limited(exc.retry_after)}") from None
            except (up.UpstreamError, UpstreamRefused, TimeoutError) as exc:
                raise _ListingFailed(f"listing the tags of {spec.source} failed: {exc or type(exc).__name__}") from None
            if cut == "pages":
                report.skip("*", f"tag list cut short: read {max_pages} pages (at most half the request budget); "
                            "the tags on later pages were not looked at", SkipOutcome.DEFERRED)
            elif cut == "tags":
                report.skip("*", f"tag list cut short: only the first {MAX_TAGS} tags were looked at", SkipOutcome.DEFERRED)
            candidates = []
            for tag in tags:
                if not is_valid_tag(tag):
                    report.skip(tag[:LISTED_TAG_CHARS], "filtered: not a valid tag name", SkipOutcome.FILTERED)
                    continue
                try:
                    reason = spec.tag_filter.reject(tag)
                except Exception as exc:  # the filter is pure logic; a tag it cannot judge is not copied
                    reason = f"filtered: the filter failed on it ({type(exc).__name__})"
                if reason is None:
                    candidates.append(tag)
                else:
                    report.skip(tag, reason, SkipOutcome.FILTERED)
            ordered = order_candidates(candidates, deferred_tags(previous))
            for index, tag in enumerate(ordered):
                stop = None
                if counter.requests >= spec.request_budget:
                    stop = f"{BUDGET_EXHAUSTED} ({counter.requests} of {spec.request_budget} requests used)"
                elif counter.remaining is not None and counter.remaining < reserve:
                    stop = f"ratelimit-remaining {counter.remaining} is below the reserve of {reserve}"
                if stop is None:
                    try:
                        stop = await self._sync_tag(spec, client, tag, credentials, run_id, counter, report)
                    except up.UpstreamRateLimited as exc:
                        report.retry_after = exc.retry_after
                        stop = _rate_limited(exc.retry_after)
                if on_progress is not None:
                    on_progress()
                if stop is not None:
                    for rest in ordered[index:]:
                        report.skip(rest, stop, SkipOutcome.DEFERRED)
                    return

    async def _sync_tag(
        self, spec: SyncSpec, client: UpstreamClient, tag: str, credentials: Credentials | None, run_id: int,
        counter: RequestCounter, report: RunReport,
    ) -> str | None:
        """Check one tag and copy it when new or moved; a reason to stop the whole run, or None to go on."""
        try:
            head = await client.head_manifest(spec.repository, tag)
        except up.UpstreamNotFound:
            report.skip(tag, "gone upstream (listed, but the HEAD found no manifest)", SkipOutcome.FAILED)
            return None
        except up.UpstreamRateLimited:
            raise
        except (up.UpstreamUnavailable, TimeoutError) as exc:
            return f"upstream unavailable: {exc or type(exc).__name__}"
        except (up.UpstreamError, UpstreamRefused) as exc:
            report.skip(tag, f"HEAD failed: {exc}", SkipOutcome.FAILED)
            return None
        local = await self._local_digest(spec.target, tag)
        if local == head.digest:
            report.skip(tag, "unchanged", SkipOutcome.UNCHANGED)
            return None
        try:
            result = await self.importer.run(
                f"{spec.source}:{tag}", [Target(spec.target, tag)], credentials, insecure=spec.insecure, force=True,
                platforms=spec.platforms, requested_by=f"sync-rule:{spec.name}", via="sync", job=f"{spec.name}#{run_id}",
                observer=counter, client=client, max_retry_after=0.0,
            )
        except ImportFailed as exc:
            if isinstance(exc, SourceRateLimited):
                if exc.retry_after is not None:
                    report.retry_after = max(report.retry_after or 0.0, exc.retry_after)
                return f"rate-limited while copying ({exc})"
            report.skip(tag, f"copy failed: {exc}", SkipOutcome.FAILED)
            return None
        report.copied.append({"tag": tag, "digest": result.source_digest, "previous": local})
        return None

    async def _local_digest(self, repository: str, tag: str) -> str | None:
        """From the metadata only: no manifest bytes read, the /v2 manifest cache left alone."""
        try:
            return await self.registry.manifests.digest_of(repository, tag)
        except RegistryError:  # e.g. an invalid name: nothing local
            return None


class _ListingFailed(Exception):
    pass


def _rate_limited(retry_after: float | None) -> str:
    if retry_after is None:
        return "rate-limited (429, no Retry-After)"
    return f"rate-limited (retry after {int(retry_after) if retry_after == int(retry_after) else retry_after} s)"
