"""A replica's jobs taken from and results finished in the store itself (``actors.queue_direct.DirectStore``)
on the embedded Redis, with a fake of the queue actor's calls it makes (``store_address``, ``took``,
``finished``): the same TAKE step as the queue's ``take`` (a draining worker refused, the version recorded),
a replica blocked on an empty queue woken by the job's arrival, the same FINISH step as the queue's
``done_many`` (first result wins), the queue told of every outcome (in batches) and of every take still
running a moment later, a caller waiting on the store woken, and a result never cut off between the store
and the queue when the replica stops. The dispatcher keeps its memory of direct takes (``took``,
heartbeats, the store's own record of who holds what), so a dead worker's jobs are reclaimed at once."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from actors.queue_direct import TOLD_AFTER_S, DirectStore, JobResult
from orchestrator.core.deliveries import Deliveries
from orchestrator.core.dispatch import Dispatcher
from orchestrator.core.jobs import JobStatus
from orchestrator.core.models import NewJob
from orchestrator.notices import BOOKKEEPING_DELAY_S, NOTICE_DELAY_S
from orchestrator.store.finals import wait_final
from orchestrator.store.protocol import Claim, TakenJob
from orchestrator.store.redis import RedisStore
from orchestrator.store.scripts import WAKE_TOKENS
from tests.dispatch_behaviour import FakeClock, Recorder, ep, make, run

pytestmark = pytest.mark.timeout(30)


class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Any:
        return self.fn(*args)


class FakeQueue:
    """The queue actor's calls a replica's DirectStore makes: ``store_address`` (awaited), ``took`` and
    ``finished`` (sent, recorded here), ``redeliver`` (awaited: the dispatcher ``d``'s)."""

    def __init__(self, url: str, prefix: str, d: Dispatcher | None = None) -> None:
        self.d = d
        self.redeliver = _Method(self._redeliver)
        self.address = {"redisUrl": url, "keyPrefix": prefix, "retryS": 30.0}
        self.told: list[tuple[str, str, list[Any]]] = []
        self.taken: list[tuple[str, str, list[str]]] = []
        self.store_address = _Method(self._address)
        self.took = _Method(lambda ep, wid, ids: self.taken.append((ep, wid, list(ids))))
        self.finished = _Method(lambda ep, wid, outcomes: self.told.append((ep, wid, list(outcomes))))

    async def _address(self) -> dict[str, str]:
        await asyncio.sleep(0.01)
        return self.address

    async def _redeliver(self, endpoint: str, worker_id: str) -> dict[str, Any]:
        assert self.d is not None
        return await self.d.redeliver(endpoint, worker_id)


async def _leased(store: RedisStore, n: int = 1) -> list[str]:
    d = make(store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    ids = await d.submit("ep", [run(k) for k in range(n)])
    assert len(await d.take("ep", "w1", n, 0)) == n
    return ids


async def test_results_finished_in_the_store_queue_told(redis_url: str, redis_store: RedisStore) -> None:
    job, other = await _leased(redis_store, 2)
    queue = FakeQueue(redis_url, redis_store.k.prefix)
    direct = DirectStore(queue, "ep", "w1")
    waiting = asyncio.create_task(wait_final(redis_store, job, 10))
    await asyncio.sleep(0.05)
    assert await direct.report(
        [JobResult(job, {"output": {"y": 2}}, False), JobResult(other, {"error": "boom"}, False)]
    )
    view = await waiting
    assert view is not None and (view.status, view.output) == (JobStatus.COMPLETED, {"y": 2})
    await asyncio.sleep(NOTICE_DELAY_S + 0.05)
    assert queue.told == [], "no one waits at the queue: told with the results of the next half second"
    await asyncio.sleep(BOOKKEEPING_DELAY_S)
    ((endpoint, worker, outcomes),) = queue.told
    assert (endpoint, worker) == ("ep", "w1")
    assert [(o.job_id, o.applied, o.status) for o in outcomes] == [
        (job, True, JobStatus.COMPLETED),
        (other, True, JobStatus.FAILED),
    ]
    assert await direct.report([JobResult(job, {"output": "late"}, False)]), (
        "refused in the store, the queue told"
    )
    await direct.settle()  # a replica stopping: told at once
    assert [(o.applied, o.status) for o in queue.told[-1][2]] == [(False, JobStatus.COMPLETED)]
    view = await redis_store.get(job)
    assert view is not None and view.output == {"y": 2}, "the first result wins"


async def test_a_result_awaited_at_the_queue_is_told_at_once(redis_url: str, redis_store: RedisStore) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    awaited, other = await d.submit("ep", [run(1), run(2)])
    await d.take("ep", "w1", 2, 0)
    waiting = asyncio.create_task(d.wait_final("ep", awaited, 10))  # a caller that cannot reach the store
    await asyncio.sleep(0.05)
    queue = FakeQueue(redis_url, redis_store.k.prefix)
    direct = DirectStore(queue, "ep", "w1")
    assert await direct.report([JobResult(other, {"output": 2}, False)])
    assert queue.told == [], "nobody waits at the queue: told with the next batch"
    assert await direct.report([JobResult(awaited, {"output": 1}, False)])
    ((_, _, outcomes),) = queue.told
    assert [(o.job_id, o.awaited) for o in outcomes] == [(other, False), (awaited, True)], "told at once"
    await d.finished("ep", "w1", outcomes)
    assert (await asyncio.wait_for(waiting, 1.0))["output"] == 1, "the queue's waiter woken by it"


async def test_progress_and_an_unreachable_store_go_through_the_queue(
    redis_url: str, redis_store: RedisStore
) -> None:
    (job,) = await _leased(redis_store)
    direct = DirectStore(FakeQueue(redis_url, redis_store.k.prefix), "ep", "w1")
    assert not await direct.report([JobResult(job, {"status": "IN_PROGRESS", "output": 1}, False)])
    away = DirectStore(FakeQueue("unix:///nonexistent/redis.sock", redis_store.k.prefix), "ep", "w1")
    assert not await away.report([JobResult(job, {"output": 1}, False)])
    view = await redis_store.get(job)
    assert view is not None and view.status is JobStatus.IN_PROGRESS, "nothing was finished here"


async def test_a_result_is_not_cut_off_by_a_stop(redis_url: str, redis_store: RedisStore) -> None:
    (job,) = await _leased(redis_store)
    queue = FakeQueue(redis_url, redis_store.k.prefix)
    direct = DirectStore(queue, "ep", "w1")
    flusher = asyncio.create_task(direct.report([JobResult(job, {"output": 1}, False)]))
    await asyncio.sleep(0)  # on its way (asking the queue where the store is)
    flusher.cancel()
    await direct.settle()
    view = await redis_store.get(job)
    assert view is not None and view.status is JobStatus.COMPLETED
    assert len(queue.told) == 1


async def test_results_go_with_the_next_take_finished_first(redis_url: str, redis_store: RedisStore) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    done, late = await d.submit("ep", [run(1), run(2)])
    assert [j["id"] for j in await d.take("ep", "w1", 1, 0)] == [done]
    queue = FakeQueue(redis_url, redis_store.k.prefix)
    direct = DirectStore(queue, "ep", "w1")
    waiting = asyncio.create_task(wait_final(redis_store, done, 10))
    await asyncio.sleep(0.05)
    taken = await direct.take(2, 0.05, None, results=[JobResult(done, {"output": "ok"}, False)])
    assert [j["id"] for j in taken or []] == [late], "the take after the result, in the same step"
    view = await asyncio.wait_for(waiting, 1.0)
    assert view is not None and (view.status, view.output) == (JobStatus.COMPLETED, "ok")
    await asyncio.sleep(BOOKKEEPING_DELAY_S + NOTICE_DELAY_S)
    assert [(o.job_id, o.applied) for _, _, outcomes in queue.told for o in outcomes] == [(done, True)]
    assert await direct.take(1, 0.05, None, results=[JobResult(done, {"output": "again"}, False)]) == []
    await direct.settle()
    assert [(o.applied, o.status) for o in queue.told[-1][2]] == [(False, JobStatus.COMPLETED)], "refused"
    view = await redis_store.get(done)
    assert view is not None and view.output == "ok", "the first result wins"


async def test_results_finished_with_a_take_are_not_sent_again_when_the_wait_fails(
    redis_url: str, redis_store: RedisStore
) -> None:
    (job,) = await _leased(redis_store)
    queue = FakeQueue(redis_url, redis_store.k.prefix)
    direct = DirectStore(queue, "ep", "w1")
    store = await direct.store()
    assert store is not None

    async def lost(*_: Any) -> None:
        raise ConnectionError("the store went away during the wait")

    store.wait_for_job = lost  # type: ignore[method-assign]
    done = [JobResult(job, {"output": 1}, False)]
    assert await direct.take(1, 0.05, None, results=done) == [], "finished, none taken"
    view = await redis_store.get(job)
    assert view is not None and view.status is JobStatus.COMPLETED
    await direct.settle()
    assert [(o.job_id, o.applied) for _, _, outcomes in queue.told for o in outcomes] == [(job, True)]
    assert await direct.take(1, 0.05, None) is None, "without results: taken through the queue, as before"


async def test_a_take_with_a_result_not_final_does_nothing(redis_url: str, redis_store: RedisStore) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    held, _ = await d.submit("ep", [run(1), run(2)])
    await d.take("ep", "w1", 1, 0)
    direct = DirectStore(FakeQueue(redis_url, redis_store.k.prefix), "ep", "w1")
    progress = [JobResult(held, {"status": "IN_PROGRESS", "output": 1}, False)]
    assert await direct.take(1, 0.05, None, results=progress) is None, "the caller reports and takes"
    view = await redis_store.get(held)
    assert view is not None and view.status is JobStatus.IN_PROGRESS
    assert await redis_store.depth("ep") == 1, "nothing taken"


async def test_a_blocked_take_is_woken_by_the_job_and_the_queue_told(
    redis_url: str, redis_store: RedisStore
) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    queue = FakeQueue(redis_url, redis_store.k.prefix)
    direct = DirectStore(queue, "ep", "w1")
    assert await direct.take(1, 0.05, None) == [], "an empty queue: nothing, after the wait"
    taking = asyncio.create_task(direct.take(2, 5.0, 3))
    await asyncio.sleep(0.2)
    assert not taking.done(), "blocked while the queue is empty"
    (job,) = await d.submit("ep", [run({"x": 1})])
    taken = await asyncio.wait_for(taking, 4.0)  # woken by the job, well before its 5 s wait
    assert taken == [{"id": job, "input": {"x": 1}, "attempt": 1}]
    assert queue.taken == [], "the queue is told of a take only once the job has run a moment"
    await asyncio.sleep(TOLD_AFTER_S + 0.1)
    assert queue.taken == [("ep", "w1", [job])], "still running: told"
    view = await redis_store.get(job)
    assert view is not None and view.status is JobStatus.IN_PROGRESS and view.worker_id == "w1"
    assert view.version == 3


async def test_a_job_that_ends_at_once_is_told_with_its_result_only(
    redis_url: str, redis_store: RedisStore
) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    quick, slow = await d.submit("ep", [run(1), run(2)])
    queue = FakeQueue(redis_url, redis_store.k.prefix)
    direct = DirectStore(queue, "ep", "w1")
    assert [j["id"] for j in await direct.take(2, 0.05, None) or []] == [quick, slow]
    direct.ended(quick)
    assert await direct.report([JobResult(quick, {"output": 1}, False)])
    await asyncio.sleep(max(TOLD_AFTER_S, BOOKKEEPING_DELAY_S) + 0.1)
    assert queue.taken == [("ep", "w1", [slow])], "only the job still running is told of"
    assert [o.job_id for o in queue.told[0][2]] == [quick], "the quick one's result tells the queue"


async def test_a_draining_worker_takes_nothing_from_the_store(
    redis_url: str, redis_store: RedisStore
) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    await d.submit("ep", [run(1)])
    await redis_store.set_draining("w1", True)
    direct = DirectStore(FakeQueue(redis_url, redis_store.k.prefix), "ep", "w1")
    assert await direct.take(1, 0.05, None) == []
    assert await DirectStore(FakeQueue(redis_url, redis_store.k.prefix), "ep", "w2").take(1, 0.05, None)
    away = DirectStore(FakeQueue("unix:///nonexistent/redis.sock", redis_store.k.prefix), "ep", "w3")
    assert await away.take(1, 0.05, None) is None, "an unreachable store: the caller takes through the queue"


async def test_wake_tokens_are_capped_and_a_requeued_job_pushes_one(redis_store: RedisStore) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep(maxRetries=1))
    await d.submit("ep", [run(k) for k in range(WAKE_TOKENS * 3)])
    wake = redis_store.k.wake("ep")
    assert await redis_store.r.llen(wake) == WAKE_TOKENS
    await redis_store.r.delete(wake)
    (taken,) = await d.take("ep", "w1", 1, 0)
    assert await d.worker_gone("w1", "died") == 1  # back to the queue: a replica blocked on it wakes
    assert await redis_store.r.llen(wake) == 1
    assert (await redis_store.get(taken["id"])).status is JobStatus.IN_QUEUE  # type: ignore[union-attr]


async def test_jobs_taken_from_the_store_are_reclaimed_when_their_worker_dies(
    redis_store: RedisStore,
) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep(maxRetries=1))
    told, beaten, silent = await d.submit("ep", [run(1), run(2), run(3)])
    assert [j.id for j in await redis_store.take("ep", "w1", 1, 0)] == [told]
    d.took("ep", "w1", [told])  # the replica's notification
    assert [j.id for j in await redis_store.take("ep", "w2", 1, 0)] == [beaten]
    assert await d.ping("ep", "w2", [beaten], "ray") == []  # its notification lost: its heartbeat says
    assert [j.id for j in await redis_store.take("ep", "w3", 1, 0)] == [silent]  # lost before it told
    assert await d.worker_gone("w1", "died") == 1
    assert await d.worker_gone("w2", "died") == 1
    assert await d.worker_gone("w3", "died") == 1, "the store says what it held"
    for job in (told, beaten, silent):
        view = await redis_store.get(job)
        assert view is not None and view.status is JobStatus.IN_QUEUE, "reclaimed at once, not at a timeout"


