"""A replica's results finished in the store itself (``actors.queue_direct.DirectResults``) on the embedded
Redis, with a fake of the queue actor's two calls it makes (``store_address``, ``finished``): the same FINISH
step as the queue's ``done_many`` (first result wins), the queue told of every outcome, a caller waiting on
the store woken, and a result never cut off between the store and the queue when the replica stops."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.queue_direct import DirectResults
from orchestrator.core.jobs import JobStatus
from orchestrator.store.finals import wait_final
from orchestrator.store.redis import RedisStore
from tests.dispatch_behaviour import FakeClock, Recorder, ep, make, run

pytestmark = pytest.mark.timeout(30)


class _Method:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def remote(self, *args: Any) -> Any:
        return self.fn(*args)


class FakeQueue:
    """The queue actor's calls a replica's DirectResults makes: ``store_address`` (awaited) and
    ``finished`` (sent, recorded here)."""

    def __init__(self, url: str, prefix: str) -> None:
        self.address = {"redisUrl": url, "keyPrefix": prefix}
        self.told: list[tuple[str, str, list[Any]]] = []
        self.store_address = _Method(self._address)
        self.finished = _Method(lambda ep, wid, outcomes: self.told.append((ep, wid, list(outcomes))))

    async def _address(self) -> dict[str, str]:
        await asyncio.sleep(0.01)
        return self.address


async def _leased(store: RedisStore, n: int = 1) -> list[str]:
    d = make(store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    ids = await d.submit("ep", [run(k) for k in range(n)])
    assert len(await d.take("ep", "w1", n, 0)) == n
    return ids


async def test_results_finished_in_the_store_queue_told(redis_url: str, redis_store: RedisStore) -> None:
    job, other = await _leased(redis_store, 2)
    queue = FakeQueue(redis_url, redis_store.k.prefix)
    direct = DirectResults(queue, "ep", "w1")
    waiting = asyncio.create_task(wait_final(redis_store, job, 10))
    await asyncio.sleep(0.05)
    assert await direct.report([(job, {"output": {"y": 2}}), (other, {"error": "boom"})], False)
    view = await waiting
    assert view is not None and (view.status, view.output) == (JobStatus.COMPLETED, {"y": 2})
    ((endpoint, worker, outcomes),) = queue.told
    assert (endpoint, worker) == ("ep", "w1")
    assert [(o.job_id, o.applied, o.status) for o in outcomes] == [
        (job, True, JobStatus.COMPLETED),
        (other, True, JobStatus.FAILED),
    ]
    assert await direct.report([(job, {"output": "late"})], False), "refused in the store, the queue told"
    assert [(o.applied, o.status) for o in queue.told[-1][2]] == [(False, JobStatus.COMPLETED)]
    view = await redis_store.get(job)
    assert view is not None and view.output == {"y": 2}, "the first result wins"


async def test_progress_and_an_unreachable_store_go_through_the_queue(
    redis_url: str, redis_store: RedisStore
) -> None:
    (job,) = await _leased(redis_store)
    direct = DirectResults(FakeQueue(redis_url, redis_store.k.prefix), "ep", "w1")
    assert not await direct.report([(job, {"status": "IN_PROGRESS", "output": 1})], False)
    away = DirectResults(FakeQueue("unix:///nonexistent/redis.sock", redis_store.k.prefix), "ep", "w1")
    assert not await away.report([(job, {"output": 1})], False)
    view = await redis_store.get(job)
    assert view is not None and view.status is JobStatus.IN_PROGRESS, "nothing was finished here"


async def test_a_result_is_not_cut_off_by_a_stop(redis_url: str, redis_store: RedisStore) -> None:
    (job,) = await _leased(redis_store)
    queue = FakeQueue(redis_url, redis_store.k.prefix)
    direct = DirectResults(queue, "ep", "w1")
    flusher = asyncio.create_task(direct.report([(job, {"output": 1})], False))
    await asyncio.sleep(0)  # on its way (asking the queue where the store is)
    flusher.cancel()
    await direct.settle()
    view = await redis_store.get(job)
    assert view is not None and view.status is JobStatus.COMPLETED
    assert len(queue.told) == 1
