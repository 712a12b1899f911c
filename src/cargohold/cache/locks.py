"""A lock per key that holds across worker processes: one upstream request for N concurrent cold pulls.

In one process an ``asyncio.Lock`` per key queues the waiters without
polling; across processes the holder keeps ``flock`` on a small file per
key, which the kernel releases if the process dies. Waiters re-check the
local store after acquiring: usually the holder has just filled it.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


class KeyedLocks:
    def __init__(self, root: Path, poll_interval: float = 0.005) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._poll = poll_interval
        self._local: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str, timeout: float = 60.0) -> AsyncIterator[None]:
        """Exclusive for ``key`` in every worker; raises ``TimeoutError`` after ``timeout`` seconds of waiting."""
        lock, users = self._local.get(key, (asyncio.Lock(), 0))
        self._local[key] = (lock, users + 1)
        try:
            async with asyncio.timeout(timeout):
                await lock.acquire()
            try:
                fd = await self._flock(key, timeout)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)
            finally:
                lock.release()
        finally:
            lock, users = self._local[key]
            if users <= 1:
                del self._local[key]
            else:
                self._local[key] = (lock, users - 1)

    async def _flock(self, key: str, timeout: float) -> int:
        name = hashlib.sha256(key.encode()).hexdigest()[:32]
        fd = os.open(self.root / name, os.O_RDWR | os.O_CREAT, 0o600)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if loop.time() > deadline:
                    os.close(fd)
                    raise TimeoutError(f"waited {timeout:.0f} s for another worker's upstream request") from None
                await asyncio.sleep(self._poll)
