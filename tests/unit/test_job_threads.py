"""Stopped jobs whose sync code still runs: counted per job, and hung only past their deadline."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from orchestrator.core.job_threads import JobThreads, hung, stop_deadline_ms

pytestmark = pytest.mark.timeout(10)


def _starts(threads: JobThreads, job_id: str, timeout_s: float = 5.0) -> bool:
    stop = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if threads.running(job_id):
            return True
        stop.wait(0.01)
    return False


def _ends(threads: JobThreads, job_id: str, timeout_s: float = 5.0) -> bool:
    """Whether ``job_id``'s calls are all counted ended within ``timeout_s`` (the count drops in the
    thread's done callback, just after its result is set)."""
    stop = threading.Event()
    for _ in range(int(timeout_s / 0.01)):
        if not threads.running(job_id):
            return True
        stop.wait(0.01)
    return False


def test_a_stopped_jobs_deadline_is_its_start_plus_its_execution_timeout() -> None:
    assert stop_deadline_ms(1_000, 600_000) == 601_000
    assert stop_deadline_ms(None, 600_000) is None, "never started here: unknown"
    assert stop_deadline_ms(1_000, 0) is None, "no timeout: not waited for"


def test_code_counts_as_hung_once_past_its_deadline_or_with_none() -> None:
    assert hung({}, 5_000) == 0
    assert hung({"cancelled": 9_000}, 5_000) == 0, "a cancelled job's code may still return"
    assert hung({"cancelled": 9_000}, 9_000) == 1
    assert hung({"timed-out": 4_000, "cancelled": 9_000, "unknown": None}, 5_000) == 2


def test_job_threads_tell_a_job_whose_code_still_runs() -> None:
    started, release = threading.Event(), threading.Event()
    ended: list[int] = []

    def long_call() -> bool:
        started.set()
        return release.wait(5)

    with ThreadPoolExecutor(max_workers=1) as pool:
        threads = JobThreads(pool, lambda: ended.append(1))
        running = threads.for_job("a").submit(long_call)
        queued = threads.for_job("b").submit(lambda: 2)
        assert started.wait(5)
        assert threads.running("a") and not threads.running("c")
        assert not threads.running("b"), "queued behind a's call: no code of b runs"
        assert queued.cancel(), "and stopping b cancels it before it runs"
        release.set()
        assert running.result(timeout=5) is True
        assert _ends(threads, "a")
        assert ended == [1], "told once per call that returned"


def test_a_generators_calls_count_as_its_jobs() -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        threads = JobThreads(pool, lambda: None)
        executor = threads.for_job("gen")
        gate = threading.Event()
        first = executor.submit(gate.wait, 5)
        second = executor.submit(gate.wait, 5)
        assert _starts(threads, "gen")
        gate.set()
        first.result(timeout=5)
        second.result(timeout=5)
        assert _ends(threads, "gen")
