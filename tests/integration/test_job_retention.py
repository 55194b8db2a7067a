"""Finished jobs deleted by Redis itself once kept ``RIPPLE_KEEP_RESULTS_S`` (the scripts' ``log`` step), on
the embedded Redis: every key of a finished job gets the expiry, whichever step made it final and whoever
finished it (the queue, or a replica in the store itself); a retried job's keys lose it; the listing passes
over ids of deleted jobs, however many, and the queue's sweep trims them."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.core.dispatch_workers import finish_item
from orchestrator.store.protocol import Claim
from orchestrator.store.redis import RedisStore
from tests.dispatch_behaviour import FakeClock, Recorder, Settings, ep, make, run

pytestmark = pytest.mark.timeout(60)


async def _ttls_ms(store: RedisStore, job_id: str) -> list[int]:
    """PTTL of the job's hash, history and stream (-1: no expiry, -2: no such key)."""
    k = store.k
    return [int(await store.r.pttl(key)) for key in (k.job(job_id), k.hist(job_id), k.stream(job_id))]


async def test_every_key_of_a_finished_job_expires_and_a_retried_one_keeps_them(
    redis_store: RedisStore,
) -> None:
    d = make(redis_store, FakeClock(), Recorder(), settings=Settings(keep_results_s=60))
    await d.create_endpoint(ep())
    streamed, direct, failed, queued = await d.submit("ep", [run(1), run(2), run(3), run(4)])
    assert [j["id"] for j in await d.take("ep", "w1", 1, 0)] == [streamed]
    await d.stream_push("ep", "w1", streamed, ["a"])
    await d.done("ep", "w1", streamed, {"output": ["a"]}, is_stream=True)
    # A replica finishing in the store itself (actors.queue_direct): the same step, the same expiry.
    (taken,) = await redis_store.claim(Claim("ep", "w2", 1, d.now_ms()))
    assert taken.id == direct
    item = finish_item(direct, "w2", {"output": {"image": "..."}}, False)
    assert item is not None
    _, next_jobs = await redis_store.finish_and_claim([item], Claim("ep", "w2", 1, d.now_ms()))
    assert next_jobs is not None and [j.id for j in next_jobs] == [failed]
    await d.cancel("ep", queued)  # final before any other step wrote its history
    for job_id in (streamed, direct, queued):
        job, hist, stream = await _ttls_ms(redis_store, job_id)
        assert 0 < job <= 60_000 and 0 < hist <= 60_000, job_id
        assert 0 < stream <= 60_000 if job_id == streamed else stream == -2
    await d.done("ep", "w2", failed, {"error": "boom"})
    assert (await _ttls_ms(redis_store, failed))[:2] != [-1, -1]
    await d.retry("ep", failed)
    assert (await _ttls_ms(redis_store, failed))[:2] == [-1, -1], "retried: kept until it ends again"


async def test_kept_for_ever_when_the_setting_is_zero(redis_store: RedisStore) -> None:
    d = make(redis_store, FakeClock(), Recorder(), settings=Settings(keep_results_s=0))
    await d.create_endpoint(ep())
    (job,) = await d.submit("ep", [run(1)])
    await d.cancel("ep", job)
    assert (await _ttls_ms(redis_store, job))[:2] == [-1, -1]


async def test_the_listing_passes_over_many_deleted_jobs_and_the_sweep_trims_them(
    redis_store: RedisStore,
) -> None:
    clock = FakeClock()
    d = make(redis_store, clock, Recorder(), settings=Settings(keep_results_s=0.1))
    await d.create_endpoint(ep())
    (old,) = await d.submit("ep", [run(0)])
    clock.advance(1.0)
    many = await d.submit("ep", [run(i) for i in range(1, 1201)])
    await d.purge("ep")  # every one of them CANCELLED
    await asyncio.sleep(0.3)
    clock.advance(1.0)
    (new,) = await d.submit("ep", [run(-1)])
    assert len(await redis_store.list_jobs(2000, None)) == 1202, "not trimmed yet: Redis deleted the jobs"
    listed = await d.list_jobs(None, None, 10, None)
    assert [j["id"] for j in listed["jobs"]] == [new] and listed["nextCursor"] is None
    assert [await redis_store.get(j) for j in [old, *many[:5]]] == [None] * 6
    await d.sweep_once()
    assert [job_id for job_id, _ in await redis_store.list_jobs(2000, None)] == [new]