async def test_a_blocked_take_ends_when_the_replica_drains(redis_url: str, redis_store: RedisStore) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    direct = DirectStore(FakeQueue(redis_url, redis_store.k.prefix), "ep", "w1")
    drained = asyncio.Event()
    taking = asyncio.create_task(direct.take(1, 5.0, None, drained))
    await asyncio.sleep(0.2)
    assert not taking.done()
    drained.set()
    assert await asyncio.wait_for(taking, 2.0) == [], "ended by the drain, not by its 5 s wait"
    (job,) = await d.submit("ep", [run(1)])
    assert [j["id"] for j in await direct.take(1, 1.0, None) or []] == [job], "the store still answers"


async def test_a_job_is_handed_to_a_parked_replica_leased_with_its_input(
    redis_url: str, redis_store: RedisStore
) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    direct = DirectStore(FakeQueue(redis_url, redis_store.k.prefix), "ep", "w1")
    taking = asyncio.create_task(direct.take(1, 5.0, 7))
    await asyncio.sleep(0.2)
    assert await redis_store.r.lrange(redis_store.k.parked("ep"), 0, -1) == ["w1"], "parked while idle"
    handed, queued = await d.submit("ep", [run({"x": 1}), run({"x": 2})])
    assert await asyncio.wait_for(taking, 4.0) == [{"id": handed, "input": {"x": 1}, "attempt": 1}]
    view = await redis_store.get(handed)
    assert view is not None
    assert (view.status, view.worker_id, view.version) == (JobStatus.IN_PROGRESS, "w1", 7)
    assert [(h["from"], h["to"], h["reason"], h["worker"]) for h in view.history] == [
        ("IN_QUEUE", "IN_PROGRESS", "taken", "w1")
    ]
    assert await redis_store.r.llen(redis_store.k.parked("ep")) == 0, "unparked by the hand-off"
    assert await redis_store.r.hlen(redis_store.k.parked_at) == 0
    assert await redis_store.r.llen(redis_store.k.wake("ep")) == 1, "a token for the job left queued only"
    assert (await redis_store.get(queued)).status is JobStatus.IN_QUEUE  # type: ignore[union-attr]
    assert [j["id"] for j in await direct.take(1, 0.05, 7) or []] == [queued]


