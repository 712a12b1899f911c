"""The stores a registry runs on, opened together from the settings."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from ..config import Settings
from ..store.blobs import BlobStore
from ..store.db import create_engine
from ..store.files import private_data_dir
from ..store.generation import Generation
from ..store.metadata import MetadataStore
from ..store.uploads import UploadCaps, UploadStore


@dataclass
class Stores:
    settings: Settings
    engine: AsyncEngine
    metadata: MetadataStore
    blobs: BlobStore
    uploads: UploadStore
    generation: Generation

    async def close(self) -> None:
        await self.engine.dispose()
        self.generation.close()


def open_stores(settings: Settings) -> Stores:
    data = settings.data_dir
    private_data_dir(data)
    engine = create_engine(settings)
    generation = Generation(data / "generation")
    return Stores(
        settings=settings,
        engine=engine,
        metadata=MetadataStore(engine, on_change=generation.bump),
        blobs=BlobStore(data),
        uploads=UploadStore(
            data, UploadCaps(settings.upload_sessions_per_repository, settings.upload_sessions_per_identity)
        ),
        generation=generation,
    )


async def prepare(settings: Settings, *, clean_leftovers: bool = True) -> None:
    """Create the data directory, migrate the database and clear crash leftovers.

    Leftovers are only cleared when no worker runs yet (server start-up): in a
    running registry a file in ``tmp/`` may be a write in progress.
    """
    from ..store.migrate import migrate  # Alembic is only needed here, not in every worker

    stores = open_stores(settings)
    try:
        await migrate(stores.engine, settings.database_schema)
        if clean_leftovers:
            stores.blobs.purge_tmp(0, float("inf"))
            stores.uploads.purge_dead()
    finally:
        await stores.close()
