"""``cargohold cache-rule`` and ``cargohold credential-set`` as a user runs them: subprocesses against the real server.

Each test gets its own HOME, so stored logins never leak between tests. Every
command's output is kept, and no upstream password may ever appear in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from cachehelpers import record_upstream_status
from servers import Server, free_port


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Any:
    server = Server(
        data_dir=tmp_path_factory.mktemp("cargohold-cache-cli") / "data",
        auth=True,
        workers=1,
        extra_env={"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": "1000"},
    ).start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Cli:
    server: Server
    home: Path
    transcript: list[subprocess.CompletedProcess[str]] = field(default_factory=list)

    def __call__(
        self, *args: str, input: str | None = None, registry: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARGOHOLD_") and k != "XDG_CONFIG_HOME"} | (env or {})
        env["HOME"] = str(self.home)
        command = [sys.executable, "-m", "cargohold", *args, "--registry", registry or self.server.url]
        result = subprocess.run(
            command, input=input, env=env, capture_output=True, text=True, timeout=120, check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        self.transcript.append(result)
        return result

    def ok(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        result = self(*args, **kwargs)
        assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
        return result

    def fails(self, code: int, *args: str, **kwargs: Any) -> str:
        """The command exits with ``code``; its stderr, which must say what went wrong."""
        result = self(*args, **kwargs)
        assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
        assert result.stderr.strip(), args
        return " ".join(result.stderr.split())  # rich may wrap a long message

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok(*args, "--output", "json", **kwargs).stdout)

    def login(self, username: str, password: str) -> None:
        self.ok("login", "--username", username, "--password-stdin", input=password + "\n")

    def output(self) -> str:
        return "".join(r.stdout + r.stderr for r in self.transcript)


@pytest.fixture
def cli(registry: Server, tmp_path: Path) -> Any:
    """An admin's shell; afterwards, no upstream password may be anywhere in what it printed."""
    shell = Cli(registry, tmp_path / "admin")
    shell.home.mkdir()
    shell.login("admin", registry.admin_password)
    yield shell
    printed = shell.output()
    for value in PASSWORDS:
        assert value not in printed, "an upstream password was printed"


PASSWORDS: list[str] = []


def password() -> str:
    value = f"dckr_pat_{uuid.uuid4().hex}"
    PASSWORDS.append(value)
    return value


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_credential_set_round_trip(cli: Cli, registry: Server) -> None:
    name = unique("hub")
    result = cli.ok(
        "credential-set", "create", name, "--login-server", "index.docker.io", "--username", "bob", "--password-stdin",
        input=password() + "\n",
    )
    assert "Created credential set" in result.stderr
    assert "docker.io" in result.stdout and "index.docker.io" not in result.stdout  # normalized, shown as stored

    other = unique("gh")
    created = cli.json("credential-set", "create", other, "--login-server", "ghcr.io", "-u", "alice", "--password-stdin", input=password())
    assert created["login_server"] == "ghcr.io" and "password" not in created

    listed = cli.ok("credential-set", "list").stdout
    assert name in listed and other in listed and "LOGIN SERVER" in listed
    assert {item["name"] for item in cli.json("credential-set", "list")} >= {name, other}

    shown = cli.ok("credential-set", "show", name).stdout
    assert "bob" in shown and "never" in shown
    record_upstream_status(registry, name, "incorrect username or password")
    shown = " ".join(cli.ok("credential-set", "show", name).stdout.split())
    assert "failed" in shown and "incorrect username or password" in shown and "7 of 100 remaining" in shown
    item = cli.json("credential-set", "show", name)
    assert item["last_login"]["ok"] is False and item["ratelimit"]["remaining"] == 7

    updated = cli.json("credential-set", "update", name, "--username", "robert")
    assert updated["username"] == "robert" and updated["last_login"]["at"] is None
    result = cli.ok("credential-set", "update", name, "--password-stdin", input=password() + "\n")
    assert "Updated credential set" in result.stderr

    assert "nothing to change" in cli.fails(2, "credential-set", "update", name)
    assert "--password-stdin" in cli.fails(2, "credential-set", "create", unique("x"), "--login-server", "docker.io", "-u", "u")
    assert "no password on stdin" in cli.fails(
        2, "credential-set", "create", unique("x"), "--login-server", "docker.io", "-u", "u", "--password-stdin", input="\n"
    )
    assert "login server" in cli.fails(
        1, "credential-set", "create", unique("x"), "--login-server", "https://ghcr.io", "-u", "u", "--password-stdin",
        input=password(),
    )
    assert "already exists" in cli.fails(
        1, "credential-set", "create", name, "--login-server", "docker.io", "-u", "u", "--password-stdin", input=password()
    )

    for each in (name, other):
        assert "Deleted credential set" in cli.ok("credential-set", "delete", each).stderr
    assert "no credential set named" in cli.fails(1, "credential-set", "show", name)
    assert "no credential set named" in cli.fails(1, "credential-set", "delete", name)


