"""Pull-through: answer a cache namespace from the local copy, the upstream, or the local copy when the upstream fails.

Upstream requests are spent like money (DESIGN.md): a tag is trusted for
its rule's TTL, then revalidated with one HEAD (Docker Hub does not count
HEADs as pulls) and fetched with GET only when its digest moved; digest
references are never revalidated. Concurrent cold pulls of one tag or blob,
in any worker, share one upstream request (``locks.py``, ``fill.py``).
When the upstream is down, slow or rate-limiting, a cached copy is served
and labelled STALE; without one the caller gets a precise error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import aiohttp

from ..config import Settings
from ..oci import mediatypes as mt
from ..oci.digest import Digest
from ..oci.errors import BlobUnknown, DigestInvalid, DomainError, ManifestUnknown, SizeInvalid, UpstreamFailed, UpstreamRateLimited
from ..oci.manifest import parse_manifest
from ..registry.manifest_cache import Manifest
from ..registry.ingest import Readable, Verified, nothing_readable
from ..registry.manifests import is_digest_reference
from ..registry.service import Registry
from ..store.blobs import BlobFile
from ..store.cache import CacheConfigStore, CacheStateStore
from ..store.generation import Generation
from ..upstream import errors as up
from ..upstream.client import Credentials, Endpoint, FetchedManifest, UpstreamClient
from ..upstream.guard import UpstreamRefused
from ..upstream.http import guarded_session
from . import metrics
from .admin import CacheAdmin, load_rule_set
from .fill import BlobFills, BlobStream, FillFailed
from .locks import KeyedLocks
from .rules import CacheRule, Route, RuleSet
from .secrets import SecretBox, load_key

log = logging.getLogger("cargohold.cache")

HIT, MISS, REVALIDATED, STALE = "HIT", "MISS", "REVALIDATED", "STALE"
T = TypeVar("T")
_STATUS_WRITE_INTERVAL = 5.0  # seconds between credential-set status writes (ratelimit headers come with every response)
_TOUCH_FLUSH_INTERVAL = 5.0


@dataclass(frozen=True)
class WarmReport:
    manifests: int
    blobs: int
    fetched_bytes: int


class CredentialStatus:
    """Writes a credential set's last login and rate-limit figures, at most every few seconds, off the request path."""

    def __init__(self, store: CacheConfigStore, spawn: Callable[[Awaitable[None]], None]) -> None:
        self._store = store
        self._spawn = spawn
        self._last: dict[tuple[str, str], tuple[float, object]] = {}

    def _due(self, key: tuple[str, str], value: object) -> bool:
        at, seen = self._last.get(key, (0.0, None))
        now = time.monotonic()
        if seen == value and now - at < _STATUS_WRITE_INTERVAL:
            return False
        self._last[key] = (now, value)
        return True

    def login(self, name: str, ok: bool, error: str | None) -> None:
        if self._due((name, "login"), (ok, error)):
            self._spawn(self._store.record_login(name, ok, error))

    def ratelimit(self, name: str, limit: int | None, remaining: int | None) -> None:
        if self._due((name, "ratelimit"), (limit, remaining)):
            self._spawn(self._store.record_ratelimit(name, limit, remaining))


