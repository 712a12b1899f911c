"""`cargohold serve`: configuration sources, worker processes, refusing a taken port, purging uploads."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import requests

from servers import Server, free_port, wait_ready


def test_config_file_and_workers(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "from-toml"
    config = tmp_path / "cargohold.toml"
    config.write_text(f'listen = "127.0.0.1:{port}"\ndata_dir = "{data}"\nworkers = 3\nlog_level = "WARNING"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "cargohold", "serve", "--config", str(config)], start_new_session=True
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc)
        assert (data / "metadata.db").exists()
        children = psutil.Process(proc.pid).children(recursive=True)
        workers = [c for c in children if "cargohold.web.worker" in " ".join(c.cmdline())]
        assert len(workers) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert proc.returncode == 0


def test_flags_override_environment_and_file(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('listen = "127.0.0.1:1"\n')
    server = Server(data_dir=tmp_path / "d", workers=1, extra_env={"CARGOHOLD_LISTEN": "127.0.0.1:2"})
    server.start()  # --listen on the command line beats both
    try:
        assert requests.get(f"{server.url}/v2/").status_code == 200
    finally:
        server.stop()


def test_unknown_config_key_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('listne = "127.0.0.1:5000"\n')
    result = subprocess.run(
        [sys.executable, "-m", "cargohold", "serve", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "listne" in result.stderr


def test_refuses_an_address_in_use(tmp_path: Path) -> None:
    first = Server(data_dir=tmp_path / "one", workers=1).start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "cargohold", "serve", "--listen", first.host, "--data-dir", str(tmp_path / "two")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 1
        assert "already in use" in result.stderr
    finally:
        first.stop()


def test_abandoned_uploads_are_purged(tmp_path: Path) -> None:
    server = Server(
        data_dir=tmp_path / "d",
        workers=1,
        extra_env={"CARGOHOLD_UPLOAD_MAX_AGE_SECONDS": "2", "CARGOHOLD_UPLOAD_PURGE_INTERVAL_SECONDS": "1"},
    ).start()
    try:
        started = requests.post(f"{server.url}/v2/purge/me/blobs/uploads/")
        assert started.status_code == 202
        location = started.headers["Location"]
        assert requests.patch(f"{server.url}{location}", data=b"partial").status_code == 202
        assert requests.get(f"{server.url}{location}").status_code == 204
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            status = requests.get(f"{server.url}{location}")
            if status.status_code == 404:
                break
            time.sleep(0.5)
        assert status.status_code == 404
        assert status.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
        assert list((tmp_path / "d" / "uploads").iterdir()) == []
    finally:
        server.stop()
