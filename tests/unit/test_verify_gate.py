"""The argon2 gate: at most ``capacity`` checks at once, clean clients served before suspect ones, cancellation safe."""

from __future__ import annotations

import asyncio

import pytest

from cargohold.auth.gate import VerifyGate


def test_capacity_is_never_exceeded_and_clean_callers_go_first() -> None:
    async def main() -> list[str]:
        gate = VerifyGate(2)
        order: list[str] = []
        running = 0
        peak = 0
        release = asyncio.Event()

        async def check(name: str, suspect: bool) -> None:
            nonlocal running, peak
            async with gate.slot(suspect):
                running += 1
                peak = max(peak, running)
                order.append(name)
                await release.wait()
                running -= 1

        tasks = [asyncio.create_task(check(f"flood-{i}", True)) for i in range(6)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(check("legit", False)))
        await asyncio.sleep(0)
        assert gate.waiting == (1, 4)
        release.set()
        await asyncio.gather(*tasks)
        assert peak == 2
        return order

    order = asyncio.run(main())
    # Two floods got the free slots; the clean caller, though it came last, is served next.
    assert order[:3] == ["flood-0", "flood-1", "legit"], order


def test_a_cancelled_waiter_gives_its_place_and_its_slot_back() -> None:
    async def main() -> None:
        gate = VerifyGate(1)
        hold = asyncio.Event()

        async def holder() -> None:
            async with gate.slot(False):
                await hold.wait()

        first = asyncio.create_task(holder())
        await asyncio.sleep(0)
        waiting = asyncio.create_task(holder())
        await asyncio.sleep(0)
        assert gate.waiting == (1, 0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert gate.waiting == (0, 0)
        hold.set()
        await first
        async with gate.slot(True):  # the slot is free again
            pass

    asyncio.run(main())
