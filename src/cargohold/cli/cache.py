"""Artifact-cache management commands: ``cache-rule`` and ``credential-set``.

Like the access-control commands (``access.py``), they talk to a running
server through the management API and share its conventions: results on
stdout (rich tables, or JSON with ``--output json``), messages on stderr;
exit 0 done, 1 the server refused (its problem ``detail`` is printed), 2 bad
usage or the server could not be reached.

A credential set's password is read from stdin (``--password-stdin``) or
prompted for; it is never an option (it would sit in the shell history and
in ``ps``), and never printed: the server does not send it back.
"""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.text import Text

from .access import (
    Output,
    OutputOpt,
    RegistryOpt,
    _details,
    _prompt_password,
    _public,
    _read_secret_stdin,
    _show,
    _table,
    _typer,
    _yes,
    err,
    fail,
    print_json,
    session,
    stdout,
    when,
)
from .client import DEFAULT_REGISTRY, ApiClient, _items, quote

cache_rule_app = _typer("Manage cache rules: which local namespace is a pull-through cache of which upstream.")
credential_set_app = _typer("Manage credential sets: upstream logins (e.g. a Docker Hub token) that cache rules use.")

RULES = "/api/v1/cache-rules"
SETS = "/api/v1/credential-sets"


class Platforms(str, Enum):
    eager = "eager"
    on_demand = "on-demand"


PlatformsOpt = Annotated[
    Optional[Platforms],
    typer.Option(
        "--platforms",
        case_sensitive=False,
        help="eager: fetch every platform of a multi-arch image on first pull; on-demand: only what clients pull",
    ),
]
TtlOpt = Annotated[
    Optional[int], typer.Option("--ttl", min=0, help="seconds a tag is served before upstream is asked again (server default 60)")
]
CredentialSetOpt = Annotated[
    Optional[str], typer.Option("--credential-set", "-c", help="the credential set to log in upstream with")
]
NameArg = Annotated[str, typer.Argument(help="cache rule name")]
SetNameArg = Annotated[str, typer.Argument(help="credential set name")]


def _result(item: Any, rows: Any, output: Output, message: str) -> None:
    """After a change: JSON on stdout, or the message on stderr and the object as a table on stdout."""
    if output is Output.json:
        print_json(_public(item))
        return
    err.print(message)
    if isinstance(item, dict) and item:
        stdout().print(_details(rows(item)))


# ---- cache rules -----------------------------------------------------------------------------------


def _flags(rule: dict[str, Any]) -> str:
    flags = [flag for flag, on in (("insecure", rule.get("insecure")), ("docker hub mirror", rule.get("dockerhub_mirror"))) if on]
    return ", ".join(flags) or "—"


def _rule_rows(rule: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("name", rule.get("name", "")),
        ("source", rule.get("source", "")),
        ("target", rule.get("target", "")),
        ("credential set", rule.get("credential_set") or "—"),
        ("tag TTL", f"{rule.get('tag_ttl_seconds')} s"),
        ("platforms", rule.get("platforms", "")),
        ("insecure", _yes(rule.get("insecure"))),
        ("docker hub mirror", _yes(rule.get("dockerhub_mirror"))),
        ("created", when(rule.get("created_at"))),
        ("updated", when(rule.get("updated_at"))),
    ]


