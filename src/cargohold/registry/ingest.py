"""The one path by which blob bytes enter a repository, and the possession rule that guards it.

stream → hash → verify size and digest → fsync → publish → link.

Push (monolithic and chunked), server-side import, sync and OCI-layout import
all stream through ``receive``/``finish_session``; the pull-through cache's
fill streams to its own partial file (so that many readers can follow it) but
hands its verified result to ``link`` the same way.

**Possession rule.** A blob becomes readable in a repository only when

* bytes that arrived for it hashed to its digest (a ``Verified`` proof, made
  by this module, by ``store.uploads`` or by a cache fill that hashed them), or
* the caller may already read a repository that links it (``mount``: the
  distribution-spec's cross-repository mount, and deduplication for imports
  and cache fills).

A source's word — a 200, a HEAD, a Content-Length, a manifest naming the
digest — is not proof. The blob store being content-addressed and shared by
all repositories is what makes this rule necessary: without it, naming a
digest would be enough to read another repository's private layer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ..oci.digest import Digest
from ..oci.names import validate_name
from .stores import Stores

Readable = Callable[[str], bool]
"""Whether the caller may read (pull from) a repository: the mount rule's question."""

# How many repositories that link a digest are considered for a mount; a blob shared by more
# than this many is found among the first ones in name order (any readable one will do).
MOUNT_CANDIDATES = 200


def nothing_readable(_: str) -> bool:
    """For callers that may read nothing but what they fetch themselves (sync rules, the cache's own fills)."""
    return False


@dataclass(frozen=True, slots=True)
class Verified:
    """Proof that bytes hashing to ``digest`` (``size`` of them) arrived and are durable in the blob store.

    Only code that hashed the bytes itself makes one: ``BlobIngest`` and the cache's fill.
    """

    digest: Digest
    size: int


class BlobIngest:
    def __init__(self, stores: Stores) -> None:
        self._s = stores

    async def receive(
        self, repository: str, digest: Digest, chunks: AsyncIterator[bytes], size: int | None = None
    ) -> Verified:
        """Stream ``chunks`` in as ``digest`` and link it into ``repository``.

        ``size`` (when known) bounds the stream: more bytes fail at once, fewer fail at the end.
        ``DigestInvalid``/``SizeInvalid`` when the bytes are not the blob; nothing is kept then.
        """
        validate_name(repository)
        uploads = self._s.uploads
        state = uploads.create(repository, internal=True)
        try:
            return await self.finish_session(repository, state.id, digest, chunks, 0, size)
        finally:
            uploads.discard(state.id)

    async def finish_session(
        self,
        repository: str,
        upload_id: str,
        digest: Digest,
        chunks: AsyncIterator[bytes] | None = None,
        start: int | None = None,
        length: int | None = None,
    ) -> Verified:
        """Append the last chunk (may be none), verify the whole session, publish and link."""
        validate_name(repository)
        uploads = self._s.uploads
        uploads.state(repository, upload_id)
        if chunks is not None:
            await uploads.append(repository, upload_id, chunks, start, length)
        finished = await uploads.finish(repository, upload_id, digest)
        try:
            await self._s.blobs.adopt(finished.path, digest)
        finally:
            uploads.discard(upload_id)
        proof = Verified(digest, finished.size)
        await self.link(repository, proof)
        return proof

    async def link(self, repository: str, proof: Verified) -> None:
        """Make verified bytes readable in ``repository``."""
        validate_name(repository)
        await self._s.metadata.add_blob(repository, str(proof.digest), proof.size)

    async def mount(self, repository: str, digest: Digest, readable: Readable, source: str | None = None) -> int | None:
        """Link ``digest`` from a repository the caller may read (``source``, or any); its size, or None.

        None means the caller must bring the bytes (push them, or fetch them from a source).
        """
        validate_name(repository)
        if source is not None:
            if not readable(source):
                return None
            validate_name(source)
            candidates = [source]
        else:
            candidates = await self._s.metadata.repositories_linking(str(digest), MOUNT_CANDIDATES)
        for name in candidates:
            if name == repository or not readable(name):
                continue
            if self._s.blobs.stat(digest) is None:
                return None  # metadata without bytes (a crash leftover): nothing to mount
            size = await self._s.metadata.mount_blob(repository, name, str(digest))
            if size is not None:
                return size
        return None
