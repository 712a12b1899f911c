"""Server-side import: ``cargohold import SOURCE`` and ``cargohold import-status ID``.

The server does the copying (``POST /api/v1/imports``); the CLI only asks and
reports. Conventions as in ``access.py``: results on stdout (or the API's JSON
with ``--output json``), messages on stderr; exit 0 done, 1 the server refused
or the import failed (its problem ``detail`` is printed), 2 bad usage or the
server could not be reached.

The status command is ``import-status`` rather than ``import status``: a typer
command with a positional ``SOURCE`` cannot also have a ``status`` subcommand
without making ``status`` an ambiguous source name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from .access import (
    Output,
    OutputOpt,
    RegistryOpt,
    _details,
    _public,
    _read_secret_stdin,
    err,
    fail,
    print_json,
    session,
    stdout,
    when,
)
from .cache_ops import human_bytes
from .client import DEFAULT_REGISTRY, quote

IMPORTS = "/api/v1/imports"
IMPORT_TIMEOUT = 6 * 3600.0  # a waiting import answers when every blob is in


def _rows(job: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("id", job.get("id", "")),
        ("state", job.get("state", "")),
        ("source", job.get("source", "")),
        ("source digest", job.get("source_digest") or "—"),
        ("targets", ", ".join(str(t) for t in job.get("targets") or [])),
        ("fetched", f"{human_bytes(job.get('bytes_done', 0))} in {job.get('blobs_done', 0)} blob(s) done"),
        ("requested by", job.get("requested_by", "")),
        ("started", when(job.get("started_at"))),
        ("finished", when(job.get("finished_at")) if job.get("finished_at") else "—"),
    ]
    if job.get("error"):
        rows.append(("error", job["error"]))
    return rows


def _show(job: Any, output: Output) -> None:
    if output is Output.json:
        print_json(_public(job))
        return
    stdout().print(_details(_rows(job if isinstance(job, dict) else {})))


def import_image(
    source: Annotated[str, typer.Argument(help="any registry reference: docker.io/library/alpine:3.20, host:5000/app:1, …@sha256:…; "
                                          "or oci-layout:DIR[:REF] to push an OCI layout from this machine")] = "",
    image: Annotated[list[str] | None, typer.Option(
        "--image", "-i", help="local target REPOSITORY or REPOSITORY:TAG (repeat for several); default: the source's path and tag")] = None,
    credential_set: Annotated[str | None, typer.Option(
        "--credential-set", help="log in to the source with this credential set (admins only)")] = None,
    username: Annotated[str | None, typer.Option("--username", "-u", help="log in to the source as this user")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the source password from stdin")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help="plain http to the source registry")] = False,
    force: Annotated[bool, typer.Option("--force", help="move target tags that point to something else")] = False,
    platform: Annotated[list[str] | None, typer.Option(
        "--platform", help="only this os/arch or os/arch/variant of an index (repeat for several); default: all")] = None,
    no_wait: Annotated[bool, typer.Option("--no-wait", help="answer at once with the job id; see import-status")] = False,
    from_layout: Annotated[Path | None, typer.Option(
        "--from-layout", help="push this OCI image layout directory (client-side; same as SOURCE oci-layout:DIR)")] = None,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Copy an image, index or artifact from another registry into this one, on the server: every platform, referrers included.

    With oci-layout:DIR (or --from-layout DIR) the CLI itself reads the layout and pushes it over /v2.
    """
    if from_layout is not None or source.startswith("oci-layout:"):
        if from_layout is not None and source:
            raise fail("give SOURCE or --from-layout, not both", 2)
        if credential_set or username or password_stdin or insecure or platform or no_wait:
            raise fail("oci-layout imports take only --image, --registry and --output", 2)
        _import_layout(source or f"oci-layout:{from_layout}", image or [], registry, output)
        return
    if not source:
        raise fail("give a SOURCE (or --from-layout DIR)", 2)
    if credential_set and (username or password_stdin):
        raise fail("give --credential-set or --username with --password-stdin, not both", 2)
    if bool(username) != password_stdin:
        raise fail("--username needs --password-stdin (and the other way round)", 2)
    body: dict[str, Any] = {"source": source, "insecure": insecure, "force": force, "wait": not no_wait}
    if image:
        body["targets"] = image
    if platform:
        body["platforms"] = platform
    if credential_set:
        body["credential_set"] = credential_set
    if username:
        body["username"] = username
        body["password"] = _read_secret_stdin()
    with session(registry) as client:
        client.timeout = IMPORT_TIMEOUT
        if no_wait:
            job = client.request("POST", IMPORTS, body)
        else:
            with err.status(f"importing {escape(source)}…"):
                job = client.request("POST", IMPORTS, body)
    if not no_wait:
        targets = ", ".join(str(t) for t in (job.get("targets") or [])) if isinstance(job, dict) else ""
        err.print(f"Imported [bold]{escape(source)}[/bold] into {escape(targets)}.")
    else:
        job_id = job.get("id", "") if isinstance(job, dict) else ""
        err.print(f"Import started; follow it with `cargohold import-status {job_id}`.")
    _show(job, output)


