"""A job's status reply built from the store by the API (``QueueClient.runsync`` / ``final_or_status`` and
``api.job_replies.status_reply``), on the embedded Redis: the output goes out as the text its worker's
result was stored as (encoded once, never decoded on the way), the reply is the status object the queue
would have given, and only a queued job's status (its ``waitReason``) or an unknown one goes through the
queue."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.api import schemas as s
from orchestrator.api.deps import QueueClient
from orchestrator.api.job_replies import status_reply
from orchestrator.core.dispatch import Dispatcher
from orchestrator.core.errors import NotFound
from orchestrator.core.jobs import JobView
from orchestrator.store.redis import RedisStore
from tests.dispatch_behaviour import FakeClock, Recorder, ep, make, run

pytestmark = pytest.mark.timeout(30)


class _Method:
    """One actor method of the fake queue: ``.remote(...)`` gives what the call gives (awaited as Ray's
    reference would be)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.calls = 0

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.fn(*args, **kwargs)


class QueueActor:
    """The queue actor's calls these paths make, answered by a real dispatcher on the same store."""

    def __init__(self, d: Dispatcher) -> None:
        self.status = _Method(d.status)
        self.submitted = _Method(lambda *args, **kwargs: None)


def client_of(store: RedisStore, actor: QueueActor) -> QueueClient:
    async def store_at_hand() -> RedisStore:
        return store

    return QueueClient(lambda: actor, store=store_at_hand, runsync_wait_s=lambda: 10.0)


def body_of(reply: Any) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(bytes(reply.body))
    return value


async def test_runsync_replies_with_the_output_as_stored_and_the_status_object_around_it(
    redis_store: RedisStore,
) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    client = client_of(redis_store, QueueActor(d))
    output = {"image": "iVBORw0KGgo" * 50_000, "caption": "un café ✓", "score": float("nan"), "n": [1, 2.5]}

    async def worker() -> None:
        while not (jobs := await d.take("ep", "w1", 1, 0)):
            await asyncio.sleep(0.01)
        await d.done("ep", "w1", jobs[0]["id"], {"output": output})

    working = asyncio.create_task(worker())
    job = await client.runsync("ep", run({"prompt": "a cat"}), None)
    await working
    assert isinstance(job, JobView), "final: read from the store, not through the queue"
    assert job.input_json == "", "the wait reads the job's status fields back, not its input"
    stored = await redis_store.r.hget(redis_store.k.job(job.id), "output")
    reply = status_reply(job, int(time.time() * 1000))
    assert reply.media_type == "application/json"
    assert bytes(reply.body).endswith(f',"output":{stored}}}'.encode()), "the stored text, as it is"
    got = body_of(reply)
    assert got["output"] == {**output, "score": None}, "NaN goes out as null, as the API always sent it"
    assert got == {**job.status_object(int(time.time() * 1000)), "executionTime": got["executionTime"]}
    assert s.JobStatusObject.model_validate(got).status == "COMPLETED"


async def test_status_reads_running_and_final_jobs_from_the_store_and_queued_ones_through_the_queue(
    redis_store: RedisStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make(redis_store, FakeClock(), Recorder())
    await d.create_endpoint(ep())
    await d.create_endpoint(ep("other"))
    actor = QueueActor(d)
    client = client_of(redis_store, actor)
    running, queued = await d.submit("ep", [run(1), run(2)])
    (failed,) = await d.submit("other", [run(3)])
    assert [j["id"] for j in await d.take("ep", "w1", 1, 0)] == [running]
    await d.done("ep", "w1", running, {"status": "IN_PROGRESS", "output": {"step": 3, "of": 30}})
    assert [j["id"] for j in await d.take("other", "w2", 1, 0)] == [failed]
    await d.done("other", "w2", failed, {"error": "CUDA out of memory"})

    view = await client.final_or_status("ep", running)
    assert isinstance(view, JobView) and actor.status.calls == 0
    shown = body_of(status_reply(view, int(time.time() * 1000)))
    assert (shown["status"], shown["output"], shown["workerId"]) == (
        "IN_PROGRESS",
        {"step": 3, "of": 30},
        "w1",
    )

    view = await client.final_or_status("other", failed)
    assert isinstance(view, JobView) and actor.status.calls == 0
    shown = body_of(status_reply(view, int(time.time() * 1000)))
    assert (shown["status"], shown["error"]) == ("FAILED", "CUDA out of memory")
    assert "output" not in shown, "a failed job without output has no output key"

    reads: list[str] = []
    for name in ("get", "get_statuses", "get_many"):
        method = getattr(redis_store, name)

        async def counted(*args: Any, _m: Any = method, _n: str = name) -> Any:
            reads.append(_n)
            return await _m(*args)

        monkeypatch.setattr(redis_store, name, counted)
    status = await client.final_or_status("ep", queued)
    assert isinstance(status, s.JobStatusObject) and actor.status.calls == 1
    assert status.status == "IN_QUEUE" and status.waitReason is not None, "the queue says why it waits"
    assert reads == ["get_statuses"], "a queued job is read once per poll, by the API, without its input"

    with pytest.raises(NotFound):
        await client.final_or_status("ep", failed)  # another endpoint's job: the queue's NotFound
    with pytest.raises(NotFound):
        await client.final_or_status("ep", "no-such-job")
