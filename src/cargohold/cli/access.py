"""Access-control commands: ``login``/``logout``/``whoami``, ``user``, ``token``, ``scope-map``, ``audit``.

They talk to a running server through the management API (``client.py``).
Results go to stdout (rich tables, or JSON with ``--output json``); messages,
warnings and errors go to stderr. Exit codes: 0 done, 1 the server refused
(the problem ``detail`` is printed in red) or no credentials, 2 bad usage or
the server could not be reached.

Passwords and tokens are never printed, with one exception: a robot token is
printed once, by ``token create`` (alone on stdout, so ``$(...)`` captures it).
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import Enum
from types import EllipsisType
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .client import (
    DEFAULT_REGISTRY,
    ApiClient,
    ApiError,
    AuthenticationFailed,
    CliError,
    Credentials,
    InvalidRegistryUrl,
    NotLoggedIn,
    ServerUnreachable,
    normalize_registry,
)
from .credentials import ENV_PASSWORD, ENV_TOKEN, ENV_USERNAME, CredentialStore, environment_credentials, resolve_credentials



def stdout() -> Console:
    """The console for results. Piped into another program, a table keeps its lines whole
    (rich would fold them at 80 columns) so that grep and awk see one row per line."""
    if sys.stdout.isatty() or os.environ.get("COLUMNS"):
        return Console()
    return Console(width=1000)


err = Console(stderr=True, soft_wrap=True)  # one message, one line: greppable in logs

# Fields that hold secrets: dropped from anything list/show/update print, whatever the server sends.
SECRET_FIELDS = frozenset({"password", "password_hash", "token", "token_hash", "secret"})
AUDIT_PAGE = 1000  # the API's largest page of audit events
AUDIT_WIDTH = 100  # the audit table's widest line
_DIGEST = re.compile(r"\b(sha256|sha512):([0-9a-f]{12})[0-9a-f]+")


def fit(text: str, width: int) -> str:
    """``text`` in ``width`` characters, cut with "…"; a ``name@digest`` keeps its digest and loses the name's end."""
    if len(text) <= width:
        return text
    name, at, digest = text.rpartition("@")
    if at and name and len(digest) + 2 < width:
        return name[: width - len(digest) - 2] + "…@" + digest
    return text[: width - 1] + "…"


def short_digests(text: str) -> str:
    """``repo@sha256:<64 hex>`` → ``repo@sha256:<12 hex>…``: enough to tell images apart in a table."""
    return _DIGEST.sub(lambda m: f"{m.group(1)}:{m.group(2)}…", text)


class Output(str, Enum):
    table = "table"
    json = "json"


RegistryOpt = Annotated[
    str,
    typer.Option("--registry", envvar="CARGOHOLD_REGISTRY", help="registry URL (also CARGOHOLD_REGISTRY)", show_envvar=False),
]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", case_sensitive=False, help="table or json")]
ScopeMapsOpt = Annotated[
    Optional[list[str]], typer.Option("--scope-map", "-s", help="a scope map to grant (repeat for several)")
]
PasswordStdinOpt = Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")]


def _typer(help: str) -> typer.Typer:
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, pretty_exceptions_show_locals=False)


user_app = _typer("Manage users (needs an admin).")
token_app = _typer("Manage robot tokens: non-human credentials for CI and deployments.")
scope_map_app = _typer("Manage scope maps: which actions are allowed on which repositories.")


