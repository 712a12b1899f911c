"""``cargohold``: serve the registry and look after its data."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .. import __version__
from ..config import Settings, load_settings
from . import access, cache, cache_ops, client_config, content, help, rewrite
from . import transfer as transfer_cli
from . import sync as sync_cli
from . import repository as repository_cli

help.install()
app = typer.Typer(help="cargohold: a self-hosted OCI registry that keeps your own copies of public content.",
                  no_args_is_help=True, add_completion=False,
                  # Never print local variables in a traceback: they may hold passwords and tokens.
                  pretty_exceptions_show_locals=False)
console = Console(stderr=True)

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", help="TOML settings file (also CARGOHOLD_CONFIG)")]
DataDirOpt = Annotated[Optional[Path], typer.Option("--data-dir", help="data directory (also CARGOHOLD_DATA_DIR)")]


def _settings(config: Path | None, **overrides: object) -> Settings:
    """The settings, or one clear line per problem and exit 2 (no pydantic input dump)."""
    from pydantic import ValidationError
    from rich.markup import escape

    try:
        return load_settings(config, **overrides)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            console.print(f"[red]error:[/red] {escape(f'{where}: {message}' if where else message)}", soft_wrap=True)
        raise typer.Exit(2) from None
    except (FileNotFoundError, ValueError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    listen: Annotated[Optional[str], typer.Option("--listen", help="HOST:PORT (default 127.0.0.1:5000)")] = None,
    data_dir: DataDirOpt = None,
    config: ConfigOpt = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="worker processes (default 2)")] = None,
    tls_cert: Annotated[Optional[Path], typer.Option(
        "--tls-cert", exists=True, dir_okay=False, help="serve HTTPS with this PEM certificate (chain); needs --tls-key")] = None,
    tls_key: Annotated[Optional[Path], typer.Option(
        "--tls-key", exists=True, dir_okay=False, help="the PEM private key of --tls-cert")] = None,
    no_auth: Annotated[bool, typer.Option(
        "--no-auth", help="no credentials at all: throwaway local use, refused unless listening on loopback")] = False,
) -> None:
    """Run the registry."""
    from ..web.server import AddressInUse, StartupFailed, serve as run

    settings = _settings(config, listen=listen, data_dir=data_dir, workers=workers,
                         tls_cert=tls_cert, tls_key=tls_key, auth=False if no_auth else None)
    try:
        run(settings)
    except (AddressInUse, StartupFailed) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None


@app.command()
def fsck(data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Check every blob's digest and every manifest's references; exit 1 on problems."""
    from ..cache.admin import load_rule_set
    from ..registry.fsck import fsck as run_fsck
    from ..registry.stores import open_stores, prepare
    from ..store.cache import CacheConfigStore

    settings = _settings(config, data_dir=data_dir)

    async def main() -> int:
        await prepare(settings, clean_leftovers=False)  # a server may be running on this data
        stores = open_stores(settings)
        try:
            rules = await load_rule_set(CacheConfigStore(stores.engine))
            with console.status("checking blobs and manifests…"):
                report = await run_fsck(stores, lazy=lambda name: rules.route(name) is not None)
        finally:
            await stores.close()
        for note in report.notes:
            console.print(f"note: {note}")
        for problem in report.problems:
            console.print(f"[red]problem:[/red] {problem}")
        verdict = "[green]clean[/green]" if report.clean else f"[red]{len(report.problems)} problem(s)[/red]"
        console.print(f"{report.blobs_checked} blobs, {report.manifests_checked} manifests checked: {verdict}")
        return 0 if report.clean else 1

    raise typer.Exit(asyncio.run(main()))


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


access.register(app)
cache.register(app)
cache_ops.register(app)
rewrite.register(app)
client_config.register(app)
transfer_cli.register(app)
sync_cli.register(app)
repository_cli.register(app)
content.register(app)
