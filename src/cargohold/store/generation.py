"""A change counter shared by every worker process on one data directory.

Writers store a fresh random value after each committed metadata change;
readers compare it with the value their in-process caches were filled
under. Random values (not an increment) need no lock: any write after a
reader's last look changes what the reader sees, barring a 2**-64 collision.
Replicas on other machines need a network channel instead (Redis, later).
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

_SIZE = 8


class Generation:
    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)

    def current(self) -> bytes:
        return self._map[:_SIZE]

    def bump(self) -> None:
        self._map[:_SIZE] = os.urandom(_SIZE)

    def close(self) -> None:
        self._map.close()
