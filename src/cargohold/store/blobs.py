"""Content-addressed blob files, stored once for the whole registry.

Layout ``blobs/<algorithm>/<first two hex>/<hex>`` like CNCF Distribution.
Which repository may serve a blob is metadata (``store/metadata.py``), not
something this store knows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..oci.digest import Digest, new_hasher
from .files import publish, write_durably

READ_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class BlobFile:
    digest: str
    path: Path
    size: int


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        return self.blobs / digest.algorithm / digest.hex[:2] / digest.hex

    def stat(self, digest: Digest) -> BlobFile | None:
        path = self.path(digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        return BlobFile(str(digest), path, size)

    async def adopt(self, tmp: Path, digest: Digest) -> None:
        """Publish an already verified and fsynced file under its digest."""
        await asyncio.to_thread(publish, tmp, self.path(digest))

    async def write(self, digest: Digest, data: bytes) -> None:
        """Store small content (manifests) durably; the caller has checked the digest."""
        path = self.path(digest)
        if not path.exists():
            await asyncio.to_thread(write_durably, self.tmp, path, data)

    async def read(self, digest: Digest) -> bytes:
        return await asyncio.to_thread(self.path(digest).read_bytes)

    def delete(self, digest: Digest) -> None:
        self.path(digest).unlink(missing_ok=True)

    def iter_digests(self) -> Iterator[Digest]:
        for algorithm_dir in sorted(self.blobs.iterdir()):
            for prefix in sorted(algorithm_dir.iterdir()):
                for entry in sorted(prefix.iterdir()):
                    if Digest.is_valid(f"{algorithm_dir.name}:{entry.name}"):
                        yield Digest(algorithm_dir.name, entry.name)

    def purge_tmp(self, max_age_seconds: float, now: float) -> int:
        removed = 0
        for entry in self.tmp.iterdir():
            try:
                if now - entry.stat().st_mtime > max_age_seconds:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                pass
        return removed


def hash_file(path: Path, algorithm: str) -> tuple[str, int]:
    """Digest and size of a file, read in chunks (constant memory)."""
    h = new_hasher(algorithm)
    size = 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(READ_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return f"{algorithm}:{h.hexdigest()}", size
