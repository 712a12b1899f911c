"""``cargohold repository list`` and ``cargohold repository show NAME``: what a repository holds and where it came from.

``show`` lists the tags (``/v2/NAME/tags/list``), resolves each to its digest
with a manifest HEAD, and puts next to it the tag's provenance — source,
source digest, when, who, via import or sync — from ``GET /api/v1/provenance``.
A tag pushed (or moved) after its import shows the import as ``earlier``:
the provenance describes a digest the tag no longer names.

Conventions as in ``access.py``: results on stdout (JSON with ``--output json``),
messages on stderr; exit 1 the server refused, 2 bad usage or unreachable.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from .access import (
    Output,
    OutputOpt,
    RegistryOpt,
    _table,
    _typer,
    err,
    print_json,
    session,
    stdout,
    when,
)
from .client import DEFAULT_REGISTRY, ApiClient, ApiError, quote

PROVENANCE = "/api/v1/provenance"
MAX_TAGS = 200  # manifest HEADs per `show` by default: a cache namespace may list thousands of upstream tags

app = _typer("Look at repositories: their tags, digests and where imported tags came from.")


def _path(name: str) -> str:
    """A repository name in a /v2 path: its slashes stay, anything else is quoted."""
    return "/".join(quote(part) for part in name.split("/"))


def _digest(client: ApiClient, name: str, tag: str) -> str | None:
    """The digest a tag names, by a manifest HEAD over /v2 with the CLI's credentials; None if it vanished."""
    from .registry_client import RegistryClient

    try:
        return RegistryClient(client.registry, client.credentials).manifest_digest(name, tag)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


def _provenance(record: dict[str, Any] | None, digest: str | None) -> dict[str, str]:
    if not record:
        return {"source": "—", "source digest": "—", "imported": "—", "by": "—", "via": "—"}
    via = str(record.get("via", ""))
    if digest is not None and record.get("digest") != digest:
        via += " (earlier: the tag has moved since)"
    return {
        "source": str(record.get("source", "")),
        "source digest": str(record.get("source_digest", "")),
        "imported": when(record.get("imported_at")),
        "by": str(record.get("requested_by", "")),
        "via": via,
    }


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(metavar="NAME", help="a repository, e.g. library/alpine")],
    max_tags: Annotated[int, typer.Option("--max-tags", min=1, help="resolve at most this many tags (one HEAD each)")] = MAX_TAGS,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Show a repository's tags with their digests, and each tag's provenance (source, source digest, when, who, via)."""
    with session(registry) as client:
        listed = client.get(f"/v2/{_path(name)}/tags/list")
        tags = sorted(str(t) for t in (listed.get("tags") or [])) if isinstance(listed, dict) else []
        records = client.get(PROVENANCE, {"repository": name, "latest": "true"}) or []
        latest = {r.get("tag"): r for r in records if isinstance(r, dict)}
        shown = tags[:max_tags]
        with err.status(f"resolving {len(shown)} tag(s)…"):
            digests = {tag: _digest(client, name, tag) for tag in shown}
    rows = [
        {"tag": tag, "digest": digests[tag], "provenance": latest.get(tag)}
        for tag in shown
    ]
    untagged = [r for t, r in latest.items() if t is None]
    if output is Output.json:
        print_json({"repository": name, "tags": rows, "more_tags": len(tags) - len(shown), "untagged_imports": untagged})
        return
    table = _table("TAG", "DIGEST", "SOURCE", "SOURCE DIGEST", "IMPORTED", "BY", "VIA")
    for row in rows:
        p = _provenance(row["provenance"], row["digest"])
        table.add_row(escape(row["tag"]), row["digest"] or "—", escape(p["source"]), p["source digest"], p["imported"],
                      escape(p["by"]), escape(p["via"]))
    for record in untagged:
        p = _provenance(record, None)
        table.add_row("(by digest)", str(record.get("digest", "")), escape(p["source"]), p["source digest"], p["imported"],
                      escape(p["by"]), escape(p["via"]))
    stdout().print(table)
    if len(tags) > len(shown):
        err.print(f"{len(tags) - len(shown)} more tag(s) not shown; raise --max-tags to see them.")
    if not rows and not untagged:
        err.print(f"{escape(name)} has no tags.")


@app.command("list")
def list_repositories(
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """List the repositories you may see (/v2/_catalog)."""
    with session(registry) as client:
        listed = client.get("/v2/_catalog")
    names = [str(n) for n in (listed.get("repositories") or [])] if isinstance(listed, dict) else []
    if output is Output.json:
        print_json(names)
        return
    out = stdout()
    for repo in names:
        out.print(escape(repo), soft_wrap=True, highlight=False)


def register(root: typer.Typer) -> None:
    """Add ``cargohold repository`` to the top-level app."""
    root.add_typer(app, name="repository")
