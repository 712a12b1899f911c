"""One interface for a repository, whatever serves it.

The /v2 handlers are given a ``Repository`` once per request and never ask
what kind it is: ``LocalRepository`` here, over the registry's services, or
the cache's implementation (``cache/repository.py``) that wraps a local one,
refuses writes, fills on a miss and says how each answer was obtained
(``cache``: HIT, MISS, REVALIDATED, STALE; None for local content). This is
Distribution's ``registry/proxy`` shape: the proxy is a decorator over the
same services, not a second registry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..oci.digest import Digest
from ..store.blobs import BlobFile
from ..store.uploads import UploadState
from .ingest import Readable
from .listing import Page
from .manifest_cache import Manifest
from .manifests import PushedManifest
from .service import Registry


class BlobBody(Protocol):
    """A blob whose bytes are still arriving (a cache fill): sent as they may be, never all at once."""

    size: int | None

    async def sendfile(self, transport: asyncio.WriteTransport, start: int = 0, end: int | None = None) -> int: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class BlobAnswer:
    """A stored blob (``file``, sent with ``sendfile``) or one being filled (``stream``)."""

    digest: str
    file: BlobFile | None = None
    stream: BlobBody | None = None
    cache: str | None = None

    @property
    def size(self) -> int | None:
        return self.file.size if self.file is not None else self.stream.size if self.stream is not None else None


@dataclass(frozen=True, slots=True)
class Answered:
    """Content plus how the repository obtained it (``cache``: None for local content)."""

    manifest: Manifest
    cache: str | None = None


class Repository(Protocol):
    name: str

    async def manifest(self, reference: str) -> Answered: ...

    async def put_manifest(
        self, reference: str, body: bytes, content_type: str | None, extra_tags: Sequence[str] = ()
    ) -> PushedManifest: ...

    async def delete_manifest(self, reference: str) -> None: ...

    async def blob(self, digest: str) -> BlobAnswer: ...

    async def blob_size(self, digest: str) -> tuple[int | None, str | None]: ...

    async def blob_sent(self, digest: str) -> None:
        """A client received every byte of ``digest``: return once its next request will see it as stored."""
        ...

    async def delete_blob(self, digest: str) -> None: ...

    async def tags(self, n: int | None, last: str | None) -> tuple[Page, str | None]: ...

    async def referrers(self, subject: str, artifact_type: str | None) -> tuple[bytes, str | None]: ...

    async def start_upload(self, owner: str | None = None) -> UploadState:
        """A new upload session; ``owner`` is the identity opening it (None without auth), for its cap."""
        ...

    def upload_status(self, upload_id: str) -> UploadState: ...

    async def append_upload(
        self, upload_id: str, body: AsyncIterator[bytes], start: int | None, length: int | None
    ) -> UploadState: ...

    async def complete_upload(
        self, upload_id: str, digest: str, body: AsyncIterator[bytes] | None, start: int | None, length: int | None
    ) -> int: ...

    async def push_blob(self, digest: str, body: AsyncIterator[bytes], length: int | None) -> int: ...

    async def mount(self, digest: str, source: str) -> str | None:
        """Link ``digest`` from ``source`` if the caller may read it there; the digest, or None (upload instead)."""
        ...

    async def cancel_upload(self, upload_id: str) -> None: ...


class LocalRepository:
    """A repository of the local registry, as one caller (``readable``: what it may pull) sees it."""

    def __init__(self, registry: Registry, name: str, readable: Readable) -> None:
        self.name = name
        self._r = registry
        self._readable = readable

    async def manifest(self, reference: str) -> Answered:
        return Answered(await self._r.manifests.get(self.name, reference))

    async def put_manifest(
        self, reference: str, body: bytes, content_type: str | None, extra_tags: Sequence[str] = ()
    ) -> PushedManifest:
        return await self._r.manifests.put(self.name, reference, body, content_type, extra_tags)

    async def delete_manifest(self, reference: str) -> None:
        await self._r.manifests.delete(self.name, reference)

    async def blob(self, digest: str) -> BlobAnswer:
        found = await self._r.blobs.stat(self.name, digest)
        return BlobAnswer(found.digest, file=found)

    async def blob_size(self, digest: str) -> tuple[int | None, str | None]:
        return (await self._r.blobs.stat(self.name, digest)).size, None

    async def blob_sent(self, digest: str) -> None:
        return None

    async def delete_blob(self, digest: str) -> None:
        await self._r.blobs.delete(self.name, digest)

    async def tags(self, n: int | None, last: str | None) -> tuple[Page, str | None]:
        return await self._r.listing.tags(self.name, n, last), None

    async def referrers(self, subject: str, artifact_type: str | None) -> tuple[bytes, str | None]:
        return await self._r.referrers.index(self.name, subject, artifact_type), None

    async def start_upload(self, owner: str | None = None) -> UploadState:
        # In a thread: the cap check takes a lock shared with the other workers and scans the sessions.
        return await asyncio.to_thread(self._r.uploads.start, self.name, owner)

    def upload_status(self, upload_id: str) -> UploadState:
        return self._r.uploads.status(self.name, upload_id)

    async def append_upload(
        self, upload_id: str, body: AsyncIterator[bytes], start: int | None, length: int | None
    ) -> UploadState:
        return await self._r.uploads.append(self.name, upload_id, body, start, length)

    async def complete_upload(
        self, upload_id: str, digest: str, body: AsyncIterator[bytes] | None, start: int | None, length: int | None
    ) -> int:
        return await self._r.uploads.complete(self.name, upload_id, digest, body, start, length)

    async def push_blob(self, digest: str, body: AsyncIterator[bytes], length: int | None) -> int:
        return await self._r.uploads.monolithic(self.name, digest, body, length)

    async def mount(self, digest: str, source: str) -> str | None:
        parsed = Digest.parse(digest)
        size = await self._r.ingest.mount(self.name, parsed, self._readable, source=source)
        return None if size is None else str(parsed)

    async def cancel_upload(self, upload_id: str) -> None:
        self._r.uploads.cancel(self.name, upload_id)
