"""Serving: N worker processes share one port through ``SO_REUSEPORT``.

Python uses one core per process; the kernel spreads connections over the
workers. The parent only supervises: it runs the start-up preparation
(migrations, crash leftovers) in a child, starts the workers, restarts one
that dies and forwards SIGTERM/SIGINT. It never imports the web stack or the
database layer, so it stays small. Before anything starts it loads the TLS
certificate and key once (a bad pair is one error, not N crashing workers) and
warns when plain HTTP would be served on a non-loopback address.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..config import Settings
from .worker import SETTINGS_ENV, SUPERVISOR_ENV, configure_logging, server_ssl_context

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client in the workers (cache/metrics.py)

log = logging.getLogger("cargohold")


class AddressInUse(RuntimeError):
    pass


class StartupFailed(RuntimeError):
    pass


def _check_port_free(settings: Settings) -> None:
    """SO_REUSEPORT would let us silently share a port with another server of the same user; refuse instead."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    host = settings.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, settings.port)) == 0:
            raise AddressInUse(f"{settings.listen} is already in use")


def _check_tls(settings: Settings) -> None:
    """Load the certificate and key once here, so that a bad pair is one clear error, not N dying workers."""
    if settings.tls_cert is None or settings.tls_key is None:
        return
    try:
        server_ssl_context(settings.tls_cert, settings.tls_key)
    except OSError as exc:  # ssl.SSLError included
        raise StartupFailed(
            f"cannot serve TLS with certificate {settings.tls_cert} and key {settings.tls_key}: {exc}"
        ) from None


def _warn_if_exposed(settings: Settings) -> None:
    if settings.tls_cert is None and not settings.is_loopback:
        log.warning(
            "serving plain HTTP on %s, a non-loopback address: passwords and tokens cross the network unencrypted, "
            "and docker/podman clients refuse plain HTTP unless configured as insecure; "
            "use --tls-cert/--tls-key, or put a TLS-terminating proxy in front and listen on loopback",
            settings.listen,
        )


def _fresh_metrics_dir(settings: Settings) -> Path:
    """Workers count into files here (prometheus_client multiprocess mode); counts start at zero per server start."""
    path = settings.data_dir.resolve() / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _child(mode: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "cargohold.web.worker", mode], env=env)


def _private_data_dir(settings: Settings) -> None:
    """Data directory 0700 and all the server creates 0600, whatever the umask; the children inherit the umask.

    (``store/files.py`` does the same in each child; the supervisor repeats it so that the metrics
    directory it creates is private too, without importing the store layer.)
    """
    os.umask(0o077)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if settings.data_dir.stat().st_uid == os.getuid():
        os.chmod(settings.data_dir, 0o700)


def serve(settings: Settings) -> None:
    configure_logging(settings.log_level)
    _check_port_free(settings)
    _private_data_dir(settings)
    _check_tls(settings)
    env = dict(os.environ)
    env[SETTINGS_ENV] = json.dumps(settings.model_dump(mode="json"))
    env[SUPERVISOR_ENV] = str(os.getpid())  # workers exit when this process dies (worker.die_with_supervisor)
    env[MULTIPROC_ENV] = str(_fresh_metrics_dir(settings))
    if _child("prepare", env).wait() != 0:
        raise StartupFailed("start-up preparation (database migration) failed; see the log above")
    _warn_if_exposed(settings)
    scheme = "https" if settings.tls_cert is not None else "http"
    log.info(
        "cargohold serving %s on %s with %d worker(s), data in %s", scheme, settings.listen, settings.workers, settings.data_dir
    )
    workers = [_child("serve", env) for _ in range(settings.workers)]
    stopping = False

    def _stop(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    while not stopping:
        for i, w in enumerate(workers):
            if w.poll() is not None and not stopping:
                log.warning("worker %s exited with %s; starting a new one", w.pid, w.returncode)
                workers[i] = _child("serve", env)
        time.sleep(0.5)
    for w in workers:
        try:
            w.wait(timeout=10)
        except subprocess.TimeoutExpired:
            w.kill()
            w.wait()
