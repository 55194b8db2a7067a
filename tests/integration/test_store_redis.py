"""The Lua paths of RedisStore on a real (embedded) Redis.

Submit, order, take, drain, finish, streams, sweeps, purge, progress, leases, webhooks, the small documents,
durability across a restart, and the cost of submitting and recovering 100,000 queued jobs.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
import redis

from orchestrator.core.errors import NotFound, QueueFull
from orchestrator.core.jobs import (
    QUEUE_SCORE,
    REQUEUE_AFTER_LOST_LEASE,
    JobCursor,
    JobStatus,
    queue_score,
    status_after_lost_lease,
)
from orchestrator.core.models import NewJob
from orchestrator.core.webhook_outcomes import KEPT_PER_ENDPOINT, WINDOW_S, entry
from orchestrator.ops import embedded_redis
from orchestrator.ops.procs import alive
from orchestrator.store.autoscaler import RedisAutoscalerStore
from orchestrator.store.failures import STORE_FULL, store_failure
from orchestrator.store.memory import MemoryStore
from orchestrator.store.protocol import REQUEUE_OR_FAIL, Claim, FinishItem
from orchestrator.store.redis import RedisStore
from tests.dispatch_behaviour import FakeClock, Recorder, make
from tests.store_support import delete_prefix, unique_prefix
from tests.unit.test_autoscaler_store import (
    test_history_keeps_the_newest,
    test_lease_is_held_by_one_holder_and_renewed_only_by_it,
    test_switch_state_overrides_and_history,
)

pytestmark = pytest.mark.timeout(120)
__all__ = [  # the autoscaler store's behaviour tests, run here on Redis
    "test_history_keeps_the_newest",
    "test_lease_is_held_by_one_holder_and_renewed_only_by_it",
    "test_switch_state_overrides_and_history",
]
S = JobStatus
NOW = 1_700_000_000_000


def jobs(n: int, start: int = 0, **kw: object) -> list[NewJob]:
    """``n`` jobs j{start}.. with small inputs; keyword arguments override NewJob fields."""
    fields: dict[str, object] = {"execution_timeout_ms": 10_000, "ttl_ms": 60_000, "max_retries": 1}
    fields.update(kw)
    return [
        NewJob(id=f"j{i}", endpoint="ep", input_json=json.dumps({"i": i}), **fields)  # type: ignore[arg-type]
        for i in range(start, start + n)
    ]


def done(job_id: str, worker: str, status: JobStatus = S.COMPLETED, **kw: object) -> FinishItem:
    return FinishItem(job_id, worker, status, **kw)  # type: ignore[arg-type]


async def test_submit_is_all_or_nothing_under_max_queue_size(redis_store: RedisStore) -> None:
    assert await redis_store.submit("ep", jobs(3), 5, NOW) == 3
    with pytest.raises(QueueFull) as info:
        await redis_store.submit("ep", jobs(3, start=3), 5, NOW)
    assert info.value.detail == {"endpoint": "ep", "queued": 3, "maxQueueSize": 5}
    assert "3 queued" in info.value.message
    assert await redis_store.depth("ep") == 3
    assert await redis_store.get_many(["j3", "j4", "j5"]) == [None, None, None], "no job of the batch written"
    assert await redis_store.submit("ep", jobs(2, start=3), 5, NOW) == 5, "exactly full is accepted"
    assert await redis_store.submit("other", jobs(1, start=10), 1, NOW) == 1, "limits are per endpoint"
    assert await redis_store.submit("ep", jobs(1, start=20), None, NOW) == 6, "no limit"


async def test_a_submit_sent_again_after_its_reply_was_lost_writes_nothing_again(
    redis_store: RedisStore,
) -> None:
    """redis-py sends a command again when its connection fails before the reply comes, though the first
    may have run: the batch's jobs, leased or finished meanwhile, are not queued again (they would run
    twice), and the step still answers as accepted."""
    batch = jobs(3)
    assert await redis_store.submit("ep", batch, None, NOW) == 3
    (leased,) = await redis_store.take("ep", "w1", 1, NOW + 1)
    assert (await redis_store.finish([done(leased.id, "w1")], NOW + 2))[0].applied
    (running,) = await redis_store.take("ep", "w1", 1, NOW + 3)
    assert await redis_store.submit("ep", batch, None, NOW + 4) == 1, "accepted; the one still queued"
    assert await redis_store.depth("ep") == 1
    views = {v.id: v for v in await redis_store.get_many([j.id for j in batch]) if v is not None}
    assert [views[j.id].status for j in batch] == [S.COMPLETED, S.IN_PROGRESS, S.IN_QUEUE], views
    assert (views[running.id].worker_id, views[running.id].attempts) == ("w1", 1)
    assert [t.id for t in await redis_store.take("ep", "w2", 10, NOW + 5)] == ["j2"], "nothing twice"
    assert await redis_store.submit("ep", jobs(1, start=3), None, NOW + 6) == 1, "a new batch is written"


async def test_order_normal_before_low_fifo_within_and_take_batches(redis_store: RedisStore) -> None:
    await redis_store.submit("ep", jobs(2, low_priority=True), None, NOW)  # j0, j1 low
    await redis_store.submit("ep", jobs(2, start=2), None, NOW + 1)  # j2, j3 normal
    await redis_store.submit("ep", jobs(1, start=4, low_priority=True), None, NOW + 2)
    await redis_store.submit("ep", jobs(1, start=5), None, NOW + 3)
    assert await redis_store.oldest_queued_ms("ep") == NOW + 1, (
        "the head of the queue is the first normal job"
    )
    taken = await redis_store.take("ep", "w1", 3, NOW + 10)
    assert [t.id for t in taken] == ["j2", "j3", "j5"]
    assert taken[0].wire() == {"id": "j2", "input": {"i": 2}, "attempt": 1}
    assert [t.id for t in await redis_store.take("ep", "w2", 10, NOW + 10)] == ["j0", "j1", "j4"]
    assert await redis_store.take("ep", "w2", 10, NOW + 10) == []
    assert await redis_store.oldest_queued_ms("ep") is None
    assert await redis_store.take("nowhere", "w1", 1, NOW) == []


async def test_requeued_job_keeps_its_place(redis_store: RedisStore) -> None:
    await redis_store.submit("ep", jobs(3), None, NOW)
    (first,) = await redis_store.take("ep", "w1", 1, NOW)
    moved = await redis_store.move(
        first.id, REQUEUE_OR_FAIL, NOW + 5, "lease lost", expect_from=(S.IN_PROGRESS,), expect_worker="w1"
    )
    assert (moved.moved, moved.before, moved.after, moved.worker) == (True, S.IN_PROGRESS, S.IN_QUEUE, "w1")
    again = await redis_store.take("ep", "w2", 1, NOW + 6)
    assert [(t.id, t.attempt) for t in again] == [("j0", 2)]


async def test_draining_worker_gets_nothing(redis_store: RedisStore) -> None:
    await redis_store.submit("ep", jobs(2), None, NOW)
    await redis_store.set_draining("w1", True)
    assert await redis_store.draining_workers() == {"w1"}
    assert await redis_store.take("ep", "w1", 5, NOW) == []
    assert await redis_store.depth("ep") == 2, "a refused take pops nothing"
    assert len(await redis_store.take("ep", "w2", 1, NOW)) == 1
    await redis_store.set_draining("w1", False)
    assert [t.id for t in await redis_store.take("ep", "w1", 5, NOW)] == ["j1"]


async def test_finish_first_result_wins(redis_store: RedisStore) -> None:
    await redis_store.submit("ep", jobs(2), None, NOW)
    await redis_store.take("ep", "w1", 2, NOW + 100)
    out = await redis_store.finish(
        [done("j0", "w1", output_json='{"ok":1}'), done("j1", "w2"), done("ghost", "w1")], NOW + 350
    )
    assert (out[0].applied, out[0].status, out[0].queue_ms, out[0].execution_ms) == (
        True,
        S.COMPLETED,
        100,
        250,
    )
    assert (out[1].applied, out[1].status, out[1].drop_reason) == (False, S.IN_PROGRESS, "not_held")
    assert (out[2].applied, out[2].status, out[2].drop_reason, out[2].endpoint) == (
        False,
        None,
        "unknown_job",
        "",
    )
    again = await redis_store.finish([done("j0", "w1", S.FAILED, error="late")], NOW + 400)
    assert (again[0].applied, again[0].status) == (False, S.COMPLETED)
    job = await redis_store.get("j0")
    assert job is not None and job.output == {"ok": 1} and job.error is None and job.finished_ms == NOW + 350
    assert [(h["from"], h["to"], h["reason"]) for h in job.history] == [
        ("IN_QUEUE", "IN_PROGRESS", "taken"),
        ("IN_PROGRESS", "COMPLETED", "result"),
    ]
    failed = await redis_store.finish([done("j1", "w1", S.FAILED, output_json='{"p":1}', error="boom")], NOW)
    assert failed[0].applied
    j1 = await redis_store.get("j1")
    assert j1 is not None and (j1.status, j1.error, j1.output) == (S.FAILED, "boom", {"p": 1})
    assert await redis_store.counts("ep") == {"in_progress": 0, "completed": 1, "failed": 1}
    assert await redis_store.finish([], NOW) == []


async def test_cancelled_job_drops_the_late_result(redis_store: RedisStore) -> None:
    await redis_store.submit("ep", jobs(1), None, NOW)
    await redis_store.take("ep", "w1", 1, NOW)
    moved = await redis_store.move(
        "j0", S.CANCELLED.value, NOW + 1, "cancelled", expect_from=(S.IN_PROGRESS,)
    )
    assert moved.moved and moved.worker == "w1"
    (late,) = await redis_store.finish([done("j0", "w1", output_json="1")], NOW + 2)
    assert (late.applied, late.status) == (False, S.CANCELLED)
    assert await redis_store.push_chunks("j0", "w1", ["1"]) is False
    assert await redis_store.progress("j0", "w1", "1") is False


async def test_move_refusals(redis_store: RedisStore) -> None:
    await redis_store.submit("ep", jobs(1), None, NOW)
    missing = await redis_store.move("nope", S.CANCELLED.value, NOW, "x")
    assert (missing.moved, missing.exists, missing.before) == (False, False, None)
    wrong_state = await redis_store.move("j0", S.IN_QUEUE.value, NOW, "retry", expect_from=(S.FAILED,))
    assert (wrong_state.moved, wrong_state.exists, wrong_state.before) == (False, True, S.IN_QUEUE)
    illegal = await redis_store.move("j0", S.COMPLETED.value, NOW, "x")
    assert not illegal.moved and illegal.after is S.IN_QUEUE, "the table itself refuses IN_QUEUE -> COMPLETED"
    await redis_store.take("ep", "w1", 1, NOW)
    other = await redis_store.move("j0", REQUEUE_OR_FAIL, NOW, "x", expect_worker="w2")
    assert not other.moved and other.worker == "w1"


async def test_lost_lease_respects_the_retry_budget(redis_store: RedisStore) -> None:
    await redis_store.submit("ep", jobs(1, max_retries=1), None, NOW)
    outcomes = []
    for attempt in (1, 2):
        (t,) = await redis_store.take("ep", "w1", 1, NOW + attempt)
        assert t.attempt == attempt
        m = await redis_store.move(
            "j0", REQUEUE_OR_FAIL, NOW + attempt, "lost", expect_worker="w1", error="worker w1 lost"
        )
        outcomes.append(m.after)
    assert outcomes == [S.IN_QUEUE, S.FAILED]
    job = await redis_store.get("j0")
    assert job is not None and (job.status, job.attempts, job.error) == (S.FAILED, 2, "worker w1 lost")
    retried = await redis_store.move("j0", S.IN_QUEUE.value, NOW + 5, "retry", expect_from=(S.FAILED,))
    assert retried.moved
    job = await redis_store.get("j0")
    assert job is not None and (job.status, job.error, job.output, job.retried) == (S.IN_QUEUE, None, None, 1)
    obj = job.status_object(NOW + 60_000)
    assert obj["retries"] == 1 and obj["executionTime"] == 0 and "workerId" not in obj, "waiting, not running"
    assert (await redis_store.counts("ep"))["retried"] == 1


async def test_stream_chunks_cursor_and_aggregate(redis_store: RedisStore) -> None:
    await redis_store.submit("ep", jobs(2), None, NOW)
    await redis_store.take("ep", "w1", 2, NOW)
    assert await redis_store.push_chunks("j0", "w1", ['"a"', '{"b":2}'])
    assert await redis_store.push_chunks("j0", "w2", ['"x"']) is False, "only the holder streams"
    assert await redis_store.read_stream("j0") == (S.IN_PROGRESS, ["a", {"b": 2}])
    assert await redis_store.read_stream("j0") == (S.IN_PROGRESS, []), "the cursor moved past what was read"
    assert await redis_store.push_chunks("j0", "w1", ["3"])
    (o,) = await redis_store.finish([done("j0", "w1", output_json="[]", is_stream=True)], NOW + 1)
    assert o.applied
    assert await redis_store.read_stream("j0") == (S.COMPLETED, [3])
    job = await redis_store.get("j0")
    assert job is not None and job.output == ["a", {"b": 2}, 3], "isStream with an empty result: the chunks"
    await redis_store.push_chunks("j1", "w1", ["1"])
    await redis_store.finish([done("j1", "w1", output_json='"own"', is_stream=True)], NOW + 1)
    j1 = await redis_store.get("j1")
    assert j1 is not None and j1.output == "own", "an explicit aggregate is kept"
    with pytest.raises(NotFound):
        await redis_store.read_stream("nope")


async def pushes_sent_again_append_nothing_twice(store: RedisStore | MemoryStore) -> None:
    await store.submit("ep", jobs(1), None, NOW)
    await store.take("ep", "w1", 1, NOW)
    assert await store.push_chunks("j0", "w1", ['"a"'], 0)
    assert await store.push_chunks("j0", "w1", ['"a"'], 0), "sent again: accepted, not appended"
    assert await store.push_chunks("j0", "w1", ['"b"', '"c"'], 1)
    assert await store.push_chunks("j0", "w1", ['"c"', '"d"'], 2), "overlapping: only the new one"
    assert await store.read_stream("j0") == (S.IN_PROGRESS, ["a", "b", "c", "d"])
    assert await store.push_chunks("j0", "w1", ['"x"']) and await store.push_chunks("j0", "w1", ['"x"'])
    assert await store.read_stream("j0") == (S.IN_PROGRESS, ["x", "x"]), "no index: each push appended"
    assert await store.push_chunks("j0", "w2", ['"y"'], 9) is False, "only the holder streams"
    moved = await store.move(
        "j0", REQUEUE_OR_FAIL, NOW + 5, "lease lost", expect_from=(S.IN_PROGRESS,), expect_worker="w1"
    )
    assert moved.moved
    await store.take("ep", "w2", 1, NOW + 6)
    assert await store.push_chunks("j0", "w2", ['"e"'], 0), "a new attempt counts its own chunks"
    assert await store.read_stream("j0") == (S.IN_PROGRESS, ["e"])


async def test_a_stream_push_sent_again_appends_nothing_twice(redis_store: RedisStore) -> None:
    """redis-py sends a push again when its reply is lost, and a replica does after a queue restart: the
    replica's chunk index keeps each chunk once (an outside worker's push, without one, appends)."""
    await pushes_sent_again_append_nothing_twice(redis_store)


async def test_the_memory_store_keeps_a_chunk_sent_again_once_too(memory_store: MemoryStore) -> None:
    await pushes_sent_again_append_nothing_twice(memory_store)


async def test_progress(redis_store: RedisStore) -> None:
    await redis_store.submit("ep", jobs(1), None, NOW)
    assert await redis_store.progress("j0", "w1", '{"pct":1}') is False, "queued: nobody holds it"
    await redis_store.take("ep", "w1", 1, NOW)
    assert await redis_store.progress("j0", "w1", '{"pct":50}')
    assert await redis_store.progress("j0", "w2", '{"pct":99}') is False
    job = await redis_store.get("j0")
    assert job is not None and job.progress == {"pct": 50}
    assert job.status_object(NOW + 1)["output"] == {"pct": 50}
    await redis_store.move("j0", REQUEUE_OR_FAIL, NOW + 2, "lost")
    await redis_store.take("ep", "w2", 1, NOW + 3)
    job = await redis_store.get("j0")
    assert job is not None and job.progress is None, "a new attempt starts without the old progress"


async def test_sweeps_time_out_expired_jobs(redis_store: RedisStore) -> None:
    await redis_store.submit("ep", jobs(3, ttl_ms=1_000, webhook="http://hook/"), None, NOW)
    await redis_store.submit("ep", jobs(1, start=3, ttl_ms=5_000, execution_timeout_ms=2_000), None, NOW)
    assert await redis_store.sweep("ttl", NOW + 999, 100) == []
    moved = await redis_store.sweep("ttl", NOW + 1_000, 2)
    assert [(m.job_id, m.before, m.after) for m in moved] == [
        ("j0", S.IN_QUEUE, S.TIMED_OUT),
        ("j1", S.IN_QUEUE, S.TIMED_OUT),
    ], "the limit is honoured"
    assert [m.job_id for m in await redis_store.sweep("ttl", NOW + 1_000, 100)] == ["j2"]
    j0 = await redis_store.get("j0")
    assert j0 is not None and j0.error == "expired in the queue after its ttl"
    assert await redis_store.webhook_claim(10) == ["j0", "j1", "j2"]
    (t,) = await redis_store.take("ep", "w1", 1, NOW + 2_000)
    assert (t.id, await redis_store.leases()) == ("j3", [("j3", "w1", "ep", NOW + 4_000)])
    assert await redis_store.sweep("leases", NOW + 3_999, 10) == []
    (m,) = await redis_store.sweep("leases", NOW + 4_000, 10)
    assert (m.job_id, m.before, m.after, m.worker, m.endpoint) == (
        "j3",
        S.IN_PROGRESS,
        S.TIMED_OUT,
        "w1",
        "ep",
    )
    j3 = await redis_store.get("j3")
    assert j3 is not None and j3.error == "execution timeout exceeded"
    assert await redis_store.leases() == []
    assert await redis_store.counts("ep") == {"timed_out": 4, "in_progress": 0}


async def test_purge_more_than_one_batch(redis_store: RedisStore) -> None:
    n = 6_200
    for start in range(0, n, 2_000):
        await redis_store.submit("ep", jobs(min(2_000, n - start), start=start), None, NOW)
    await redis_store.take("ep", "w1", 2, NOW)
    await redis_store.submit("other", [NewJob("o1", "other", "1", 10_000, 60_000, 0)], None, NOW)
    assert await redis_store.purge("ep", NOW + 1) == n - 2
    assert await redis_store.depth("ep") == 0 and await redis_store.depth("other") == 1
    counts = await redis_store.counts("ep")
    assert (counts["cancelled"], counts["in_progress"]) == (n - 2, 2), "running jobs are not purged"
    assert await redis_store.purge("ep", NOW + 2) == 0
    last = await redis_store.get(f"j{n - 1}")
    assert last is not None and last.status is S.CANCELLED and last.history[-1]["reason"] == "purged"


async def test_webhooks_claim_done_and_recover(redis_store: RedisStore) -> None:
    await redis_store.submit("ep", jobs(4, webhook="http://hook/"), None, NOW)
    await redis_store.submit("ep", jobs(1, start=4), None, NOW)
    taken = await redis_store.take("ep", "w1", 5, NOW)
    outcomes = await redis_store.finish([done(t.id, "w1") for t in taken], NOW + 1)
    assert [o.webhook for o in outcomes] == [True] * 4 + [False], "the queue kicks deliveries only for these"
    again = await redis_store.finish([done("j0", "w1")], NOW + 2)
    assert not again[0].applied and not again[0].webhook, "a refused result queues nothing"
    assert await redis_store.webhook_claim(2) == ["j0", "j1"], "only jobs with a webhook, in order"
    assert await redis_store.webhook_claim(1) == ["j2"]
    await redis_store.webhook_done("j1")
    assert await redis_store.webhook_recover() == 2
    assert await redis_store.webhook_claim(10) == ["j0", "j2", "j3"], "in-flight ones first, order kept"
    assert await redis_store.webhook_recover() == 3


async def test_webhook_outcomes_are_kept_with_the_end_of_the_delivery(redis_store: RedisStore) -> None:
    """The outcome is written in the step that takes the delivery off in-flight; the latest
    KEPT_PER_ENDPOINT stay, oldest first; deleting the endpoint deletes them."""
    await redis_store.submit("ep", jobs(2, webhook="http://h.example/"), None, NOW)
    await redis_store.take("ep", "w1", 2, NOW)
    await redis_store.finish([done("j0", "w1"), done("j1", "w1")], NOW + 1)
    assert await redis_store.webhook_claim(10) == ["j0", "j1"]
    await redis_store.webhook_done("j0", "ep", entry("failed", 5.0, "j0", "HTTP 503 after 3 attempts"))
    assert await redis_store.webhook_recover() == 1, "only j1 was still in flight"
    await redis_store.put_endpoint("ep", '{"name":"ep"}')
    kept = await redis_store.webhook_outcomes(["ep", "other"])
    assert kept == {"ep": [entry("failed", 5.0, "j0", "HTTP 503 after 3 attempts")]}
    key = redis_store.k.webhook_outcomes("ep")
    assert 0 < await redis_store.r.ttl(key) <= WINDOW_S, "gone once every entry is out of the window"
    for i in range(KEPT_PER_ENDPOINT + 5):
        await redis_store.webhook_done(f"x{i}", "ep", entry("delivered", 10.0 + i, f"x{i}"))
    (latest,) = (await redis_store.webhook_outcomes(["ep"])).values()
    assert len(latest) == KEPT_PER_ENDPOINT and latest[-1] == entry(
        "delivered", 10.0 + KEPT_PER_ENDPOINT + 4, f"x{KEPT_PER_ENDPOINT + 4}"
    )
    assert await redis_store.delete_endpoint("ep")
    assert await redis_store.webhook_outcomes(["ep"]) == {}


async def test_listing_fields_and_documents(redis_store: RedisStore) -> None:
    for i in range(3):
        await redis_store.submit("ep", jobs(1, start=i), None, NOW + i)
    await redis_store.take("ep", "w1", 1, NOW)
    assert await redis_store.list_jobs(10, None) == [("j2", NOW + 2), ("j1", NOW + 1), ("j0", NOW)]
    assert await redis_store.list_jobs(1, JobCursor(NOW + 2)) == [("j1", NOW + 1)]
    assert await redis_store.list_jobs(2, JobCursor(NOW + 2, "j2")) == [("j1", NOW + 1), ("j0", NOW)]
    assert await redis_store.list_jobs(5, JobCursor(NOW + 1, "j1")) == [("j0", NOW)]
    assert await redis_store.list_jobs(0, None) == []
    assert await redis_store.get_fields(["j0", "j1", "nope"]) == [
        ("IN_PROGRESS", "w1"),
        ("IN_QUEUE", None),
        (None, None),
    ]
    await redis_store.put_endpoint("ep", '{"name":"ep"}')
    assert await redis_store.load_endpoints() == {"ep": '{"name":"ep"}'}
    assert await redis_store.delete_endpoint("ep") and not await redis_store.delete_endpoint("ep")
    await redis_store.save_workers({"w1": "{}", "w2": "{}"})
    await redis_store.save_workers({"w3": "{}"}, removed=["w1"])
    assert await redis_store.load_workers() == {"w2": "{}", "w3": "{}"}
    assert (await redis_store.load_worker("w2"), await redis_store.load_worker("w1")) == ("{}", None)
    key = redis_store.k.autoscaler_state
    assert await redis_store.get_doc(key) is None
    await redis_store.put_doc(key, {"a": [1, 2]})
    assert await redis_store.get_doc(key) == {"a": [1, 2]}
    assert await redis_store.ping()


async def test_history_is_capped(redis_store: RedisStore) -> None:
    await redis_store.submit("ep", jobs(1, max_retries=100), None, NOW)
    for i in range(30):
        await redis_store.take("ep", "w1", 1, NOW + i)
        await redis_store.move("j0", REQUEUE_OR_FAIL, NOW + i, f"lost {i}")
    job = await redis_store.get("j0")
    assert job is not None and len(job.history) == 50 and job.history[-1]["reason"] == "lost 29"


def _wait_exited(pid: int, timeout_s: float = 30.0) -> None:
    """Reap the child ``pid``, or wait until it is gone when it was reaped already (``subprocess`` reaps a
    finished child whose ``Popen`` was dropped the next time any ``Popen`` is made: seen in CI)."""
    try:
        os.waitpid(pid, 0)
        return
    except ChildProcessError:
        pass
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still running {timeout_s:g} s after shutdown"
        time.sleep(0.05)


async def test_durable_across_a_redis_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "durable"
    server = embedded_redis.start(data_dir, detach=False)
    prefix = "dur:"
    try:
        store = RedisStore.connect(server.url, prefix)
        await store.submit("ep", jobs(5, webhook="http://hook/"), None, NOW)
        await store.take("ep", "w1", 2, NOW)
        await store.finish([done("j0", "w1", output_json='{"r":0}')], NOW + 1)
        await store.set_draining("w9", True)
        await store.put_endpoint("ep", '{"name":"ep"}')
        await store.close()
        client = redis.Redis.from_url(server.url)
        client.shutdown(nosave=True)  # no RDB snapshot: only the append-only file can bring the data back
        client.close()
        _wait_exited(server.pid)
        for rdb in data_dir.rglob("*.rdb"):
            rdb.unlink()
        server = embedded_redis.start(data_dir, detach=False)
        assert not server.adopted
        store = RedisStore.connect(server.url, prefix)
        assert await store.depth("ep") == 3
        assert [(j, w) for j, w, _, _ in await store.leases()] == [("j1", "w1")]
        j0 = await store.get("j0")
        assert j0 is not None and (j0.status, j0.output) == (S.COMPLETED, {"r": 0})
        assert await store.draining_workers() == {"w9"}
        assert await store.load_endpoints() == {"ep": '{"name":"ep"}'}
        assert await store.webhook_claim(10) == ["j0"]
        assert [t.id for t in await store.take("ep", "w2", 5, NOW + 2)] == ["j2", "j3", "j4"]
        await store.close()
    finally:
        embedded_redis.stop(data_dir)


async def test_a_full_store_refuses_a_job_whole_and_says_so(tmp_path: Path) -> None:
    """Redis at its maxmemory (noeviction, as Ripple's own runs) refuses the SUBMIT step before it writes
    anything: the error is the one the API turns into its 503, the queue is as it was, and the store says how
    full it is (``ripple doctor`` reads it from ``/health/ready``)."""
    data_dir = tmp_path / "full"
    server = embedded_redis.start(data_dir, detach=False)
    try:
        store = RedisStore.connect(server.url, "full:")
        unlimited = await store.memory()
        assert unlimited is not None and unlimited.max_bytes == 0 and unlimited.used_bytes > 0
        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory", str(unlimited.used_bytes + 2 * 1024 * 1024))
        client.config_set("maxmemory-policy", "noeviction")
        big = json.dumps("x" * 400_000)
        refused: BaseException | None = None
        for i in range(20):
            try:
                await store.submit("ep", [NewJob(f"j{i}", "ep", big, 60_000, 60_000, 0)], None, NOW + i)
            except redis.exceptions.ResponseError as exc:
                refused = exc
                break
        assert refused is not None and store_failure(refused) == STORE_FULL, refused
        accepted = i
        assert await store.depth("ep") == accepted, "the refused job is not queued"
        assert await store.get(f"j{accepted}") is None, "nor written at all"
        full = await store.memory()
        assert full is not None and full.used_bytes >= full.max_bytes * 0.9 and full.policy == "noeviction"
        d = make(store, FakeClock(), Recorder())
        said = (await d.ready())["storeMemory"]
        assert said == full.wire() | {"usedBytes": ANY, "share": ANY}, said
        assert said["share"] >= 0.9 and said["high"] is True, said
        client.config_set("maxmemory", "0")
        await store.submit("ep", [NewJob("late", "ep", big, 60_000, 60_000, 0)], None, NOW + 99)
        assert await store.depth("ep") == accepted + 1, "room again: accepted"
        client.close()
        await store.close()
    finally:
        embedded_redis.stop(data_dir)


async def test_a_full_store_still_runs_and_finishes_the_jobs_it_accepted(tmp_path: Path) -> None:
    """At its maxmemory Redis refuses a script's write that adds data only while the script has written
    nothing yet; the steps that move an accepted job on begin with a removal, so under a full store the
    queued jobs are still taken, results (large ones too) still written, a lost lease still requeued and the
    lease sweep still runs, while a new job is refused. A stream chunk, which only adds, is refused (the
    replica then fails its job in words, :mod:`actors.replica`)."""
    data_dir = tmp_path / "full"
    server = embedded_redis.start(data_dir, detach=False)
    try:
        store = RedisStore.connect(server.url, "full:")
        await store.submit("ep", jobs(6), None, NOW)
        assert [t.id for t in await store.take("ep", "w1", 3, NOW + 1)] == ["j0", "j1", "j2"]
        client = redis.Redis.from_url(server.url)
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")  # far below what it holds: every write that adds is refused
        with pytest.raises(redis.exceptions.ResponseError) as refused:
            await store.submit("ep", jobs(1, start=9), None, NOW + 2)
        assert store_failure(refused.value) == STORE_FULL
        big = json.dumps("x" * 200_000)
        (out,) = await store.finish([done("j0", "w1", output_json=big)], NOW + 3)
        assert out.applied, out
        results, taken = await store.finish_and_claim(
            [done("j1", "w1", output_json="1")], Claim("ep", "w1", 2, NOW + 4, park=True)
        )
        assert [r.applied for r in results] == [True]
        assert [t.id for t in taken or []] == ["j3", "j4"], "queued jobs are still taken"
        with pytest.raises(redis.exceptions.ResponseError) as chunk:
            await store.push_chunks("j3", "w1", ['"c"'])
        assert store_failure(chunk.value) == STORE_FULL
        moved = await store.move(
            "j2", REQUEUE_OR_FAIL, NOW + 5, "lease lost", expect_from=(S.IN_PROGRESS,), expect_worker="w1"
        )
        assert moved.moved and moved.after is S.IN_QUEUE
        timed_out = await store.sweep("leases", NOW + 60_000, 10)
        assert {m.job_id for m in timed_out} == {"j3", "j4"}
        j0 = await store.get("j0")
        assert j0 is not None and (j0.status, j0.output_json) == (S.COMPLETED, big)
        client.close()
        await store.close()
    finally:
        embedded_redis.stop(data_dir)


async def test_submit_and_recover_100k_queued_jobs(redis_store: RedisStore) -> None:
    """Measured, not asserted: printed with ``-s``."""
    n, batch = 100_000, 10_000
    payload = "x" * 1000
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        chunk = [
            NewJob(f"b{i}", "bulk", json.dumps({"p": payload}), 600_000, 86_400_000, 3)
            for i in range(start, start + batch)
        ]
        await redis_store.submit("bulk", chunk, None, NOW)
    submit_s = time.perf_counter() - t0
    await redis_store.take("bulk", "w1", 1000, NOW)
    t0 = time.perf_counter()
    depth = await redis_store.depth("bulk")
    leases = await redis_store.leases()
    recover_s = time.perf_counter() - t0
    assert (depth, len(leases)) == (n - 1000, 1000)
    print(
        f"\n100k x 1 KB jobs: submit {submit_s:.2f} s ({n / submit_s:,.0f} jobs/s, batches of {batch}); "
        f"recover depth + 1,000 leases {recover_s * 1000:.1f} ms"
    )


async def apply_op(store: RedisStore | MemoryStore, op: tuple[Any, ...], now_ms: int) -> Any:
    """Run one operation and return its result in a comparable form."""
    name, *args = op
    try:
        if name == "submit":
            ep, n, start, low, limit = args
            return await store.submit(
                ep, jobs(n, start=start, low_priority=low, webhook="http://h/"), limit, now_ms
            )
        if name == "take":
            return [t.wire() for t in await store.take(*args, now_ms)]
        if name == "finish":
            return await store.finish([FinishItem(*args)], now_ms)
        if name == "move":
            job_id, to, expect_from, expect_worker = args
            return await store.move(
                job_id, to, now_ms, "op", expect_from=expect_from, expect_worker=expect_worker
            )
        if name == "sweep":
            return sorted(await store.sweep(args[0], now_ms, 1000), key=lambda m: m.job_id)
        if name == "push":
            return await store.push_chunks(*args)
        if name == "read":
            return await store.read_stream(args[0])
        if name == "progress":
            return await store.progress(*args)
        if name == "drain":
            return await store.set_draining(*args)
        if name == "purge":
            return await store.purge(args[0], now_ms)
    except (QueueFull, NotFound) as exc:
        return (type(exc).__name__, exc.message, exc.detail)
    raise AssertionError(name)


def random_ops(rng: random.Random, n: int) -> list[tuple[Any, ...]]:
    ops: list[tuple[Any, ...]] = []
    workers = ["w1", "w2"]
    nxt = 0
    kinds = ["submit", "take", "finish", "move", "sweep", "push", "read", "progress", "drain", "purge"]
    weights = [6, 8, 6, 8, 2, 2, 2, 1, 1, 0.3]
    for _ in range(n):
        ids = [f"j{i}" for i in range(nxt + 1)]  # the newest id is not there yet: an unknown job
        kind = rng.choices(kinds, weights)[0]
        if kind == "submit" and nxt < 36:
            k = rng.randint(1, 3)
            ops.append(("submit", rng.choice("ab"), k, nxt, rng.random() < 0.3, rng.choice([None, 6])))
            nxt += k
        elif kind == "take":
            ops.append(("take", rng.choice("ab"), rng.choice(workers), rng.randint(1, 3)))
        elif kind == "finish":
            to = rng.choice([S.COMPLETED, S.FAILED])
            out = rng.choice(["", "[]", '{"r":1}'])
            ops.append(("finish", rng.choice(ids), rng.choice(workers), to, out, "e", rng.random() < 0.5))
        elif kind == "move":
            to = rng.choice([REQUEUE_OR_FAIL, *(s.value for s in S)])
            frm = rng.choice([(), (S.IN_PROGRESS,), (S.FAILED, S.CANCELLED, S.TIMED_OUT)])
            ops.append(("move", rng.choice(ids), to, frm, rng.choice(["", *workers])))
        elif kind == "sweep":
            ops.append(("sweep", rng.choice(["ttl", "leases"])))
        elif kind in ("push", "progress"):
            ops.append((kind, rng.choice(ids), rng.choice(workers), ['"c"'] if kind == "push" else '"p"'))
        elif kind == "read":
            ops.append(("read", rng.choice(ids)))
        elif kind == "drain":
            ops.append(("drain", rng.choice(workers), rng.random() < 0.5))
        elif kind == "purge":
            ops.append(("purge", rng.choice("ab")))
    return ops


@pytest.mark.parametrize("seed", range(4))
async def test_memory_store_behaves_like_redis_store(redis_store: RedisStore, seed: int) -> None:
    """Differential test: the fake and the real store give the same replies and end in the same state."""
    rng = random.Random(seed)
    fake = MemoryStore()
    now_ms = NOW
    ids = [f"j{i}" for i in range(40)]
    for n, op in enumerate(random_ops(rng, 300)):
        now_ms += rng.choice([0, 0, 1, 100, 700, 3_000, 12_000])
        got, expected = await apply_op(fake, op, now_ms), await apply_op(redis_store, op, now_ms)
        assert got == expected, op
        for job_id in ids if n % 10 == 0 else [a for a in op if a in ids]:
            real, mine = await redis_store.get(job_id), await fake.get(job_id)
            assert (mine.detail(now_ms) if mine else None) == (real.detail(now_ms) if real else None), op
    assert await fake.get_fields(ids) == await redis_store.get_fields(ids)
    assert await fake.leases() == await redis_store.leases()
    assert await fake.list_jobs(100, None) == await redis_store.list_jobs(100, None)
    for ep in "ab":
        assert await fake.counts(ep) == await redis_store.counts(ep)
        assert await fake.depth(ep) == await redis_store.depth(ep)
        assert await fake.oldest_queued_ms(ep) == await redis_store.oldest_queued_ms(ep)
    assert await fake.draining_workers() == await redis_store.draining_workers()
    assert await fake.webhook_claim(3) == await redis_store.webhook_claim(3)
    assert await fake.webhook_recover() == await redis_store.webhook_recover()
    assert await fake.webhook_claim(1000) == await redis_store.webhook_claim(1000)


# The autoscaler's store: the same tests as on the in-memory fake, on Redis ------------------------------


@pytest.fixture
async def autoscaler_store(redis_url: str) -> AsyncIterator[RedisAutoscalerStore]:
    prefix = unique_prefix()
    store = RedisAutoscalerStore.connect(redis_url, prefix)
    try:
        yield store
    finally:
        await store.close()
        delete_prefix(redis_url, prefix)


async def test_autoscaler_lease_is_one_compare_and_set(
    autoscaler_store: RedisAutoscalerStore, redis_url: str
) -> None:
    """The lease is written by the script only: a holder's renewal resets the TTL, a non-holder's call
    leaves value and TTL alone, and a holder whose lease another instance took cannot renew it."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    key = autoscaler_store.k.autoscaler_leader
    try:
        assert await autoscaler_store.hold_lease("a", 60_000)
        assert client.get(key) == "a" and 59_000 < client.pttl(key) <= 60_000
        assert not await autoscaler_store.hold_lease("b", 90_000)
        assert client.get(key) == "a" and client.pttl(key) <= 60_000, "a non-holder changes nothing"
        assert await autoscaler_store.hold_lease("a", 90_000)
        assert client.pttl(key) > 60_000, "the holder's renewal resets the TTL"
        client.set(key, "c", px=60_000)  # another instance took it (the lease had expired meanwhile)
        assert not await autoscaler_store.hold_lease("a", 60_000), "a lost lease is not renewed"
        assert client.get(key) == "c" and client.pttl(key) <= 60_000
    finally:
        client.close()


# Rules shared by Python and Lua: one expression, the same answers ----------------------------------------

RULE_CASES = [(attempts, retries) for attempts in (0, 1, 2, 3, 5, 11) for retries in (0, 1, 2, 3, 10)]
SCORE_CASES = [(low, seq) for low in (0, 1) for seq in (0, 1, 2, 999, 2**31, 2**40, 2**50 - 1)]


async def test_rendered_rules_evaluate_like_python(redis_store: RedisStore) -> None:
    """Each rule's rendered Lua, run by Redis on a table of inputs, gives Python's answer."""
    requeue = REQUEUE_AFTER_LOST_LEASE.lua(
        {"attempts": "tonumber(ARGV[1])", "max_retries": "tonumber(ARGV[2])"}
    )
    score = QUEUE_SCORE.lua({"low": "tonumber(ARGV[1])", "seq": "tonumber(ARGV[2])"})
    for attempts, retries in RULE_CASES:
        lua = await redis_store.r.eval(f"if {requeue} then return 1 else return 0 end", 0, attempts, retries)
        expected = status_after_lost_lease(attempts, retries)
        assert (S.IN_QUEUE if lua == 1 else S.FAILED) is expected, (attempts, retries)
    for low, seq in SCORE_CASES:
        lua = await redis_store.r.eval(f"return string.format('%d', {score})", 0, low, seq)
        assert int(lua) == int(queue_score(bool(low), seq)), (low, seq)


@pytest.mark.parametrize("max_retries", [0, 1, 2, 4])
async def test_store_scripts_apply_the_shared_rules(
    redis_store: RedisStore, redis_url: str, max_retries: int
) -> None:
    """Through the real scripts: queued jobs carry queue_score's score, and a job whose lease is lost again
    and again goes back to the queue exactly while status_after_lost_lease says so."""
    await redis_store.submit("ep", jobs(1, max_retries=max_retries), None, NOW)
    await redis_store.submit("ep", jobs(1, start=1, low_priority=True), None, NOW)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        scores = [int(client.hget(redis_store.k.job(j), "score") or -1) for j in ("j0", "j1")]
        seq = int(client.get(redis_store.k.seq) or 0)
    finally:
        client.close()
    assert scores == [int(queue_score(False, seq - 1)), int(queue_score(True, seq))]
    outcomes = []
    for attempt in range(1, max_retries + 3):
        (taken,) = await redis_store.take("ep", "w", 1, NOW + attempt)
        assert taken.id == "j0" and taken.attempt == attempt
        moved = await redis_store.move(taken.id, REQUEUE_OR_FAIL, NOW + attempt, "lease lost")
        assert moved.moved
        outcomes.append(moved.after)
        if moved.after is S.FAILED:
            break
    assert outcomes == [status_after_lost_lease(a, max_retries) for a in range(1, len(outcomes) + 1)]
    assert outcomes[-1] is S.FAILED and len(outcomes) == max_retries + 1


async def test_the_store_parses_replies_in_c(redis_store: RedisStore) -> None:
    """Ripple depends on ``redis[hiredis]``: redis-py then parses every reply with hiredis, not in Python
    (Ripple's store calls 0.77-0.92x the time: ``bench/redis_parser.py``)."""
    from redis._parsers import _AsyncHiredisParser

    assert await redis_store.ping()
    conn = await redis_store.r.connection_pool.get_connection()
    try:
        assert isinstance(conn._parser, _AsyncHiredisParser), type(conn._parser)
    finally:
        await redis_store.r.connection_pool.release(conn)
