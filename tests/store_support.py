"""Test support for the job store: per-test Redis key prefixes, and the stateful model of the job lifecycle.

:class:`LifecycleMachine` is a Hypothesis ``RuleBasedStateMachine`` that drives a store only through its
public API, with a plain model (a dict of expected jobs) and an advancing fake clock. Subclasses say which
store to drive (:meth:`LifecycleMachine.make_store`), so the in-memory fake and the real Redis store are held
to the same rules. Queue order in the model: normal before low priority, then submission order; a job that
goes back to the queue (retry or lost lease) keeps its original place.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import redis
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from orchestrator.core.errors import QueueFull
from orchestrator.core.jobs import JobStatus
from orchestrator.core.models import NewJob
from orchestrator.store.protocol import REQUEUE_OR_FAIL, FinishItem

S = JobStatus
T = TypeVar("T")
ENDPOINTS = ("a", "b")
WORKERS = ("w1", "w2", "w3")


def unique_prefix() -> str:
    """A Redis key prefix no other test uses."""
    return f"t{uuid.uuid4().hex[:12]}:"


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under ``prefix`` (synchronously, so it works outside any event loop)."""
    client = redis.Redis.from_url(url)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=prefix + "*", count=5000):
            batch.append(key)
            if len(batch) >= 5000:
                client.unlink(*batch)
                batch.clear()
        if batch:
            client.unlink(*batch)
    finally:
        client.close()


@dataclass
class ModelJob:
    """What the model expects of one job."""

    ep: str
    low: bool
    seq: int
    max_retries: int
    timeout_ms: int
    ttl_ms: int
    ttl_deadline: int
    status: JobStatus = S.IN_QUEUE
    attempts: int = 0
    worker: str = ""
    lease_deadline: int = 0
    manual_retries: int = 0


