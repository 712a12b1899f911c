"""``cargohold repository list`` and ``cargohold repository show NAME``: what a repository holds and where it came from.

``show`` asks the server once (``GET /api/v1/repositories/tags``) for the
repository's local tags, each with its digest and its provenance — source,
source digest, when, who, via import or sync. The server answers from its own
store: on a cache namespace that is the tags pulled so far, and no request
goes upstream. A tag pushed (or moved) after its import shows the import as
``earlier``: the provenance describes a digest the tag no longer names.

Conventions as in ``access.py``: results on stdout (JSON with ``--output json``),
messages on stderr; exit 1 the server refused, 2 bad usage or unreachable.
"""

from __future__ import annotations

import sys
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
    fail,
    print_json,
    session,
    stdout,
    when,
)
from .client import DEFAULT_REGISTRY

TAGS = "/api/v1/repositories/tags"
MAX_TAGS = 200  # tags per `show` by default (the server allows 1000 at most)

app = _typer("Look at repositories (their tags, digests and where imported tags came from), or delete one.")


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
    max_tags: Annotated[int, typer.Option("--max-tags", min=1, max=1000, help="show at most this many tags")] = MAX_TAGS,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Show a repository's local tags with their digests, and each tag's provenance (source, source digest, when, who, via).

    One request; the server answers from its own store (on a cache namespace: the tags pulled so far).
    """
    with session(registry) as client:
        answer = client.get(TAGS, {"repository": name, "limit": str(max_tags)})
    answer = answer if isinstance(answer, dict) else {}
    rows = [
        {"tag": str(r.get("tag", "")), "digest": r.get("digest"), "provenance": r.get("provenance")}
        for r in answer.get("tags") or [] if isinstance(r, dict)
    ]
    untagged = [r for r in answer.get("untagged_imports") or [] if isinstance(r, dict)]
    more = bool(answer.get("more_tags"))
    if output is Output.json:
        print_json({"repository": name, "tags": rows, "more_tags": more, "untagged_imports": untagged})
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
    if more:
        err.print("More tags not shown; raise --max-tags to see them.")
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


@app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(metavar="NAME", help="a repository, e.g. team/app")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Delete a repository with all its tags and manifests (asks first, unless --yes).

    Needs content/delete on it; a cache namespace is refused (see `cargohold cache evict`).
    """
    if not yes:
        if not sys.stdin.isatty():
            raise fail(f"not deleting repository {name!r} without confirmation: add --yes", 2)
        typer.confirm(f"Delete repository {name!r} with all its tags and manifests?", abort=True)
    with session(registry) as client:
        removed = client.delete_repository(name)
    removed = removed if isinstance(removed, dict) else {}
    if output is Output.json:
        print_json(removed)
        return
    err.print(f"Deleted repository [bold]{escape(name)}[/bold] "
              f"({removed.get('tags', 0)} tag(s), {removed.get('manifests', 0)} manifest(s)).")


def register(root: typer.Typer) -> None:
    """Add ``cargohold repository`` to the top-level app."""
    root.add_typer(app, name="repository")
