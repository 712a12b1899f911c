"""The registry as one object: the services over one set of stores."""

from __future__ import annotations

from ..config import Settings
from .blobs import BlobService
from .ingest import BlobIngest
from .listing import ListingService
from .manifests import ManifestService
from .referrers import ReferrerService
from .repositories import RepositoryService
from .stores import Stores, open_stores
from .uploads import UploadService


class Registry:
    def __init__(self, stores: Stores) -> None:
        self.stores = stores
        self.blobs = BlobService(stores)
        self.ingest = BlobIngest(stores)
        self.uploads = UploadService(stores, self.ingest)
        self.manifests = ManifestService(stores)
        self.listing = ListingService(stores)
        self.referrers = ReferrerService(stores)
        self.repositories = RepositoryService(stores)

    @classmethod
    def open(cls, settings: Settings) -> "Registry":
        return cls(open_stores(settings))

    async def close(self) -> None:
        await self.stores.close()
