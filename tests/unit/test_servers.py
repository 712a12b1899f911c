"""The test harness says why a server died: the last lines of its log, not just its exit status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from servers import Server, free_port, wait_ready

DIES = "import sys\nfor i in range(40): print(f'line {i}')\nprint('FATAL: could not reach the database')\nsys.exit(3)"


def test_a_server_that_exits_at_once_shows_its_log_tail(tmp_path: Path) -> None:
    log_path = tmp_path / "server.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-c", DIES], stdout=log, stderr=subprocess.STDOUT)
    with pytest.raises(RuntimeError) as err:
        wait_ready(f"http://127.0.0.1:{free_port()}", proc, timeout=30, log_path=log_path)
    message = str(err.value)
    assert "exited with 3" in message
    assert "FATAL: could not reach the database" in message
    assert "line 39" in message
    assert "line 0\n" not in message  # the tail, not the whole log


def test_cargohold_that_cannot_reach_its_database_says_so(tmp_path: Path) -> None:
    nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/test"
    server = Server(data_dir=tmp_path / "data", extra_env={"CARGOHOLD_DATABASE_URL": nowhere})
    with pytest.raises(RuntimeError) as err:
        server.start()
    server.stop()
    assert "exited with" in str(err.value)
    assert "Connect call failed" in str(err.value) or "refused" in str(err.value).lower()
