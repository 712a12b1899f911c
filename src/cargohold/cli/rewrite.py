"""``cargohold rewrite``: point Dockerfiles, Kubernetes/compose YAML and Helm values at cargohold.

Two addresses. ``--registry URL`` is the cargohold to read rules and digests
from, as in every other command (else ``CARGOHOLD_REGISTRY``, else
``http://127.0.0.1:5000``). ``--host HOST[:PORT]`` (alias ``--registry-host``,
as in ``client-config``) is the registry host written into the references, as
clients will pull them (``registry.example.com``, ``10.0.0.5:5000``); by
default the ``--registry`` URL's host and port. They differ behind a load
balancer or a DNS name with TLS. ``--server URL`` is the old, hidden name of
``--registry``; a bare HOST given to ``--registry`` (its old meaning here) is a
usage error that names ``--host``.

The local name of each reference comes from ``--map SRC=DST`` prefix mappings
first, then from the server's sync rules (``GET /api/v1/sync-rules``; a
server without them is fine) and cache rules (``GET /api/v1/cache-rules``),
by the precedence written in ``transfer/rewrite.py``. ``--pin`` asks the
server for each rewritten tag's digest (``HEAD /v2/<name>/manifests/<tag>``
with the stored login: a cache fills on a cold tag, a sync-rule target
answers its local tag). Without ``--write`` a unified diff is printed;
``--write`` replaces each changed file atomically (temporary file + rename,
mode kept). ``--check`` changes nothing and exits 1 when a reference still
points at a public registry (with ``--pin``, also when one is not pinned to a
digest).

Exit codes: 0 done, 1 ``--check`` found something or a reference could not
be pinned (then nothing is written), 2 bad usage or the server could not be
reached.
"""

from __future__ import annotations

import difflib
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..oci.reference import Reference
from ..transfer.rewrite import (
    Finding,
    PinError,
    PrefixMap,
    Result,
    Rewriter,
    SyncTarget,
    bare_host,
    rewrite_text,
    rules_from_api,
    sync_rules_from_api,
)
from .access import Output, OutputOpt, RegistryOpt, err, fail, print_json, session
from .client import (
    DEFAULT_REGISTRY,
    ApiClient,
    ApiError,
    CliError,
    InvalidRegistryUrl,
    NotFound,
    PermissionDenied,
    ServerUnreachable,
    _items,
    normalize_registry,
)
from .registry_client import RegistryClient

ServerOpt = Annotated[
    str | None,
    typer.Option("--server", metavar="URL", hidden=True, help="old name of --registry"),
]
HostOpt = Annotated[
    str | None,
    typer.Option("--host", "--registry-host", metavar="HOST[:PORT]",
                 help="the registry host written into the references, as clients pull them (registry.example.com, "
                      "10.0.0.5:5000); default: --registry's host and port"),
]
MapOpt = Annotated[
    list[str] | None,
    typer.Option("--map", help="prefix mapping SRC=DST, tried before the sync and cache rules: docker.io/library=hub (repeatable)"),
]


class Pinner:
    """A rewritten tag's digest from cargohold (``RegistryClient.manifest_digest``); one request per distinct reference."""

    def __init__(self, client: ApiClient) -> None:
        self.registry = client.registry
        self.v2 = RegistryClient(client.registry, client.credentials)
        self.known: dict[tuple[str, str], str] = {}

    def __call__(self, ref: Reference) -> str:
        key = (ref.repository, ref.identifier)
        if key not in self.known:
            self.known[key] = self._resolve(ref)
        return self.known[key]

    def _resolve(self, ref: Reference) -> str:
        try:
            return self.v2.manifest_digest(ref.repository, ref.identifier)
        except ServerUnreachable as exc:
            raise PinError(f"cannot reach {self.registry}: {exc.reason}") from None
        except ApiError as exc:
            reason = {401: "not authorized", 403: "access denied", 404: "no such manifest"}.get(exc.status, f"HTTP {exc.status}")
            raise PinError(f"{ref.registry}/{ref.repository}:{ref.identifier}: {reason}") from None
        except CliError as exc:
            raise PinError(f"{ref.registry}/{ref.repository}:{ref.identifier}: {exc}") from None


def addresses(registry: str, server: str | None, host: str | None) -> tuple[str, str]:
    """(host written into references, server URL to ask) from ``--registry``, the old ``--server`` and ``--host``."""
    if "://" not in registry:
        raise typer.BadParameter(
            f"{registry!r}: --registry is the cargohold URL, as for every command (http://HOST:PORT or https://HOST); "
            "give the host written into the references as --host HOST[:PORT]", param_hint="--registry")
    urls: dict[str, str] = {}
    for value, hint in ((registry, "--registry"), (server, "--server")):
        if value is not None:
            try:
                urls[hint] = normalize_registry(value)
            except InvalidRegistryUrl as exc:
                raise typer.BadParameter(str(exc), param_hint=hint) from None
    server_url = urls.get("--server") or urls["--registry"]
    written = bare_host(host if host is not None else server_url)
    if not written or "/" in written:
        raise typer.BadParameter(f"{host!r} is not a HOST[:PORT]", param_hint="--host")
    return written, server_url


def fetch_sync_rules(client: ApiClient) -> tuple[list[SyncTarget], list[str]]:
    """The server's sync rules; none (and no warning) from a server that has no sync rules API."""
    try:
        answer = client.get("/api/v1/sync-rules")
    except NotFound:
        return [], []
    except PermissionDenied as exc:
        return [], [f"cannot read the sync rules ({exc.detail}); their targets are not used"]
    return sync_rules_from_api(_items(answer, "sync_rules"))


