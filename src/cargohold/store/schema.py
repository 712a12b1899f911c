"""Metadata tables (SQLAlchemy Core). Changes here need an Alembic revision in ``migrations/versions``."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    true,
)

DIGEST = String(140)  # "sha512:" + 128 hex

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

repositories = Table(
    "repositories",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

blobs = Table(
    "blobs",
    metadata,
    Column("digest", DIGEST, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

repository_blobs = Table(
    "repository_blobs",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", DIGEST, ForeignKey("blobs.digest"), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

manifests = Table(
    "manifests",
    metadata,
    Column("repository_id", Integer, ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    Column("digest", DIGEST, ForeignKey("blobs.digest"), primary_key=True),
    Column("media_type", String(255), nullable=False),
    Column("artifact_type", String(255), nullable=True),
    Column("size", BigInteger, nullable=False),
    Column("subject", DIGEST, nullable=True),
    Column("annotations", Text, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_manifests_subject", "repository_id", "subject"),
)

# What a manifest references (blobs and child manifests): fsck and garbage collection walk these.
manifest_references = Table(
    "manifest_references",
    metadata,
    Column("repository_id", Integer, primary_key=True),
    Column("digest", DIGEST, primary_key=True),
    Column("child", DIGEST, primary_key=True),
    Column("kind", String(8), nullable=False),  # "blob" | "manifest"
    ForeignKeyConstraint(
        ["repository_id", "digest"], ["manifests.repository_id", "manifests.digest"], ondelete="CASCADE"
    ),
    Index("ix_manifest_references_child", "child"),
)

tags = Table(
    "tags",
    metadata,
    Column("repository_id", Integer, primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("digest", DIGEST, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    ForeignKeyConstraint(
        ["repository_id", "digest"], ["manifests.repository_id", "manifests.digest"], ondelete="CASCADE"
    ),
)

# ---- access control (revision 0002) ------------------------------------------------------------

users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("admin", Boolean, nullable=False),
    Column("scope_maps", Text, nullable=False),  # JSON list of scope-map names
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Random per creation and per password change (revision 0005): access tokens name id + generation,
    # so a user deleted and re-created under the same name (even with a reused id) inherits none of them.
    Column("generation", String(32), nullable=False, server_default="0"),
)

robots = Table(
    "robots",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 of a 256-bit random token
    Column("scope_maps", Text, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("created_by", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("generation", String(32), nullable=False, server_default="0"),  # revision 0005, as for users
)

scope_maps = Table(
    "scope_maps",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("description", String(1024), nullable=False),
    Column("rules", Text, nullable=False),  # JSON list of {"repository": pattern, "actions": [...]}
    Column("created_at", DateTime(timezone=True), nullable=False),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("principal", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Rotation (revision 0005): each use replaces the token by a new one of the same family; a used
    # token presented again revokes the whole family.
    Column("family", String(32), nullable=True),
    Column("used_at", DateTime(timezone=True), nullable=True),
    # Revision 0006: false for tokens issued to the docker daemon, which never stores a rotated token
    # (it presents the identity token from its config file every time): those are reusable until revoked.
    Column("rotates", Boolean, nullable=False, server_default=true()),
    Index("ix_refresh_tokens_principal", "principal"),
    Index("ix_refresh_tokens_family", "family"),
)

login_failures = Table(
    "login_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("client", String(64), nullable=False),
    Column("username", String(255), nullable=False),
    Index("ix_login_failures_client", "client", "at"),
    Index("ix_login_failures_username", "username", "at"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("client", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(512), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("detail", Text, nullable=True),
    Index("ix_audit_events_at", "at"),
)

# ---- artifact cache (revision 0003) ------------------------------------------------------------

credential_sets = Table(
    "credential_sets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("login_server", String(255), nullable=False),
    Column("username", String(255), nullable=False),
    Column("secret", Text, nullable=False),  # the password, Fernet-encrypted (cache/secrets.py)
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("last_login_at", DateTime(timezone=True), nullable=True),
    Column("last_login_ok", Boolean, nullable=True),
    Column("last_login_error", String(512), nullable=True),
    Column("ratelimit_limit", Integer, nullable=True),
    Column("ratelimit_remaining", Integer, nullable=True),
    Column("ratelimit_at", DateTime(timezone=True), nullable=True),
)

cache_rules = Table(
    "cache_rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("source", String(255), nullable=False),
    Column("target", String(255), nullable=False, unique=True),
    Column("credential_set", String(64), ForeignKey("credential_sets.name"), nullable=True),
    Column("tag_ttl_seconds", Integer, nullable=False),
    Column("eager_platforms", Boolean, nullable=False),
    Column("insecure", Boolean, nullable=False),
    Column("dockerhub_mirror", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# When the cache last checked a tag (key "tag:<name>") or a referrers list (key "referrers:<digest>") upstream.
cache_freshness = Table(
    "cache_freshness",
    metadata,
    Column("repository", String(255), primary_key=True),
    Column("key", String(160), primary_key=True),
    Column("digest", DIGEST, nullable=True),
    Column("checked_at", DateTime(timezone=True), nullable=False),
)

# Blobs the cache fetched from an upstream: what eviction weighs (size) and orders (last pull).
cache_blobs = Table(
    "cache_blobs",
    metadata,
    Column("digest", DIGEST, primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("fetched_at", DateTime(timezone=True), nullable=False),
    Column("last_pulled_at", DateTime(timezone=True), nullable=False),
    Index("ix_cache_blobs_last_pulled_at", "last_pulled_at"),
)

cache_pins = Table(
    "cache_pins",
    metadata,
    Column("repository", String(255), primary_key=True),
    Column("reference", String(160), primary_key=True),
    Column("created_by", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# ---- import, sync and provenance (revision 0004) -----------------------------------------------

# Server-side imports, so that any worker (and a restarted server) can answer for a job.
import_jobs = Table(
    "import_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("state", String(16), nullable=False),  # running | succeeded | failed
    Column("source", String(1000), nullable=False),
    Column("source_digest", DIGEST, nullable=True),
    Column("targets", Text, nullable=False),  # JSON list of "repository[:tag]"
    Column("requested_by", String(255), nullable=False),
    Column("bytes_done", BigInteger, nullable=False),
    Column("blobs_done", Integer, nullable=False),
    Column("bytes_total", BigInteger, nullable=True),
    Column("blobs_total", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("error_code", String(64), nullable=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),  # a heartbeat while running
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Index("ix_import_jobs_started_at", "started_at"),
)

# Where imported content came from: one row per copy (import or sync run) and target.
provenance = Table(
    "provenance",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("repository", String(255), nullable=False),
    Column("tag", String(128), nullable=True),
    Column("digest", DIGEST, nullable=False),
    Column("source", String(1000), nullable=False),
    Column("source_digest", DIGEST, nullable=False),
    Column("via", String(16), nullable=False),  # import | sync
    Column("job", String(64), nullable=True),  # the import job id or "sync-rule-name#run-id"
    Column("requested_by", String(255), nullable=False),
    Column("imported_at", DateTime(timezone=True), nullable=False),
    Index("ix_provenance_repository", "repository", "imported_at"),
)

sync_rules = Table(
    "sync_rules",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("source", String(1000), nullable=False),  # registry/repository, normalized
    Column("target", String(255), nullable=False),  # a local repository
    Column("tag_regex", String(512), nullable=True),
    Column("semver", String(255), nullable=True),
    Column("interval_seconds", Integer, nullable=True),
    Column("cron", String(128), nullable=True),
    Column("credential_set", String(64), ForeignKey("credential_sets.name"), nullable=True),
    Column("insecure", Boolean, nullable=False),
    Column("platforms", Text, nullable=True),  # JSON list of os/arch[/variant]; null: all
    Column("request_budget", Integer, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("created_by", String(255), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("next_run_at", DateTime(timezone=True), nullable=True),
    Column("lease_owner", String(64), nullable=True),  # the worker running it now
    Column("lease_until", DateTime(timezone=True), nullable=True),
)

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rule", String(64), nullable=False),
    Column("trigger", String(16), nullable=False),  # schedule | manual
    Column("state", String(16), nullable=False),  # running | succeeded | partial | failed
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("requests_used", Integer, nullable=False),
    Column("copied", Text, nullable=False),  # JSON list of {"tag", "digest", "previous"}
    Column("skipped", Text, nullable=False),  # JSON list of {"tag", "reason"}
    Column("error", Text, nullable=True),
    Index("ix_sync_runs_rule", "rule", "started_at"),
)
