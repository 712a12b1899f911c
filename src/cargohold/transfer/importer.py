"""Server-side import: copy an image, index or artifact from any registry into local repositories.

No Docker daemon is involved: the server speaks to the source registry with
``upstream.UpstreamClient`` (auth challenges, token cache, retries, the
outbound guard) and commits through ``registry`` like a push would.

What is copied, in three phases, so that a failure leaves no target tag:

1. **Graph.** The source manifest, every child of an index (all platforms, or
   only the ``platforms`` asked for) and, for every copied manifest, its
   referrers (the referrers API, or the ``sha256-<hex>`` tag schema when the
   source has none — CNCF Distribution 2.8), recursively. Manifests are small
   and are kept in memory as the exact bytes the source served.
2. **Blobs.** Each blob a copied manifest needs is skipped when the target
   repository links it already, linked without a request when the requester
   may read a repository that links it (the mount rule), else streamed from the
   source through the registry's ingest path (hashed, size and digest checked,
   fsynced, published, linked) — even when the store holds its bytes already:
   a source naming a digest is no proof of possessing it, so an import cannot
   be used to read another repository's blobs. At most ``PARALLEL_BLOBS`` at a time.
3. **Manifests**, byte-exact, children before parents; the top manifest last,
   with the target tag in the same transaction. Until then the tag does not
   move (or exist).

With a platform filter, the index is still stored byte-exact (its digest is
the source's), but only the listed children and their content are copied: the
index is stored ``lazy`` — like a cache fill — and a pull of a platform that
was not copied answers ``MANIFEST_UNKNOWN``.

Without ``force``, a target tag that exists and points to another digest fails
the import before anything is copied (``TargetConflict``).

A finished copy records its provenance (``store.imports.ProvenanceStore``):
one row per target — source reference, source digest, who, when, and whether
an import or a sync rule asked. Callers (the imports API, sync rules) say who
and why through ``run``'s keyword arguments; a failed copy records nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ..config import Settings
from ..oci import mediatypes as mt
from ..oci.digest import Digest
from ..oci.errors import BlobUnknown, DigestInvalid, DomainError, RegistryError, SizeInvalid
from ..oci.manifest import parse_manifest
from ..oci.reference import Reference
from ..registry.ingest import Readable, Verified, nothing_readable
from ..registry.service import Registry
from ..store.imports import ProvenanceRecord, ProvenanceStore
from ..upstream import errors as up
from ..upstream.client import (
    Credentials,
    Endpoint,
    FetchedManifest,
    UpstreamClient,
    UpstreamObserver,
)
from ..upstream.guard import UpstreamRefused
from ..upstream.http import guarded_session

log = logging.getLogger("cargohold.transfer")

PARALLEL_BLOBS = 4
PLATFORM_PATTERN = r"^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$"  # os/arch[/variant], as the APIs accept a platform
Progress = Callable[[int, int], None]  # (bytes fetched so far, blobs done so far)
Totals = Callable[[int, int], None]  # (bytes to fetch at most, blobs to copy): called once, when the plan is known


class ImportFailed(DomainError):
    """An import that cannot be done: the source failed (``SOURCE_FAILED``) or a subclass says what else.

    The code is stored with a failed import job and answered by the management
    API; its HTTP status is registered in ``web/codes.py``.
    """

    code = "SOURCE_FAILED"
    retry_after: float | None = None  # seconds the source asked to wait (SourceRateLimited), None otherwise


class TargetConflict(ImportFailed):
    """A target tag points elsewhere and the import was not forced."""

    code = "TARGET_EXISTS"


class SourceNotFound(ImportFailed):
    """The source registry does not have the image (or the repository)."""

    code = "SOURCE_NOT_FOUND"


class InvalidImport(ImportFailed):
    """The request itself cannot be an import (a bad reference, no target, a credential mix-up)."""

    code = "INVALID_IMPORT"


class SourceAuthFailed(ImportFailed):
    """The source refused the credentials (or wants some)."""

    code = "SOURCE_AUTH_FAILED"


class SourceRateLimited(ImportFailed):
    """The source is rate-limiting; ``retry_after`` (seconds) is what it asked for, when it said."""

    code = "SOURCE_RATE_LIMITED"

    def __init__(self, message: str | None = None, detail: Any = None, retry_after: float | None = None) -> None:
        super().__init__(message, detail)
        self.retry_after = retry_after


class SourceRefused(ImportFailed):
    """The outbound guard refuses the source's address (loopback, private, metadata, …)."""

    code = "UPSTREAM_NOT_ALLOWED"


