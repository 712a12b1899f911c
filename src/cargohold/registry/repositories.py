"""Whole repositories: deleting one with everything it holds.

Tags and manifests go one at a time through ``/v2`` (``manifests.py``); a
repository goes at once, in one metadata transaction, so that no reader sees
it half-deleted. Who may do it, and that a cache namespace is refused, is the
caller's decision (``web/api/repositories.py``).
"""

from __future__ import annotations

from ..oci.errors import NameUnknown
from ..oci.names import validate_name
from ..store.metadata import RemovedRepository
from .stores import Stores


class RepositoryService:
    def __init__(self, stores: Stores) -> None:
        self._s = stores

    async def delete(self, name: str) -> RemovedRepository:
        """Delete ``name`` with its tags, manifests and blob links; ``NameUnknown`` if the store has no such repository."""
        validate_name(name)
        removed = await self._s.metadata.delete_repository(name)
        if removed is None:
            raise NameUnknown(detail={"name": name})
        return removed
