"""``cargohold sync-rule``: scheduled mirroring of an upstream repository's tags, and what each run did.

Talks to a running server through ``/api/v1/sync-rules`` (admins only) with the
conventions of the other management commands (``access.py``, ``cache.py``):
results on stdout (rich tables, or JSON with ``--output json``), messages on
stderr; exit 0 done, 1 the server refused (or the run failed), 2 bad usage or
the server could not be reached.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer
from rich.markup import escape
from rich.text import Text

from ..transfer.schedule import InvalidSchedule, parse_interval
from .access import Output, OutputOpt, RegistryOpt, _details, _public, _show, _table, _typer, _yes, err, fail, print_json, session, stdout, when
from .client import DEFAULT_REGISTRY, _items, quote

sync_rule_app = _typer("Manage sync rules: copy an upstream repository's tags here on a schedule, filtered by regex or semver.")

RULES = "/api/v1/sync-rules"
RUN_TIMEOUT = 3600.0  # a run now is answered when it is done: copies may take a while
SHOWN_ENTRIES = 50  # skipped entries printed per run (the rest: --output json)

NameArg = Annotated[str, typer.Argument(help="sync rule name")]


def _schedule(rule: dict[str, Any]) -> str:
    if rule.get("cron"):
        return f"cron {rule['cron']} (UTC)"
    if rule.get("interval_seconds"):
        return f"every {_duration(int(rule['interval_seconds']))}"
    return "manual"


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _filter(rule: dict[str, Any]) -> str:
    parts = []
    if rule.get("tag_regex"):
        parts.append(f"regex {rule['tag_regex']}")
    if rule.get("semver"):
        parts.append(f"semver {rule['semver']}")
    return " and ".join(parts) or "all tags"


def _rule_rows(rule: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("name", rule.get("name", "")),
        ("source", rule.get("source", "")),
        ("target", rule.get("target", "")),
        ("tags", _filter(rule)),
        ("schedule", _schedule(rule)),
        ("next run", when(rule.get("next_run_at")) if rule.get("next_run_at") else "—"),
        ("running", _yes(rule.get("running"))),
        ("enabled", _yes(rule.get("enabled"))),
        ("credential set", rule.get("credential_set") or "—"),
        ("platforms", ", ".join(rule.get("platforms") or []) or "all"),
        ("request budget", str(rule.get("request_budget", ""))),
        ("insecure", _yes(rule.get("insecure"))),
        ("created", f"{when(rule.get('created_at'))} by {rule.get('created_by', '')}"),
        ("updated", when(rule.get("updated_at"))),
    ]


def _state(state: str) -> Text:
    return Text(state, style={"succeeded": "green", "partial": "yellow", "failed": "red"}.get(state, ""))


def _print_run(run: dict[str, Any]) -> None:
    counts = run.get("counts") or {}
    summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("copied", "unchanged", "filtered", "deferred", "failed"))
    out = stdout()
    line = Text(f"run {run.get('id')} ({run.get('trigger')}, {when(run.get('started_at'))}): ")
    line.append_text(_state(str(run.get("state", ""))))
    line.append(f" — {summary}; {run.get('requests_used', 0)} upstream requests")
    out.print(line)
    if run.get("error"):
        out.print(Text(f"  error: {run['error']}", style="red"))
    for item in run.get("copied") or []:
        previous = f" (was {str(item['previous'])[:19]}…)" if item.get("previous") else " (new)"
        out.print(Text(f"  copied  {item.get('tag')} → {str(item.get('digest'))[:19]}…{previous}", style="green"))
    skipped = [s for s in run.get("skipped") or [] if s.get("outcome") != "unchanged"]
    for item in skipped[:SHOWN_ENTRIES]:
        out.print(Text(f"  skipped {item.get('tag')}: {item.get('reason')}"))
    if len(skipped) > SHOWN_ENTRIES:
        out.print(Text(f"  … {len(skipped) - SHOWN_ENTRIES} more skipped (see --output json)"))


def _interval(value: str | None) -> int | None:
    """``90``, ``90s``, ``15m``, ``1h``, ``1d`` → seconds (the server enforces its minimum)."""
    if value is None:
        return None
    try:
        return parse_interval(value)
    except InvalidSchedule:
        raise typer.BadParameter(f"{value!r} is not SECONDS or a number ending in s, m, h or d (e.g. 1h)", param_hint="--interval") from None


@sync_rule_app.command("create")
def rule_create(
    name: NameArg,
    source: Annotated[str, typer.Option("--source", help="upstream repository, e.g. docker.io/library/alpine")],
    target: Annotated[str, typer.Option("--target", help="local repository, e.g. mirror/alpine")],
    tags: Annotated[Optional[str], typer.Option("--tags", help="copy only tags matching this regex (whole tag)")] = None,
    semver: Annotated[Optional[str], typer.Option("--semver", help="copy only versions in this range, e.g. '>=3.19 <4'")] = None,
    interval: Annotated[Optional[str], typer.Option("--interval", help="run every 1h, 30m, 1d or SECONDS")] = None,
    cron: Annotated[Optional[str], typer.Option("--cron", help="run at these times (5-field cron, UTC), e.g. '0 3 * * *'")] = None,
    credential_set: Annotated[Optional[str], typer.Option("--credential-set", "-c", help="upstream login to use")] = None,
    request_budget: Annotated[Optional[int], typer.Option("--request-budget", min=1, help="upstream requests per run (server default 100)")] = None,
    platform: Annotated[Optional[list[str]], typer.Option("--platform", help="copy only this os/arch or os/arch/variant (repeatable)")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="talk to the source over plain HTTP")] = False,
    disabled: Annotated[bool, typer.Option("--disabled", help="create it without scheduling it")] = False,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Create a sync rule. Without --interval or --cron it only runs with `cargohold sync-rule run`."""
    if interval is not None and cron is not None:
        raise typer.BadParameter("give --interval or --cron, not both", param_hint="--cron")
    body: dict[str, Any] = {"name": name, "source": source, "target": target, "insecure": insecure, "enabled": not disabled}
    for key, value in (("tag_regex", tags), ("semver", semver), ("interval_seconds", _interval(interval)), ("cron", cron),
                       ("credential_set", credential_set), ("request_budget", request_budget), ("platforms", platform or None)):
        if value is not None:
            body[key] = value
    with session(registry) as client:
        rule = client.request("POST", RULES, body)
    if output is Output.json:
        print_json(_public(rule))
        return
    err.print(f"Created sync rule [bold]{escape(name)}[/bold].")
    stdout().print(_details(_rule_rows(rule)))