class SourceInvalid(ImportFailed):
    """The source served a manifest this registry does not accept."""

    code = "SOURCE_INVALID"


@dataclass(frozen=True)
class Target:
    """A local repository and the tag to set (None: store by digest only)."""

    repository: str
    tag: str | None

    def __str__(self) -> str:
        return f"{self.repository}:{self.tag}" if self.tag else self.repository


@dataclass(frozen=True)
class ImportResult:
    source_digest: str
    manifests: int
    blobs: int
    fetched_blobs: int
    fetched_bytes: int


@dataclass
class _Node:
    fetched: FetchedManifest
    blobs: list[tuple[str, int]]
    lazy: bool = False


@dataclass
class _Plan:
    nodes: dict[str, _Node] = field(default_factory=dict)  # insertion order: children before parents
    top: str = ""

    def blobs(self) -> dict[str, int]:
        """Every blob the copied manifests need, once: digest → size."""
        return dict(blob for node in self.nodes.values() for blob in node.blobs)


def matches_platform(platform: Any, wanted: list[str]) -> bool:
    """Whether an index entry's ``platform`` is one of ``os/arch[/variant]`` (a spec without variant matches any)."""
    if not isinstance(platform, dict):
        return False
    os_, arch, variant = platform.get("os"), platform.get("architecture"), platform.get("variant")
    for spec in wanted:
        parts = spec.split("/")
        if len(parts) >= 2 and parts[0] == os_ and parts[1] == arch and (len(parts) == 2 or parts[2] == variant):
            return True
    return False


