"""Blob upload sessions: monolithic, chunked and resumed pushes.

Bytes are hashed while they stream to disk and become visible only after the
digest checks out; completing a session is the ingest path's job
(``ingest.py``: verified → fsynced → renamed into the blob store → linked).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from ..oci.digest import Digest
from ..oci.names import validate_name
from ..store.uploads import UploadState
from .ingest import BlobIngest
from .stores import Stores


class UploadService:
    def __init__(self, stores: Stores, ingest: BlobIngest) -> None:
        self._s = stores
        self._ingest = ingest

    def start(self, repository: str, owner: str | None = None) -> UploadState:
        """A client session; ``owner`` (the identity opening it) counts it against the per-identity cap."""
        validate_name(repository)
        return self._s.uploads.create(repository, owner=owner)

    def status(self, repository: str, upload_id: str) -> UploadState:
        validate_name(repository)
        return self._s.uploads.state(repository, upload_id)

    async def append(
        self, repository: str, upload_id: str, body: AsyncIterator[bytes], start: int | None, length: int | None
    ) -> UploadState:
        validate_name(repository)
        return await self._s.uploads.append(repository, upload_id, body, start, length)

    async def complete(
        self,
        repository: str,
        upload_id: str,
        digest: str,
        body: AsyncIterator[bytes] | None = None,
        start: int | None = None,
        length: int | None = None,
    ) -> int:
        """Append the final chunk (may be empty), verify, publish and link; the blob's size."""
        validate_name(repository)
        proof = await self._ingest.finish_session(repository, upload_id, Digest.parse(digest), body, start, length)
        return proof.size

    async def monolithic(self, repository: str, digest: str, body: AsyncIterator[bytes], length: int | None) -> int:
        validate_name(repository)
        proof = await self._ingest.receive(repository, Digest.parse(digest), body, length)
        return proof.size

    def cancel(self, repository: str, upload_id: str) -> None:
        validate_name(repository)
        self._s.uploads.cancel(repository, upload_id)

    def purge(self) -> int:
        settings = self._s.settings
        now = time.time()
        removed = self._s.uploads.purge(settings.upload_max_age_seconds, now, settings.upload_empty_max_age_seconds)
        return removed + self._s.blobs.purge_tmp(
            settings.upload_max_age_seconds, now
        )
