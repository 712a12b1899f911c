"""The server as a process among others: what its first start says and where, file modes, dying with its supervisor."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from pathlib import Path

import psutil
import requests

from ocihelpers import absolute, digest_of, random_blob, unique_repo, with_digest
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


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in root.rglob("*")}


def test_data_directory_is_private_whatever_the_umask(tmp_path: Path) -> None:
    """Umask 000 (as in some containers): the data directory is 0700 and everything in it 0600 or 0700."""
    server = _first_start(tmp_path)
    old = os.umask(0)
    try:
        server.start()  # the fixture creates the data directory itself first, 0777 under this umask
    finally:
        os.umask(old)
    try:
        client = requests.Session()
        client.auth = ("admin", server.admin_password)
        repo = unique_repo("perm")
        blob = random_blob(4096)
        session = client.post(f"{server.url}/v2/{repo}/blobs/uploads/", timeout=10)
        assert session.status_code == 202, session.text
        pushed = client.put(with_digest(absolute(server.url, session), digest_of(blob)), data=blob, timeout=10)
        assert pushed.status_code == 201, pushed.text
        session = client.post(f"{server.url}/v2/{repo}/blobs/uploads/", timeout=10)
        patched = client.patch(absolute(server.url, session), data=b"half an upload", timeout=10)
        assert patched.status_code == 202, patched.text
        modes = _modes(server.data_dir)
        assert server.data_dir.stat().st_mode & 0o777 == 0o700
        for name in ("metadata.db", "metadata.db-wal", "metadata.db-shm", "admin-password", "secret-key"):
            assert modes.get(name) == 0o600, (name, modes.get(name))
        assert any(name.startswith("blobs/") for name, mode in modes.items() if mode == 0o600)
        assert any(name.startswith("uploads/") for name, mode in modes.items() if mode == 0o600)
        assert any(name.startswith("keys/") for name, mode in modes.items() if mode == 0o600)
        loose = {name: oct(mode) for name, mode in modes.items() if mode & 0o077}
        assert not loose, loose
    finally:
        server.stop()


def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """``kill -9`` of the supervisor only: its workers follow within seconds and the port is free at once."""
    server = Server(data_dir=tmp_path / "data", workers=2).start()
    supervisor = psutil.Process(server.proc.pid)  # type: ignore[union-attr]
    workers = [c for c in supervisor.children() if "cargohold.web.worker" in " ".join(c.cmdline())]
    try:
        assert len(workers) == 2
        os.kill(supervisor.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)  # type: ignore[union-attr]
        _, alive = psutil.wait_procs(workers, timeout=15)
        assert not alive, f"orphaned workers still running: {[p.pid for p in alive]}"
        again = Server(data_dir=server.data_dir, workers=2, port=server.port).start()
        try:
            assert requests.get(f"{again.url}/v2/", timeout=10).status_code == 200
        finally:
            again.stop()
    finally:
        server.kill()
        for worker in workers:  # orphans of a failed run, by pid
            if worker.is_running():
                worker.kill()