def write_atomically(path: Path, text: str) -> None:
    """Temporary file in the same directory, fsynced, renamed over ``path``; the file's mode is kept."""
    target = path.resolve()  # a symlink keeps pointing at the (replaced) file
    mode = stat.S_IMODE(target.stat().st_mode)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8"))
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def unified_diff(name: str, old: str, new: str) -> str:
    out = []
    for line in difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{name}", f"b/{name}"):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out)


def _finding_json(name: str, finding: Finding, rw: Rewriter) -> dict[str, Any]:
    return {
        "file": name, "line": finding.line, "reference": finding.text, "status": finding.status,
        "new": _new_text(finding, rw) if finding.status == "rewritten" else None, "note": finding.note or None,
        "via": finding.via,
    }


def _new_text(finding: Finding, rw: Rewriter) -> str | None:
    """The rewritten reference for reports: pinned only if it already was or the pin is known (no new request)."""
    if finding.new is None or finding.reference is None:
        return None
    out = finding.new + (f":{finding.reference.tag}" if finding.reference.tag else "")
    digest = str(finding.reference.digest) if finding.reference.digest else None
    if digest is None and isinstance(rw.pin, Pinner):
        digest = rw.pin.known.get((finding.new.split("/", 1)[1], finding.reference.tag or "latest"))
    return out + (f"@{digest}" if digest else "")


def rewrite(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, readable=True, help="Dockerfiles, Kubernetes/compose YAML, Helm values")],
    host: HostOpt = None,
    maps: MapOpt = None,
    pin: Annotated[bool, typer.Option("--pin", help="append each rewritten tag's digest, resolved from cargohold (keeps the tag)")] = False,
    check: Annotated[bool, typer.Option("--check", help="change nothing; exit 1 if a reference still points at a public registry")] = False,
    write: Annotated[bool, typer.Option("--write", help="rewrite the files in place (atomically) instead of printing a diff")] = False,
    registry: RegistryOpt = DEFAULT_REGISTRY,
    output: OutputOpt = Output.table,
    server: ServerOpt = None,
) -> None:
    """Rewrite image references to pull through cargohold: docker.io/library/alpine:3.20 → HOST/hub/alpine:3.20.

    The local name comes from --map, then the server's sync rules, then its cache rules.
    Example: cargohold rewrite Dockerfile k8s/*.yaml --host registry.example.com --pin --write
    """
    if check and write:
        raise fail("--check changes nothing; give --check or --write, not both", 2)
    try:
        prefix_maps = [PrefixMap.parse(value) for value in maps or []]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--map") from None
    host, server_url = addresses(registry, server, host)
    texts: dict[Path, str] = {}
    for path in files:
        try:
            texts[path] = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            raise fail(f"{path}: not a UTF-8 text file", 2) from None

    with session(server_url) as client:
        rules, warnings = rules_from_api(_items(client.get("/api/v1/cache-rules"), "cache_rules"))
        sync, sync_warnings = fetch_sync_rules(client)
        for warning in warnings + sync_warnings:
            err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
        pinner = Pinner(client) if pin and not check else None
        rw = Rewriter(host, rules, prefix_maps, pin=pinner, sync=sync)
        results: dict[Path, Result] = {path: rewrite_text(str(path), text, rw) for path, text in texts.items()}

    if output is Output.json:
        print_json([_finding_json(str(p), f, rw) for p, r in results.items() for f in r.findings])
    if check:
        raise typer.Exit(_check(results, pin, output))

    errors = [(path, f) for path, result in results.items() for f in result.errors]
    for path, finding in errors:
        err.print(f"[red]error:[/red] {escape(f'{path}:{finding.line}: {finding.text}: {finding.note}')}")
    if errors:
        err.print("[red]nothing written[/red]" if write else "[red]not every reference could be pinned[/red]")
        raise typer.Exit(1)

    rewritten = private = public = 0
    for path, result in results.items():
        for finding in result.findings:
            rewritten += finding.status == "rewritten"
            private += finding.status == "private"
            public += finding.status == "public"
            if finding.status in ("public", "skipped") or finding.note:
                err.print(f"{escape(str(path))}:{finding.line}: {escape(finding.text)}: {finding.status}"
                          + (f" ({escape(finding.note)})" if finding.note else ""))
        if result.text == texts[path]:
            continue
        if write:
            write_atomically(path, result.text)
            err.print(f"rewrote {escape(str(path))}")
        elif output is not Output.json:
            sys.stdout.write(unified_diff(str(path), texts[path], result.text))
    sys.stdout.flush()
    err.print(f"{rewritten} reference(s) rewritten, {private} private reference(s) left alone, "
              f"{public} public reference(s) without a cache rule, sync rule or --map")


def _check(results: dict[Path, Result], pin: bool, output: Output) -> int:
    """List what still points at a public registry (and, with --pin, what is not pinned); 1 if anything."""
    problems = 0
    for path, result in results.items():
        for finding in result.findings:
            if finding.reference is None:
                continue
            reason = None
            if finding.status != "private":
                reason = (f"public registry (cargohold serves it as {finding.new}, by {finding.via})" if finding.new
                          else "public registry, no cache rule, sync rule or --map")
            elif pin and finding.reference.digest is None:
                reason = "not pinned to a digest"
            if reason is None:
                continue
            problems += 1
            if output is not Output.json:
                sys.stdout.write(f"{path}:{finding.line}: {finding.text}\n")
            err.print(f"{escape(str(path))}:{finding.line}: {escape(finding.text)}: {escape(reason)}")
    sys.stdout.flush()
    if problems:
        err.print(f"[red]{problems} reference(s) to fix[/red]")
        return 1
    err.print("every reference points at cargohold")
    return 0


def register(app: typer.Typer) -> None:
    """Add ``cargohold rewrite`` to the top-level app."""
    app.command("rewrite")(rewrite)
