"""Long-poll waiters: wake order, timeouts, the version that closes the lost-wakeup race, cleanup."""

from __future__ import annotations

import asyncio
import time

import pytest

from orchestrator.core.waiters import Waiters

pytestmark = pytest.mark.timeout(30)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_timeout_returns_false_and_cleans_up() -> None:
    w: Waiters[str] = Waiters()
    t0 = time.monotonic()
    assert await w.wait("k", 0.05) is False
    assert 0.04 <= time.monotonic() - t0 < 1.0
    assert w.count("k") == 0 and not w._queues


async def test_zero_timeout_returns_at_once() -> None:
    w: Waiters[str] = Waiters()
    assert await w.wait("k", 0) is False
    assert await w.wait("k", -1) is False


async def test_wake_all_and_count() -> None:
    w: Waiters[str] = Waiters()
    tasks = [asyncio.create_task(w.wait("k", 5)) for _ in range(3)]
    other = asyncio.create_task(w.wait("other", 0.2))
    await settle()
    assert w.count("k") == 3 and w.count("other") == 1 and w.count("none") == 0
    assert w.wake("k") == 3
    assert await asyncio.gather(*tasks) == [True, True, True]
    assert await other is False, "waking one key leaves the others waiting"
    assert w.count("k") == 0 and not w._queues


async def test_wake_n_is_fifo() -> None:
    w: Waiters[str] = Waiters()
    order: list[int] = []

    async def waiter(i: int) -> None:
        if await w.wait("k", 5):
            order.append(i)

    tasks = []
    for i in range(4):
        tasks.append(asyncio.create_task(waiter(i)))
        await settle()
    assert w.wake("k", 1) == 1
    assert w.wake("k", 2) == 2, "futures already woken are skipped, not counted twice"
    await settle()
    assert order == [0, 1, 2]
    assert w.count("k") == 1
    assert w.wake("k", 5) == 1
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2, 3]


async def test_wake_without_waiters_still_moves_the_version() -> None:
    w: Waiters[str] = Waiters()
    v = w.version("k")
    assert w.wake("k") == 0
    assert w.version("k") == v + 1


async def test_seen_version_closes_the_lost_wakeup_race() -> None:
    w: Waiters[str] = Waiters()
    seen = w.version("k")  # read before the check that came back empty
    w.wake("k")  # the work arrives between the check and the wait
    t0 = time.monotonic()
    assert await w.wait("k", 5, seen) is True
    assert time.monotonic() - t0 < 0.5, "returns at once, never waits for the timeout"
    assert await w.wait("k", 0.01, w.version("k")) is False, "an unchanged version waits as usual"


async def test_cancelled_waiter_is_removed() -> None:
    w: Waiters[str] = Waiters()
    task = asyncio.create_task(w.wait("k", 5))
    await settle()
    assert w.count("k") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert w.count("k") == 0 and not w._queues
    assert w.wake("k") == 0


async def test_a_woken_waiter_returns_true_even_as_time_runs_out() -> None:
    w: Waiters[int] = Waiters()
    results = []
    for _ in range(20):
        task = asyncio.create_task(w.wait(1, 0.01))
        await asyncio.sleep(0.009)
        woken = w.wake(1)
        ok = await task
        results.append((woken, ok))
        assert not (woken and not ok), "a wake that was counted must be seen by its waiter"
    assert not w._queues
