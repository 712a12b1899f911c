"""Serving: N worker processes share one port through ``SO_REUSEPORT``.

Python uses one core per process; the kernel spreads connections over the
workers. The parent migrates the database once, starts the workers, restarts
one that dies, and forwards SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from typing import Any

from aiohttp import web

from ..config import Settings
from ..registry.stores import prepare
from .app import create_app

log = logging.getLogger("cargohold")


class AddressInUse(RuntimeError):
    pass


def _listening_socket(settings: Settings) -> socket.socket:
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def _check_port_free(settings: Settings) -> None:
    """SO_REUSEPORT would let us silently share a port with another server of the same user; refuse instead."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    host = settings.host if settings.host not in ("0.0.0.0", "::") else ("127.0.0.1" if family == socket.AF_INET else "::1")
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, settings.port)) == 0:
            raise AddressInUse(f"{settings.listen} is already in use")


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s [{os.getpid()}] %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_worker(settings_data: dict[str, Any]) -> None:
    settings = Settings(**settings_data)
    configure_logging(settings)
    sock = _listening_socket(settings)
    web.run_app(
        create_app(settings),
        sock=sock,
        access_log=logging.getLogger("cargohold.access") if settings.access_log else None,
        print=None,
        handle_signals=True,
        shutdown_timeout=5,
    )


def serve(settings: Settings) -> None:
    configure_logging(settings)
    _check_port_free(settings)
    asyncio.run(prepare(settings))
    log.info("cargohold serving on %s with %d worker(s), data in %s", settings.listen, settings.workers, settings.data_dir)
    data = settings.model_dump(mode="json")
    if settings.workers == 1:
        run_worker(data)
        return
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=run_worker, args=(data,), daemon=False) for _ in range(settings.workers)]
    for w in workers:
        w.start()
    stopping = False

    def _stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for w in workers:
            if w.is_alive() and w.pid:
                os.kill(w.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stopping:
        for i, w in enumerate(workers):
            if not w.is_alive() and not stopping:
                log.warning("worker %s exited with %s; starting a new one", w.pid, w.exitcode)
                workers[i] = ctx.Process(target=run_worker, args=(data,), daemon=False)
                workers[i].start()
        time.sleep(0.5)
    for w in workers:
        w.join(timeout=10)
        if w.is_alive():
            w.kill()
