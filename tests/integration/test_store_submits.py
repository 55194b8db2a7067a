"""Jobs written to the store by callers other than the queue actor (``RedisStore.submit_and_wait``, its
blocking twin ``SyncFinals.submit_request``) and their ends awaited there (``wait_final``), on the embedded
Redis: the endpoint's spec read once and kept, a job never written from a spec that changed or for an
endpoint deleted since, ``maxQueueSize`` enforced, a job marked watched at submit woken at its end without a
watch step, and a wait for another endpoint's job or no job at all answered at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from orchestrator.core.errors import NotFound, QueueFull
from orchestrator.core.jobs import JobStatus
from orchestrator.core.models import EndpointPatch, RunRequest
from orchestrator.store.finals import SyncFinals, wait_final
from orchestrator.store.protocol import Claim
from orchestrator.store.redis import RedisStore
from tests.dispatch_behaviour import FakeClock, Recorder, ep, make, run

pytestmark = pytest.mark.timeout(30)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def _submit(store: RedisStore, endpoint: str, request: RunRequest, watch: bool = False) -> str:
    """A job written to the store without waiting for it (``submit_and_wait`` with no wait)."""
    return (await store.submit_and_wait(endpoint, request, _now_ms(), 0.0, watch=watch)).job_id


async def test_the_spec_is_read_once_and_a_changed_one_is_read_again(
    redis_store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep(executionTimeout=60_000))
    reads: list[str] = []
    load = redis_store.load_endpoint

    async def counted(name: str) -> str | None:
        reads.append(name)
        return await load(name)

    monkeypatch.setattr(redis_store, "load_endpoint", counted)
    first = [await _submit(redis_store, "ep", run(k)) for k in range(5)]
    assert reads == ["ep"], "the spec is read for the first job only"
    await d.update_endpoint("ep", EndpointPatch.model_validate({"executionTimeout": 5_000}))
    changed = await _submit(redis_store, "ep", run(9))
    assert reads == ["ep", "ep"], "read again once the store refused the job built from the old one"
    views = [await redis_store.get(j) for j in [*first, changed]]
    assert [v.execution_timeout_ms for v in views if v] == [60_000] * 5 + [5_000], "built from the new spec"
    assert await redis_store.depth("ep") == 6, "the job refused for its old spec was not written"


async def test_a_deleted_endpoint_and_a_full_queue_refuse_the_job(redis_store: RedisStore) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep(maxQueueSize=1))
    await _submit(redis_store, "ep", run())
    with pytest.raises(QueueFull):
        await _submit(redis_store, "ep", run())
    await d.purge("ep")
    await d.delete_endpoint("ep")
    with pytest.raises(NotFound):
        await _submit(redis_store, "ep", run())
    with pytest.raises(NotFound):
        await _submit(redis_store, "nope", run())
    assert await redis_store.depth("ep") == 0


async def test_the_submitter_learns_whether_its_job_went_straight_to_a_parked_replica(
    redis_url: str, redis_store: RedisStore
) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    finals = SyncFinals(redis_url, redis_store.k.prefix)
    try:
        for worker, submit in (
            ("w1", lambda: redis_store.submit_and_wait("ep", run(), _now_ms(), 0.0)),
            ("w2", lambda: asyncio.to_thread(finals.submit_request, "ep", run(), _now_ms())),
        ):
            assert await redis_store.claim(Claim("ep", worker, 1, _now_ms(), park=True)) == [], "it parks"
            first, second = await submit(), await submit()
            assert (first.handed, second.handed) == (True, False), "handed to the parked one, then queued"
            assert await redis_store.depth("ep") == 1
            await d.purge("ep")
    finally:
        finals.close()


async def test_a_job_watched_at_submit_is_woken_at_its_end(redis_store: RedisStore) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    await d.create_endpoint(ep("other"))
    unwatched = await _submit(redis_store, "ep", run(2))
    job = await _submit(redis_store, "ep", run(3), watch=True)
    assert [await redis_store.r.hget(redis_store.k.job(j), "watch") for j in (unwatched, job)] == [None, "1"]
    await d.cancel("ep", unwatched)
    waiting = asyncio.create_task(wait_final(redis_store, job, 10, "ep", watched=True))
    await asyncio.sleep(0.05)
    assert [j["id"] for j in await d.take("ep", "w1", 1, 0)] == [job]
    await d.done("ep", "w1", job, {"output": 6})
    view = await waiting
    assert view is not None and (view.status, view.output) == (JobStatus.COMPLETED, 6)
    assert await wait_final(redis_store, job, 10, "other") is None, "another endpoint's job: at once"
    assert await wait_final(redis_store, "no-such-job", 10) is None


def test_the_blocking_client_submits_and_waits_the_same_way(redis_url: str, redis_store: RedisStore) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    finals = SyncFinals(redis_url, redis_store.k.prefix)
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(d.create_endpoint(ep(maxQueueSize=2)))
        job, handed, _ = finals.submit_request("ep", run(4), _now_ms(), watch=True)
        assert not handed, "no replica is parked"
        view = finals.wait_final(job, 0.1, "ep", watched=True)
        assert view is not None and view.status is JobStatus.IN_QUEUE, "as it is when the wait runs out"
        loop.run_until_complete(d.take("ep", "w1", 1, 0))
        loop.run_until_complete(d.done("ep", "w1", job, {"output": 8}))
        view = finals.wait_final(job, 10, "ep", watched=True)
        assert view is not None and (view.status, view.output) == (JobStatus.COMPLETED, 8)
        assert finals.wait_final(job, 10, "other") is None
        finals.submit_request("ep", run(), _now_ms())
        finals.submit_request("ep", run(), _now_ms())
        with pytest.raises(QueueFull):
            finals.submit_request("ep", run(), _now_ms())
        loop.run_until_complete(d.purge("ep"))
        loop.run_until_complete(d.delete_endpoint("ep"))
        with pytest.raises(NotFound):
            finals.submit_request("ep", run(), _now_ms())
    finally:
        finals.close()
        loop.run_until_complete(redis_store.close())
        loop.close()


async def test_submit_and_wait_is_one_round_trip_and_a_refusal_does_not_wait(redis_store: RedisStore) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep(maxQueueSize=1))
    queued, handed, view = await redis_store.submit_and_wait("ep", run(5), _now_ms(), 0.2)
    assert not handed, "no replica is parked"
    assert view is not None and (view.id, view.status) == (queued, JobStatus.IN_QUEUE), "when the wait ended"
    start_s = time.monotonic()
    with pytest.raises(QueueFull):
        await redis_store.submit_and_wait("ep", run(6), _now_ms(), 5.0)
    assert time.monotonic() - start_s < 1.0, "a refused job ends the wait pipelined after it at once"
    await d.purge("ep")

    async def worker() -> None:
        while not (taken := await d.take("ep", "w1", 1, 0)):
            await asyncio.sleep(0.01)
        await d.done("ep", "w1", taken[0]["id"], {"output": 14})

    await redis_store.r.script_flush()  # Redis lost its scripts (a restart): loaded again
    working = asyncio.create_task(worker())
    job_id, _, view = await redis_store.submit_and_wait("ep", run(7), _now_ms(), 5.0)
    await working
    assert view is not None and (view.id, view.status, view.output) == (job_id, JobStatus.COMPLETED, 14)
