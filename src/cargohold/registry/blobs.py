"""Reading, mounting and deleting blobs a repository links."""

from __future__ import annotations

from ..oci.digest import Digest
from ..oci.errors import BlobUnknown
from ..oci.names import validate_name
from ..store.blobs import BlobFile
from .stores import Stores


class BlobService:
    def __init__(self, stores: Stores) -> None:
        self._s = stores

    async def stat(self, repository: str, digest: str) -> BlobFile:
        """The file behind a blob this repository may serve; ``BlobUnknown`` otherwise."""
        validate_name(repository)
        parsed = Digest.parse(digest)
        size = await self._s.metadata.linked_blob_size(repository, str(parsed))
        found = self._s.blobs.stat(parsed) if size is not None else None
        if found is None:
            raise BlobUnknown(detail={"digest": digest})
        return found

    async def mount(self, repository: str, source: str, digest: str) -> BlobFile | None:
        """Link a blob from ``source``; None when ``source`` cannot serve it (the caller then uploads)."""
        validate_name(repository)
        validate_name(source)
        parsed = Digest.parse(digest)
        if self._s.blobs.stat(parsed) is None:
            return None
        size = await self._s.metadata.mount_blob(repository, source, str(parsed))
        return self._s.blobs.stat(parsed) if size is not None else None

    async def link(self, repository: str, digest: str, size: int) -> None:
        """Make a blob whose bytes are already in the store servable from ``repository`` (the cache fills this way)."""
        validate_name(repository)
        await self._s.metadata.add_blob(repository, str(Digest.parse(digest)), size)

    async def referenced(self, repository: str, digest: str) -> bool:
        """Whether a manifest in ``repository`` names this blob."""
        return await self._s.metadata.references(repository, str(Digest.parse(digest)))

    async def delete(self, repository: str, digest: str) -> None:
        """Unlink from this repository; the bytes stay while anything else links them (garbage collection's job)."""
        validate_name(repository)
        parsed = Digest.parse(digest)
        if not await self._s.metadata.unlink_blob(repository, str(parsed)):
            raise BlobUnknown(detail={"digest": digest})