class Importer:
    """Copies from a source registry into this one. One instance per worker; ``run`` may be called concurrently."""

    def __init__(self, registry: Registry, settings: Settings) -> None:
        self.registry = registry
        self.settings = settings

    async def run(
        self,
        source_ref: str,
        targets: list[Target],
        credentials: Credentials | None = None,
        *,
        insecure: bool = False,
        force: bool = False,
        platforms: list[str] | None = None,
        progress: Progress | None = None,
        totals: Totals | None = None,
        requested_by: str = "",
        via: str = "import",
        job: str | None = None,
        observer: UpstreamObserver | None = None,
        client: UpstreamClient | None = None,
        max_retry_after: float | None = None,
        readable: Readable = nothing_readable,
    ) -> ImportResult:
        """Copy ``source_ref`` to every target; on success record one provenance row per target.

        ``requested_by``, ``via`` ("import" or "sync") and ``job`` (an import job id, or
        "rule#run") go into the provenance; ``observer`` sees every request to the source
        (a sync rule counts its request budget with it). ``totals`` is called once the graph is
        known, with the bytes and blobs an import fetches at most (blobs already held count too).

        ``client``: an open client for the source's registry to use (a sync run's: one session and
        token cache for the whole run; it carries its own credentials, observer and retry policy,
        so ``credentials``, ``insecure``, ``observer`` and ``max_retry_after`` are then unused).
        Otherwise a client of its own is made; ``max_retry_after`` (default 2 s) is the longest
        ``Retry-After`` it sleeps on inline before failing with SOURCE_RATE_LIMITED.

        ``readable``: which local repositories the requester may pull from. A blob one of them links
        is linked without fetching; every other blob is fetched from the source and verified, even
        when the store holds its bytes (the possession rule).
        """
        try:
            source = Reference.parse(source_ref)
            endpoint = Endpoint(source.registry, insecure)
        except (RegistryError, ValueError) as exc:
            raise InvalidImport(f"{source_ref[:200]!r} is not an image reference: {exc}") from None
        if not targets:
            raise InvalidImport("no target repository")
        if client is not None and client.endpoint.registry != endpoint.registry:
            raise InvalidImport(f"{source_ref[:200]!r} is not on {client.endpoint.registry}, the client's registry")
        current = {t: await self._tag_digest(t) for t in targets}
        async with self._client(client, endpoint, credentials, observer, max_retry_after) as upstream:
            where = f"{source.registry}/{source.repository}"
            try:
                plan = await self._plan(upstream, source, platforms)
                for target, digest in current.items():
                    if digest is not None and digest != plan.top and not force:
                        raise TargetConflict(
                            f"{target} points to {digest}, not to {plan.top} ({source_ref}); import with force to move it"
                        )
                tally = _Tally(progress, readable)
                if totals is not None:  # bytes: each blob is fetched once at most, whatever the number of targets
                    wanted = plan.blobs()
                    totals(sum(wanted.values()), len(wanted) * len({t.repository for t in targets}))
                for repository in dict.fromkeys(t.repository for t in targets):
                    await self._copy_blobs(upstream, source.repository, repository, plan, tally)
                for target in targets:
                    await self._put_manifests(target, plan)
            except ImportFailed:
                raise
            except up.UpstreamNotFound as exc:
                raise SourceNotFound(f"{where}: {exc}") from None
            except up.UpstreamAuthFailed as exc:
                raise SourceAuthFailed(f"{where} refused the credentials: {exc}") from None
            except up.UpstreamRateLimited as exc:
                raise SourceRateLimited(f"{where} is rate-limiting: {exc}", retry_after=exc.retry_after) from None
            except UpstreamRefused as exc:
                raise SourceRefused(f"{where}: {exc}") from None
            except (up.UpstreamError, TimeoutError) as exc:
                raise ImportFailed(f"{where} failed: {exc or type(exc).__name__}") from None
            except RegistryError as exc:  # a source manifest this registry does not accept
                raise SourceInvalid(f"{where}: {exc.code}: {exc.message}") from None
        await self._record(source, plan.top, targets, requested_by, via, job)
        return ImportResult(plan.top, len(plan.nodes), tally.blobs, tally.fetched_blobs, tally.bytes)

    @contextlib.asynccontextmanager
    async def _client(
        self, given: UpstreamClient | None, endpoint: Endpoint, credentials: Credentials | None,
        observer: UpstreamObserver | None, max_retry_after: float | None,
    ) -> AsyncIterator[UpstreamClient]:
        if given is not None:
            yield given
            return
        keepalive = max(1.0, min(15.0, self.settings.upstream_timeout_seconds / 2))
        async with guarded_session(self.settings, limit=32, keepalive_timeout=keepalive) as session:
            yield UpstreamClient(
                session, endpoint, credentials, observer=observer, retries=self.settings.upstream_retries,
                timeout=self.settings.upstream_timeout_seconds,
                max_retry_after=2.0 if max_retry_after is None else max_retry_after,
            )

    async def _record(
        self, source: Reference, digest: str, targets: list[Target], requested_by: str, via: str, job: str | None
    ) -> None:
        """Provenance of a finished copy. The content is in place by now: a failure here is logged, not raised."""
        at = datetime.now(UTC)
        records = [
            ProvenanceRecord(t.repository, t.tag, digest, str(source), digest, via, job, requested_by, at) for t in targets
        ]
        try:
            await ProvenanceStore(self.registry.stores.engine).record(records)
        except Exception:
            log.exception("import of %s succeeded, but its provenance could not be recorded", source)

    async def _tag_digest(self, target: Target) -> str | None:
        if target.tag is None:
            return None
        return await self.registry.manifests.digest_of(target.repository, target.tag)

    # ---- phase 1: the manifests --------------------------------------------------------------

    async def _plan(self, client: UpstreamClient, source: Reference, platforms: list[str] | None) -> _Plan:
        plan = _Plan()
        top = await client.get_manifest(source.repository, source.identifier)
        plan.top = top.digest
        visiting: set[str] = set()

        async def visit(fetched: FetchedManifest, platform_filter: list[str] | None) -> None:
            if fetched.digest in plan.nodes or fetched.digest in visiting:
                return
            visiting.add(fetched.digest)
            parsed = parse_manifest(fetched.body, fetched.media_type)
            lazy = False
            if parsed.media_type in mt.INDEXES:
                children = json.loads(fetched.body).get("manifests") or []
                if platform_filter:
                    chosen = [c for c in children if matches_platform(c.get("platform"), platform_filter)]
                    if not chosen:
                        raise InvalidImport(f"{fetched.digest} has no manifest for {', '.join(platform_filter)}")
                    lazy = len(chosen) < len(children)
                    children = chosen
                for child in children:
                    digest = child.get("digest")
                    await visit(await client.get_manifest(source.repository, digest), None)
            blobs = [(d.digest, d.size) for d in parsed.required_blobs]
            plan.nodes[fetched.digest] = _Node(fetched, blobs, lazy)
            for referrer in await self._referrers(client, source.repository, fetched.digest):
                if referrer not in plan.nodes:
                    await visit(await client.get_manifest(source.repository, referrer), None)

        await visit(top, platforms)
        return plan

    async def _referrers(self, client: UpstreamClient, repository: str, digest: str) -> list[str]:
        body = await client.referrers(repository, digest)
        if body is None:  # no referrers API: the tag schema ("sha256-<hex>") holds an index of them
            parsed = Digest.parse(digest)
            try:
                body = (await client.get_manifest(repository, f"{parsed.algorithm}-{parsed.hex}")).body
            except up.UpstreamNotFound:
                return []
        try:
            descriptors = json.loads(body).get("manifests") or []
        except (ValueError, AttributeError):
            raise up.UpstreamProtocolError("the source's referrers answer is not an image index") from None
        found = []
        for descriptor in descriptors:
            child = descriptor.get("digest") if isinstance(descriptor, dict) else None
            if isinstance(child, str) and Digest.is_valid(child):
                found.append(child)
        return found

    # ---- phase 2: the blobs ------------------------------------------------------------------

    async def _copy_blobs(self, client: UpstreamClient, source_repo: str, repository: str, plan: _Plan, tally: _Tally) -> None:
        wanted = plan.blobs()
        limit = asyncio.Semaphore(PARALLEL_BLOBS)

        async def one(digest: str, size: int) -> None:
            async with limit:
                await self._copy_blob(client, source_repo, repository, digest, size, tally)

        tasks = [asyncio.ensure_future(one(d, s)) for d, s in wanted.items()]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _copy_blob(
        self, client: UpstreamClient, source_repo: str, repository: str, digest: str, size: int, tally: _Tally
    ) -> None:
        """Link a blob the caller may read already; otherwise fetch it and link what hashed right.

        A blob the store holds for another repository is fetched like any other unless the caller may
        read a repository that links it (the possession rule, ``registry/ingest.py``): the source's
        answer naming it proves nothing.
        """
        try:
            await self.registry.blobs.stat(repository, digest)
        except BlobUnknown:
            pass
        else:
            tally.done(0)
            return
        parsed = Digest.parse(digest)
        ingest = self.registry.ingest
        proof = tally.proofs.get(digest)  # fetched for another target repository of this import
        if proof is not None:
            await ingest.link(repository, proof)
        elif await ingest.mount(repository, parsed, tally.readable) is None:
            tally.proofs[digest] = await self._download(client, source_repo, repository, parsed, size, tally)
            tally.fetched_blobs += 1
        tally.done(0)

    async def _download(
        self, client: UpstreamClient, source_repo: str, repository: str, digest: Digest, size: int, tally: _Tally
    ) -> Verified:
        """Stream a blob from the source through the ingest path (hashed, checked, durable, then linked)."""
        async with client.blob(source_repo, str(digest)) as response:
            if response.size is not None and response.size != size:
                raise ImportFailed(f"the source says blob {digest} has {response.size} bytes, its manifest says {size}")

            async def counted() -> AsyncIterator[bytes]:
                async for chunk in response.chunks:
                    tally.add_bytes(len(chunk))
                    yield chunk

            try:
                return await self.registry.ingest.receive(repository, digest, counted(), size)
            except SizeInvalid:
                raise ImportFailed(f"blob {digest}: the source did not send the {size} bytes its manifest says") from None
            except DigestInvalid:
                raise ImportFailed(f"blob {digest}: the bytes the source sent do not match the digest") from None

    # ---- phase 3: the manifests, the tag last ------------------------------------------------

    async def _put_manifests(self, target: Target, plan: _Plan) -> None:
        for digest, node in plan.nodes.items():
            if digest == plan.top:
                continue
            await self.registry.manifests.put(target.repository, digest, node.fetched.body, node.fetched.media_type, lazy=node.lazy)
        top = plan.nodes[plan.top]
        tags = [target.tag] if target.tag else []
        await self.registry.manifests.put(target.repository, plan.top, top.fetched.body, top.fetched.media_type, tags, lazy=top.lazy)


class _Tally:
    def __init__(self, progress: Progress | None, readable: Readable) -> None:
        self.progress = progress
        self.readable = readable
        self.bytes = 0
        self.blobs = 0
        self.fetched_blobs = 0
        self.proofs: dict[str, Verified] = {}

    def add_bytes(self, n: int) -> None:
        self.bytes += n
        if self.progress is not None:
            self.progress(self.bytes, self.blobs)

    def done(self, n: int) -> None:
        self.blobs += 1
        if self.progress is not None:
            self.progress(self.bytes, self.blobs)
