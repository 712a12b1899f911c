"""The one settings object.

Precedence, highest first: values given in code (CLI flags), ``CARGOHOLD_*``
environment variables, the TOML file named by ``--config`` /
``CARGOHOLD_CONFIG``, then the defaults below. The config path travels as an
environment variable so that worker processes read exactly what the parent read.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

MiB = 1024 * 1024


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CARGOHOLD_", extra="forbid")

    listen: str = Field("127.0.0.1:5000", description="HOST:PORT to serve on")
    data_dir: Path = Field(Path("cargohold-data"), description="blobs, uploads and the embedded database live here")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default is SQLite in the data directory (postgresql+asyncpg://… for scale-out)"
    )
    database_schema: str | None = Field(None, description="PostgreSQL schema (search_path) to keep the tables in")
    workers: int = Field(2, ge=1, le=64, description="processes sharing the port with SO_REUSEPORT")
    sqlite_synchronous: str = Field("FULL", description="SQLite PRAGMA synchronous (FULL survives power loss)")
    manifest_max_bytes: int = Field(4 * MiB, ge=1024)
    upload_max_age_seconds: int = Field(24 * 3600, ge=1, description="abandoned upload sessions older than this are purged")
    upload_purge_interval_seconds: int = Field(600, ge=1)
    upload_empty_max_age_seconds: int = Field(
        3600, ge=1, description="upload sessions that never received a byte are purged after this long"
    )
    upload_sessions_per_repository: int = Field(
        1000, ge=0, description="open upload sessions one repository may have (0 = no cap); past it 429 TOOMANYREQUESTS"
    )
    upload_sessions_per_identity: int = Field(
        1000, ge=0, description="open upload sessions one user or robot may have (0 = no cap); past it 429 TOOMANYREQUESTS"
    )
    body_idle_timeout_seconds: float = Field(
        60.0, gt=0, description="a client that sends no byte of a request body for this long is cut off (408)"
    )
    manifest_cache_entries: int = Field(20000, ge=0, description="in-process cache of hot manifests (0 disables)")
    manifest_cache_bytes: int = Field(64 * MiB, ge=0)
    auth: bool = Field(True, description="require credentials; --no-auth is for throwaway local use on loopback only")
    auth_service: str = Field("cargohold", description="token audience (the `service` of the Docker token flow)")
    auth_realm: str | None = Field(None, description="absolute URL of the token endpoint; default: this server's /token")
    auth_token_ttl_seconds: int = Field(300, ge=30, le=86400)
    auth_refresh_ttl_seconds: int = Field(30 * 86400, ge=60)
    auth_key_retention_seconds: int = Field(86400, ge=60, description="how long a rotated-out key still verifies")
    login_throttle_attempts: int = Field(10, ge=1, description="failed logins per client or user within the window")
    login_throttle_window_seconds: int = Field(300, ge=1)
    auth_verify_concurrency: int = Field(
        2, ge=1, le=64, description="argon2 password checks one worker runs at once; more wait at a fair gate"
    )
    allowed_clients: list[str] = Field(default_factory=list, description="CIDR ranges allowed to connect; empty = all")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDR ranges of reverse proxies whose Forwarded / X-Forwarded-For headers name the client",
    )
    public_url: str | None = Field(
        None, description="the URL clients use (scheme://host[:port]); the token realm and Location headers use it"
    )
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_private_upstreams: bool = Field(
        False, description="let server-side requests reach loopback, link-local and private addresses"
    )
    secret_key: str | None = Field(
        None,
        repr=False,
        description="Fernet key (urlsafe base64, 32 bytes) that encrypts upstream credentials at rest; "
        "default: generated once into <data-dir>/secret-key (0600)",
    )
    cache_quota_bytes: int = Field(0, ge=0, description="byte quota for content fetched by cache rules; 0 = no limit")
    cache_evict_interval_seconds: int = Field(60, ge=1, description="how often the quota is enforced")
    upstream_timeout_seconds: float = Field(
        10.0, gt=0, description="connect and per-read timeout of upstream requests; past it a cached copy is served"
    )
    upstream_retries: int = Field(2, ge=0, le=10, description="retries of an upstream request on connection errors and 5xx")
    sync_poll_seconds: float = Field(15.0, gt=0, description="how often each worker looks for sync rules that are due")
    sync_lease_seconds: int = Field(
        120, ge=5, description="a running sync rule's lease, renewed while it runs; a crashed worker's lease runs out after it"
    )
    sync_min_interval_seconds: int = Field(60, ge=1, description="the shortest interval a sync rule may be scheduled at")
    sync_request_budget: int = Field(100, ge=1, description="default upstream requests per sync run (a rule may set its own)")
    sync_ratelimit_reserve: int = Field(
        10, ge=0, description="a sync run stops when the upstream's RateLimit-Remaining falls below this"
    )
    log_level: str = "INFO"
    access_log: bool = False

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or int(port) > 65535:
            raise ValueError("listen must be HOST:PORT")
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise ValueError("public_url must be http(s)://host[:port]")
        if parts.path not in ("", "/") or parts.query or parts.fragment or any(c in value for c in '"\\ ,;'):
            raise ValueError("public_url is scheme://host[:port] only: no path, query, quotes or spaces")
        parts.port  # raises ValueError for a port out of range
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("allowed_clients", "trusted_proxies")
    @classmethod
    def _check_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value

    @field_validator("database_schema")
    @classmethod
    def _check_schema(cls, value: str | None) -> str | None:
        # It ends up in CREATE SCHEMA / search_path, so only a plain identifier is accepted.
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", value):
            raise ValueError("database_schema must be a plain SQL identifier")
        return value

    @field_validator("sqlite_synchronous")
    @classmethod
    def _check_sync(cls, value: str) -> str:
        if value.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError("sqlite_synchronous must be OFF, NORMAL, FULL or EXTRA")
        return value.upper()

    @property
    def is_loopback(self) -> bool:
        host = self.host
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False

    @model_validator(mode="after")
    def _check_combinations(self) -> "Settings":
        if not self.auth and not self.is_loopback:
            raise ValueError("auth can only be turned off on a loopback address (--no-auth is for throwaway local use)")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir.resolve() / 'metadata.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("CARGOHOLD_CONFIG")
        if config_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; ``overrides`` with value None are treated as not given."""
    if config_file is not None:
        if not config_file.is_file():
            raise FileNotFoundError(f"config file not found: {config_file}")
        os.environ["CARGOHOLD_CONFIG"] = str(config_file.resolve())
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
