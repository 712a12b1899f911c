"""Server-side import: ``cargohold import SOURCE`` and ``cargohold import-status ID``.

The server does the copying (``POST /api/v1/imports``); the CLI only asks and
reports. It starts the import as a job (``wait: false``) and polls
``GET /api/v1/imports/{id}``, drawing a progress bar on stderr; ``--no-wait``
prints the job id at once. Conventions as in ``access.py``: results on stdout
(or the API's JSON with ``--output json``), messages on stderr. Exit codes: 0
done; 1 the server refused, or the import failed (the job is printed on stdout
as by ``import-status ID``, its error on stderr); 2 bad usage or the server
could not be reached; 130 Ctrl-C while following (the import goes on on the
server; ``import-status ID`` shows it).

``import`` takes a positional SOURCE, so ``status`` cannot be a real typer
subcommand; instead SOURCE ``status`` followed by an ID asks for a job
(``import-status ID`` is the same command). An image that really is named
``status`` on Docker Hub is spelled ``docker.io/library/status``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

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
POLL_EVERY = 0.5  # seconds between status requests while an import runs (the server writes progress once a second)
STATUS_WORD = "status"  # a bare `status` is taken for `import-status`, never imported as docker.io/library/status


def _rows(job: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [
        ("id", job.get("id", "")),
        ("state", job.get("state", "")),
        ("source", job.get("source", "")),
        ("source digest", job.get("source_digest") or "—"),
        ("targets", ", ".join(str(t) for t in job.get("targets") or [])),
        ("fetched", _done(job)),
        ("requested by", job.get("requested_by", "")),
        ("started", when(job.get("started_at"))),
        ("finished", when(job.get("finished_at")) if job.get("finished_at") else "—"),
    ]
    if job.get("error"):
        rows.append(("error", f"{job['error_code']}: {job['error']}" if job.get("error_code") else job["error"]))
    return rows


def _done(job: dict[str, Any]) -> str:
    fetched = human_bytes(job.get("bytes_done", 0))
    if isinstance(job.get("bytes_total"), int):
        fetched += f" of at most {human_bytes(job['bytes_total'])}"
    blobs = f"{job.get('blobs_done', 0)}"
    if isinstance(job.get("blobs_total"), int):
        blobs += f" of {job['blobs_total']}"
    return f"{fetched}; {blobs} blob(s) in place"


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
    no_wait: Annotated[bool, typer.Option(
        "--no-wait", help="print the job id at once instead of following the import; see `cargohold import-status ID`")] = False,
    from_layout: Annotated[Path | None, typer.Option(
        "--from-layout", help="push this OCI image layout directory (client-side; same as SOURCE oci-layout:DIR)")] = None,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
) -> None:
    """Copy an image, index or artifact from another registry into this one, on the server: every platform, referrers included.

    The CLI follows the import with a progress bar; if it fails, the job is printed and the exit code is 1.
    Ctrl-C stops following (exit 130), not the import. --no-wait prints the job id instead.
    `cargohold import-status ID` shows a job (state, bytes and blobs done, the error if it failed).
    With oci-layout:DIR (or --from-layout DIR) the CLI itself reads the layout and pushes it over /v2.
    """
    if source == STATUS_WORD:
        raise fail("a job is shown by `cargohold import-status ID` (to import an image named status: "
                   "docker.io/library/status)", 2)
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
    body: dict[str, Any] = {"source": source, "insecure": insecure, "force": force, "wait": False}
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
        job = client.request("POST", IMPORTS, body)
        job_id = job.get("id", "") if isinstance(job, dict) else ""
        if no_wait:
            err.print(f"Import started; follow it with `cargohold import-status {job_id}`.")
            _show(job, output)
            return
        job = _follow(client, job, source)
    if job.get("state") != "succeeded":  # like `import-status ID`: the job on stdout, then exit 1
        _show(job, output)
        code = f" ({job['error_code']})" if job.get("error_code") else ""
        raise fail(f"import {job_id} failed{code}: {job.get('error') or 'no reason given'}")
    targets = ", ".join(str(t) for t in (job.get("targets") or []))
    err.print(f"Imported [bold]{escape(source)}[/bold] into {escape(targets)}.")
    _show(job, output)


def _follow(client: Any, job: dict[str, Any], source: str) -> dict[str, Any]:
    """Poll a running job until it ends, drawing bytes and blobs on stderr; the job as it ended.

    Ctrl-C stops following, not the import: the server goes on, and the message says how to look again.
    """
    job_id = str(job.get("id", ""))
    columns = (
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[blobs]}"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=err, transient=True) as bar:
            task: TaskID = bar.add_task(f"importing {escape(source)}", total=None, blobs="")
            while job.get("state") == "running":
                _draw(bar, task, job)
                time.sleep(POLL_EVERY)
                job = client.get(f"{IMPORTS}/{quote(job_id)}")
            _draw(bar, task, job)
    except KeyboardInterrupt:
        err.print(f"Stopped following; the import goes on on the server: `cargohold import-status {job_id}`.")
        raise typer.Exit(130) from None
    return job


def _draw(bar: Progress, task: TaskID, job: dict[str, Any]) -> None:
    total = job.get("bytes_total")
    blobs_total = job.get("blobs_total")
    blobs = f"{job.get('blobs_done', 0)}/{blobs_total} blobs" if isinstance(blobs_total, int) else ""
    done = job.get("bytes_done", 0) if isinstance(job.get("bytes_done"), int) else 0
    bar.update(task, completed=done, total=total if isinstance(total, int) and total > 0 else None, blobs=blobs)


def _v2(client: Any) -> Any:
    from .registry_client import RegistryClient

    return RegistryClient(client.registry, client.credentials)


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
    """Show an import job: state, bytes and blobs done, the error if it failed (exit 1 then)."""
    with session(registry) as client:
        job = client.get(f"{IMPORTS}/{quote(job_id)}")
    _show(job, output)
    if isinstance(job, dict) and job.get("state") == "failed":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``cargohold import``, ``import-status`` and ``export`` to the top-level app."""
    app.command("import")(import_image)
    app.command("import-status")(import_status)
    app.command("export")(export_images)
