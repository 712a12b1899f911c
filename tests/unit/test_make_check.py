"""``make check`` is the fast loop: unit tests and SQLite integration tests, nothing that needs PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _collected_by_make_check(*paths: str) -> list[str]:
    venv = Path(sys.executable).parent.parent
    result = subprocess.run(
        ["make", "-s", "-C", str(ROOT), f"VENV={venv}", "-o", f"{venv}/.test-installed", "-o", "system-deps", "check",
         f"PYTEST_ARGS=--collect-only {' '.join(paths)}"],
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'src'}"}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return [line for line in result.stdout.splitlines() if "::" in line]


def test_check_selects_sqlite_and_unit_tests_only() -> None:
    ids = _collected_by_make_check(
        "tests/unit/test_migrations.py", "tests/unit/test_servers.py", "tests/integration/test_cli_delete.py",
        "tests/integration/test_ensure_services.py",
    )
    assert any("test_migrations" in i and "sqlite" in i for i in ids)
    assert any("test_servers" in i for i in ids)
    assert any("test_cli_delete" in i and "sqlite" in i for i in ids)
    assert not [i for i in ids if "postgres" in i or "ensure_services" in i]
