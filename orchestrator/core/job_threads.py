"""Sync handler code that outlives its job: which stopped jobs still hold a replica's threads, and when
such a thread counts as hung.

A sync handler (or a sync generator) runs in a thread of the replica's executor, and a thread cannot be
interrupted. When its job is stopped (cancelled, timed out, or taken back), the job is final and its late
result ignored, but the thread runs on until the handler returns. Until then it holds one of the replica's
slots: the replica takes no job for it, as the job would only wait for the thread.

A cancelled job's code usually returns soon after, and the replica, its model loaded, serves on: as a
RunPod worker does. A thread counts as hung only once it runs past its job's deadline (its start plus its
execution timeout): a job stopped for its timeout is at once, a cancelled one when its own limit passes.
Once every slot holds a hung thread, the pool replaces the replica, which frees its GPU.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def stop_deadline_ms(started_ms: int | None, execution_timeout_ms: int) -> int | None:
    """When a stopped job's code counts as hung: its start plus its execution timeout. None when either is
    unknown or the job has no timeout (then its thread is not waited for: hung at once)."""
    if started_ms is None or execution_timeout_ms <= 0:
        return None
    return started_ms + execution_timeout_ms


def hung(deadlines: Mapping[str, int | None], now_ms: int) -> int:
    """How many of the stopped jobs whose code still runs (``deadlines``: job id -> its
    :func:`stop_deadline_ms`) run past their deadline; an unknown deadline is past."""
    return sum(1 for deadline in deadlines.values() if deadline is None or now_ms >= deadline)


class JobThreads:
    """Counts, per job, the calls an executor is running for it, so that a stopped job whose code still
    runs can be told from one that ended. A call is counted from its start in a thread to its return (one
    still queued is not running code: stopping its job cancels it). Thread-safe; ``on_end`` is called, in
    the thread, each time a call returns."""

    def __init__(self, executor: Executor, on_end: Callable[[], None]) -> None:
        self._executor = executor
        self._on_end = on_end
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()

    def for_job(self, job_id: str) -> Executor:
        """An executor whose calls count as ``job_id``'s (hand it to the code that runs that job)."""
        return _JobExecutor(self, job_id)

    def running(self, job_id: str) -> bool:
        """Whether a call for ``job_id`` is running."""
        with self._lock:
            return self._calls[job_id] > 0

    def _call(self, job_id: str, fn: Callable[..., T], args: Any, kwargs: Any) -> T:
        with self._lock:
            self._calls[job_id] += 1
        try:
            return fn(*args, **kwargs)
        finally:
            with self._lock:
                self._calls[job_id] -= 1
                if self._calls[job_id] <= 0:
                    del self._calls[job_id]
            self._on_end()


class _JobExecutor(Executor):
    def __init__(self, threads: JobThreads, job_id: str) -> None:
        self._threads = threads
        self._job_id = job_id

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return self._threads._executor.submit(self._threads._call, self._job_id, fn, args, kwargs)