class LifecycleMachine(RuleBasedStateMachine):
    """Rules: submit, take, finish, cancel, retry, lose a lease, sweep, advance the clock, drain, purge."""

    def make_store(self) -> tuple[Any, Callable[[], Awaitable[None]]]:
        """The store under test and an async cleanup; overridden by each test module."""
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.store, self._cleanup = self.make_store()
        self.now_ms = 1_700_000_000_000
        self.jobs: dict[str, ModelJob] = {}
        self.seq = 0
        self.draining: set[str] = set()
        self.counters: Counter[tuple[str, str]] = Counter()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self._cleanup())
        self.loop.close()

    def pick(self, index: int) -> str:
        ids = sorted(self.jobs)
        return ids[index % len(ids)]

    def worker_for(self, job_id: str, holder: bool, other: str) -> str:
        job = self.jobs[job_id]
        return job.worker if holder and job.worker else other

    def queued(self, ep: str) -> list[str]:
        ids = [j for j, m in self.jobs.items() if m.ep == ep and m.status is S.IN_QUEUE]
        return sorted(ids, key=lambda j: (self.jobs[j].low, self.jobs[j].seq))

    def enter_final(self, job: ModelJob, to: JobStatus) -> None:
        job.status = to
        self.counters[(job.ep, to.value.lower())] += 1

    def requeue(self, job: ModelJob) -> None:
        job.status = S.IN_QUEUE
        job.ttl_deadline = self.now_ms + job.ttl_ms

    # Rules ----------------------------------------------------------------------------------------

    @rule(
        ep=st.sampled_from(ENDPOINTS),
        lows=st.lists(st.booleans(), min_size=1, max_size=3),
        max_retries=st.integers(0, 2),
        timeout_ms=st.sampled_from([1000, 3000]),
        ttl_ms=st.sampled_from([1000, 5000]),
        limit=st.none() | st.integers(1, 8),
    )
    def submit(
        self, ep: str, lows: list[bool], max_retries: int, timeout_ms: int, ttl_ms: int, limit: int | None
    ) -> None:
        new = []
        for low in lows:
            job_id = f"j{len(self.jobs) + len(new):03d}"
            body = json.dumps({"n": job_id})
            new.append(NewJob(job_id, ep, body, timeout_ms, ttl_ms, max_retries, low_priority=low))
        depth = len(self.queued(ep))
        if limit is not None and depth + len(new) > limit:
            try:
                self.run(self.store.submit(ep, new, limit, self.now_ms))
            except QueueFull:
                return
            raise AssertionError("a submit over maxQueueSize was accepted")
        assert self.run(self.store.submit(ep, new, limit, self.now_ms)) == depth + len(new)
        for j in new:
            self.seq += 1
            self.jobs[j.id] = ModelJob(
                ep, j.low_priority, self.seq, max_retries, timeout_ms, ttl_ms, self.now_ms + ttl_ms
            )

    @rule(ep=st.sampled_from(ENDPOINTS), worker=st.sampled_from(WORKERS), n=st.integers(1, 3))
    def take(self, ep: str, worker: str, n: int) -> None:
        expected = [] if worker in self.draining else self.queued(ep)[:n]
        taken = self.run(self.store.take(ep, worker, n, self.now_ms))
        assert [t.id for t in taken] == expected, "normal before low priority, FIFO within"
        for t in taken:
            job = self.jobs[t.id]
            job.status, job.worker, job.attempts = S.IN_PROGRESS, worker, job.attempts + 1
            job.lease_deadline = self.now_ms + job.timeout_ms
            assert t.attempt == job.attempts and t.input == {"n": t.id}

    @precondition(lambda self: self.jobs)
    @rule(
        index=st.integers(0, 10**6),
        holder=st.booleans(),
        other=st.sampled_from(WORKERS),
        to=st.sampled_from([S.COMPLETED, S.FAILED]),
    )
    def finish(self, index: int, holder: bool, other: str, to: JobStatus) -> None:
        job_id = self.pick(index)
        job, worker = self.jobs[job_id], self.worker_for(job_id, holder, other)
        item = FinishItem(job_id, worker, to, json.dumps({"r": job_id}), "boom" if to is S.FAILED else "")
        (outcome,) = self.run(self.store.finish([item], self.now_ms))
        should = job.status is S.IN_PROGRESS and job.worker == worker
        assert outcome.applied == should, "first final result from the holder wins; others refused"
        if should:
            self.enter_final(job, to)
        assert outcome.status is job.status and outcome.endpoint == job.ep

    @rule()
    def finish_unknown_job(self) -> None:
        (outcome,) = self.run(self.store.finish([FinishItem("nope", "w1", S.COMPLETED)], self.now_ms))
        assert (outcome.applied, outcome.status, outcome.drop_reason) == (False, None, "unknown_job")

    @precondition(lambda self: self.jobs)
    @rule(index=st.integers(0, 10**6))
    def cancel(self, index: int) -> None:
        job_id = self.pick(index)
        job = self.jobs[job_id]
        expect = (S.IN_QUEUE, S.IN_PROGRESS)
        moved = self.run(
            self.store.move(job_id, S.CANCELLED.value, self.now_ms, "cancel", expect_from=expect)
        )
        assert moved.moved == (job.status in expect) and moved.before is job.status
        if moved.moved:
            self.enter_final(job, S.CANCELLED)

    @precondition(lambda self: self.jobs)
    @rule(index=st.integers(0, 10**6))
    def retry(self, index: int) -> None:
        job_id = self.pick(index)
        job = self.jobs[job_id]
        expect = (S.FAILED, S.TIMED_OUT, S.CANCELLED)
        moved = self.run(self.store.move(job_id, S.IN_QUEUE.value, self.now_ms, "retry", expect_from=expect))
        assert moved.moved == (job.status in expect)
        if moved.moved:
            self.requeue(job)
            job.manual_retries += 1
            self.counters[(job.ep, "retried")] += 1

    @precondition(lambda self: self.jobs)
    @rule(index=st.integers(0, 10**6), holder=st.booleans(), other=st.sampled_from(WORKERS))
    def lose_lease(self, index: int, holder: bool, other: str) -> None:
        job_id = self.pick(index)
        job, worker = self.jobs[job_id], self.worker_for(job_id, holder, other)
        moved = self.run(
            self.store.move(
                job_id,
                REQUEUE_OR_FAIL,
                self.now_ms,
                "lease lost",
                expect_from=(S.IN_PROGRESS,),
                expect_worker=worker,
                error="lost",
            )
        )
        should = job.status is S.IN_PROGRESS and job.worker == worker
        assert moved.moved == should
        if should:
            budget_left = job.attempts <= job.max_retries
            assert moved.after is (S.IN_QUEUE if budget_left else S.FAILED)
            if budget_left:
                self.requeue(job)
            else:
                self.enter_final(job, S.FAILED)

    @rule(ms=st.integers(0, 2500))
    def advance_clock(self, ms: int) -> None:
        self.now_ms += ms

    @rule()
    def sweep_ttl(self) -> None:
        due = {j for j, m in self.jobs.items() if m.status is S.IN_QUEUE and m.ttl_deadline <= self.now_ms}
        moved = self.run(self.store.sweep("ttl", self.now_ms, 1000))
        assert {m.job_id for m in moved} == due
        for j in due:
            assert self.jobs[j].status is S.IN_QUEUE
            self.enter_final(self.jobs[j], S.TIMED_OUT)

    @rule()
    def sweep_leases(self) -> None:
        due = {
            j: m.worker
            for j, m in self.jobs.items()
            if m.status is S.IN_PROGRESS and m.lease_deadline <= self.now_ms
        }
        moved = self.run(self.store.sweep("leases", self.now_ms, 1000))
        assert {m.job_id: m.worker for m in moved} == due
        for j in due:
            self.enter_final(self.jobs[j], S.TIMED_OUT)

    @rule(worker=st.sampled_from(WORKERS), on=st.booleans())
    def drain(self, worker: str, on: bool) -> None:
        self.run(self.store.set_draining(worker, on))
        (self.draining.add if on else self.draining.discard)(worker)

    @rule(ep=st.sampled_from(ENDPOINTS))
    def purge(self, ep: str) -> None:
        queued = self.queued(ep)
        assert self.run(self.store.purge(ep, self.now_ms)) == len(queued)
        for j in queued:
            self.enter_final(self.jobs[j], S.CANCELLED)

    @precondition(lambda self: self.jobs)
    @rule(index=st.integers(0, 10**6), holder=st.booleans(), other=st.sampled_from(WORKERS))
    def push_chunk(self, index: int, holder: bool, other: str) -> None:
        job_id = self.pick(index)
        job, worker = self.jobs[job_id], self.worker_for(job_id, holder, other)
        ok = self.run(self.store.push_chunks(job_id, worker, ['"c"']))
        assert ok == (job.status is S.IN_PROGRESS and job.worker == worker)

    # Invariants -----------------------------------------------------------------------------------

    @invariant()
    def each_job_is_in_exactly_the_expected_state(self) -> None:
        ids = sorted(self.jobs)
        views = self.run(self.store.get_many(ids))
        statuses = self.run(self.store.get_statuses(ids))
        for view, status in zip(views, statuses, strict=True):
            assert view is not None and status == replace(view, input_json=""), "a status read: all but input"
        for job_id, view in zip(ids, views, strict=True):
            job = self.jobs[job_id]
            assert view is not None and view.status is job.status, (job_id, view, job)
            assert view.attempts == job.attempts
            if job.manual_retries == 0:
                assert job.attempts <= job.max_retries + 1, "attempts stay within the retry budget"
            if job.status is S.COMPLETED:
                assert view.output == {"r": job_id}, "a completed job never changes"
            if job.status is S.IN_QUEUE:
                assert view.output is None and view.error is None and view.worker_id is None
                assert view.execution_ms(self.now_ms) == 0, "a waiting job is not executing"

    @invariant()
    def queues_leases_and_counters_match(self) -> None:
        for ep in ENDPOINTS:
            assert self.run(self.store.depth(ep)) == len(self.queued(ep))
            ids = sorted(j for j, m in self.jobs.items() if m.ep == ep)
            places = dict(zip(ids, self.run(self.store.queue_positions([(ep, j) for j in ids])), strict=True))
            queued = self.queued(ep)
            assert [places[j] for j in queued] == list(range(len(queued))), "in the queue's order"
            assert all(places[j] is None for j in ids if j not in queued)
            counts = self.run(self.store.counts(ep))
            running = sum(1 for m in self.jobs.values() if m.ep == ep and m.status is S.IN_PROGRESS)
            assert counts.get("in_progress", 0) == running
            for name in ("completed", "failed", "timed_out", "cancelled", "retried"):
                assert counts.get(name, 0) == self.counters[(ep, name)], name
            completed = sum(1 for m in self.jobs.values() if m.ep == ep and m.status is S.COMPLETED)
            assert counts.get("completed", 0) == completed
        leases = {(j, w, ep, at) for j, w, ep, at in self.run(self.store.leases())}
        expected = {
            (j, m.worker, m.ep, m.lease_deadline) for j, m in self.jobs.items() if m.status is S.IN_PROGRESS
        }
        assert leases == expected
