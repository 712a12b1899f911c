"""The access-control CLI as a user runs it: ``python -m cargohold …`` subprocesses against the real server.

Each test gets its own HOME and XDG_CONFIG_HOME, so stored logins never leak
between tests or into the developer's own configuration.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from clihelpers import Cli, push_image, unique
from servers import Server, free_port

REPO = "hub/cli-app"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # All test traffic comes from 127.0.0.1 and some logins are wrong on purpose: a generous throttle.
    server = Server(
        data_dir=tmp_path_factory.mktemp("cargohold-cli") / "data",
        auth=True,
        workers=1,
        extra_env={"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": "1000"},
    ).start()
    try:
        push_image(server, REPO, "1.0")
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_cli(registry: Server, tmp_path: Path) -> Callable[..., Cli]:
    def make(name: str = "user", xdg: bool = True) -> Cli:
        home = tmp_path / name
        home.mkdir()
        return Cli(registry, home, xdg)

    return make


@pytest.fixture
def cli(make_cli: Callable[..., Cli]) -> Cli:
    return make_cli()


def tags_list(server: Server, repo: str, username: str, secret: str) -> requests.Response:
    return requests.get(f"{server.url}/v2/{repo}/tags/list", auth=(username, secret), timeout=30)


# ---- login and stored credentials ---------------------------------------------------------------------------


def test_login_stores_private_credentials_and_logout_forgets(cli: Cli, registry: Server) -> None:
    result = cli.ok("login", "--username", "admin", "--password-stdin", input=registry.admin_password + "\n")
    assert "Logged in" in result.stderr
    assert stat.S_IMODE(cli.config_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(cli.credentials_file.stat().st_mode) == 0o600
    stored = json.loads(cli.credentials_file.read_text())["registries"]
    assert stored == {registry.url: {"username": "admin", "password": registry.admin_password}}
    assert [p.name for p in cli.config_dir.iterdir() if p.name.endswith(".tmp")] == []  # written atomically

    assert cli.json("whoami") == {"name": "admin", "kind": "user", "admin": True}
    assert "admin" in [u["name"] for u in cli.json("user", "list")]  # type: ignore[index]

    cli.ok("logout")
    assert json.loads(cli.credentials_file.read_text())["registries"] == {}
    result = cli("user", "list")
    assert result.returncode == 1
    assert f"cargohold login --registry {registry.url}" in result.stderr
    assert registry.admin_password not in cli.output_of()


def test_login_without_xdg_config_home_uses_home(make_cli: Callable[..., Cli], registry: Server) -> None:
    cli = make_cli(xdg=False)
    cli.login_admin()
    assert cli.credentials_file == cli.home / ".config" / "cargohold" / "credentials.json"
    assert stat.S_IMODE(cli.credentials_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.config_dir.stat().st_mode) == 0o700


def test_wrong_password_stores_nothing(cli: Cli, registry: Server) -> None:
    result = cli("login", "--username", "admin", "--password-stdin", input="not-the-password\n")
    assert result.returncode != 0
    assert "login failed" in result.stderr
    assert not cli.credentials_file.exists()

    cli.login_admin()
    before = cli.credentials_file.read_bytes()
    result = cli("login", "--username", "admin", "--password-stdin", input="still-not-the-password\n")
    assert result.returncode != 0
    assert cli.credentials_file.read_bytes() == before  # the good login survives a bad one
    assert "not-the-password" not in cli.output_of()


def test_stale_login_says_to_log_in_again(make_cli: Callable[..., Cli], registry: Server) -> None:
    admin, carol = make_cli("admin"), make_cli("carol")
    admin.login_admin()
    name, password = unique("carol"), "carol-password-" + uuid.uuid4().hex[:6]
    admin.ok("user", "create", name, "--password-stdin", input=password + "\n")
    carol.ok("login", "--username", name, "--password-stdin", input=password + "\n")
    assert carol.json("whoami") == {"name": name, "kind": "user", "admin": False}

    result = carol("user", "list")  # not an admin: the problem detail, in red, exit 1
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "not an admin" in result.stderr

    admin.ok("user", "delete", name, "--yes")
    result = carol("whoami")
    assert result.returncode == 1
    assert f"run `cargohold login --registry {registry.url}`" in result.stderr
    assert password not in admin.output_of() + carol.output_of()


# ---- environment overrides ----------------------------------------------------------------------------------


def test_environment_overrides_stored_credentials(make_cli: Callable[..., Cli], registry: Server) -> None:
    cli = make_cli()
    admin_env = {"CARGOHOLD_USERNAME": "admin", "CARGOHOLD_PASSWORD": registry.admin_password}
    assert cli.json("whoami", env=admin_env) == {"name": "admin", "kind": "user", "admin": True}  # no login at all
    assert not cli.credentials_file.exists()

    # With a good stored login, bad environment credentials still win (and fail).
    cli.login_admin()
    result = cli("user", "list", env={"CARGOHOLD_USERNAME": "admin", "CARGOHOLD_PASSWORD": "wrong-password-1"})
    assert result.returncode == 1
    assert "CARGOHOLD_USERNAME" in result.stderr

    robot = unique("ci")
    token = cli.ok("token", "create", robot).stdout.strip()
    assert cli.json("whoami", env={"CARGOHOLD_TOKEN": token}) == {"name": robot, "kind": "robot", "admin": False}
    # The token beats a username and password in the environment too.
    assert cli.json("whoami", env={**admin_env, "CARGOHOLD_TOKEN": token})["name"] == robot  # type: ignore[index]
    result = cli("user", "list", env={"CARGOHOLD_TOKEN": token})
    assert result.returncode == 1 and "not an admin" in result.stderr

    # The registry may come from the environment as well.
    result = subprocess.run(
        [sys.executable, "-m", "cargohold", "whoami", "--output", "json"],
        env=cli.env({"CARGOHOLD_REGISTRY": registry.url}), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0 and json.loads(result.stdout)["name"] == "admin"

    cli.ok("token", "delete", robot)
    result = cli("whoami", env={"CARGOHOLD_TOKEN": token})
    assert result.returncode == 1 and "CARGOHOLD_TOKEN" in result.stderr
    assert registry.admin_password not in cli.output_of()


# ---- users, tokens, scope maps ------------------------------------------------------------------------------


def test_scope_map_user_and_token_round_trips(cli: Cli, registry: Server) -> None:
    cli.login_admin()
    readers, user, robot = unique("readers"), unique("dave"), unique("robot")
    password = "dave-password-" + uuid.uuid4().hex[:6]

    # Scope maps.
    cli.ok("scope-map", "create", readers, "--rule", "hub/*=content/read,metadata/read", "--description", "pull from hub")
    rules = [{"repository": "hub/*", "actions": ["content/read", "metadata/read"]}]
    shown = cli.json("scope-map", "show", readers)
    assert shown["rules"] == rules and shown["description"] == "pull from hub"  # type: ignore[index]
    assert readers in [m["name"] for m in cli.json("scope-map", "list")]  # type: ignore[index]
    table = cli.ok("scope-map", "list").stdout
    assert readers in table and "hub/*: content/read, metadata/read" in table
    assert "content/read, metadata/read" in cli.ok("scope-map", "show", readers).stdout
    bad = cli("scope-map", "create", unique("bad"), "--rule", "hub/*=pull")
    assert bad.returncode == 1 and bad.stderr.startswith("error: ")
    assert cli("scope-map", "create", unique("bad"), "--rule", "no-equals-sign").returncode == 2

    # Users.
    cli.ok("user", "create", user, "--scope-map", readers, "--password-stdin", input=password + "\n")
    shown_user = cli.json("user", "show", user)
    assert (shown_user["name"], shown_user["admin"], shown_user["scope_maps"]) == (user, False, [readers])  # type: ignore[index]
    assert user in [u["name"] for u in cli.json("user", "list")]  # type: ignore[index]
    listing = cli.ok("user", "list").stdout
    assert user in listing and readers in listing
    assert user in cli.ok("user", "show", user).stdout
    assert cli.json("user", "update", user, "--admin")["admin"] is True  # type: ignore[index]
    cli.ok("user", "update", user, "--no-admin", "--no-scope-maps")
    shown_user = cli.json("user", "show", user)
    assert (shown_user["admin"], shown_user["scope_maps"]) == (False, [])  # type: ignore[index]
    new_password = "dave-new-password-" + uuid.uuid4().hex[:6]
    cli.ok("user", "update", user, "--password-stdin", input=new_password + "\n")
    assert cli.json("whoami", env={"CARGOHOLD_USERNAME": user, "CARGOHOLD_PASSWORD": new_password})["name"] == user  # type: ignore[index]
    assert cli("whoami", env={"CARGOHOLD_USERNAME": user, "CARGOHOLD_PASSWORD": password}).returncode == 1

    # Robot tokens: printed once, then usable for the registry API with Basic auth.
    created = cli.ok("token", "create", robot, "--scope-map", readers, "--expires-in-days", "30")
    token = created.stdout.strip()
    assert token and "\n" not in token and token not in created.stderr
    assert "will not be shown again" in created.stderr
    r = tags_list(registry, REPO, robot, token)
    assert r.status_code == 200, (r.status_code, r.text)
    assert r.json() == {"name": REPO, "tags": ["1.0"]}
    assert tags_list(registry, "elsewhere/app", robot, token).status_code in (401, 403)
    shown_token = cli.json("token", "show", robot)
    assert shown_token["scope_maps"] == [readers] and shown_token["expired"] is False  # type: ignore[index]
    assert shown_token["expires_at"] is not None and "token" not in shown_token  # type: ignore[operator,index]
    assert robot in [t["name"] for t in cli.json("token", "list")]  # type: ignore[index]
    assert robot in cli.ok("token", "list").stdout and robot in cli.ok("token", "show", robot).stdout
    forever = json.loads(cli.ok("token", "create", unique("forever"), "--no-expiry", "--output", "json").stdout)
    assert forever["token"] and forever["expires_at"] is None

    # In use: the server refuses, the CLI prints why.
    result = cli("scope-map", "delete", readers)
    assert result.returncode == 1 and robot in result.stderr

    # Secrets never show in list or show output, tables or JSON; tokens only in what created them.
    shown_output = cli.output_of(lambda args: "list" in args or "show" in args)
    assert shown_output.count(robot) >= 4
    for secret in (token, forever["token"], password, new_password, registry.admin_password):
        assert secret not in shown_output
    everything_else = cli.output_of(lambda args: args[:2] != ("token", "create"))
    for secret in (token, forever["token"], password, new_password, registry.admin_password):
        assert secret not in everything_else

    # Deletes.
    cli.ok("token", "delete", robot)
    assert tags_list(registry, REPO, robot, token).status_code == 401
    gone = cli("token", "show", robot)
    assert gone.returncode == 1 and gone.stderr.startswith("error: ") and robot in gone.stderr
    unconfirmed = cli("user", "delete", user)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    cli.ok("user", "delete", user, "--yes")
    assert cli("user", "show", user).returncode == 1
    cli.ok("scope-map", "delete", readers)
    assert readers not in [m["name"] for m in cli.json("scope-map", "list")]  # type: ignore[index]


def test_audit(cli: Cli) -> None:
    cli.login_admin()
    name = unique("audited")
    cli.ok("scope-map", "create", name, "--rule", "team/*=content/read")
    events = cli.json("audit", "--action", "scope_map.create", "--actor", "admin", "--limit", "5")
    assert any(e["target"] == name and e["outcome"] == "ok" for e in events["events"])  # type: ignore[index]
    assert all(e["actor"] == "admin" for e in events["events"])  # type: ignore[index]
    assert len(cli.json("audit", "--limit", "5000")["events"]) >= 3  # type: ignore[index]  # above the API's page size
    table = cli.ok("audit", "--limit", "3").stdout
    assert "scope_map.create" in table and name in table


def test_audit_table_fits_100_columns_and_json_has_everything(cli: Cli, registry: Server) -> None:
    cli.login_admin()
    repo = f"team/{unique('a-rather-long-repository-name-for-the-audit-table')}"
    digest = push_image(registry, repo, "1.0")
    cli.ok("image", "delete", f"{repo}@{digest}")
    for env in ({}, {"COLUMNS": "250"}):  # piped (lines kept whole) and a wide terminal
        result = cli.ok("audit", "--limit", "20", env=env)
        lines = result.stdout.splitlines()
        assert max(len(line) for line in lines) <= 100, "\n".join(lines)
        assert any("manifest.delete" in line and digest[7:19] in line for line in lines), result.stdout
        assert digest not in result.stdout  # shortened in the table
        assert "--output json" in result.stderr
    events = cli.json("audit", "--action", "manifest.delete", "--limit", "5")["events"]  # type: ignore[index]
    assert any(e["target"] == f"{repo}@{digest}" and e["client"] for e in events)


# ---- failures -----------------------------------------------------------------------------------------------


def test_unreachable_server_exits_2(cli: Cli) -> None:
    registry = f"http://127.0.0.1:{free_port()}"
    result = cli("user", "list", env={"CARGOHOLD_TOKEN": "chr_whatever"}, registry=registry)
    assert result.returncode == 2
    assert f"cannot reach {registry}" in result.stderr
    result = cli("login", "--username", "admin", "--password-stdin", input="x\n", registry=registry)
    assert result.returncode == 2
    assert not cli.credentials_file.exists()