# ---- plumbing --------------------------------------------------------------------------------------


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` in red on stderr; the caller raises the returned Exit."""
    err.print(Text(f"error: {message}", style="red"))
    return typer.Exit(code)


def _registry(url: str) -> str:
    try:
        return normalize_registry(url)
    except InvalidRegistryUrl as exc:
        raise typer.BadParameter(str(exc), param_hint="--registry") from None


@contextmanager
def reporting(client: ApiClient | None = None) -> Iterator[None]:
    """Turn the client's exceptions into a red message and the documented exit code."""
    try:
        yield
    except ServerUnreachable as exc:
        raise fail(str(exc), 2) from None
    except AuthenticationFailed as exc:
        registry = client.registry if client else DEFAULT_REGISTRY
        source = client.credentials.source if client and client.credentials else "stored"
        if source == "env":
            hint = f"check {ENV_TOKEN}, or {ENV_USERNAME} and {ENV_PASSWORD}"
        else:
            hint = f"run `cargohold login --registry {registry}`"
        raise fail(f"{exc.detail} ({hint})") from None
    except ApiError as exc:
        raise fail(exc.detail) from None
    except CliError as exc:  # NotLoggedIn, a broken credentials file, half a login in the environment
        raise fail(str(exc)) from None


@contextmanager
def session(registry: str) -> Iterator[ApiClient]:
    """An authenticated client for ``registry``, with every failure reported and turned into an exit code."""
    url = _registry(registry)
    with reporting():
        store = CredentialStore()
        credentials = resolve_credentials(url, store)
        if credentials is None:
            raise NotLoggedIn(url)
        if credentials.source == "stored" and store.insecure_permissions():
            err.print(f"[yellow]warning:[/yellow] {escape(str(store.path))} is readable by others; run chmod 600 on it")
    client = ApiClient(url, credentials)
    with reporting(client):
        yield client


def _read_secret_stdin(what: str = "password") -> str:
    """Everything on stdin, without the trailing newline ``echo`` or a file adds."""
    value = sys.stdin.read().rstrip("\r\n")
    if not value:
        raise fail(f"no {what} on stdin", 2)
    return value


def _prompt_password(confirm: bool) -> str:
    value: str = typer.prompt("Password", hide_input=True, confirmation_prompt=confirm)
    if not value:
        raise fail("the password must not be empty", 2)
    return value


def _public(value: Any) -> Any:
    """``value`` without secret fields, at any depth (defence in depth: the API should not send them)."""
    if isinstance(value, dict):
        return {k: _public(v) for k, v in value.items() if k not in SECRET_FIELDS}
    if isinstance(value, list):
        return [_public(v) for v in value]
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def when(value: Any) -> str:
    """``2025-01-02T03:04:05.123456+00:00`` → ``2025-01-02 03:04:05 UTC``; anything else as it is."""
    if value in (None, ""):
        return "—"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if moment.tzinfo is not None else "")


def _names(values: Any) -> str:
    return ", ".join(str(v) for v in values) if values else "—"


def _yes(flag: Any) -> str:
    return "yes" if flag else "no"


def _table(*columns: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _show(item: dict[str, Any], rows: Callable[[dict[str, Any]], list[tuple[str, Any]]], output: Output) -> None:
    """One object: JSON without secrets, or a two-column table."""
    if output is Output.json:
        print_json(_public(item))
    else:
        stdout().print(_details(rows(item)))


def _details(rows: list[tuple[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else str(value))
    return table


def _scope_maps_given(values: list[str] | None) -> list[str]:
    return [v for v in (values or []) if v]


# ---- login, logout, whoami ------------------------------------------------------------------------


def login(
    registry: RegistryOpt = DEFAULT_REGISTRY,
    username: Annotated[Optional[str], typer.Option("--username", "-u", help="user (or robot) name; prompted if not given")] = None,
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Check a username and password against the registry and store them for later commands."""
    url = _registry(registry)
    if password_stdin and not username:
        raise typer.BadParameter("--password-stdin needs --username", param_hint="--username")
    if not username:
        username = typer.prompt("Username").strip()
        if not username:
            raise fail("the username must not be empty", 2)
    password = _read_secret_stdin() if password_stdin else _prompt_password(confirm=False)
    client = ApiClient(url, Credentials(username, password, "prompt"))
    with reporting(client):
        try:
            me = client.me()
        except AuthenticationFailed as exc:
            raise fail(f"login failed: {exc.detail}") from None
        CredentialStore().put(url, username, password)
    role = " (admin)" if me.get("admin") else ""
    err.print(f"Logged in to {url} as {me.get('kind', 'user')} [bold]{escape(str(me.get('name', username)))}[/bold]{role}.")
    with reporting():
        if environment_credentials() is not None:
            err.print(f"[yellow]note:[/yellow] {ENV_TOKEN} or {ENV_USERNAME}/{ENV_PASSWORD} is set and takes precedence over this login.")


def logout(registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Forget the stored login for a registry."""
    url = _registry(registry)
    with reporting():
        removed = CredentialStore().remove(url)
    err.print(f"Removed the login for {url}." if removed else f"Not logged in to {url}; nothing to remove.")


def whoami(registry: RegistryOpt = DEFAULT_REGISTRY, output: OutputOpt = Output.table) -> None:
    """Show who the registry takes you for."""
    with session(registry) as client:
        me = client.me()
    if output is Output.json:
        print_json(_public(me))
    else:
        role = f"{me.get('kind')}, admin" if me.get("admin") else str(me.get("kind"))
        stdout().print(Text(f"{me.get('name')} ({role}) at {client.registry}"))


# ---- users ----------------------------------------------------------------------------------------


def _user_rows(user: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("name", user.get("name", "")),
        ("admin", _yes(user.get("admin"))),
        ("scope maps", _names(user.get("scope_maps"))),
        ("created", when(user.get("created_at"))),
    ]


@user_app.command("create")
def user_create(
    name: Annotated[str, typer.Argument(help="user name")],
    admin: Annotated[bool, typer.Option("--admin", help="may do everything, including managing access")] = False,
    scope_map: ScopeMapsOpt = None,
    password_stdin: PasswordStdinOpt = False,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Create a user; the password is prompted for (twice) unless --password-stdin."""
    with session(registry) as client:
        password = _read_secret_stdin() if password_stdin else _prompt_password(confirm=True)
        user = client.create_user(name, password, admin, _scope_maps_given(scope_map))
    if output is Output.json:
        print_json(_public(user))
    else:
        err.print(f"Created user [bold]{escape(name)}[/bold].")


@user_app.command("list")
def user_list(registry: RegistryOpt = DEFAULT_REGISTRY, output: OutputOpt = Output.table) -> None:
    """List users."""
    with session(registry) as client:
        users = client.list_users()
    if output is Output.json:
        print_json(_public(users))
        return
    table = _table("NAME", "ADMIN", "SCOPE MAPS", "CREATED")
    for user in users:
        table.add_row(str(user.get("name", "")), _yes(user.get("admin")), _names(user.get("scope_maps")), when(user.get("created_at")))
    stdout().print(table)


@user_app.command("show")
def user_show(
    name: Annotated[str, typer.Argument(help="user name")],
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Show one user."""
    with session(registry) as client:
        _show(client.get_user(name), _user_rows, output)


@user_app.command("update")
def user_update(
    name: Annotated[str, typer.Argument(help="user name")],
    admin: Annotated[Optional[bool], typer.Option("--admin/--no-admin", help="grant or revoke admin")] = None,
    scope_map: Annotated[
        Optional[list[str]], typer.Option("--scope-map", "-s", help="replace the user's scope maps with these (repeat)")
    ] = None,
    no_scope_maps: Annotated[bool, typer.Option("--no-scope-maps", help="remove every scope map from the user")] = False,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="set a new password, read from stdin")] = False,
    password_prompt: Annotated[bool, typer.Option("--password-prompt", help="set a new password, prompted for")] = False,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Change a user's admin flag, scope maps or password; what is not given stays as it is."""
    changes: dict[str, Any] = {}
    maps = _scope_maps_given(scope_map)
    if maps and no_scope_maps:
        raise typer.BadParameter("give --scope-map or --no-scope-maps, not both", param_hint="--no-scope-maps")
    if password_stdin and password_prompt:
        raise typer.BadParameter("give --password-stdin or --password-prompt, not both", param_hint="--password-prompt")
    if admin is not None:
        changes["admin"] = admin
    if maps or no_scope_maps:
        changes["scope_maps"] = maps
    if not (changes or password_stdin or password_prompt):
        raise fail(
            "nothing to change: give --admin/--no-admin, --scope-map, --no-scope-maps, --password-stdin or --password-prompt", 2
        )
    with session(registry) as client:
        if password_stdin:
            changes["password"] = _read_secret_stdin()
        elif password_prompt:
            changes["password"] = _prompt_password(confirm=True)
        user = client.update_user(name, changes)
    if output is Output.json:
        print_json(_public(user))
    else:
        err.print(f"Updated user [bold]{escape(name)}[/bold].")
        if isinstance(user, dict) and user:
            stdout().print(_details(_user_rows(user)))


@user_app.command("delete")
def user_delete(
    name: Annotated[str, typer.Argument(help="user name")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    registry: RegistryOpt = DEFAULT_REGISTRY,
) -> None:
    """Delete a user (asks first, unless --yes)."""
    if not yes:
        if not sys.stdin.isatty():
            raise fail(f"not deleting user {name!r} without confirmation: add --yes", 2)
        typer.confirm(f"Delete user {name!r}?", abort=True)
    with session(registry) as client:
        client.delete_user(name)
    err.print(f"Deleted user [bold]{escape(name)}[/bold].")


# ---- robot tokens ----------------------------------------------------------------------------------


def _token_state(robot: dict[str, Any]) -> Text:
    return Text("expired", style="red") if robot.get("expired") else Text("active", style="green")


def _token_rows(robot: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("name", robot.get("name", "")),
        ("scope maps", _names(robot.get("scope_maps"))),
        ("expires", when(robot.get("expires_at")) if robot.get("expires_at") else "never"),
        ("status", _token_state(robot)),
        ("created by", robot.get("created_by") or "—"),
        ("created", when(robot.get("created_at"))),
    ]


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="robot name (also the username for Basic auth)")],
    scope_map: ScopeMapsOpt = None,
    expires_in_days: Annotated[
        Optional[int], typer.Option("--expires-in-days", min=1, help="lifetime in days (server default: 90)")
    ] = None,
    no_expiry: Annotated[bool, typer.Option("--no-expiry", help="a token that never expires")] = False,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Create a robot token and print it, once: it cannot be shown again."""
    if expires_in_days is not None and no_expiry:
        raise typer.BadParameter("give --expires-in-days or --no-expiry, not both", param_hint="--no-expiry")
    expiry: int | None | EllipsisType = None if no_expiry else (expires_in_days if expires_in_days is not None else ...)
    with session(registry) as client:
        robot = client.create_token(name, _scope_maps_given(scope_map), expiry)
    token = robot.get("token") if isinstance(robot, dict) else None
    if not token:
        raise fail("the server created the robot but sent no token; delete it and try again")
    expires = f"expires {when(robot.get('expires_at'))}" if robot.get("expires_at") else "never expires"
    err.print(f"Created robot token [bold]{escape(name)}[/bold] ({expires}).")
    err.print("[yellow]warning:[/yellow] the token will not be shown again; store it somewhere safe now.")
    if output is Output.json:
        print_json(robot)
    else:
        sys.stdout.write(token + "\n")
        sys.stdout.flush()


@token_app.command("list")
def token_list(registry: RegistryOpt = DEFAULT_REGISTRY, output: OutputOpt = Output.table) -> None:
    """List robot tokens (never the tokens themselves)."""
    with session(registry) as client:
        robots = client.list_tokens()
    if output is Output.json:
        print_json(_public(robots))
        return
    table = _table("NAME", "SCOPE MAPS", "EXPIRES", "STATUS", "CREATED BY", "CREATED")
    for robot in robots:
        table.add_row(
            str(robot.get("name", "")),
            _names(robot.get("scope_maps")),
            when(robot.get("expires_at")) if robot.get("expires_at") else "never",
            _token_state(robot),
            str(robot.get("created_by") or "—"),
            when(robot.get("created_at")),
        )
    stdout().print(table)


@token_app.command("show")
def token_show(
    name: Annotated[str, typer.Argument(help="robot name")],
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Show one robot token's details (never the token)."""
    with session(registry) as client:
        _show(client.get_token(name), _token_rows, output)


@token_app.command("delete")
def token_delete(name: Annotated[str, typer.Argument(help="robot name")], registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Delete a robot token; it stops working at once."""
    with session(registry) as client:
        client.delete_token(name)
    err.print(f"Deleted robot token [bold]{escape(name)}[/bold].")


# ---- scope maps -------------------------------------------------------------------------------------


def parse_rule(text: str) -> dict[str, Any]:
    """``'hub/*=content/read,metadata/read'`` → ``{"repository": "hub/*", "actions": [...]}``."""
    pattern, sep, actions = text.partition("=")
    names = [a.strip() for a in actions.split(",") if a.strip()]
    if not sep or not pattern.strip() or not names:
        raise typer.BadParameter(
            f"{text!r} is not REPO_PATTERN=ACTION[,ACTION], e.g. 'hub/*=content/read,metadata/read'", param_hint="--rule"
        )
    return {"repository": pattern.strip(), "actions": names}


def _rules_text(rules: Any) -> str:
    if not rules:
        return "—"
    return "\n".join(f"{r.get('repository')}: {', '.join(r.get('actions') or [])}" for r in rules if isinstance(r, dict))


@scope_map_app.command("create")
def scope_map_create(
    name: Annotated[str, typer.Argument(help="scope map name")],
    rule: Annotated[
        list[str],
        typer.Option(
            "--rule",
            "-r",
            help="REPO_PATTERN=ACTION[,ACTION] (repeat); patterns: a name, ns/* or *; actions: "
            "content/read, content/write, content/delete, metadata/read",
        ),
    ],
    description: Annotated[str, typer.Option("--description", "-d", help="what it is for")] = "",
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Create a scope map, e.g. --rule 'hub/*=content/read,metadata/read'."""
    rules = [parse_rule(r) for r in rule]
    with session(registry) as client:
        created = client.create_scope_map(name, rules, description)
    if output is Output.json:
        print_json(_public(created))
    else:
        err.print(f"Created scope map [bold]{escape(name)}[/bold].")


@scope_map_app.command("list")
def scope_map_list(registry: RegistryOpt = DEFAULT_REGISTRY, output: OutputOpt = Output.table) -> None:
    """List scope maps and their rules."""
    with session(registry) as client:
        maps = client.list_scope_maps()
    if output is Output.json:
        print_json(_public(maps))
        return
    table = _table("NAME", "DESCRIPTION", "RULES")
    for item in maps:
        table.add_row(str(item.get("name", "")), str(item.get("description") or ""), _rules_text(item.get("rules")))
    stdout().print(table)


@scope_map_app.command("show")
def scope_map_show(
    name: Annotated[str, typer.Argument(help="scope map name")],
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Show one scope map and its rules."""
    with session(registry) as client:
        item = client.get_scope_map(name)
    if output is Output.json:
        print_json(_public(item))
        return
    rows: list[tuple[str, Any]] = [("name", item.get("name", "")), ("description", item.get("description") or "—")]
    if "created_at" in item:
        rows.append(("created", when(item.get("created_at"))))
    stdout().print(_details(rows))
    rules = _table("REPOSITORY", "ACTIONS")
    for r in item.get("rules") or []:
        rules.add_row(str(r.get("repository", "")), ", ".join(r.get("actions") or []))
    stdout().print(rules)


@scope_map_app.command("delete")
def scope_map_delete(name: Annotated[str, typer.Argument(help="scope map name")], registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Delete a scope map (the server refuses while users or tokens still use it)."""
    with session(registry) as client:
        client.delete_scope_map(name)
    err.print(f"Deleted scope map [bold]{escape(name)}[/bold].")


# ---- audit ------------------------------------------------------------------------------------------


def audit(
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=10000, help="how many events, newest first")] = 50,
    actor: Annotated[Optional[str], typer.Option("--actor", help="only this user or robot")] = None,
    action: Annotated[Optional[str], typer.Option("--action", help="only this action, e.g. user.create or login")] = None,
    before: Annotated[Optional[int], typer.Option("--before", help="only events older than this id (paging)")] = None,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Show the audit log: who did what, from where, and whether it was allowed."""
    events: list[dict[str, Any]] = []
    cursor = before
    with session(registry) as client:
        while True:  # the server may cap a page below --limit: follow `next` until there are enough
            wanted = limit - len(events)
            page = client.audit(limit=min(wanted, AUDIT_PAGE), before=cursor, actor=actor, action=action)
            batch = page["events"][:wanted]
            events.extend(batch)
            following = page.get("next")
            if len(page["events"]) > wanted and batch:
                following = batch[-1].get("id")
            done = len(events) >= limit or not batch or following is None or following == cursor
            cursor = following
            if done:
                break
    if output is Output.json:
        print_json({"events": events, "next": cursor if len(events) >= limit else None})
        return
    # One line per event within AUDIT_WIDTH columns: digests shortened, long cells cut with "…", the target
    # (last) gets what is left; the client address, the detail and every full value are in --output json.
    rows = [
        (str(e.get("id", "")), when(e.get("at")).removesuffix(" UTC"), str(e.get("actor", "")), str(e.get("action", "")),
         str(e.get("outcome", "")), short_digests(str(e.get("target", ""))))
        for e in events
    ]
    header = ("ID", "AT (UTC)", "ACTOR", "ACTION", "OUTCOME", "TARGET")
    caps = (8, 19, 14, 20, 7)
    widths = [min(cap, max(len(h), *(len(r[i]) for r in rows))) for i, (h, cap) in enumerate(zip(header, caps))]
    widths.append(max(len(header[-1]), AUDIT_WIDTH - sum(widths) - 2 * len(widths)))
    out = stdout()
    for index, cells in enumerate([header, *rows]):
        line = Text(no_wrap=True, overflow="ellipsis")
        for i, (cell, width) in enumerate(zip(cells, widths)):
            cut = fit(cell, width)
            style = "bold" if index == 0 else ("green" if cell == "ok" else "red") if i == 4 else ""
            line.append(cut if i == len(widths) - 1 else cut.ljust(width), style=style)
            if i < len(widths) - 1:
                line.append("  ")
        out.print(line, soft_wrap=True, highlight=False)
    if cursor is not None and len(events) >= limit:
        err.print(f"more events: --before {cursor}")
    if any(event.get("detail") or _DIGEST.search(str(event.get("target", ""))) for event in events):
        err.print("times are UTC; details and full digests: --output json")


def register(app: typer.Typer) -> None:
    """Add the access-control commands to the top-level ``cargohold`` app."""
    app.command()(login)
    app.command()(logout)
    app.command()(whoami)
    app.add_typer(user_app, name="user")
    app.add_typer(token_app, name="token")
    app.add_typer(scope_map_app, name="scope-map")
    app.command()(audit)
