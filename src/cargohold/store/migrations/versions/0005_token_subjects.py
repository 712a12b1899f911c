"""Token subjects and refresh-token rotation: a generation on users and robots, families on refresh tokens.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing identities keep generation "0"; every new one and every password change draws a random one.
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("generation", sa.String(32), nullable=False, server_default="0"))
    with op.batch_alter_table("robots") as batch:
        batch.add_column(sa.Column("generation", sa.String(32), nullable=False, server_default="0"))
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.add_column(sa.Column("family", sa.String(32), nullable=True))
        batch.add_column(sa.Column("used_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_refresh_tokens_family", ["family"])


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_index("ix_refresh_tokens_family")
        batch.drop_column("used_at")
        batch.drop_column("family")
    with op.batch_alter_table("robots") as batch:
        batch.drop_column("generation")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("generation")