async def test_the_queue_is_told_soon_of_a_result_with_a_webhook_or_a_caller_waiting_there(
    redis_url: str, redis_store: RedisStore
) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    plain, hooked, awaited = "j-plain", "j-hooked", "j-awaited"
    jobs = [_job(plain), _job(hooked, webhook="http://hook/"), _job(awaited)]
    await redis_store.submit("ep", jobs, None, 0)
    assert len(await d.take("ep", "w1", 3, 0)) == 3
    await redis_store.watch_final(awaited, at_queue=True)  # a caller waits for it at the queue
    queue = FakeQueue(redis_url, redis_store.k.prefix)
    direct = DirectStore(queue, "ep", "w1")
    assert await direct.report([JobResult(plain, {"output": 1}, False)])
    assert await direct.report([JobResult(hooked, {"output": 2}, False)])
    await asyncio.sleep(NOTICE_DELAY_S + 0.05)
    assert [[o.job_id for o in outcomes] for _, _, outcomes in queue.told] == [[plain, hooked]], (
        "a webhook to send: told within 50 ms, with what was gathered before it"
    )
    assert await direct.report([JobResult(awaited, {"output": 3}, False)])
    assert [o.job_id for o in queue.told[-1][2]] == [awaited], "a caller waits at the queue: told at once"


