"""scripts/ensure-services.sh gives the suite a PostgreSQL even when none answers at the configured URL."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from servers import Server, free_port

pytestmark = pytest.mark.postgres  # it starts PostgreSQL clusters: not part of `make check`

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ensure-services.sh"


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """Directly under /tmp: when run as root, the `postgres` user must reach it (pytest's tmp_path is 0700 root)."""
    state = Path(tempfile.mkdtemp(prefix="ch-pg-", dir="/tmp"))
    env = {**os.environ, "CARGOHOLD_TEST_PG_DIR": str(state)}
    try:
        yield state
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=60)
        shutil.rmtree(state, ignore_errors=True)


def _ensure(state: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "CARGOHOLD_TEST_POSTGRES_URL": url,
        "CARGOHOLD_TEST_PG_DIR": str(state),
        "CARGOHOLD_TEST_PG_URL_FILE": str(state / "url"),
    }
    return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)


async def _tables(url: str) -> set[str]:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {r["tablename"] for r in rows}


def test_starts_a_private_cluster_when_nothing_answers(private_dir: Path, tmp_path: Path) -> None:
    nothing = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test"
    done = _ensure(private_dir, nothing)
    assert done.returncode == 0, done.stderr
    url = done.stdout.strip()
    assert url.startswith("postgresql+asyncpg://postgres@127.0.0.1:") and url.endswith("/test")
    assert url != nothing
    assert (private_dir / "url").read_text().strip() == url

    # A cargohold on it works: migrates, takes a blob, serves it back.
    with Server(data_dir=tmp_path / "data", extra_env={"CARGOHOLD_DATABASE_URL": url}) as server:
        data = b"on the private cluster"
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = requests.post(f"{server.url}/v2/pg/private/blobs/uploads/", params={"digest": digest}, data=data)
        assert r.status_code == 201, r.text
        assert requests.get(f"{server.url}/v2/pg/private/blobs/{digest}").content == data
    assert "alembic_version" in asyncio.run(_tables(url))

    # A second run reuses the running cluster; after a stop, it starts the same data directory again.
    assert _ensure(private_dir, nothing).stdout.strip() == url
    stop = subprocess.run(
        [str(SCRIPT), "stop"], capture_output=True, timeout=60,
        env={**os.environ, "CARGOHOLD_TEST_PG_DIR": str(private_dir), "CARGOHOLD_TEST_PG_URL_FILE": str(private_dir / "url")},
    )
    assert stop.returncode == 0
    assert not (private_dir / "url").exists()  # a bare pytest no longer aims at the stopped cluster
    again = _ensure(private_dir, nothing)
    assert again.returncode == 0, again.stderr
    assert "alembic_version" in asyncio.run(_tables(again.stdout.strip()))


def test_uses_the_configured_postgres_when_it_answers(private_dir: Path) -> None:
    first = _ensure(private_dir, f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test").stdout.strip()
    # Now something answers at `first`: asked for it, the script hands it back without starting anything else.
    again = _ensure(private_dir, first)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == first
    assert "private cluster" not in again.stderr
