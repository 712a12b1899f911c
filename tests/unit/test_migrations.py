"""The Alembic history produces exactly the schema the code declares, on SQLite and PostgreSQL."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from cargohold.config import Settings
from cargohold.store.db import create_engine
from cargohold.store.migrate import migrate
from cargohold.store.schema import metadata
from servers import POSTGRES_URL, drop_postgres_schema_async


def _diff(connection: Connection) -> list[object]:
    return compare_metadata(MigrationContext.configure(connection), metadata)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migrations_match_schema(backend: str, tmp_path: Path) -> None:
    schema = f"m_{secrets.token_hex(6)}" if backend == "postgres" else None
    settings = Settings(
        data_dir=tmp_path,
        database_url=POSTGRES_URL if backend == "postgres" else None,
        database_schema=schema,
    )
    engine = create_engine(settings)
    try:
        await migrate(engine, schema)
        await migrate(engine, schema)  # idempotent: a second start changes nothing
        async with engine.connect() as conn:
            tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
            assert {"repositories", "blobs", "repository_blobs", "manifests", "manifest_references", "tags"} <= tables
            assert await conn.run_sync(_diff) == []
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one()
            assert version == "0006"
    finally:
        await engine.dispose()
        if schema:
            await drop_postgres_schema_async(schema)
