"""Artifact cache: credential sets, cache rules, freshness, cached blobs and pins.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
DIGEST = sa.String(140)


def upgrade() -> None:
    op.create_table(
        "credential_sets",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("login_server", sa.String(255), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("secret", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("last_login_at", TS, nullable=True),
        sa.Column("last_login_ok", sa.Boolean, nullable=True),
        sa.Column("last_login_error", sa.String(512), nullable=True),
        sa.Column("ratelimit_limit", sa.Integer, nullable=True),
        sa.Column("ratelimit_remaining", sa.Integer, nullable=True),
        sa.Column("ratelimit_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_credential_sets"),
        sa.UniqueConstraint("name", name="uq_credential_sets_name"),
    )
    op.create_table(
        "cache_rules",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("credential_set", sa.String(64), nullable=True),
        sa.Column("tag_ttl_seconds", sa.Integer, nullable=False),
        sa.Column("eager_platforms", sa.Boolean, nullable=False),
        sa.Column("insecure", sa.Boolean, nullable=False),
        sa.Column("dockerhub_mirror", sa.Boolean, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cache_rules"),
        sa.UniqueConstraint("name", name="uq_cache_rules_name"),
        sa.UniqueConstraint("target", name="uq_cache_rules_target"),
        sa.ForeignKeyConstraint(
            ["credential_set"], ["credential_sets.name"], name="fk_cache_rules_credential_set_credential_sets"
        ),
    )
    op.create_table(
        "cache_freshness",
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("key", sa.String(160), nullable=False),
        sa.Column("digest", DIGEST, nullable=True),
        sa.Column("checked_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("repository", "key", name="pk_cache_freshness"),
    )
    op.create_table(
        "cache_blobs",
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("fetched_at", TS, nullable=False),
        sa.Column("last_pulled_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_cache_blobs"),
    )
    op.create_index("ix_cache_blobs_last_pulled_at", "cache_blobs", ["last_pulled_at"])
    op.create_table(
        "cache_pins",
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("reference", sa.String(160), nullable=False),
        sa.Column("created_by", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("repository", "reference", name="pk_cache_pins"),
    )


def downgrade() -> None:
    for table in ("cache_pins", "cache_blobs", "cache_freshness", "cache_rules", "credential_sets"):
        op.drop_table(table)
