"""A cache namespace's repository: the local repository wrapped by the pull-through cache.

Reads are answered by ``CacheService`` (local copy, upstream, or stale copy);
every write is refused, uploads included (a session opened before a cache rule
took the namespace over cannot be finished into it either): a cached namespace
mirrors an upstream, so a push there would be overwritten or lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import NoReturn

from ..oci.errors import Denied
from ..registry.ingest import Readable
from ..registry.listing import Page, page_of
from ..registry.manifests import PushedManifest
from ..registry.repository import Answered, BlobAnswer, LocalRepository
from ..store.uploads import UploadState
from .fill import BlobStream
from .rules import Route
from .service import CacheService


class CachedRepository:
    def __init__(self, local: LocalRepository, route: Route, service: CacheService, readable: Readable) -> None:
        self.name = local.name
        self._local = local
        self._route = route
        self._service = service
        self._readable = readable

    def _refuse(self) -> NoReturn:
        route = self._route
        raise Denied(
            f"{route.local} is a read-only cache of {route.registry}/{route.upstream_repository} (cache rule "
            f"{route.rule.name!r}); push to a repository outside {route.rule.target}"
        )

    # ---- reads: through the cache ------------------------------------------------------------

    async def manifest(self, reference: str) -> Answered:
        manifest, result = await self._service.manifest(self._route, reference)
        return Answered(manifest, result)

    async def blob(self, digest: str) -> BlobAnswer:
        found, result = await self._service.blob(self._route, digest, self._readable)
        if isinstance(found, BlobStream):
            return BlobAnswer(digest, stream=found, cache=result)
        return BlobAnswer(found.digest, file=found, cache=result)

    async def blob_size(self, digest: str) -> tuple[int | None, str | None]:
        return await self._service.blob_size(self._route, digest, self._readable)

    async def blob_sent(self, digest: str) -> None:
        await self._service.recorded(digest)

    async def tags(self, n: int | None, last: str | None) -> tuple[Page, str | None]:
        # A cache namespace lists what the upstream has (what a client could pull), not only what was pulled.
        upstream, result = await self._service.tags(self._route)
        if upstream is None:
            page, _ = await self._local.tags(n, last)
            return page, result
        return page_of(sorted(t for t in set(upstream) if last is None or t > last), n), result

    async def referrers(self, subject: str, artifact_type: str | None) -> tuple[bytes, str | None]:
        result = await self._service.refresh_referrers(self._route, subject)
        body, _ = await self._local.referrers(subject, artifact_type)
        return body, result

    # ---- writes: refused ---------------------------------------------------------------------

    async def put_manifest(
        self, reference: str, body: bytes, content_type: str | None, extra_tags: Sequence[str] = ()
    ) -> PushedManifest:
        self._refuse()

    async def delete_manifest(self, reference: str) -> None:
        self._refuse()

    async def delete_blob(self, digest: str) -> None:
        self._refuse()

    async def start_upload(self, owner: str | None = None) -> UploadState:
        self._refuse()

    def upload_status(self, upload_id: str) -> UploadState:
        self._refuse()

    async def append_upload(
        self, upload_id: str, body: AsyncIterator[bytes], start: int | None, length: int | None
    ) -> UploadState:
        self._refuse()

    async def complete_upload(
        self, upload_id: str, digest: str, body: AsyncIterator[bytes] | None, start: int | None, length: int | None
    ) -> int:
        self._refuse()

    async def push_blob(self, digest: str, body: AsyncIterator[bytes], length: int | None) -> int:
        self._refuse()

    async def mount(self, digest: str, source: str) -> str | None:
        self._refuse()

    async def cancel_upload(self, upload_id: str) -> None:
        self._refuse()
