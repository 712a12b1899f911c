"""Durable file primitives: every visible file arrives by temp file → fsync → rename."""

from __future__ import annotations

import os
import uuid
from pathlib import Path


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
