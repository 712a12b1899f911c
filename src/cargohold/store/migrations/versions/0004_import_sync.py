"""Import jobs, provenance, sync rules and their runs.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
DIGEST = sa.String(140)


def upgrade() -> None:
    op.create_table(
        "import_jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("source_digest", DIGEST, nullable=True),
        sa.Column("targets", sa.Text, nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("bytes_done", sa.BigInteger, nullable=False),
        sa.Column("blobs_done", sa.Integer, nullable=False),
        sa.Column("bytes_total", sa.BigInteger, nullable=True),
        sa.Column("blobs_total", sa.Integer, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_import_jobs"),
    )
    op.create_index("ix_import_jobs_started_at", "import_jobs", ["started_at"])
    op.create_table(
        "provenance",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("repository", sa.String(255), nullable=False),
        sa.Column("tag", sa.String(128), nullable=True),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("source_digest", DIGEST, nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("job", sa.String(64), nullable=True),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("imported_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_provenance"),
    )
    op.create_index("ix_provenance_repository", "provenance", ["repository", "imported_at"])
    op.create_table(
        "sync_rules",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("source", sa.String(1000), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("tag_regex", sa.String(512), nullable=True),
        sa.Column("semver", sa.String(255), nullable=True),
        sa.Column("interval_seconds", sa.Integer, nullable=True),
        sa.Column("cron", sa.String(128), nullable=True),
        sa.Column("credential_set", sa.String(64), nullable=True),
        sa.Column("insecure", sa.Boolean, nullable=False),
        sa.Column("platforms", sa.Text, nullable=True),
        sa.Column("request_budget", sa.Integer, nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("next_run_at", TS, nullable=True),
        sa.Column("lease_owner", sa.String(64), nullable=True),
        sa.Column("lease_until", TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sync_rules"),
        sa.UniqueConstraint("name", name="uq_sync_rules_name"),
        sa.ForeignKeyConstraint(
            ["credential_set"], ["credential_sets.name"], name="fk_sync_rules_credential_set_credential_sets"
        ),
    )
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("rule", sa.String(64), nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("requests_used", sa.Integer, nullable=False),
        sa.Column("copied", sa.Text, nullable=False),
        sa.Column("skipped", sa.Text, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sync_runs"),
    )
    op.create_index("ix_sync_runs_rule", "sync_runs", ["rule", "started_at"])


def downgrade() -> None:
    for table in ("sync_runs", "sync_rules", "provenance", "import_jobs"):
        op.drop_table(table)
