"""One worker process, or the one-off start-up preparation, as started by ``web/server.py``.

A plain ``python -m cargohold.web.worker`` child (not multiprocessing) keeps
each worker lean: it imports neither the CLI (typer, rich) nor Alembic, and
no resource-tracker process rides along. Settings arrive as JSON in
``CARGOHOLD_WORKER_SETTINGS`` so every worker runs on exactly what the parent
resolved.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Settings

SETTINGS_ENV = "CARGOHOLD_WORKER_SETTINGS"


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def _prepare(settings: "Settings") -> None:
    from ..auth.service import AuthService
    from ..registry.stores import open_stores, prepare

    await prepare(settings)
    if not settings.auth:
        return
    stores = open_stores(settings)
    try:
        password = await AuthService.open(settings, stores).bootstrap_admin(settings.data_dir)
    finally:
        await stores.close()
    if password is not None:
        # Printed exactly once, on the first start; also kept in the 0600 file for scripts.
        print(
            f"cargohold: created user 'admin' with password {password}\n"
            f"cargohold: (also written to {settings.data_dir / 'admin-password'}, readable only by you)",
            file=sys.stderr,
            flush=True,
        )


def main(mode: str) -> int:
    from ..config import Settings

    settings = Settings(**json.loads(os.environ[SETTINGS_ENV]))
    configure_logging(settings.log_level)
    if mode == "prepare":
        asyncio.run(_prepare(settings))
        return 0
    from aiohttp import web

    from .app import create_app

    web.run_app(
        create_app(settings),
        sock=listening_socket(settings.host, settings.port),
        access_log=logging.getLogger("cargohold.access") if settings.access_log else None,
        print=None,
        handle_signals=True,
        shutdown_timeout=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "serve"))
