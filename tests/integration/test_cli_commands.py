"""The access-control commands in-process (typer's CliRunner) against the real server.

tests/integration/test_cli.py runs the same commands as subprocesses; these
cover the edges that are easier to see in-process (exit codes, prompts,
paging, what is printed where). The server is the real one, so a command and
the management API it calls cannot drift apart.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from typer.testing import CliRunner

from cargohold.cli.access import _public
from cargohold.cli.credentials import CredentialStore
from cargohold.cli.main import app
from clihelpers import unique
from servers import Server, free_port


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Server(
        data_dir=tmp_path_factory.mktemp("cargohold-cli-commands") / "data", auth=True, workers=1,
        extra_env={"CARGOHOLD_LOGIN_THROTTLE_ATTEMPTS": "1000"},
    ) as server:
        yield server


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("CARGOHOLD_TOKEN", "CARGOHOLD_USERNAME", "CARGOHOLD_PASSWORD", "CARGOHOLD_REGISTRY", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def cli(*args: str, input: str | None = None, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args), input=input, env=env, catch_exceptions=False)


def login(srv: Server) -> None:
    result = cli("login", "--registry", srv.url, "-u", "admin", "--password-stdin", input=srv.admin_password + "\n")
    assert result.exit_code == 0, result.output


def scope_map(srv: Server, rule: str = "team/*=content/read") -> str:
    name = unique("map")
    result = cli("scope-map", "create", name, "--rule", rule, "--registry", srv.url)
    assert result.exit_code == 0, result.stderr
    return name


def test_login_stores_and_logout_forgets(srv: Server, home: Path) -> None:
    password = srv.admin_password
    result = cli("login", "--registry", srv.url + "/", "-u", "admin", "--password-stdin", input=password + "\n")
    assert result.exit_code == 0, result.stderr
    assert "Logged in" in result.stderr and "admin" in result.stderr
    assert password not in result.output + result.stderr
    directory = home / ".config" / "cargohold"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / "credentials.json").stat().st_mode) == 0o600
    stored = json.loads((directory / "credentials.json").read_text())["registries"]
    assert stored == {srv.url: {"username": "admin", "password": password}}

    assert cli("whoami", "--registry", srv.url).stdout.startswith("admin (user, admin)")
    result = cli("logout", "--registry", srv.url)
    assert result.exit_code == 0 and "Removed" in result.stderr
    result = cli("whoami", "--registry", srv.url)
    assert result.exit_code == 1 and "cargohold login" in result.stderr


def test_login_prompts_with_hidden_input(srv: Server, home: Path) -> None:
    result = cli("login", "--registry", srv.url, input=f"admin\n{srv.admin_password}\n")
    assert result.exit_code == 0, result.stderr
    assert srv.admin_password not in result.output + result.stderr  # the prompt did not echo it
    assert CredentialStore(home / ".config" / "cargohold").get(srv.url) is not None


def test_wrong_password_stores_nothing(srv: Server, home: Path) -> None:
    result = cli("login", "--registry", srv.url, "-u", "admin", "--password-stdin", input="wrong-password\n")
    assert result.exit_code == 1
    assert "login failed:" in result.stderr
    assert "wrong-password" not in result.output + result.stderr
    assert not (home / ".config" / "cargohold" / "credentials.json").exists()


def test_password_stdin_needs_username(srv: Server, home: Path) -> None:
    result = cli("login", "--registry", srv.url, "--password-stdin", input="x\n")
    assert result.exit_code == 2


def test_registry_from_environment(srv: Server, home: Path) -> None:
    login(srv)
    result = cli("user", "list", "-o", "json", env={"CARGOHOLD_REGISTRY": srv.url})
    assert result.exit_code == 0, result.stderr
    assert "admin" in [u["name"] for u in json.loads(result.stdout)]


def test_environment_credentials(srv: Server, home: Path) -> None:
    env = {"CARGOHOLD_USERNAME": "admin", "CARGOHOLD_PASSWORD": srv.admin_password}
    assert cli("user", "list", "--registry", srv.url, env=env).exit_code == 0
    result = cli("user", "list", "--registry", srv.url, env={"CARGOHOLD_USERNAME": "admin", "CARGOHOLD_PASSWORD": "nope"})
    assert result.exit_code == 1
    assert "CARGOHOLD_USERNAME" in result.stderr and "nope" not in result.stderr
    result = cli("user", "list", "--registry", srv.url, env={"CARGOHOLD_USERNAME": "admin"})
    assert result.exit_code == 1 and "CARGOHOLD_PASSWORD" in result.stderr


def test_stale_stored_login_says_to_log_in(srv: Server, home: Path) -> None:
    login(srv)
    name = unique("carol")
    assert cli("user", "create", name, "--password-stdin", "--registry", srv.url, input="carol-password-12\n").exit_code == 0
    assert cli("login", "--registry", srv.url, "-u", name, "--password-stdin", input="carol-password-12\n").exit_code == 0
    r = requests.patch(f"{srv.url}/api/v1/users/{name}", json={"password": "changed-elsewhere-1"},
                       auth=("admin", srv.admin_password), timeout=30)
    assert r.status_code == 200, r.text
    result = cli("whoami", "--registry", srv.url)
    assert result.exit_code == 1
    assert f"run `cargohold login --registry {srv.url}`" in result.stderr


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


def test_api_error_detail_printed(srv: Server, home: Path) -> None:
    login(srv)
    result = cli("user", "show", "ghost", "--registry", srv.url)
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: no user named 'ghost'"
    result = cli("user", "create", unique("bob"), "--password-stdin", "--registry", srv.url, input="short\n")
    assert result.exit_code == 1 and "at least 12 characters" in result.stderr


def test_users(srv: Server, home: Path) -> None:
    login(srv)
    url = ["--registry", srv.url]
    readers, writers = scope_map(srv), scope_map(srv, "team/*=content/write")
    bob, pw = unique("bob"), "bob-password-1234"
    result = cli("user", "create", bob, "--scope-map", readers, "-s", writers, "--password-stdin", *url, input=pw + "\n")
    assert result.exit_code == 0, result.stderr
    assert pw not in result.output + result.stderr

    listing = cli("user", "list", *url)
    assert listing.exit_code == 0
    assert bob in listing.stdout and f"{readers}, {writers}" in listing.stdout
    shown = json.loads(cli("user", "show", bob, "-o", "json", *url).stdout)
    assert shown["scope_maps"] == [readers, writers] and shown["admin"] is False and "password" not in shown

    def show() -> dict[str, object]:
        return json.loads(cli("user", "show", bob, "-o", "json", *url).stdout)

    assert cli("user", "update", bob, "--admin", *url).exit_code == 0
    assert show()["admin"] is True and show()["scope_maps"] == [readers, writers]
    assert cli("user", "update", bob, "--no-admin", "--no-scope-maps", *url).exit_code == 0
    assert show()["admin"] is False and show()["scope_maps"] == []
    assert cli("user", "update", bob, "--password-stdin", *url, input="new-password-123\n").exit_code == 0
    whoami = cli("whoami", *url, env={"CARGOHOLD_USERNAME": bob, "CARGOHOLD_PASSWORD": "new-password-123"})
    assert whoami.exit_code == 0, whoami.stderr
    assert cli("user", "update", bob, *url).exit_code == 2
    assert cli("user", "update", bob, "-s", "x", "--no-scope-maps", *url).exit_code == 2

    result = cli("user", "delete", bob, *url)
    assert result.exit_code == 2 and "--yes" in result.stderr
    assert cli("user", "show", bob, *url).exit_code == 0
    result = cli("user", "delete", bob, "--yes", *url)
    assert result.exit_code == 0 and cli("user", "show", bob, *url).exit_code == 1


def test_user_create_prompts_twice(srv: Server, home: Path) -> None:
    login(srv)
    eve = unique("eve")
    result = cli("user", "create", eve, "--registry", srv.url, input="eve-password-123\neve-password-123\n")
    assert result.exit_code == 0, result.stderr
    whoami = cli("whoami", "--registry", srv.url, env={"CARGOHOLD_USERNAME": eve, "CARGOHOLD_PASSWORD": "eve-password-123"})
    assert whoami.exit_code == 0 and whoami.stdout.startswith(eve)


def test_tokens(srv: Server, home: Path) -> None:
    login(srv)
    url = ["--registry", srv.url]
    readers = scope_map(srv)
    ci, forever, default = unique("ci"), unique("forever"), unique("default")
    result = cli("token", "create", ci, "-s", readers, "--expires-in-days", "7", *url)
    assert result.exit_code == 0, result.stderr
    token = result.stdout.strip()
    assert token.startswith("chr_")
    assert "will not be shown again" in result.stderr  # the warning is on stderr, the token alone on stdout
    shown = json.loads(cli("token", "show", ci, "-o", "json", *url).stdout)
    assert shown["scope_maps"] == [readers] and shown["expires_at"]

    result = cli("token", "create", forever, "--no-expiry", "-o", "json", *url)
    created = json.loads(result.stdout)
    assert created["token"].startswith("chr_") and created["expires_at"] is None
    cli("token", "create", default, *url)
    assert json.loads(cli("token", "show", default, "-o", "json", *url).stdout)["expires_at"]  # the server's default
    assert cli("token", "create", "x", "--no-expiry", "--expires-in-days", "3", *url).exit_code == 2

    listing = cli("token", "list", *url)
    assert ci in listing.stdout and forever in listing.stdout and "never" in listing.stdout
    for name in (ci, forever):
        assert cli("token", "show", name, *url).exit_code == 0
        assert "token" not in json.loads(cli("token", "show", name, "-o", "json", *url).stdout)
    everything = "".join(cli(*args, *url).stdout for args in (("token", "list"), ("token", "list", "-o", "json")))
    assert token not in everything and created["token"] not in everything

    # The token works on its own, as CARGOHOLD_TOKEN.
    result = cli("whoami", "-o", "json", *url, env={"CARGOHOLD_TOKEN": token})
    assert json.loads(result.stdout) == {"name": ci, "kind": "robot", "admin": False}
    assert cli("token", "delete", ci, *url).exit_code == 0
    result = cli("whoami", *url, env={"CARGOHOLD_TOKEN": token})
    assert result.exit_code == 1 and "CARGOHOLD_TOKEN" in result.stderr


def test_secret_fields_are_never_printed(srv: Server, home: Path) -> None:
    login(srv)
    for args in (("user", "list"), ("user", "list", "-o", "json"), ("user", "show", "admin"), ("user", "show", "admin", "-o", "json")):
        result = cli(*args, "--registry", srv.url)
        assert result.exit_code == 0 and "argon2" not in result.stdout and srv.admin_password not in result.stdout
    # Defence in depth, should a server ever send one: secret fields are dropped at any depth.
    leaky = {"name": "x", "password_hash": "$argon2id$leak", "robots": [{"token": "chr_leak", "name": "r"}]}
    assert _public(leaky) == {"name": "x", "robots": [{"name": "r"}]}


def test_scope_maps(srv: Server, home: Path) -> None:
    login(srv)
    url = ["--registry", srv.url]
    readers = unique("readers")
    result = cli(
        "scope-map", "create", readers, "--rule", "hub/*=content/read,metadata/read", "--rule", "team/app = content/read",
        "--description", "pull only", *url,
    )
    assert result.exit_code == 0, result.stderr
    shown = json.loads(cli("scope-map", "show", readers, "-o", "json", *url).stdout)
    assert shown["description"] == "pull only"
    assert shown["rules"] == [
        {"repository": "hub/*", "actions": ["content/read", "metadata/read"]},
        {"repository": "team/app", "actions": ["content/read"]},
    ]
    listing = cli("scope-map", "list", *url).stdout
    assert readers in listing and "hub/*: content/read, metadata/read" in listing
    table = cli("scope-map", "show", readers, *url).stdout
    assert "pull only" in table and "team/app" in table

    for bad in ("hub/*", "=content/read", "hub/*="):
        result = cli("scope-map", "create", unique("bad"), "--rule", bad, *url)
        assert result.exit_code == 2, bad
    result = cli("scope-map", "create", unique("bad"), "--rule", "hub/*=pull", *url)
    assert result.exit_code == 1 and "content/read" in result.stderr  # the server names the actions it knows
    assert cli("scope-map", "create", unique("bad"), *url).exit_code == 2  # --rule is required

    assert cli("scope-map", "delete", readers, *url).exit_code == 0
    assert readers not in [m["name"] for m in json.loads(cli("scope-map", "list", "-o", "json", *url).stdout)]


def test_audit_pages_and_filters(srv: Server, home: Path) -> None:
    login(srv)
    url = ["--registry", srv.url]
    made = [scope_map(srv) for _ in range(4)]
    events = json.loads(cli("audit", "--limit", "3", "--action", "scope_map.create", "-o", "json", *url).stdout)
    assert [e["target"] for e in events["events"]] == made[::-1][:3]
    assert events["next"] == events["events"][-1]["id"]
    following = json.loads(cli("audit", "--limit", "1", "--action", "scope_map.create", "--before", str(events["next"]),
                               "-o", "json", *url).stdout)
    assert [e["target"] for e in following["events"]] == [made[0]]
    everything = json.loads(cli("audit", "--limit", "10000", "-o", "json", *url).stdout)
    assert everything["next"] is None and {m for m in made} <= {e["target"] for e in everything["events"]}
    only = json.loads(cli("audit", "--actor", "cargohold", "-o", "json", *url).stdout)
    assert only["events"] and {e["actor"] for e in only["events"]} == {"cargohold"}
    table = cli("audit", "--limit", "2", *url)
    assert table.exit_code == 0 and "scope_map.create" in table.stdout and "more events: --before" in table.stderr


def test_loosened_credentials_file_is_warned_about(srv: Server, home: Path) -> None:
    login(srv)
    path = home / ".config" / "cargohold" / "credentials.json"
    path.chmod(0o644)
    result = cli("whoami", "--registry", srv.url)
    assert result.exit_code == 0
    assert "readable by others" in result.stderr and srv.admin_password not in result.stderr


def test_token_from_a_file_with_a_newline(srv: Server, home: Path) -> None:
    login(srv)
    name = unique("ci")
    token = cli("token", "create", name, "--registry", srv.url).stdout.strip()
    CredentialStore(home / ".config" / "cargohold").remove(srv.url)
    result = cli("whoami", "--registry", srv.url, env={"CARGOHOLD_TOKEN": token + "\n"})
    assert result.exit_code == 0 and result.stdout.startswith(f"{name} (robot)")


def test_server_detail_is_not_rich_markup(srv: Server, home: Path) -> None:
    login(srv)
    result = cli("user", "show", "[bold]x[/bold]", "--registry", srv.url)
    assert result.exit_code == 1
    assert "[bold]x[/bold]" in result.stderr  # printed as text, not interpreted


def test_rewrite_reads_sync_rules_or_does_without(srv: Server, home: Path) -> None:
    """The real server's sync rules for an admin; a warning when the caller may not read them; nothing from a
    server that has no such API (an older cargohold, here a bare HTTP server answering 404)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from cargohold.cli.client import ApiClient, Credentials
    from cargohold.cli.rewrite import fetch_sync_rules

    assert fetch_sync_rules(ApiClient(srv.url, Credentials("admin", srv.admin_password))) == ([], [])
    login(srv)
    dev = unique("dev")
    assert cli("user", "create", dev, "--password-stdin", "--registry", srv.url, input="dev-password-123\n").exit_code == 0
    sync, warnings = fetch_sync_rules(ApiClient(srv.url, Credentials(dev, "dev-password-123")))
    assert sync == [] and len(warnings) == 1 and "sync rules" in warnings[0]

    class Older(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    older = ThreadingHTTPServer(("127.0.0.1", 0), Older)
    threading.Thread(target=older.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{older.server_address[1]}"
        assert fetch_sync_rules(ApiClient(url, Credentials("admin", "x"))) == ([], [])
    finally:
        older.shutdown()
        older.server_close()
