"""Durable file primitives: every visible file arrives by temp file → fsync → rename."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


PRIVATE_UMASK = 0o077


def private_data_dir(path: Path) -> None:
    """Make ``path`` the process's private data directory: 0700, and everything created from now on 0600/0700.

    The data directory holds the database (password hashes, sealed credentials), signing keys and
    every private blob; the operator's umask (often 022, sometimes 000 in containers) must not decide
    who else on the machine may read them. The umask covers what SQLite, prometheus_client and our
    own code create; the directory's own mode also shields files left by older versions.
    """
    os.umask(PRIVATE_UMASK)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_uid == os.getuid():
        os.chmod(path, 0o700)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(tmp: Path, final: Path) -> bool:
    """Make the fsynced ``tmp`` visible as ``final``; False (and ``tmp`` removed) if ``final`` already exists.

    Content-addressed files never change, so an existing target is as good as ours.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        tmp.unlink(missing_ok=True)
        return False
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return True


def write_durably(tmp_dir: Path, final: Path, data: bytes) -> bool:
    tmp = tmp_dir / f"{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return publish(tmp, final)


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