def _job(job_id: str, webhook: str | None = None) -> NewJob:
    return NewJob(
        id=job_id, endpoint="ep", input_json="1", execution_timeout_ms=10_000, ttl_ms=60_000, max_retries=0,
        webhook=webhook,
    )  # fmt: skip


async def test_a_parked_replica_is_passed_over_once_draining_or_lost(redis_store: RedisStore) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    for worker in ("w1", "w2", "w2"):  # parking twice parks once
        assert await redis_store.claim(Claim("ep", worker, 1, 0, park=True)) == []
    assert await redis_store.r.lrange(redis_store.k.parked("ep"), 0, -1) == ["w1", "w2"]
    await redis_store.set_draining("w1", True)
    assert await d.worker_gone("w2", "died") == 0  # unparked before the store is asked what it held
    (job,) = await d.submit("ep", [run(1)])
    assert (await redis_store.get(job)).status is JobStatus.IN_QUEUE  # type: ignore[union-attr]
    assert await redis_store.r.llen(redis_store.k.parked("ep")) == 0
    assert await redis_store.r.llen(redis_store.k.wake("ep")) == 1


async def test_a_large_input_is_handed_to_a_parked_replica_by_reference(redis_store: RedisStore) -> None:
    """An input over INBOX_INPUT_BYTES is not copied into the inbox entry: the replica reads it from the job,
    whether its wait or its next take from the store reads the entry."""
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    image = {"image": "iVBORw0KGgo" * 10_000}  # 110 kB of JSON
    inbox = redis_store.k.inbox("w1")
    assert await redis_store.claim(Claim("ep", "w1", 1, 0, park=True)) == []
    (small,) = await d.submit("ep", [run({"x": 1})])
    assert await redis_store.r.lrange(inbox, 0, -1) == [f'{small}\n1\n{{"x":1}}'], "a small one inline"
    assert await redis_store.wait_for_job("ep", "w1", 1.0) == TakenJob(small, {"x": 1}, 1)
    assert await redis_store.claim(Claim("ep", "w1", 1, 0, park=True)) == []
    (large,) = await d.submit("ep", [run(image)])
    assert await redis_store.r.lrange(inbox, 0, -1) == [f"{large}\n1\n"], "a large one by reference"
    assert await redis_store.wait_for_job("ep", "w1", 1.0) == TakenJob(large, image, 1)
    assert await redis_store.claim(Claim("ep", "w1", 1, 0, park=True)) == []
    (other,) = await d.submit("ep", [run(image)])
    assert await redis_store.r.lrange(inbox, 0, -1) == [f"{other}\n1\n"]
    assert await redis_store.claim(Claim("ep", "w1", 1, 0)) == [TakenJob(other, image, 1)], "read in CLAIM"


