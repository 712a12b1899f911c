"""Start real servers for the integration tests: cargohold itself and docker-registry (CNCF Distribution)."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests


def _postgres_url() -> str:
    """The environment's URL, else the one scripts/ensure-services.sh last chose (maybe its private cluster)."""
    if url := os.environ.get("CARGOHOLD_TEST_POSTGRES_URL"):
        return url
    chosen = Path(__file__).resolve().parent.parent / ".test-postgres-url"
    if chosen.is_file() and (url := chosen.read_text().strip()):
        return url
    return "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


POSTGRES_URL = _postgres_url()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path: Path | None, lines: int = 20) -> str:
    """The last lines of a server's log: where the reason a server died is (a database it cannot reach...)."""
    if path is None or not path.exists():
        return "(no log)"
    tail = path.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(tail) if tail else "(empty log)"


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None, timeout: float = 30.0, log_path: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"server exited with {proc.returncode} before it was ready; last lines of {log_path}:\n{log_tail(log_path)}"
            )
        try:
            if requests.get(f"{url}/v2/", timeout=1).status_code in (200, 401):
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not become ready in {timeout}s; last lines of {log_path}:\n{log_tail(log_path)}")


@dataclass
class Server:
    """A running cargohold: ``url`` for HTTP, ``host`` for skopeo/oras references."""

    data_dir: Path
    backend: str = "sqlite"
    workers: int = 2
    port: int = field(default_factory=free_port)
    schema: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    auth: bool = False
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def admin_password(self) -> str:
        return (self.data_dir / "admin-password").read_text().strip()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("CARGOHOLD_CONFIG", None)
        env["CARGOHOLD_LOG_LEVEL"] = "WARNING"
        # The registry API tests run with auth off; the access-control tests turn it on.
        env["CARGOHOLD_AUTH"] = "true" if self.auth else "false"
        if self.backend == "postgres":
            if self.schema is None:
                self.schema = f"t_{secrets.token_hex(6)}"
            env["CARGOHOLD_DATABASE_URL"] = POSTGRES_URL
            env["CARGOHOLD_DATABASE_SCHEMA"] = self.schema
        env.update(self.extra_env)
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cargohold", *args]

    def start(self) -> "Server":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.command("serve", "--listen", self.host, "--data-dir", str(self.data_dir), "--workers", str(self.workers)),
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_ready(self.url, self.proc, log_path=self.log_path)
        return self

    def __enter__(self) -> "Server":
        """Started; stopped on the way out, and its PostgreSQL schema (if it has one) dropped."""
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self.schema:
            drop_postgres_schema(self.schema)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL the whole process group: parent and every worker, mid-whatever."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def run_cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), env=self.env(), capture_output=True, text=True, check=check, timeout=300)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


@dataclass
class DockerRegistry:
    """CNCF Distribution from Debian's docker-registry package, as a peer and an upstream."""

    root: Path
    port: int = field(default_factory=free_port)
    htpasswd: Path | None = None
    proxy_remote: str | None = None  # pull-through proxy mode (Distribution's own cache), for benchmarks
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def start(self) -> "DockerRegistry":
        binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
        self.root.mkdir(parents=True, exist_ok=True)
        auth = ""
        if self.htpasswd is not None:
            auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {self.htpasswd}\n"
        config = self.root / "config.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n{auth}"
            + (f"proxy:\n  remoteurl: {self.proxy_remote}\n" if self.proxy_remote else "")
        )
        log = open(self.root / "registry.log", "ab")
        self.proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
        wait_ready(self.url, self.proc, log_path=self.root / "registry.log")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


async def drop_postgres_schema_async(schema: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(POSTGRES_URL.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def drop_postgres_schema(schema: str) -> None:
    import asyncio

    asyncio.run(drop_postgres_schema_async(schema))
