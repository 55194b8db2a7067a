"""One-way notices to a control actor, sent in batches (issue 12: the queue actor off the per-job path).

A caller on a job's path (a replica that finished a job, a client that wrote one to the store) hands a
notice over and goes on; the notices gathered go together, one call per key, when the first of them is due.
An actor call costs its sender about half a millisecond of CPU and the actor as much again: sent per job,
that work lands in the next job's round trip on a small machine; batched, it is shared by every job of the
moment.

Each notice says how soon it must arrive: ``NOTICE_DELAY_S`` (the default) when something may wait on it (a
taker to wake, the autoscaler, a webhook to send), ``BOOKKEEPING_DELAY_S`` when it only keeps the actor's
memory and counts (a job handed straight to a parked replica, a result no one waits on at the actor).

:class:`LoopNotices` is for code on an asyncio loop (replicas, the HTTP replica); :class:`ThreadNotices`
for blocking callers (the in-cluster client), with a thread of its own. Neither ever raises into the
caller: ``send`` is the caller's, and what it raises is logged. A notice is lost only when its process ends
first; whoever sends them must be able to do without (the facts are in the store).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger("ripple.notices")

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

NOTICE_DELAY_S = 0.05
"""How long a batch gathers notices after its first one. Long enough to span several sequential round trips
(about 10 ms each over HTTP): at 10 ms, one caller's jobs one after another still cost a call each, landing
in the next job's round trip. What waits on a notice is bookkeeping (counts, the registry's free slots,
webhook kicks, an idle endpoint's autoscaler wake-up): 50 ms later at most."""

BOOKKEEPING_DELAY_S = 0.5
"""How long a notice that only keeps memory and counts may wait (queue metrics, lease index, the registry's
free slots: read by the autoscaler's ticks, a second apart). Sent per 50 ms, one caller's sequential jobs
still cost an actor call every few jobs, each landing in a round trip (measured: about 0.6 ms of CPU a job
between the replica and the queue over HTTP runsync, `bench/PERFORMANCE.md`)."""


def due_within_s(bookkeeping: bool) -> float | None:
    """How soon a notice must arrive: within ``BOOKKEEPING_DELAY_S`` when it only keeps the actor's memory
    and counts, else within the notices' own delay (None)."""
    return BOOKKEEPING_DELAY_S if bookkeeping else None


def _send_all(send: Callable[[K, list[T]], None], batch: dict[K, list[T]]) -> None:
    for key, items in batch.items():
        try:
            send(key, items)
        except Exception:
            log.warning("could not send %d notices (%s)", len(items), key, exc_info=True)


class LoopNotices(Generic[K, T]):
    """Notices gathered on the running asyncio loop; ``add`` only from that loop's thread."""

    def __init__(self, send: Callable[[K, list[T]], None], delay_s: float = NOTICE_DELAY_S) -> None:
        self._send = send
        self._delay_s = delay_s
        self._batch: dict[K, list[T]] = {}
        self._timer: asyncio.TimerHandle | None = None

    def add(self, key: K, items: list[T], within_s: float | None = None) -> None:
        """Queue ``items`` under ``key``; sent within ``within_s`` (None: the notices' ``delay_s``), with
        whatever else is gathered by then."""
        self._batch.setdefault(key, []).extend(items)
        loop = asyncio.get_running_loop()
        due = loop.time() + (self._delay_s if within_s is None else within_s)
        if self._timer is None or due < self._timer.when():
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(due, self.flush)

    def flush(self) -> None:
        """Send what is gathered now (a caller about to stop)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._batch = self._batch, {}
        _send_all(self._send, batch)


class ThreadNotices(Generic[K, T]):
    """Notices from any thread, sent by a daemon thread of their own (started with the first). The thread
    sleeps until the batch is due; a notice wakes it only when it brings the deadline forward."""

    def __init__(self, send: Callable[[K, list[T]], None], delay_s: float = NOTICE_DELAY_S) -> None:
        self._send = send
        self._delay_s = delay_s
        self._cond = threading.Condition()
        self._batch: dict[K, list[T]] = {}
        self._due_s: float | None = None  # time.monotonic() by which the batch goes; None: nothing gathered
        self._thread: threading.Thread | None = None

    def add(self, key: K, item: T, within_s: float | None = None) -> None:
        """Queue ``item`` under ``key``; sent within about ``within_s`` (None: the notices' ``delay_s``),
        with whatever else is gathered by then."""
        due_s = time.monotonic() + (self._delay_s if within_s is None else within_s)
        with self._cond:
            self._batch.setdefault(key, []).append(item)
            if self._due_s is None or due_s < self._due_s:
                self._due_s = due_s
                self._cond.notify()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="ripple-notices", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._due_s is None or self._due_s > time.monotonic():
                    self._cond.wait(None if self._due_s is None else self._due_s - time.monotonic())
                batch, self._batch, self._due_s = self._batch, {}, None
            _send_all(self._send, batch)
