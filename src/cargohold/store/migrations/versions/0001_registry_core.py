"""Registry core: repositories, blobs, manifests, references and tags.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

DIGEST = sa.String(140)
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "repositories",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_repositories"),
        sa.UniqueConstraint("name", name="uq_repositories_name"),
    )
    op.create_table(
        "blobs",
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("digest", name="pk_blobs"),
    )
    op.create_table(
        "repository_blobs",
        sa.Column("repository_id", sa.Integer, nullable=False),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("repository_id", "digest", name="pk_repository_blobs"),
        sa.ForeignKeyConstraint(
            ["repository_id"], ["repositories.id"], ondelete="CASCADE",
            name="fk_repository_blobs_repository_id_repositories",
        ),
        sa.ForeignKeyConstraint(["digest"], ["blobs.digest"], name="fk_repository_blobs_digest_blobs"),
    )
    op.create_table(
        "manifests",
        sa.Column("repository_id", sa.Integer, nullable=False),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("media_type", sa.String(255), nullable=False),
        sa.Column("artifact_type", sa.String(255), nullable=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("subject", DIGEST, nullable=True),
        sa.Column("annotations", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("repository_id", "digest", name="pk_manifests"),
        sa.ForeignKeyConstraint(
            ["repository_id"], ["repositories.id"], ondelete="CASCADE", name="fk_manifests_repository_id_repositories"
        ),
        sa.ForeignKeyConstraint(["digest"], ["blobs.digest"], name="fk_manifests_digest_blobs"),
    )
    op.create_index("ix_manifests_subject", "manifests", ["repository_id", "subject"])
    op.create_table(
        "manifest_references",
        sa.Column("repository_id", sa.Integer, nullable=False),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("child", DIGEST, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.PrimaryKeyConstraint("repository_id", "digest", "child", name="pk_manifest_references"),
        sa.ForeignKeyConstraint(
            ["repository_id", "digest"], ["manifests.repository_id", "manifests.digest"], ondelete="CASCADE",
            name="fk_manifest_references_repository_id_manifests",
        ),
    )
    op.create_index("ix_manifest_references_child", "manifest_references", ["child"])
    op.create_table(
        "tags",
        sa.Column("repository_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("repository_id", "name", name="pk_tags"),
        sa.ForeignKeyConstraint(
            ["repository_id", "digest"], ["manifests.repository_id", "manifests.digest"], ondelete="CASCADE",
            name="fk_tags_repository_id_manifests",
        ),
    )


def downgrade() -> None:
    for table in ("tags", "manifest_references", "manifests", "repository_blobs", "blobs", "repositories"):
        op.drop_table(table)
