"""The server as a process among others: what its first start says and where, file modes, dying with its supervisor."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from pathlib import Path

from servers import Server, wait_ready


def _first_start(tmp_path: Path) -> Server:
    return Server(data_dir=tmp_path / "data", workers=1, auth=True, extra_env={"CARGOHOLD_LOG_LEVEL": "INFO"})


def test_first_admin_password_stays_out_of_a_log_file(tmp_path: Path) -> None:
    server = _first_start(tmp_path)
    with server:
        password = server.admin_password
    log = server.log()
    assert password not in log
    assert f"its password is in {(tmp_path / 'data').resolve() / 'admin-password'}" in log
    # Alembic's plugin set-up chatter is gone; the migration lines themselves stay.
    assert "alembic.runtime.plugins" not in log and "setup plugin" not in log
    assert "Running upgrade" in log


def test_first_admin_password_is_printed_to_a_terminal(tmp_path: Path) -> None:
    server = _first_start(tmp_path)
    server.data_dir.mkdir(parents=True)
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        server.command("serve", "--listen", server.host, "--data-dir", str(server.data_dir), "--workers", "1"),
        env=server.env(),
        stdin=subprocess.DEVNULL,
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    output = b""
    try:
        wait_ready(server.url, proc)
        deadline = time.monotonic() + 10
        password = server.admin_password
        while password.encode() not in output and time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                output += os.read(primary, 65536)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        os.close(primary)
    assert f"created user 'admin' with password {password}".encode() in output
