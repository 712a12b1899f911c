"""Reading and unlinking the blobs a repository links (bytes come in through ``ingest.py``)."""

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

    async def linked_size(self, repository: str, digest: str) -> int | None:
        """The size of a blob ``repository`` links; None when it does not."""
        validate_name(repository)
        return await self._s.metadata.linked_blob_size(repository, str(Digest.parse(digest)))

    async def delete(self, repository: str, digest: str) -> None:
        """Unlink from this repository; the bytes stay while anything else links them (garbage collection's job)."""
        validate_name(repository)
        parsed = Digest.parse(digest)
        if not await self._s.metadata.unlink_blob(repository, str(parsed)):
            raise BlobUnknown(detail={"digest": digest})