async def test_a_handed_job_is_never_lost_by_a_drain(redis_url: str, redis_store: RedisStore) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    assert await redis_store.claim(Claim("ep", "w1", 1, 0, park=True)) == []
    handed, queued = await d.submit("ep", [run(1), run(2)])
    await redis_store.set_draining("w1", True)
    await redis_store.nudge("w1")  # a drain's wake-up, after the hand-off
    claimed = await redis_store.claim(Claim("ep", "w1", 2, 0))
    assert [j.id for j in claimed] == [handed], "its own job, leased to it: nothing more while draining"
    assert await redis_store.wait_for_job("ep", "w1", 0.05) is None, "the marker went with the inbox"
    # A replica stopping while parked: the wait ends at once, and what was handed is still returned.
    direct = DirectStore(FakeQueue(redis_url, redis_store.k.prefix), "ep", "w2")
    assert [j["id"] for j in await direct.take(1, 0.05, None) or []] == [queued], "from the queue first"
    drained = asyncio.Event()
    taking = asyncio.create_task(direct.take(1, 5.0, None, drained))
    await asyncio.sleep(0.2)
    (late,) = await d.submit("ep", [run(3)])
    drained.set()
    assert [j["id"] for j in await asyncio.wait_for(taking, 2.0) or []] == [late]


