"""The access-control commands in-process (typer's CliRunner) against the stub management API.

The same behaviour is checked end to end, as subprocesses against the real
server, in tests/integration/test_cli.py; these cover the edges that are
awkward there (exit codes, prompts, pagination, what is printed where).
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cargohold.cli.credentials import CredentialStore
from cargohold.cli.main import app
from cli_stub import StubApi
from servers import free_port

ADMIN_PASSWORD = "admin-password-123"


@pytest.fixture
def stub() -> Iterator[StubApi]:
    api = StubApi().start()
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CARGOHOLD_TOKEN", "CARGOHOLD_USERNAME", "CARGOHOLD_PASSWORD", "CARGOHOLD_REGISTRY", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def cli(*args: str, input: str | None = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), input=input, env=env, catch_exceptions=False)


def login(stub: StubApi) -> None:
    result = cli("login", "--registry", stub.url, "-u", "admin", "--password-stdin", input=ADMIN_PASSWORD + "\n")
    assert result.exit_code == 0, result.output


def test_login_stores_and_logout_forgets(stub: StubApi, home: Path) -> None:
    result = cli("login", "--registry", stub.url + "/", "-u", "admin", "--password-stdin", input=ADMIN_PASSWORD + "\n")
    assert result.exit_code == 0, result.stderr
    assert "Logged in" in result.stderr and "admin" in result.stderr
    assert ADMIN_PASSWORD not in result.output + result.stderr
    directory = home / ".config" / "cargohold"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "credentials.json").stat().st_mode) == 0o600
    stored = json.loads((directory / "credentials.json").read_text())["registries"]
    assert stored == {stub.url: {"username": "admin", "password": ADMIN_PASSWORD}}

    assert cli("whoami", "--registry", stub.url).stdout.startswith("admin (user, admin)")
    result = cli("logout", "--registry", stub.url)
    assert result.exit_code == 0 and "Removed" in result.stderr
    result = cli("whoami", "--registry", stub.url)
    assert result.exit_code == 1 and "cargohold login" in result.stderr


def test_login_prompts_with_hidden_input(stub: StubApi, home: Path) -> None:
    result = cli("login", "--registry", stub.url, input=f"admin\n{ADMIN_PASSWORD}\n")
    assert result.exit_code == 0, result.stderr
    assert ADMIN_PASSWORD not in result.output + result.stderr  # the prompt did not echo it
    assert CredentialStore(home / ".config" / "cargohold").get(stub.url) is not None


def test_wrong_password_stores_nothing(stub: StubApi, home: Path) -> None:
    result = cli("login", "--registry", stub.url, "-u", "admin", "--password-stdin", input="wrong-password\n")
    assert result.exit_code == 1
    assert "login failed: authentication required: wrong username or password" in result.stderr
    assert "wrong-password" not in result.output + result.stderr
    assert not (home / ".config" / "cargohold" / "credentials.json").exists()


def test_password_stdin_needs_username(stub: StubApi, home: Path) -> None:
    result = cli("login", "--registry", stub.url, "--password-stdin", input="x\n")
    assert result.exit_code == 2


def test_registry_from_environment(stub: StubApi, home: Path) -> None:
    login(stub)
    result = cli("user", "list", "-o", "json", env={"CARGOHOLD_REGISTRY": stub.url})
    assert result.exit_code == 0, result.stderr
    assert [u["name"] for u in json.loads(result.stdout)] == ["admin"]


def test_environment_credentials(stub: StubApi, home: Path) -> None:
    env = {"CARGOHOLD_USERNAME": "admin", "CARGOHOLD_PASSWORD": ADMIN_PASSWORD}
    assert cli("user", "list", "--registry", stub.url, env=env).exit_code == 0
    result = cli("user", "list", "--registry", stub.url, env={"CARGOHOLD_USERNAME": "admin", "CARGOHOLD_PASSWORD": "nope"})
    assert result.exit_code == 1
    assert "CARGOHOLD_USERNAME" in result.stderr and "nope" not in result.stderr
    result = cli("user", "list", "--registry", stub.url, env={"CARGOHOLD_USERNAME": "admin"})
    assert result.exit_code == 1 and "CARGOHOLD_PASSWORD" in result.stderr


def test_stale_stored_login_says_to_log_in(stub: StubApi, home: Path) -> None:
    login(stub)
    stub.passwords["admin"] = "changed-elsewhere-1"
    result = cli("user", "list", "--registry", stub.url)
    assert result.exit_code == 1
    assert f"run `cargohold login --registry {stub.url}`" in result.stderr


def test_unreachable_server_exits_2(home: Path) -> None:
    registry = f"http://127.0.0.1:{free_port()}"
    result = cli("user", "list", "--registry", registry, env={"CARGOHOLD_TOKEN": "chr_x"})
    assert result.exit_code == 2
    assert f"cannot reach {registry}" in result.stderr
    result = cli("login", "--registry", registry, "-u", "a", "--password-stdin", input="pw\n")
    assert result.exit_code == 2


def test_bad_registry_url_is_usage_error(home: Path) -> None:
    result = cli("user", "list", "--registry", "127.0.0.1:5000")
    assert result.exit_code == 2


def test_api_error_detail_printed(stub: StubApi, home: Path) -> None:
    login(stub)
    result = cli("user", "show", "ghost", "--registry", stub.url)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no user named ghost"
    result = cli("user", "create", "bob", "--password-stdin", "--registry", stub.url, input="short\n")
    assert result.exit_code == 1 and "at least 12 characters" in result.stderr


def test_users(stub: StubApi, home: Path) -> None:
    login(stub)
    url = ["--registry", stub.url]
    pw = "bob-password-1234"
    result = cli("user", "create", "bob", "--scope-map", "readers", "-s", "writers", "--password-stdin", *url, input=pw + "\n")
    assert result.exit_code == 0, result.stderr
    assert stub.requests[-1]["body"] == {"name": "bob", "password": pw, "admin": False, "scope_maps": ["readers", "writers"]}
    assert pw not in result.output + result.stderr

    listing = cli("user", "list", *url)
    assert listing.exit_code == 0
    assert "bob" in listing.stdout and "readers, writers" in listing.stdout
    shown = json.loads(cli("user", "show", "bob", "-o", "json", *url).stdout)
    assert shown["scope_maps"] == ["readers", "writers"] and "password" not in shown

    assert cli("user", "update", "bob", "--admin", *url).exit_code == 0
    assert stub.requests[-1]["body"] == {"admin": True}
    assert cli("user", "update", "bob", "--no-admin", "--no-scope-maps", *url).exit_code == 0
    assert stub.requests[-1]["body"] == {"admin": False, "scope_maps": []}
    assert cli("user", "update", "bob", "--password-stdin", *url, input="new-password-123\n").exit_code == 0
    assert stub.requests[-1]["body"] == {"password": "new-password-123"}
    assert cli("user", "update", "bob", *url).exit_code == 2
    assert cli("user", "update", "bob", "-s", "x", "--no-scope-maps", *url).exit_code == 2

    result = cli("user", "delete", "bob", *url)
    assert result.exit_code == 2 and "--yes" in result.stderr
    assert "bob" in stub.users
    result = cli("user", "delete", "bob", "--yes", *url)
    assert result.exit_code == 0 and "bob" not in stub.users


def test_user_create_prompts_twice(stub: StubApi, home: Path) -> None:
    login(stub)
    result = cli("user", "create", "eve", "--registry", stub.url, input="eve-password-123\neve-password-123\n")
    assert result.exit_code == 0, result.stderr
    assert stub.passwords["eve"] == "eve-password-123"


def test_tokens(stub: StubApi, home: Path) -> None:
    login(stub)
    url = ["--registry", stub.url]
    result = cli("token", "create", "ci", "-s", "readers", "--expires-in-days", "7", *url)
    assert result.exit_code == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("chr_") and stub.robot_tokens[token] == "ci"
    assert "will not be shown again" in result.stderr  # the warning is on stderr, the token alone on stdout
    assert stub.requests[-1]["body"] == {"name": "ci", "scope_maps": ["readers"], "expires_in_days": 7}

    result = cli("token", "create", "forever", "--no-expiry", "-o", "json", *url)
    created = json.loads(result.stdout)
    assert created["token"].startswith("chr_") and created["expires_at"] is None
    assert stub.requests[-1]["body"]["expires_in_days"] is None
    cli("token", "create", "default", *url)
    assert "expires_in_days" not in stub.requests[-1]["body"]
    assert cli("token", "create", "x", "--no-expiry", "--expires-in-days", "3", *url).exit_code == 2

    listing = cli("token", "list", *url)
    assert "ci" in listing.stdout and "forever" in listing.stdout and "never" in listing.stdout
    for name in ("ci", "forever"):
        shown = cli("token", "show", name, *url)
        assert shown.exit_code == 0
        as_json = cli("token", "show", name, "-o", "json", *url).stdout
        assert "token" not in json.loads(as_json)
    everything = "".join(cli(*args, *url).stdout for args in (("token", "list"), ("token", "list", "-o", "json")))
    assert token not in everything and created["token"] not in everything

    # The token works on its own, as CARGOHOLD_TOKEN.
    result = cli("whoami", "-o", "json", *url, env={"CARGOHOLD_TOKEN": token})
    assert json.loads(result.stdout) == {"name": "ci", "kind": "robot", "admin": False}
    assert cli("token", "delete", "ci", *url).exit_code == 0
    result = cli("whoami", *url, env={"CARGOHOLD_TOKEN": token})
    assert result.exit_code == 1 and "CARGOHOLD_TOKEN" in result.stderr


def test_secret_fields_are_never_printed(stub: StubApi, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    login(stub)
    leaky = {"name": "x", "admin": False, "scope_maps": [], "created_at": None, "password_hash": "$argon2id$leak"}
    monkeypatch.setitem(stub.users, "x", leaky)
    for args in (("user", "list"), ("user", "list", "-o", "json"), ("user", "show", "x"), ("user", "show", "x", "-o", "json")):
        result = cli(*args, "--registry", stub.url)
        assert result.exit_code == 0 and "leak" not in result.stdout


def test_scope_maps(stub: StubApi, home: Path) -> None:
    login(stub)
    url = ["--registry", stub.url]
    result = cli(
        "scope-map", "create", "readers", "--rule", "hub/*=content/read,metadata/read", "--rule", "team/app = content/read",
        "--description", "pull only", *url,
    )
    assert result.exit_code == 0, result.stderr
    assert stub.requests[-1]["body"] == {
        "name": "readers",
        "description": "pull only",
        "rules": [
            {"repository": "hub/*", "actions": ["content/read", "metadata/read"]},
            {"repository": "team/app", "actions": ["content/read"]},
        ],
    }
    listing = cli("scope-map", "list", *url).stdout
    assert "readers" in listing and "hub/*: content/read, metadata/read" in listing
    shown = cli("scope-map", "show", "readers", *url).stdout
    assert "pull only" in shown and "team/app" in shown
    assert json.loads(cli("scope-map", "show", "readers", "-o", "json", *url).stdout)["description"] == "pull only"

    for bad in ("hub/*", "=content/read", "hub/*="):
        result = cli("scope-map", "create", "bad", "--rule", bad, *url)
        assert result.exit_code == 2, bad
    result = cli("scope-map", "create", "bad", "--rule", "hub/*=pull", *url)
    assert result.exit_code == 1 and "actions must be some of" in result.stderr
    assert cli("scope-map", "create", "bad", *url).exit_code == 2  # --rule is required

    assert cli("scope-map", "delete", "readers", *url).exit_code == 0
    assert json.loads(cli("scope-map", "list", "-o", "json", *url).stdout) == []


def test_audit_follows_pages(stub: StubApi, home: Path) -> None:
    login(stub)
    url = ["--registry", stub.url]
    for i in range(7):
        stub.events.append(stub._event("admin", "user.create", f"u{i}"))
    stub.events.append(stub._event("bob", "token.create", "t"))
    stub.audit_page_cap = 3
    events = json.loads(cli("audit", "--limit", "5", "-o", "json", *url).stdout)
    assert [e["target"] for e in events["events"]] == ["t", "u6", "u5", "u4", "u3"]
    assert events["next"] == events["events"][-1]["id"]
    everything = json.loads(cli("audit", "-o", "json", *url).stdout)
    assert len(everything["events"]) == 8 and everything["next"] is None
    only = json.loads(cli("audit", "--actor", "bob", "-o", "json", *url).stdout)
    assert [e["action"] for e in only["events"]] == ["token.create"]
    assert "actor=bob" in stub.requests[-1]["path"]
    assert json.loads(cli("audit", "--action", "user.create", "--limit", "2", "-o", "json", *url).stdout)["events"][0]["target"] == "u6"
    table = cli("audit", "--limit", "2", *url)
    assert table.exit_code == 0 and "token.create" in table.stdout and "more events: --before" in table.stderr


def test_loosened_credentials_file_is_warned_about(stub: StubApi, home: Path) -> None:
    login(stub)
    path = home / ".config" / "cargohold" / "credentials.json"
    path.chmod(0o644)
    result = cli("whoami", "--registry", stub.url)
    assert result.exit_code == 0
    assert "readable by others" in result.stderr and ADMIN_PASSWORD not in result.stderr


def test_token_from_a_file_with_a_newline(stub: StubApi, home: Path) -> None:
    login(stub)
    token = cli("token", "create", "ci", "--registry", stub.url).stdout.strip()
    CredentialStore(home / ".config" / "cargohold").remove(stub.url)
    result = cli("whoami", "--registry", stub.url, env={"CARGOHOLD_TOKEN": token + "\n"})
    assert result.exit_code == 0 and result.stdout.startswith("ci (robot)")


def test_server_detail_is_not_rich_markup(stub: StubApi, home: Path) -> None:
    login(stub)
    result = cli("user", "show", "[bold]x[/bold]", "--registry", stub.url)
    assert result.exit_code == 1
    assert "[bold]x[/bold]" in result.stderr  # printed as text, not interpreted