@cache_rule_app.command("create")
def rule_create(
    name: NameArg,
    source: Annotated[str, typer.Option("--source", help="upstream: docker.io/library/*, ghcr.io/*, quay.io/org/repo …")],
    target: Annotated[str, typer.Option("--target", help="local namespace (hub/*) or repository")],
    credential_set: CredentialSetOpt = None,
    ttl: TtlOpt = None,
    platforms: PlatformsOpt = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="talk to the upstream over plain HTTP")] = False,
    dockerhub_mirror: Annotated[
        bool, typer.Option("--dockerhub-mirror", help="answer Docker Hub mirror requests (registry-mirrors) with this rule")
    ] = False,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Create a cache rule, e.g. --source 'docker.io/library/*' --target 'hub/*'."""
    body: dict[str, Any] = {"name": name, "source": source, "target": target, "insecure": insecure, "dockerhub_mirror": dockerhub_mirror}
    if credential_set:
        body["credential_set"] = credential_set
    if ttl is not None:
        body["tag_ttl_seconds"] = ttl
    if platforms is not None:
        body["platforms"] = platforms.value
    with session(registry) as client:
        rule = client.request("POST", RULES, body)
    _result(rule, _rule_rows, output, f"Created cache rule [bold]{escape(name)}[/bold].")


@cache_rule_app.command("list")
def rule_list(registry: RegistryOpt = DEFAULT_REGISTRY, output: OutputOpt = Output.table) -> None:
    """List cache rules."""
    with session(registry) as client:
        rules = _list(client, RULES, "cache rules")
    if output is Output.json:
        print_json(_public(rules))
        return
    table = _table("NAME", "TARGET", "SOURCE", "CREDENTIAL SET", "TTL", "PLATFORMS", "FLAGS")
    for rule in rules:
        table.add_row(
            str(rule.get("name", "")), str(rule.get("target", "")), str(rule.get("source", "")),
            str(rule.get("credential_set") or "—"), f"{rule.get('tag_ttl_seconds')} s", str(rule.get("platforms", "")),
            _flags(rule),
        )
    stdout().print(table)


@cache_rule_app.command("show")
def rule_show(name: NameArg, registry: RegistryOpt = DEFAULT_REGISTRY, output: OutputOpt = Output.table) -> None:
    """Show one cache rule."""
    with session(registry) as client:
        _show(client.get(f"{RULES}/{quote(name)}"), _rule_rows, output)


@cache_rule_app.command("update")
def rule_update(
    name: NameArg,
    source: Annotated[Optional[str], typer.Option("--source", help="a new upstream")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="a new local namespace or repository")] = None,
    credential_set: CredentialSetOpt = None,
    no_credential_set: Annotated[bool, typer.Option("--no-credential-set", help="pull anonymously from now on")] = False,
    ttl: TtlOpt = None,
    platforms: PlatformsOpt = None,
    insecure: Annotated[Optional[bool], typer.Option("--insecure/--no-insecure", help="talk to the upstream over plain HTTP, or over HTTPS again")] = None,
    dockerhub_mirror: Annotated[
        Optional[bool], typer.Option("--dockerhub-mirror/--no-dockerhub-mirror", help="make or unmake the Docker Hub mirror")
    ] = None,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Change a cache rule; what is not given stays as it is."""
    if credential_set and no_credential_set:
        raise typer.BadParameter("give --credential-set or --no-credential-set, not both", param_hint="--no-credential-set")
    changes: dict[str, Any] = {}
    for key, value in (("source", source), ("target", target), ("tag_ttl_seconds", ttl), ("platforms", platforms.value if platforms else None),
                       ("insecure", insecure), ("dockerhub_mirror", dockerhub_mirror)):
        if value is not None:
            changes[key] = value
    if credential_set or no_credential_set:
        changes["credential_set"] = credential_set or None
    if not changes:
        raise fail(
            "nothing to change: give --source, --target, --credential-set, --no-credential-set, --ttl, --platforms, "
            "--insecure/--no-insecure or --dockerhub-mirror/--no-dockerhub-mirror", 2
        )
    with session(registry) as client:
        rule = client.request("PATCH", f"{RULES}/{quote(name)}", changes)
    _result(rule, _rule_rows, output, f"Updated cache rule [bold]{escape(name)}[/bold].")