async def test_a_parked_replica_is_handed_the_job_take_would_give_it(redis_store: RedisStore) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    assert await redis_store.claim(Claim("ep", "w1", 1, 0, park=True)) == []
    low, normal = await d.submit("ep", [run(1, policy={"lowPriority": True}), run(2)])
    (handed,) = await redis_store.claim(Claim("ep", "w1", 0, 0))
    assert handed.id == normal, "normal priority first, whatever the order in the request"
    assert (await redis_store.get(low)).status is JobStatus.IN_QUEUE  # type: ignore[union-attr]
    assert await redis_store.r.zrange(redis_store.k.queue("ep"), 0, -1) == [low]


async def test_a_deleted_endpoints_parked_replicas_are_not_handed_the_next_ones_jobs(
    redis_store: RedisStore,
) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    assert await redis_store.claim(Claim("ep", "w1", 1, 0, park=True)) == []
    await d.delete_endpoint("ep")
    await d.create_endpoint(ep())  # the same name again: w1 was a replica of the endpoint deleted
    (job,) = await d.submit("ep", [run(1)])
    assert (await redis_store.get(job)).status is JobStatus.IN_QUEUE  # type: ignore[union-attr]
    assert await redis_store.r.hlen(redis_store.k.parked_at) == 0


async def test_a_job_handed_while_the_store_was_cut_off_runs_once_through_the_queue(
    redis_url: str, redis_store: RedisStore
) -> None:
    """A partition between a parked replica and Redis: the job SUBMIT hands it never arrives (its wait's
    reply is lost), and its next step hangs with no error. The step fails at its time limit; the queue then
    hands the replica every job the store leased to it, unparks it and empties its inbox, and the replica
    runs the one it never received, instead of the job waiting for its execution timeout."""
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    direct = DirectStore(FakeQueue(redis_url, redis_store.k.prefix, d), "ep", "w1", step_timeout_s=0.3)
    deliveries = Deliveries()  # as the replica keeps it
    (first,) = await d.submit("ep", [run(1)])
    assert [j["id"] for j in deliveries.fresh(await direct.take(1, 0.05, None) or [])] == [first]
    assert await direct.redelivered() == [], "no take failed"
    assert await redis_store.claim(Claim("ep", "w1", 1, d.now_ms(), park=True)) == []  # parked
    (handed,) = await d.submit("ep", [run(2)])
    inbox = redis_store.k.inbox("w1")
    assert await redis_store.r.lpop(inbox), "handed to it; the reply never reaches it"
    await redis_store.r.execute_command("CLIENT", "PAUSE", "800", "WRITE")  # its next step hangs
    t0_s = time.monotonic()
    assert await direct.take(1, 0.05, None) is None, "failed at its time limit: through the queue"
    assert time.monotonic() - t0_s < 0.7
    again = await direct.redelivered()  # the queue's read waits for the pause to end
    assert sorted(j["id"] for j in again) == sorted([first, handed]), "all it holds, as the store says"
    assert deliveries.fresh(again) == [{"id": handed, "input": 2, "attempt": 1}], "runs the lost one once"
    assert await direct.redelivered() == [], "once per failure"
    (later,) = await d.submit("ep", [run(3)])
    view = await redis_store.get(later)
    assert view is not None and view.status is JobStatus.IN_QUEUE, "unparked: not handed to it"
    assert await direct.report([JobResult(handed, {"output": 2}, False)])
    view = await redis_store.get(handed)
    assert view is not None and (view.status, view.output, view.attempts) == (JobStatus.COMPLETED, 2, 1)
    # Cut off before its wait read the inbox: the job handed stays there. Delivered again, it is gone from
    # the inbox, so the replica's next take from the store does not hand it over a second time.
    fence = int(await redis_store.r.get(redis_store.k.fence("w1")))  # the replica's, since the redelivery
    assert await redis_store.claim(Claim("ep", "w1", 0, d.now_ms(), park=True, fence=fence)) == []
    (last,) = await d.submit("ep", [run(4)])  # hands it the oldest job queued: `later`
    assert await redis_store.r.llen(inbox) == 1
    await redis_store.r.execute_command("CLIENT", "PAUSE", "500", "WRITE")
    assert await direct.take(1, 0.05, None) is None
    assert [j["id"] for j in deliveries.fresh(await direct.redelivered())] == [later]
    assert [j["id"] for j in await direct.take(2, 0.05, None) or []] == [last], "not the handed job again"