class CacheService:
    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        config: CacheConfigStore,
        state: CacheStateStore,
        generation: Generation,
        box: SecretBox,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.config = config
        self.state = state
        self.admin = CacheAdmin(config, box, settings)
        data = settings.data_dir
        self.fills = BlobFills(data / "fills", registry.stores.blobs)
        self.locks = KeyedLocks(data / "locks")
        self._generation = generation
        self._seen: bytes | None = None
        self._rules = RuleSet([])
        self._session: aiohttp.ClientSession | None = None
        self._clients: dict[str, UpstreamClient] = {}
        self._pulls: dict[str, datetime] = {}
        self._fresh: dict[tuple[str, str], tuple[str | None, float]] = {}
        self._reloading = asyncio.Lock()
        self._recording: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._status = CredentialStatus(config, self.spawn)

    @classmethod
    def open(cls, settings: Settings, registry: Registry) -> "CacheService":
        generation = Generation(settings.data_dir / "cache-generation")
        engine = registry.stores.engine
        box = SecretBox(load_key(settings.data_dir, settings.secret_key))
        return cls(settings, registry, CacheConfigStore(engine, generation.bump), CacheStateStore(engine), generation, box)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.fills.aclose()
        await self.flush_pulls()
        if self._session is not None:
            await self._session.close()
        self._generation.close()

    def spawn(self, work: Awaitable[None]) -> "asyncio.Task[None]":
        """Run ``work`` in the background, keeping a reference (and logging its failure)."""

        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("background cache work failed")

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- rules and upstream clients ----------------------------------------------------------

    async def rules(self) -> RuleSet:
        """The current rules; reloaded only after a rule or credential set changed (any worker)."""
        if self._generation.current() == self._seen:
            return self._rules
        async with self._reloading:  # one reload at a time; requests meanwhile wait for it, not use the old set
            current = self._generation.current()
            if current != self._seen:
                rules = await load_rule_set(self.config)
                self._rules, self._seen = rules, current  # the generation read *before* loading: a change during it reloads again
                self._clients.clear()  # credentials or endpoints may have changed; token caches go with them
        return self._rules

    async def route(self, name: str) -> Route | None:
        rules = await self.rules()
        return rules.route(name) if rules else None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # Idle pooled connections are closed before a read timeout could fire on them: aiohttp 3.14
            # can leave a finished response's sock_read timer armed on a pooled connection, and the
            # next request on it then fails at once with SocketTimeoutError (measured: every request
            # made more than upstream_timeout_seconds after a fill, all retries included).
            keepalive = max(1.0, min(15.0, self.settings.upstream_timeout_seconds / 2))
            self._session = guarded_session(self.settings, limit=64, keepalive_timeout=keepalive)
        return self._session

    async def client(self, rule: CacheRule) -> UpstreamClient:
        found = self._clients.get(rule.name)
        if found is not None:
            return found
        credentials = None
        if rule.credential_set:
            username, password = await self.admin.credentials_for(rule.credential_set)
            credentials = Credentials(username, password)
        observer = metrics.UpstreamCounter(rule.source.registry, rule.credential_set, self._status)
        client = UpstreamClient(
            self._http(),
            Endpoint(rule.source.registry, rule.insecure),
            credentials,
            observer=observer,
            retries=self.settings.upstream_retries,
            timeout=self.settings.upstream_timeout_seconds,
        )
        self._clients[rule.name] = client
        return client

    # ---- manifests ---------------------------------------------------------------------------

    async def _local(self, name: str, reference: str) -> Manifest | None:
        try:
            return await self.registry.manifests.get(name, reference)
        except ManifestUnknown:
            return None

    async def _is_fresh(self, route: Route, key: str, digest: str | None) -> bool:
        """Whether the upstream was asked about ``key`` less than a TTL ago (and said ``digest``).

        A hot tag is answered from this worker's memo of the last check, without a database
        read; another worker's newer check only makes the memo conservative, never wrong longer
        than the TTL.
        """
        ttl = route.rule.tag_ttl_seconds
        memo = self._fresh.get((route.local, key))
        if memo is not None and memo[0] == digest and time.monotonic() - memo[1] < ttl:
            return True
        fresh = await self.state.freshness(route.local, key)
        if fresh is None or (digest is not None and fresh.digest != digest):
            return False
        age = (datetime.now(UTC) - fresh.checked_at).total_seconds()
        if age >= ttl:
            return False
        self._remember(route.local, key, digest, time.monotonic() - max(age, 0.0))
        return True

    def _remember(self, local: str, key: str, digest: str | None, at: float | None = None) -> None:
        if len(self._fresh) > 50_000:
            self._fresh.clear()
        self._fresh[(local, key)] = (digest, time.monotonic() if at is None else at)

    async def _mark_fresh(self, route: Route, key: str, digest: str | None) -> None:
        # Written before the single-flight lock is released: a worker waiting on it reads this.
        await self.state.mark_fresh(route.local, key, digest)
        self._remember(route.local, key, digest)

    async def manifest(self, route: Route, reference: str) -> tuple[Manifest, str]:
        """The manifest for ``reference`` in a cache namespace and how it was obtained (HIT, MISS, …)."""
        result = await (self._by_digest(route, reference) if is_digest_reference(reference) else self._by_tag(route, reference))
        metrics.cache_result(route.rule.name, "manifest", result[1])
        return result

    async def _by_digest(self, route: Route, reference: str) -> tuple[Manifest, str]:
        local = await self._local(route.local, reference)
        if local is not None:
            return local, HIT
        try:
            async with self._single_flight(f"manifest {route.local}@{reference}"):
                local = await self._local(route.local, reference)
                if local is not None:
                    return local, HIT
                client = await self.client(route.rule)
                fetched = await self._ask(route, reference, client.get_manifest(route.upstream_repository, reference))
                return await self._keep(route, fetched, None), MISS
        except TimeoutError as error:
            raise self._failure(route, reference, error) from None

    async def _by_tag(self, route: Route, tag: str) -> tuple[Manifest, str]:
        key = f"tag:{tag}"
        local = await self._local(route.local, tag)
        if local is not None and await self._is_fresh(route, key, local.digest):
            return local, HIT
        try:
            return await self._revalidate(route, tag, key)
        except TimeoutError as error:  # another worker's request for this tag hangs: do not wait longer
            if local is not None:
                return local, STALE
            raise self._failure(route, f"{route.upstream_repository}:{tag}", error) from None

    async def _revalidate(self, route: Route, tag: str, key: str) -> tuple[Manifest, str]:
        async with self._single_flight(f"tag {route.local}:{tag}"):
            local = await self._local(route.local, tag)
            if local is not None and await self._is_fresh(route, key, local.digest):
                return local, HIT  # another request revalidated it while this one waited
            client = await self.client(route.rule)
            try:
                if local is not None:
                    head = await client.head_manifest(route.upstream_repository, tag)
                    if head.digest == local.digest:
                        await self._mark_fresh(route, key, local.digest)
                        return local, REVALIDATED
                    fetched = await client.get_manifest(route.upstream_repository, head.digest)
                else:
                    fetched = await client.get_manifest(route.upstream_repository, tag)
            except up.UpstreamNotFound:
                raise ManifestUnknown(
                    f"{route.registry}/{route.upstream_repository}:{tag} does not exist upstream", detail={"tag": tag}
                ) from None
            except (up.UpstreamError, UpstreamRefused, TimeoutError) as error:
                if local is not None:
                    log.warning("serving stale %s:%s: %s", route.local, tag, error)
                    return local, STALE
                raise self._failure(route, f"{route.upstream_repository}:{tag}", error) from None
            manifest = await self._keep(route, fetched, tag)
            await self._mark_fresh(route, key, manifest.digest)
            return manifest, MISS

    async def _keep(self, route: Route, fetched: FetchedManifest, tag: str | None) -> Manifest:
        """Store an upstream manifest byte-exact (its blobs come later, on demand)."""
        await self.registry.manifests.put(
            route.local, fetched.digest, fetched.body, fetched.media_type, [tag] if tag else [], lazy=True
        )
        if route.rule.eager_platforms and mt.bare(fetched.media_type) in mt.INDEXES:
            self.spawn(self._warm_children(route, fetched))
        return Manifest(fetched.digest, fetched.media_type, fetched.body)

    async def _warm_children(self, route: Route, index: FetchedManifest) -> None:
        parsed = parse_manifest(index.body, index.media_type)
        await self._warm_all(route, [d.digest for d in parsed.manifests], _Tally())

    def _single_flight(self, key: str):  # type: ignore[no-untyped-def]
        return self.locks.hold(key, timeout=self.settings.upstream_timeout_seconds * 6)

    async def _ask(self, route: Route, what: str, request: Awaitable[T]) -> T:
        """Await an upstream request that has no local stand-in: map its failure to a registry error."""
        try:
            return await request
        except up.UpstreamNotFound:
            raise ManifestUnknown(f"{route.registry}/{route.upstream_repository}@{what} does not exist upstream") from None
        except (up.UpstreamError, UpstreamRefused, TimeoutError) as error:
            raise self._failure(route, what, error) from None

    def _failure(self, route: Route, what: str, error: BaseException) -> Exception:
        where = f"{route.registry}/{route.upstream_repository}"
        if isinstance(error, up.UpstreamRateLimited):
            retry = int(error.retry_after) if error.retry_after is not None else None
            return UpstreamRateLimited(
                f"{route.registry} is rate-limiting pulls ({where}); {what} is not cached yet",
                detail={"upstream": route.registry},
                retry_after=retry,
            )
        reason = "refused our credentials" if isinstance(error, up.UpstreamAuthFailed) else "failed"
        if isinstance(error, TimeoutError):
            reason = "did not answer in time"
        return UpstreamFailed(
            f"upstream {route.registry} {reason} ({error}) and {route.local} has no cached copy of {what}",
            detail={"upstream": route.registry, "rule": route.rule.name},
        )

    # ---- blobs -------------------------------------------------------------------------------

    async def blob(
        self, route: Route, digest: str, readable: Readable = nothing_readable
    ) -> tuple[BlobFile | BlobStream, str]:
        """A cached blob file (HIT) or a stream of the upstream download shared with other requesters (MISS).

        The possession rule (``registry/ingest.py``) holds here too: bytes the store holds for other
        repositories are linked into the namespace only when the requester may read one of those
        repositories (``readable``), or after the upstream sent bytes that hash to the digest. A
        cached manifest naming the digest, or the upstream answering 200, proves nothing.
        """
        parsed = Digest.parse(digest)
        for _ in range(3):
            found = await self._linked(route, parsed)
            if found is not None:
                return found, HIT
            if self.registry.stores.blobs.stat(parsed) is not None:
                if str(parsed) in self._recording:  # a fill of this worker has the bytes and is linking them
                    await self.recorded(str(parsed))
                    continue
                return await self._prove(route, parsed, readable)
            client = await self.client(route.rule)

            def fetch(offset: int):  # type: ignore[no-untyped-def]
                return client.blob(route.upstream_repository, str(parsed), offset)

            # The first requester of this namespace holds its link lock until the fill is linked here, so
            # that a request in another worker that finds the bytes published but not yet linked waits
            # for the link (``_prove``) instead of fetching them again. The others just join the fill.
            linking = contextlib.AsyncExitStack()
            with contextlib.suppress(TimeoutError):
                await linking.enter_async_context(self.locks.hold(self._link_key(route, parsed), timeout=0))
            try:
                stream = await self._blob_request(route, digest, self.fills.open(parsed, fetch))
            except BaseException:
                await linking.aclose()
                raise
            if stream.origin is None:  # stored by someone else meanwhile: that proves nothing here
                await linking.aclose()
                await stream.aclose()
                continue
            key = str(parsed)
            recording = self._recording[key] = self.spawn(self._record_fill(route, stream, linking))
            recording.add_done_callback(lambda task: self._recording.get(key) is task and self._recording.pop(key))
            metrics.cache_result(route.rule.name, "blob", MISS)
            return stream, MISS
        raise self._failure(route, digest, RuntimeError("the blob kept changing while it was looked up"))

    async def _linked(self, route: Route, digest: Digest) -> BlobFile | None:
        """The blob when the namespace links it already (after any fill of it this worker is finishing)."""
        await self.fills.publishing(digest)
        try:
            found = await self.registry.blobs.stat(route.local, str(digest))
        except BlobUnknown:
            return None
        self.note_pull(found.digest)
        metrics.cache_result(route.rule.name, "blob", HIT)
        return found

    async def _prove(self, route: Route, digest: Digest, readable: Readable) -> tuple[BlobFile, str]:
        """The store holds the bytes, the namespace does not link them: mount, or fetch and verify."""
        ingest = self.registry.ingest
        result = HIT
        if await ingest.mount(route.local, digest, readable) is None:
            try:
                async with self._single_flight(self._link_key(route, digest)):
                    if await self.registry.blobs.linked_size(route.local, str(digest)) is None:
                        client = await self.client(route.rule)
                        await self._blob_request(route, str(digest), self._fetch_verified(route, client, digest))
                        result = MISS
            except TimeoutError as error:
                raise self._failure(route, str(digest), error) from None
        found = await self.registry.blobs.stat(route.local, str(digest))
        self.note_pull(found.digest)
        metrics.cache_result(route.rule.name, "blob", result)
        return found, result

    async def _fetch_verified(self, route: Route, client: UpstreamClient, digest: Digest) -> None:
        """Download a blob the store already holds, to prove the upstream has exactly these bytes."""
        async with client.blob(route.upstream_repository, str(digest)) as response:
            try:
                await self.registry.ingest.receive(route.local, digest, response.chunks, response.size)
            except (DigestInvalid, SizeInvalid) as error:
                raise up.UpstreamProtocolError(
                    f"the upstream's bytes for {digest} are not that blob ({error.message})"
                ) from None

    async def blob_size(self, route: Route, digest: str, readable: Readable = nothing_readable) -> tuple[int | None, str]:
        """A HEAD for a blob: its size, from the namespace when linked (HIT), else from an upstream HEAD.

        Nothing is downloaded and nothing is linked: a HEAD learns a size, never bytes.
        """
        parsed = Digest.parse(digest)
        found = await self._linked(route, parsed)
        if found is not None:
            return found.size, HIT
        client = await self.client(route.rule)
        size = await self._blob_request(route, digest, client.head_blob(route.upstream_repository, str(parsed)))
        return size, MISS

    @staticmethod
    def _link_key(route: Route, digest: Digest) -> str:
        return f"blob {route.local}@{digest}"

    async def _record_fill(self, route: Route, stream: BlobStream, linking: contextlib.AsyncExitStack) -> None:
        """Link and count a fill once published, whether or not a requester streamed it to the end
        (a client that hung up): else the blob would be cached but never counted nor evicted."""
        try:
            proof = await self.fills.proof(stream)
            if proof is not None:
                await self.blob_filled(route, proof)
        finally:
            await linking.aclose()

    async def _blob_request(self, route: Route, digest: str, request: Awaitable[T]) -> T:
        try:
            return await request
        except up.UpstreamNotFound:
            raise BlobUnknown(
                f"{route.registry}/{route.upstream_repository} has no blob {digest}", detail={"digest": digest}
            ) from None
        # FillFailed: the fill failed (e.g. a small blob that did not verify) before this requester got its stream.
        except (up.UpstreamError, UpstreamRefused, TimeoutError, FillFailed) as error:
            raise self._failure(route, digest, error) from None

    async def recorded(self, digest: str) -> None:
        """Wait until a fill this worker started is linked and counted (its requester has all bytes already).

        Holding the connection until then means a client's next request sees the blob as cached.
        """
        task = self._recording.get(digest)
        if task is not None:
            await asyncio.wait([task])

    async def blob_filled(self, route: Route, proof: Verified) -> None:
        """A fill hashed and published these bytes: link them here and count them as cached content."""
        await self.registry.ingest.link(route.local, proof)
        await self.state.record_blob(str(proof.digest), proof.size)

    def note_pull(self, digest: str) -> None:
        self._pulls[digest] = datetime.now(UTC)

    async def flush_pulls(self) -> None:
        pulls, self._pulls = self._pulls, {}
        await self.state.touch(pulls)

    # ---- referrers and tags --------------------------------------------------------------------

    async def refresh_referrers(self, route: Route, digest: str) -> str:
        """Bring the upstream's referrers of ``digest`` into the namespace (at most once per TTL)."""
        key = f"referrers:{digest}"
        if await self._is_fresh(route, key, None):
            return HIT
        try:
            async with self._single_flight(f"referrers {route.local}@{digest}"):
                if await self._is_fresh(route, key, None):
                    return HIT
                fetched = await self._fetch_referrers(route, digest)
                result = MISS if fetched else REVALIDATED
                await self._mark_fresh(route, key, None)
        except (up.UpstreamError, UpstreamRefused, TimeoutError) as error:
            log.warning("serving cached referrers of %s@%s: %s", route.local, digest, error)
            result = STALE
        metrics.cache_result(route.rule.name, "referrers", result)
        return result

    async def _fetch_referrers(self, route: Route, digest: str) -> int:
        client = await self.client(route.rule)
        body = await client.referrers(route.upstream_repository, digest)
        if body is None:  # no referrers API upstream: the tag schema ("sha256-<hex>") holds an index of them
            parsed_digest = Digest.parse(digest)
            try:
                fallback = await client.get_manifest(route.upstream_repository, f"{parsed_digest.algorithm}-{parsed_digest.hex}")
            except up.UpstreamNotFound:
                return 0
            body = fallback.body
        try:
            descriptors = json.loads(body).get("manifests") or []
        except (ValueError, AttributeError):
            raise up.UpstreamProtocolError("the upstream's referrers answer is not an image index") from None
        fetched = 0
        for descriptor in descriptors:
            child = descriptor.get("digest") if isinstance(descriptor, dict) else None
            if not isinstance(child, str) or not Digest.is_valid(child):
                continue
            if await self._local(route.local, child) is None:
                await self._keep(route, await client.get_manifest(route.upstream_repository, child), None)
                fetched += 1
        return fetched

    async def tags(self, route: Route) -> tuple[list[str] | None, str]:
        """The upstream's tag list (MISS), or None when the upstream fails and the local list must do (STALE)."""
        client = await self.client(route.rule)
        try:
            found = await client.tags(route.upstream_repository)
        except up.UpstreamNotFound:
            raise ManifestUnknown(f"{route.registry}/{route.upstream_repository} does not exist upstream") from None
        except (up.UpstreamError, UpstreamRefused, TimeoutError) as error:
            log.warning("listing cached tags of %s: %s", route.local, error)
            metrics.cache_result(route.rule.name, "tags", STALE)
            return None, STALE
        metrics.cache_result(route.rule.name, "tags", MISS)
        return found, MISS

    # ---- warm-up -------------------------------------------------------------------------------

    async def warm(self, name: str, reference: str) -> WarmReport:
        """Fetch an image now — every platform, every blob, every referrer — before anyone pulls it."""
        route = await self.route(name)
        if route is None:
            raise NotCached(f"{name} is not covered by any cache rule")
        tally = _Tally()
        manifest, _ = await self.manifest(route, reference)
        await self._warm_all(route, [manifest.digest], tally)
        return WarmReport(tally.manifests, tally.blobs, tally.bytes)

    async def _warm_all(self, route: Route, digests: list[str], tally: "_Tally") -> None:
        limit = asyncio.Semaphore(4)
        seen: set[str] = set()

        async def manifest(digest: str) -> None:
            if digest in seen:
                return
            seen.add(digest)
            found, _ = await self.manifest(route, digest)
            tally.manifests += 1
            parsed = parse_manifest(found.body, found.media_type)
            await self.refresh_referrers(route, digest)
            referrers = json.loads(await self.registry.referrers.index(route.local, digest, None))
            children = [d.digest for d in parsed.manifests] + [r["digest"] for r in referrers["manifests"]]
            await asyncio.gather(
                *(blob(d.digest) for d in parsed.required_blobs), *(manifest(c) for c in children)
            )

        async def blob(digest: str) -> None:
            if digest in seen:
                return
            seen.add(digest)
            async with limit:
                found, result = await self.blob(route, digest)
                if isinstance(found, BlobStream):
                    size = 0
                    async for chunk in found:
                        size += len(chunk)
                    await self.recorded(digest)  # published, linked and counted (by _record_fill)
                    tally.bytes += size
                tally.blobs += 1

        await asyncio.gather(*(manifest(d) for d in digests))


class NotCached(DomainError, LookupError):
    """A warm-up or pin names a repository no cache rule covers."""

    code = "NOT_CACHED"


@dataclass
class _Tally:
    manifests: int = 0
    blobs: int = 0
    bytes: int = 0
