"""Alembic environment: runs on the connection handed over by ``store/migrate.py``."""

from __future__ import annotations

from alembic import context

from cargohold.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
context.run_migrations()