def test_cache_rule_round_trip(cli: Cli) -> None:
    creds, ns = unique("hub"), f"ns{uuid.uuid4().hex[:8]}"
    cli.ok("credential-set", "create", creds, "--login-server", "docker.io", "-u", "bob", "--password-stdin", input=password())
    name = unique("rule")
    result = cli.ok(
        "cache-rule", "create", name, "--source", "index.docker.io/library/*", "--target", f"{ns}/*",
        "--credential-set", creds, "--ttl", "300", "--platforms", "eager", "--dockerhub-mirror",
    )
    assert "Created cache rule" in result.stderr and "docker.io/library/*" in result.stdout
    rule = cli.json("cache-rule", "show", name)
    assert rule | {"created_at": None, "updated_at": None} == {
        "name": name, "source": "docker.io/library/*", "target": f"{ns}/*", "credential_set": creds, "tag_ttl_seconds": 300,
        "platforms": "eager", "insecure": False, "dockerhub_mirror": True, "created_at": None, "updated_at": None,
    }
    exact = cli.json("cache-rule", "create", unique("rule"), "--source", "docker.io/alpine", "--target", f"{ns}-alpine")
    assert (exact["source"], exact["tag_ttl_seconds"], exact["platforms"]) == ("docker.io/library/alpine", 60, "on-demand")

    listed = cli.ok("cache-rule", "list").stdout
    assert name in listed and f"{ns}/*" in listed and "docker hub mirror" in listed and "300 s" in listed
    assert {r["name"] for r in cli.json("cache-rule", "list")} >= {name, exact["name"]}
    shown = cli.ok("cache-rule", "show", name).stdout
    assert creds in shown and "eager" in shown

    updated = cli.json(
        "cache-rule", "update", name, "--no-credential-set", "--ttl", "0", "--no-dockerhub-mirror", "--insecure",
        "--platforms", "on-demand",
    )
    assert (updated["credential_set"], updated["tag_ttl_seconds"], updated["dockerhub_mirror"], updated["insecure"], updated["platforms"]) == (
        None, 0, False, True, "on-demand",
    )
    result = cli.ok("cache-rule", "update", name, "--credential-set", creds, "--source", "docker.io/*")
    assert "Updated cache rule" in result.stderr and "docker.io/*" in result.stdout
    assert cli.json("cache-rule", "show", name)["credential_set"] == creds

    assert "not both" in cli.fails(2, "cache-rule", "update", name, "--credential-set", creds, "--no-credential-set")
    assert "nothing to change" in cli.fails(2, "cache-rule", "update", name)
    cli.fails(2, "cache-rule", "create", unique("r"), "--source", "ghcr.io/*", "--target", "x/*", "--platforms", "sometimes")
    cli.fails(2, "cache-rule", "create", unique("r"), "--source", "ghcr.io/*", "--target", "x/*", "--ttl", "-1")

    assert "used by cache rule" in cli.fails(1, "credential-set", "delete", creds)
    for each in (name, exact["name"]):
        assert "Deleted cache rule" in cli.ok("cache-rule", "delete", each).stderr
    assert "no cache rule named" in cli.fails(1, "cache-rule", "delete", name)
    assert "no cache rule named" in cli.fails(1, "cache-rule", "show", name)
    cli.ok("credential-set", "delete", creds)


def test_server_refusals_exit_1_with_the_reason(cli: Cli) -> None:
    ns = f"ns{uuid.uuid4().hex[:8]}"
    assert "registry host" in cli.fails(1, "cache-rule", "create", unique("r"), "--source", "alpine", "--target", f"{ns}/*")
    assert "both" in cli.fails(1, "cache-rule", "create", unique("r"), "--source", "ghcr.io/*", "--target", ns)
    message = cli.fails(1, "cache-rule", "create", unique("r"), "--source", "127.0.0.1:5001/*", "--target", f"{ns}/*")
    assert "refusing to connect to 127.0.0.1" in message and "allow_private_upstreams" in message
    assert "does not exist" in cli.fails(
        1, "cache-rule", "create", unique("r"), "--source", "ghcr.io/*", "--target", f"{ns}/*", "--credential-set", "nope"
    )
    name = unique("r")
    cli.ok("cache-rule", "create", name, "--source", "ghcr.io/*", "--target", f"{ns}/*")
    assert name in cli.fails(1, "cache-rule", "create", unique("r"), "--source", "quay.io/*", "--target", f"{ns}/*")
    assert "body.name" in cli.fails(1, "cache-rule", "create", "Bad_Name", "--source", "quay.io/*", "--target", "y/*")
    cli.ok("cache-rule", "delete", name)


def test_non_admins_and_strangers_are_refused(cli: Cli, registry: Server, tmp_path: Path) -> None:
    user, secret = unique("user"), f"pw-{uuid.uuid4().hex}"
    r = requests.post(
        f"{registry.url}/api/v1/users", json={"name": user, "password": secret}, auth=("admin", registry.admin_password), timeout=30
    )
    assert r.status_code == 201, r.text
    someone = Cli(registry, tmp_path / "someone")
    someone.home.mkdir()
    someone.login(user, secret)
    assert "not an admin" in someone.fails(1, "cache-rule", "list")
    assert "not an admin" in someone.fails(1, "credential-set", "list")
    assert "not an admin" in someone.fails(
        1, "credential-set", "create", "x", "--login-server", "docker.io", "-u", "u", "--password-stdin", input=password()
    )

    stranger = Cli(registry, tmp_path / "stranger")
    stranger.home.mkdir()
    assert "not logged in" in stranger.fails(1, "cache-rule", "list")
    unreachable = f"http://127.0.0.1:{free_port()}"
    for command in (("credential-set", "list"), ("cache-rule", "show", "x")):
        message = cli.fails(2, *command, registry=unreachable, env={"CARGOHOLD_TOKEN": "chr_whatever"})
        assert f"cannot reach {unreachable}" in message
