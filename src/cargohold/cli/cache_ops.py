"""Operating the pull-through cache: ``cargohold cache warm|stats|pin|unpin|pins|evict``.

The rules themselves are managed with ``cargohold cache-rule`` (``cache.py``);
these commands act on what the cache holds, through ``/api/v1/cache/…``. They
share the conventions of the access-control commands (``access.py``): results
on stdout (rich tables, or the API's JSON with ``--output json``), messages
on stderr; exit 0 done, 1 the server refused (its problem ``detail`` is
printed), 2 bad usage or the server could not be reached.

References name the *local* cache repository: ``hub/alpine:3.20`` or
``hub/alpine@sha256:…``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.text import Text

from .access import (
    Output,
    OutputOpt,
    RegistryOpt,
    _details,
    _public,
    _table,
    _typer,
    err,
    fail,
    print_json,
    session,
    stdout,
    when,
)
from .client import DEFAULT_REGISTRY, _items

cache_app = _typer("Operate the pull-through cache: warm images, show statistics, pin images, evict down to the quota.")

CACHE = "/api/v1/cache"
WARM_TIMEOUT = 3600.0  # a warm-up answers when every blob is in: big images take a while

ReferenceArg = Annotated[
    str, typer.Argument(help="a cache repository with a tag or digest: hub/alpine:3.20 or hub/alpine@sha256:…")
]

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3, "ti": 1024**4, "tib": 1024**4,
}
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")


def parse_size(value: str) -> int:
    """``1048576``, ``500MB``, ``1.5GiB`` → bytes (k/M/G are powers of 1000, Ki/Mi/Gi of 1024)."""
    match = _SIZE.fullmatch(value)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise typer.BadParameter(f"{value!r} is not a size in bytes (e.g. 1073741824, 500MB, 2GiB)")
    return int(float(match.group(1)) * _UNITS[unit])


def human_bytes(value: Any) -> str:
    """``1234567`` → ``1.2 MiB``; bytes below 1 KiB as they are."""
    if not isinstance(value, (int, float)):
        return "—"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(amount) < 1024 or unit == "TiB":
            return f"{int(amount)} B" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{value} B"  # pragma: no cover


def _count(value: Any) -> str:
    return str(value) if isinstance(value, int) else "0"


# ---- warm ------------------------------------------------------------------------------------------


@cache_app.command("warm")
def warm(
    reference: ReferenceArg,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="seconds to wait for the server to fetch everything")] = WARM_TIMEOUT,
) -> None:
    """Fetch an image into the cache now: every platform, blob and referrer, before anyone pulls it."""
    with session(registry) as client:
        client.timeout = timeout
        with err.status(f"warming {escape(reference)}…"):
            result = client.request("POST", f"{CACHE}/warm", {"reference": reference})
    if output is Output.json:
        print_json(_public(result))
        return
    result = result if isinstance(result, dict) else {}
    fetched = result.get("fetched_bytes", 0)
    err.print(f"Warmed [bold]{escape(reference)}[/bold].")
    stdout().print(_details([
        ("reference", result.get("reference", reference)),
        ("manifests", _count(result.get("manifests"))),
        ("blobs", _count(result.get("blobs"))),
        ("fetched", f"{human_bytes(fetched)} ({_count(fetched)} bytes)" if fetched else "nothing: all was cached"),
    ]))


# ---- stats -----------------------------------------------------------------------------------------


def _requests(counts: Any) -> str:
    """``{"GET 200": 5, "HEAD 200": 2}`` → ``GET 200 ×5, HEAD 200 ×2`` (status 0: no answer)."""
    if not isinstance(counts, dict) or not counts:
        return "—"
    parts = []
    for key in sorted(counts):
        method, _, status = str(key).partition(" ")
        shown = "no answer" if status == "0" else status
        parts.append(f"{method} {shown} ×{counts[key]}")
    return ", ".join(parts)


def _usage(stats: dict[str, Any]) -> str:
    used, quota = stats.get("cache_bytes", 0), stats.get("quota_bytes", 0)
    if not quota:
        return f"{human_bytes(used)} (no quota)"
    share = f" ({100 * used / quota:.0f}%)" if isinstance(used, (int, float)) and quota else ""
    return f"{human_bytes(used)} of {human_bytes(quota)}{share}"


@cache_app.command("stats")
def stats(registry: RegistryOpt = DEFAULT_REGISTRY, output: OutputOpt = Output.table) -> None:
    """Cache results per rule, upstream requests, bytes, rate limits, cache size and evictions (needs an admin)."""
    with session(registry) as client:
        figures = client.get(f"{CACHE}/stats")
    if output is Output.json:
        print_json(figures)
        return
    if not isinstance(figures, dict):
        raise fail("the server's cache statistics are not a JSON object")
    out = stdout()
    rules = figures.get("rules") or {}
    table = _table("RULE", "HIT", "MISS", "REVALIDATED", "STALE", "UPSTREAM PULLS SAVED")
    for name, counts in sorted(rules.items()):
        counts = counts if isinstance(counts, dict) else {}
        table.add_row(str(name), *(_count(counts.get(k)) for k in ("HIT", "MISS", "REVALIDATED", "STALE", "upstream_pulls_saved")))
    if rules:
        out.print(table)
    else:
        err.print("No cache requests yet.")
    upstreams = figures.get("upstreams") or {}
    if upstreams:
        table = _table("UPSTREAM", "REQUESTS (METHOD STATUS ×COUNT)", "RECEIVED", "RATELIMIT REMAINING")
        for name, upstream in sorted(upstreams.items()):
            upstream = upstream if isinstance(upstream, dict) else {}
            remaining = upstream.get("ratelimit_remaining")
            table.add_row(
                str(name), _requests(upstream.get("requests")), human_bytes(upstream.get("bytes", 0)),
                "—" if remaining is None else str(remaining),
            )
        out.print(table)
    out.print(_details([
        ("cache used", _usage(figures)),
        ("cached blobs", _count(figures.get("cached_blobs"))),
        ("evicted", human_bytes(figures.get("evicted_bytes", 0))),
        ("upstream pulls saved", _count(figures.get("upstream_pulls_saved"))),
    ]))


# ---- pins ------------------------------------------------------------------------------------------


def _pin_rows(pin: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("repository", pin.get("repository", "")),
        ("reference", pin.get("reference", "")),
        ("pinned by", pin.get("created_by", "")),
        ("pinned at", when(pin.get("created_at"))),
    ]


@cache_app.command("pin")
def pin(reference: ReferenceArg, registry: RegistryOpt = DEFAULT_REGISTRY, output: OutputOpt = Output.table) -> None:
    """Pin an image: eviction keeps its manifests and blobs (needs an admin)."""
    with session(registry) as client:
        item = client.request("POST", f"{CACHE}/pins", {"reference": reference})
    if output is Output.json:
        print_json(_public(item))
        return
    err.print(f"Pinned [bold]{escape(reference)}[/bold].")
    if isinstance(item, dict) and item:
        stdout().print(_details(_pin_rows(item)))


@cache_app.command("unpin")
def unpin(reference: ReferenceArg, registry: RegistryOpt = DEFAULT_REGISTRY) -> None:
    """Unpin an image: eviction may remove it again when it is not pulled (needs an admin)."""
    with session(registry) as client:
        client.request("DELETE", f"{CACHE}/pins", query={"reference": reference})
    err.print(f"Unpinned [bold]{escape(reference)}[/bold].")


@cache_app.command("pins")
def pins(registry: RegistryOpt = DEFAULT_REGISTRY, output: OutputOpt = Output.table) -> None:
    """List pinned images."""
    with session(registry) as client:
        items = _items(client.get(f"{CACHE}/pins"), "pins")
    if output is Output.json:
        print_json(_public(items))
        return
    if not items:
        err.print("No pinned images.")
        return
    table = _table("REPOSITORY", "REFERENCE", "PINNED BY", "PINNED AT")
    for item in items:
        table.add_row(str(item.get("repository", "")), str(item.get("reference", "")), str(item.get("created_by", "")),
                      when(item.get("created_at")))
    stdout().print(table)


# ---- evict -----------------------------------------------------------------------------------------


@cache_app.command("evict")
def evict(
    quota: Annotated[
        str | None,
        typer.Option("--quota", help="evict down to this size (bytes, or 500MB, 2GiB); default: the server's configured quota"),
    ] = None,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Evict the least recently pulled cached blobs until the cache fits its quota; pinned and shared blobs stay."""
    body: dict[str, Any] = {}
    if quota is not None:
        body["quota_bytes"] = parse_size(quota)
    with session(registry) as client:
        report = client.request("POST", f"{CACHE}/evict", body)
    if output is Output.json:
        print_json(report)
        return
    report = report if isinstance(report, dict) else {}
    evicted = report.get("evicted_blobs", 0)
    used, limit = report.get("used_bytes", 0), report.get("quota_bytes", 0)
    if not limit:
        err.print("No quota is configured: nothing to evict (give --quota BYTES).")
    elif evicted:
        err.print(f"Evicted {evicted} blob(s), {human_bytes(report.get('evicted_bytes', 0))}.")
    else:
        err.print("Nothing to evict.")
    if limit and isinstance(used, int) and used > limit:
        err.print("[yellow]warning:[/yellow] still over the quota: what is left is pinned, or shared with pushed repositories.")
    stdout().print(_details([
        ("cache used", _usage({"cache_bytes": used, "quota_bytes": limit})),
        ("evicted", f"{_count(evicted)} blobs, {human_bytes(report.get('evicted_bytes', 0))}"),
        ("kept (pinned)", _count(report.get("kept_pinned"))),
        ("kept (shared with pushed repositories)", _count(report.get("kept_shared"))),
        ("over quota", Text("yes", style="red") if limit and used > limit else "no"),
    ]))


def register(app: typer.Typer) -> None:
    """Add ``cargohold cache …`` to the top-level app."""
    app.add_typer(cache_app, name="cache")
