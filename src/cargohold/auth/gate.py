"""A fair gate in front of the password checks (argon2) of one worker.

argon2 is deliberately slow and runs in threads; left unbounded, a flood of
wrong passwords fills every thread and a legitimate login waits behind all of
them. The gate lets at most ``capacity`` checks run at once and keeps two
queues: callers whose client has no recent failed check wait in the *clean*
lane, which is always served before the *suspect* lane of clients that failed
recently. A flood of wrong credentials therefore queues behind itself, and a
client that keeps guessing cannot delay one that does not.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class VerifyGate:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._free = capacity
        self._clean: deque[asyncio.Future[None]] = deque()
        self._suspect: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> tuple[int, int]:
        """(clean, suspect) callers waiting for a slot."""
        return len(self._clean), len(self._suspect)

    @asynccontextmanager
    async def slot(self, suspect: bool) -> AsyncIterator[None]:
        """Hold one of the ``capacity`` slots for the duration of the block."""
        await self._acquire(suspect)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, suspect: bool) -> None:
        if self._free > 0 and not self._clean and not self._suspect:
            self._free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane = self._suspect if suspect else self._clean
        lane.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot was handed over just as the caller gave up: pass it on
            else:
                try:
                    lane.remove(waiter)
                except ValueError:
                    pass
            raise

    def _release(self) -> None:
        for lane in (self._clean, self._suspect):
            while lane:
                waiter = lane.popleft()
                if not waiter.done():
                    waiter.set_result(None)  # the slot goes straight to the next waiter: _free stays as it is
                    return
        self._free += 1