def _v2(client: Any) -> Any:
    from .layout_transfer import V2

    return V2(client.registry, client.credentials)


def _import_layout(source: str, targets: list[str], registry: str, output: Output) -> None:
    from ..transfer.layout import LayoutError
    from .layout_transfer import import_layout, parse_layout_source

    directory, ref = parse_layout_source(source)
    if not targets:
        raise fail("importing an oci-layout needs --image REPOSITORY[:TAG]", 2)
    with session(registry) as client:
        try:
            with err.status(f"pushing {escape(str(directory))}…") as status:
                summary = import_layout(_v2(client), directory, ref, targets,
                                        lambda message: status.update(f"pushing {escape(message)}…"))
        except LayoutError as exc:
            raise fail(str(exc)) from None
    err.print(f"Imported [bold]{escape(str(directory))}[/bold] into {escape(', '.join(summary['targets']))}.")
    if output is Output.json:
        print_json(summary)
    else:
        stdout().print(_details([
            ("digest", summary["digest"]), ("targets", ", ".join(summary["targets"])),
            ("pushed", f"{human_bytes(summary['bytes'])} in {summary['blobs']} blob(s)"),
            ("referrers", summary["referrers"]),
        ]))


def export_images(
    refs: Annotated[list[str], typer.Argument(metavar="REF...", help="REPOSITORY:TAG or REPOSITORY@DIGEST on the registry")],
    to: Annotated[Path, typer.Option("--to", help="the OCI image layout directory to write (created or added to)")],
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Write images (every platform, referrers included) into an OCI image layout, for an air-gapped transfer."""
    from ..transfer.layout import LayoutError
    from .layout_transfer import export

    with session(registry) as client:
        try:
            with err.status("exporting…") as status:
                entries = export(_v2(client), refs, to, lambda message: status.update(f"exporting {escape(message)}…"))
        except LayoutError as exc:
            raise fail(str(exc)) from None
    err.print(f"Exported {len(entries)} image(s) to [bold]{escape(str(to))}[/bold].")
    if output is Output.json:
        print_json({"directory": str(to), "manifests": entries})
    else:
        for ref, entry in zip(refs, entries):
            stdout().print(f"{escape(ref)}\t{entry['digest']}", soft_wrap=True, highlight=False)


def import_status(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="the id `cargohold import --no-wait` printed")],
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Show an import's state (it is known to the server worker that runs it)."""
    with session(registry) as client:
        job = client.get(f"{IMPORTS}/{quote(job_id)}")
    _show(job, output)
    if isinstance(job, dict) and job.get("state") == "failed":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``cargohold import`` and ``cargohold import-status`` to the top-level app."""
    app.command("import")(import_image)
    app.command("import-status")(import_status)
    app.command("export")(export_images)
