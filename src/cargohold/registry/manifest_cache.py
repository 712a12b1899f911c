"""In-process cache of hot manifests, so a pull by tag costs no SQL and no file read.

Entries are dropped wholesale whenever the shared generation changes (any
metadata write by any worker), which keeps every worker read-your-writes
consistent without per-key invalidation messages.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..store.generation import Generation


@dataclass(frozen=True, slots=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes


class ManifestCache:
    def __init__(self, generation: Generation, max_entries: int, max_bytes: int) -> None:
        self._generation = generation
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: dict[tuple[str, str], Manifest] = {}
        self._bytes = 0
        self._seen = generation.current()

    def snapshot(self) -> bytes:
        """The generation a lookup starts under; pass it back to ``put``."""
        current = self._generation.current()
        if current != self._seen:
            self._entries.clear()
            self._bytes = 0
            self._seen = current
        return current

    def get(self, repository: str, reference: str) -> Manifest | None:
        self.snapshot()
        return self._entries.get((repository, reference))

    def put(self, repository: str, reference: str, manifest: Manifest, generation: bytes) -> None:
        if generation != self._seen or not self._max_entries or len(manifest.body) > self._max_bytes:
            return
        while self._entries and (len(self._entries) >= self._max_entries or self._bytes + len(manifest.body) > self._max_bytes):
            oldest = next(iter(self._entries))
            self._bytes -= len(self._entries.pop(oldest).body)
        self._entries[(repository, reference)] = manifest
        self._bytes += len(manifest.body)