@sync_rule_app.command("list")
def rule_list(registry: RegistryOpt = DEFAULT_REGISTRY, output: OutputOpt = Output.table) -> None:
    """List sync rules."""
    with session(registry) as client:
        rules = _items(client.get(RULES), "sync_rules")
    if output is Output.json:
        print_json(_public(rules))
        return
    table = _table("NAME", "SOURCE", "TARGET", "TAGS", "SCHEDULE", "NEXT RUN", "ENABLED")
    for rule in rules:
        table.add_row(
            str(rule.get("name", "")), str(rule.get("source", "")), str(rule.get("target", "")), _filter(rule),
            _schedule(rule), when(rule.get("next_run_at")) if rule.get("next_run_at") else "—", _yes(rule.get("enabled")),
        )
    stdout().print(table)


@sync_rule_app.command("show")
def rule_show(
    name: NameArg,
    runs: Annotated[int, typer.Option("--runs", min=0, max=100, help="how many recent runs to show")] = 3,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Show a sync rule and its last runs: what was copied, what was skipped and why."""
    with session(registry) as client:
        rule = client.get(f"{RULES}/{quote(name)}")
        recent = _items(client.get(f"{RULES}/{quote(name)}/runs", {"limit": max(runs, 1)}), "runs")[:runs] if runs else []
    if output is Output.json:
        print_json(_public({**rule, "runs": recent}))
        return
    _show(rule, _rule_rows, output)
    if not recent:
        err.print("No runs yet.")
    for run in recent:
        _print_run(run)


@sync_rule_app.command("delete")
def rule_delete(name: NameArg, registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Delete a sync rule and its run log (what it copied stays)."""
    with session(registry) as client:
        client.request("DELETE", f"{RULES}/{quote(name)}")
    err.print(f"Deleted sync rule [bold]{escape(name)}[/bold].")


@sync_rule_app.command("run")
def rule_run(name: NameArg, registry: RegistryOpt = DEFAULT_REGISTRY, output: OutputOpt = Output.table) -> None:
    """Run a sync rule now and print what it copied and skipped; exit 1 if the run failed."""
    with session(registry) as client:
        client.timeout = max(client.timeout, RUN_TIMEOUT)
        run = client.request("POST", f"{RULES}/{quote(name)}/runs")
    if output is Output.json:
        print_json(_public(run))
    else:
        _print_run(run)
    if run.get("state") == "failed":
        raise fail(f"sync rule {name} failed: {run.get('error') or 'see above'}")


def register(app: typer.Typer) -> None:
    """Add ``sync-rule`` to the top-level ``cargohold`` app."""
    app.add_typer(sync_rule_app, name="sync-rule")