async def test_a_take_that_reaches_the_store_after_a_redelivery_takes_nothing(
    redis_url: str, redis_store: RedisStore
) -> None:
    """A take held in a partitioned connection until after the queue's redelivery read: had it taken a job
    or parked the replica, the job would be leased to a replica that never receives it, behind the read.
    The redelivery raises the replica's fence; the late take carries the old one and is refused whole; the
    replica's own next take is refused too until it asks for its jobs again and learns the new fence."""
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    (queued,) = await d.submit("ep", [run(1)])
    again = await d.redeliver("ep", "w1")  # the replica's take failed: the queue reads what it holds
    assert again["jobs"] == [] and again["fence"] >= 1
    late = Claim("ep", "w1", 1, d.now_ms(), park=True, fence=again["fence"] - 1)
    assert await redis_store.claim(late) is None, "the late take: refused"
    view = await redis_store.get(queued)
    assert view is not None and view.status is JobStatus.IN_QUEUE, "no job leased behind the read"
    assert await redis_store.r.hlen(redis_store.k.parked_at) == 0, "not parked either"
    assert await redis_store.finish_and_claim([], late) == ([], None), "the take in a finish-and-take too"
    # A replica whose take the store refused asks for its jobs again, then takes with the fence it gets.
    direct = DirectStore(FakeQueue(redis_url, redis_store.k.prefix, d), "ep", "w1")
    assert await direct.take(1, 0.05, None) == [], "fenced (it never learned the fence): nothing taken"
    assert await direct.redelivered() == [], "asked again: it holds nothing"
    assert [j["id"] for j in await direct.take(1, 0.05, None) or []] == [queued], "the new fence takes"
    assert await direct.redelivered() == [], "no take failed since"