@cache_rule_app.command("delete")
def rule_delete(name: NameArg, registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Delete a cache rule: its namespace stops pulling through from the upstream."""
    with session(registry) as client:
        client.request("DELETE", f"{RULES}/{quote(name)}")
    err.print(f"Deleted cache rule [bold]{escape(name)}[/bold].")


# ---- credential sets -------------------------------------------------------------------------------


def _last_login(item: dict[str, Any]) -> Text:
    login = item.get("last_login") or {}
    if not login.get("at"):
        return Text("never")
    if login.get("ok"):
        return Text(f"ok, {when(login.get('at'))}", style="green")
    error = f": {login.get('error')}" if login.get("error") else ""
    return Text(f"failed, {when(login.get('at'))}{error}", style="red")


def _ratelimit(item: dict[str, Any]) -> str:
    limit = item.get("ratelimit") or {}
    if limit.get("remaining") is None and limit.get("limit") is None:
        return "—"
    remaining = "?" if limit.get("remaining") is None else str(limit["remaining"])
    of = f" of {limit['limit']}" if limit.get("limit") is not None else ""
    return f"{remaining}{of} remaining ({when(limit.get('at'))})"


def _set_rows(item: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("name", item.get("name", "")),
        ("login server", item.get("login_server", "")),
        ("username", item.get("username", "")),
        ("last login", _last_login(item)),
        ("rate limit", _ratelimit(item)),
        ("created", when(item.get("created_at"))),
        ("updated", when(item.get("updated_at"))),
    ]


def _password(password_stdin: bool, password_prompt: bool = True) -> str:
    """From stdin with --password-stdin; else prompted for when there is someone to ask."""
    if password_stdin:
        return _read_secret_stdin()
    if not password_prompt or not sys.stdin.isatty():
        raise fail("no password: pass it on stdin with --password-stdin", 2)
    return _prompt_password(confirm=False)


@credential_set_app.command("create")
def set_create(
    name: SetNameArg,
    login_server: Annotated[str, typer.Option("--login-server", help="the registry the login is for, e.g. docker.io")],
    username: Annotated[str, typer.Option("--username", "-u", help="the upstream user name")],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password (or access token) from stdin; else it is prompted for")
    ] = False,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Create a credential set; the server stores the password encrypted and never shows it again."""
    with session(registry) as client:
        password = _password(password_stdin)
        item = client.request(
            "POST", SETS, {"name": name, "login_server": login_server, "username": username, "password": password}
        )
    _result(item, _set_rows, output, f"Created credential set [bold]{escape(name)}[/bold].")


@credential_set_app.command("list")
def set_list(registry: RegistryOpt = DEFAULT_REGISTRY, output: OutputOpt = Output.table) -> None:
    """List credential sets (never their passwords)."""
    with session(registry) as client:
        items = _list(client, SETS, "credential sets")
    if output is Output.json:
        print_json(_public(items))
        return
    table = _table("NAME", "LOGIN SERVER", "USERNAME", "LAST LOGIN", "RATE LIMIT")
    for item in items:
        table.add_row(
            str(item.get("name", "")), str(item.get("login_server", "")), str(item.get("username", "")),
            _last_login(item), _ratelimit(item),
        )
    stdout().print(table)


@credential_set_app.command("show")
def set_show(name: SetNameArg, registry: RegistryOpt = DEFAULT_REGISTRY, output: OutputOpt = Output.table) -> None:
    """Show a credential set: whether the last upstream login worked, when, why not, and the rate limit left."""
    with session(registry) as client:
        _show(client.get(f"{SETS}/{quote(name)}"), _set_rows, output)


@credential_set_app.command("update")
def set_update(
    name: SetNameArg,
    login_server: Annotated[Optional[str], typer.Option("--login-server", help="a new login server")] = None,
    username: Annotated[Optional[str], typer.Option("--username", "-u", help="a new upstream user name")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="set a new password, read from stdin")] = False,
    password_prompt: Annotated[bool, typer.Option("--password-prompt", help="set a new password, prompted for")] = False,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Change a credential set's login server, user name or password; what is not given stays as it is."""
    if password_stdin and password_prompt:
        raise typer.BadParameter("give --password-stdin or --password-prompt, not both", param_hint="--password-prompt")
    changes: dict[str, Any] = {}
    if login_server is not None:
        changes["login_server"] = login_server
    if username is not None:
        changes["username"] = username
    if not (changes or password_stdin or password_prompt):
        raise fail("nothing to change: give --login-server, --username, --password-stdin or --password-prompt", 2)
    with session(registry) as client:
        if password_stdin or password_prompt:
            changes["password"] = _password(password_stdin, password_prompt)
        item = client.request("PATCH", f"{SETS}/{quote(name)}", changes)
    _result(item, _set_rows, output, f"Updated credential set [bold]{escape(name)}[/bold].")


@credential_set_app.command("delete")
def set_delete(name: SetNameArg, registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Delete a credential set (the server refuses while a cache rule uses it)."""
    with session(registry) as client:
        client.request("DELETE", f"{SETS}/{quote(name)}")
    err.print(f"Deleted credential set [bold]{escape(name)}[/bold].")


def _list(client: ApiClient, path: str, what: str) -> list[dict[str, Any]]:
    return _items(client.get(path), what.replace(" ", "_"))


def register(app: typer.Typer) -> None:
    """Add the cache commands to the top-level ``cargohold`` app."""
    app.add_typer(cache_rule_app, name="cache-rule")
    app.add_typer(credential_set_app, name="credential-set")
