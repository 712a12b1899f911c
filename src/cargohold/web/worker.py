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
    import ssl
    from pathlib import Path

    from ..config import Settings

SETTINGS_ENV = "CARGOHOLD_WORKER_SETTINGS"
SUPERVISOR_ENV = "CARGOHOLD_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_supervisor() -> None:
    """Exit when the supervisor dies, however it dies (``kill -9`` included).

    A worker that outlives its supervisor keeps the port (SO_REUSEPORT) and the database open: a
    restart would find the address in use, or share it with a headless old worker. On Linux the
    kernel sends SIGTERM (a graceful shutdown) when the parent dies (``PR_SET_PDEATHSIG``);
    elsewhere a thread watches the parent pid. Either way, a supervisor that died before this
    call is caught by comparing the parent pid with the one the supervisor handed down.
    """
    import signal

    expected = int(os.environ.get(SUPERVISOR_ENV, "0") or 0)
    armed = False
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if expected and os.getppid() != expected:
        os.kill(os.getpid(), signal.SIGTERM)  # orphaned already, before the death signal was armed
        return
    if not armed:
        import threading
        import time

        parent = expected or os.getppid()

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def server_ssl_context(cert: "Path", key: "Path") -> "ssl.SSLContext":
    """The TLS context workers serve with: TLS 1.2 or newer, the ``ssl`` module's server defaults.

    ``create_default_context(CLIENT_AUTH)`` brings OpenSSL's secure cipher list, no compression and
    server cipher preference; TLS 1.0/1.1 are refused explicitly whatever the system OpenSSL allows.
    No client certificates are asked for. Raises ``OSError`` (``ssl.SSLError`` is one) for an
    unreadable or mismatched certificate and key. ``ssl`` is imported here so that a plain-HTTP
    server's supervisor does not carry it.
    """
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])  # aiohttp speaks HTTP/1.1 only
    context.load_cert_chain(certfile=cert, keyfile=key)
    return context


class MalformedRequestsAtInfo(logging.Filter):
    """aiohttp answers a request it cannot parse (a request line or header over 8190 bytes, broken framing)
    with 400 and logs it at ERROR with a traceback: the client's mistake, not the server's. Told at INFO, one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, HttpProcessingError):
            return True
        detail = " ".join(str(error).split())[:200]
        record.msg, record.args = f"{record.getMessage()}: {type(error).__name__}: {detail}", ()
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Database drivers log statements with their bound values at INFO and DEBUG (SQLAlchemy's engine
    # logs SQL once its logger is enabled for INFO): password hashes and sealed upstream credentials
    # would end up in the log. Only their warnings and errors are worth that risk.
    for noisy in ("aiosqlite", "sqlalchemy", "asyncpg"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    # Alembic announces each of its autogenerate plugins at INFO on every start: noise, not news.
    # Its migration lines ("Running upgrade 0003 -> 0004") stay.
    logging.getLogger("alembic.runtime.plugins").setLevel(max(logging.WARNING, logging.getLogger().level))
    logging.getLogger("aiohttp.server").addFilter(MalformedRequestsAtInfo())


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
    if password is None:
        return
    path = settings.data_dir.resolve() / "admin-password"
    if sys.stderr.isatty():
        # Printed exactly once, on the first start, to a person at a terminal; also kept in the 0600 file.
        print(
            f"cargohold: created user 'admin' with password {password}\n"
            f"cargohold: (also written to {path}, readable only by you)",
            file=sys.stderr,
            flush=True,
        )
    else:
        # stderr is a log file, journald or a container log that others may read: the password stays
        # in the 0600 file only.
        logging.getLogger("cargohold").warning(
            "created user 'admin'; its password is in %s (readable only by this user)", path
        )


def main(mode: str) -> int:
    from ..config import Settings

    settings = Settings(**json.loads(os.environ[SETTINGS_ENV]))
    configure_logging(settings.log_level)
    die_with_supervisor()
    if mode == "prepare":
        asyncio.run(_prepare(settings))
        return 0
    from aiohttp import web

    from .app import create_app

    ssl_context = None
    if settings.tls_cert is not None and settings.tls_key is not None:
        ssl_context = server_ssl_context(settings.tls_cert, settings.tls_key)
    web.run_app(
        create_app(settings),
        sock=listening_socket(settings.host, settings.port),
        ssl_context=ssl_context,
        access_log=logging.getLogger("cargohold.access") if settings.access_log else None,
        print=None,
        handle_signals=True,
        shutdown_timeout=5,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "serve"))
