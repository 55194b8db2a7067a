"""Long-poll plumbing: callers wait on a key until woken or a timeout, never polling.

Used by the queue actor (takers per endpoint, stop channels per worker, ``runsync`` per job). Single
event-loop only. A version number per key closes the lost-wakeup race: read :meth:`Waiters.version`
before a check that may come back empty, and :meth:`Waiters.wait` returns at once if the key was woken since.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict, deque
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Waiters(Generic[K]):
    """FIFO waiters per key."""

    def __init__(self) -> None:
        self._queues: dict[K, deque[asyncio.Future[None]]] = defaultdict(deque)
        self._versions: dict[K, int] = defaultdict(int)

    def version(self, key: K) -> int:
        """A number that changes every time ``key`` is woken."""
        return self._versions[key]

    def count(self, key: K) -> int:
        """How many callers wait on ``key`` now."""
        return sum(1 for f in self._queues.get(key, ()) if not f.done())

    async def wait(self, key: K, timeout_s: float, seen_version: int | None = None) -> bool:
        """Wait until ``key`` is woken or ``timeout_s`` passes; True when woken.

        Returns True at once when ``seen_version`` is given and ``key`` was woken after it was read.
        """
        if seen_version is not None and self._versions[key] != seen_version:
            return True
        if timeout_s <= 0:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues[key]
        queue.append(fut)
        try:
            await asyncio.wait_for(fut, timeout_s)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            if not fut.done():
                fut.cancel()
            with contextlib.suppress(ValueError):
                queue.remove(fut)
            if not queue:
                self._queues.pop(key, None)

    def wake(self, key: K, n: int | None = None) -> int:
        """Wake up to ``n`` waiters of ``key`` (all when None), oldest first; return how many."""
        self._versions[key] += 1
        woken = 0
        for fut in list(self._queues.get(key, ())):
            if n is not None and woken >= n:
                break
            if not fut.done():
                fut.set_result(None)
                woken += 1
        return woken
