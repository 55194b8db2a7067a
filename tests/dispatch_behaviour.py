"""The dispatcher's behaviour suite, run against every store: each layer's module imports these tests and
provides a ``store`` fixture (``tests/unit/test_dispatch.py``: MemoryStore; ``tests/integration/
test_dispatch_redis.py``: RedisStore on the embedded Redis). Nothing here needs Ray.

Time is a :class:`FakeClock`: wall time only moves when a test advances it (leases, ttl, heartbeats are
decided on it); monotonic time is the real one plus the same offset, so long-polls still time out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from orchestrator.core.dispatch import Dispatcher, new_job
from orchestrator.core.dispatch_ports import PackageShelf
from orchestrator.core.dispatch_workers import finish_item
from orchestrator.core.errors import Conflict, InvalidInput, NotFound, QueueFull
from orchestrator.core.jobs import JobStatus
from orchestrator.core.models import STORED, EndpointPatch, EndpointSpec, RunRequest
from orchestrator.core.versions import VERSION_RECORDS_KEPT
from orchestrator.store.finals import wait_final
from orchestrator.store.protocol import JobStore

pytestmark = pytest.mark.timeout(30)

T0_S = 1_700_000_000.0


class FakeClock:
    def __init__(self) -> None:
        self.offset_s = 0.0

    def now_s(self) -> float:
        return T0_S + self.offset_s

    def monotonic_s(self) -> float:
        return time.monotonic() + self.offset_s

    def advance(self, seconds: float) -> None:
        self.offset_s += seconds


@dataclass(frozen=True)
class Settings:
    heartbeat_timeout_s: float = 10.0
    lease_grace_s: float = 5.0
    take_wait_s: float = 0.2
    stop_wait_s: float = 0.2
    runsync_wait_s: float = 0.2
    keep_versions: int = 2
    package_grace_s: float = 3600.0
    keep_results_s: float = 1800.0


class Recorder:
    """Every notifier in one: metrics events, autoscaler wake-ups, webhook kicks."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.woken: list[str] = []
        self.kicks = 0
        self.recovered = 0
        self.webhook_outcomes: dict[str, dict[str, Any]] = {}  # what ``outcomes`` answers, per endpoint

    def submitted(self, endpoint: str, n: int) -> None:
        self.events.append(("submitted", endpoint, n))

    def finished(self, endpoint: str, status: str, n: int = 1) -> None:
        self.events.append(("finished", endpoint, status, n))

    def retried(self, endpoint: str) -> None:
        self.events.append(("retried", endpoint))

    def lease_lost(self, endpoint: str, reason: str) -> None:
        self.events.append(("lease_lost", endpoint, reason))

    def result_dropped(self, endpoint: str, reason: str) -> None:
        self.events.append(("result_dropped", endpoint, reason))

    def redelivered(self, endpoint: str) -> None:
        self.events.append(("redelivered", endpoint))

    def queue_time(self, endpoint: str, seconds: float) -> None:
        self.events.append(("queue_time", endpoint, seconds))

    def execution_time(self, endpoint: str, seconds: float) -> None:
        self.events.append(("execution_time", endpoint, seconds))

    def worker_states(self, views: Sequence[Mapping[str, Any]]) -> None:
        self.events.append(("worker_states", len(views)))

    def work_arrived(self, endpoint: str) -> None:
        self.woken.append(endpoint)

    def kick(self) -> None:
        self.kicks += 1

    def outcomes(self, endpoint: str, now_s: float) -> dict[str, Any] | None:
        return self.webhook_outcomes.get(endpoint)

    def forget(self, endpoint: str) -> None:
        self.webhook_outcomes.pop(endpoint, None)

    def on_recovered(self) -> None:
        self.recovered += 1

    def named(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == kind]


class Shelf:
    """Where code packages are deleted from: records what was deleted; ``refuse`` fails those URIs."""

    def __init__(self) -> None:
        self.deleted: list[str] = []
        self.refuse: set[str] = set()

    def delete(self, uri: str) -> bool:
        if uri in self.refuse:
            return False
        self.deleted.append(uri)
        return True


@dataclass
class Rig:
    d: Dispatcher
    clock: FakeClock
    rec: Recorder
    store: JobStore
    shelf: Shelf

    def fresh(self) -> Dispatcher:
        """A second dispatcher on the same store (a restarted actor)."""
        return make(self.store, self.clock, Recorder(), self.shelf)


def make(
    store: JobStore,
    clock: FakeClock,
    rec: Recorder,
    shelf: PackageShelf | None = None,
    settings: Settings | None = None,
) -> Dispatcher:
    return Dispatcher(
        store,
        settings or Settings(),
        clock,
        metrics=rec,
        autoscaler=rec,
        webhooks=rec,
        on_recovered=rec.on_recovered,
        packages=shelf,
    )


@pytest.fixture
def rig(store: JobStore) -> Rig:
    clock, rec, shelf = FakeClock(), Recorder(), Shelf()
    return Rig(make(store, clock, rec, shelf), clock, rec, store, shelf)


def ep(name: str = "ep", **fields: Any) -> EndpointSpec:
    return EndpointSpec.model_validate({"name": name, **fields})


def run(input: Any = 1, **fields: Any) -> RunRequest:
    return RunRequest.model_validate({"input": input, **fields})


async def submit_one(d: Dispatcher, endpoint: str = "ep", **fields: Any) -> str:
    (job_id,) = await d.submit(endpoint, [run(**fields)])
    return job_id


async def leased(rig: Rig, worker: str = "w1", endpoint: str = "ep", **fields: Any) -> str:
    """Submit a job and lease it to ``worker``."""
    job_id = await submit_one(rig.d, endpoint, **fields)
    (job,) = await rig.d.take(endpoint, worker, 1, 0)
    assert job["id"] == job_id
    return job_id


# Endpoints ----------------------------------------------------------------------------------------------


async def test_endpoint_crud(rig: Rig) -> None:
    d = rig.d
    created = await d.create_endpoint(ep("b", maxReplicas=3))
    assert created["name"] == "b" and created["maxReplicas"] == 3
    await d.create_endpoint(ep("a"))
    with pytest.raises(Conflict):
        await d.create_endpoint(ep("a"))
    assert [e["name"] for e in await d.list_endpoints()] == ["a", "b"]
    assert (await d.get_endpoint("b"))["maxReplicas"] == 3
    assert set(await d.endpoint_specs()) == {"a", "b"}
    updated = await d.update_endpoint("b", EndpointPatch.model_validate({"minReplicas": 2}))
    assert (updated["minReplicas"], updated["maxReplicas"]) == (2, 3)
    assert updated == await d.get_endpoint("b"), "create, update and get answer the same shape"
    assert created.keys() == updated.keys()
    assert (await rig.fresh().get_endpoint("b"))["minReplicas"] == 2, "durable in the store"
    assert await d.delete_endpoint("a") == {"name": "a", "deleted": True, "cancelledJobs": 0}
    for call in (d.get_endpoint("a"), d.delete_endpoint("a"), d.update_endpoint("zz", EndpointPatch())):
        with pytest.raises(NotFound):
            await call
    assert rig.rec.recovered == 1, "recovery (and the actor's loops) happens once"


async def test_update_endpoint_validates_the_patched_spec_as_a_whole(rig: Rig) -> None:
    await rig.d.create_endpoint(ep(minReplicas=1, maxReplicas=2))
    with pytest.raises(InvalidInput) as info:
        await rig.d.update_endpoint("ep", EndpointPatch.model_validate({"minReplicas": 5}))
    assert "maxReplicas" in str(info.value.detail) and info.value.status_code == 422
    with pytest.raises(InvalidInput) as info:
        await rig.d.update_endpoint("ep", EndpointPatch.model_validate({"gpus": -1}))
    assert info.value.detail[0]["loc"] == ["gpus"]
    with pytest.raises(InvalidInput) as info:  # the field by its wire name, and why
        await rig.d.update_endpoint("ep", EndpointPatch.model_validate({"maxReplicas": -1}))
    assert info.value.detail[0]["loc"] == ["maxReplicas"]
    why = "maxReplicas: Input should be greater than or equal to 0"
    assert str(info.value) == f"invalid endpoint update: {why}"
    assert (await rig.d.get_endpoint("ep"))["minReplicas"] == 1, "a refused update changes nothing"


async def test_delete_endpoint_cancels_queued_and_refuses_while_running(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await leased(rig)
    queued = await submit_one(rig.d)
    with pytest.raises(Conflict) as info:
        await rig.d.delete_endpoint("ep")
    assert str(info.value).startswith("endpoint 'ep' has 1 job in progress: set maxReplicas to 0")
    assert info.value.detail == {"inProgress": 1}
    await rig.d.done("ep", "w1", job, {"output": 1})
    assert (await rig.d.delete_endpoint("ep"))["cancelledJobs"] == 1
    assert (await rig.d.get_job(queued))["status"] == "CANCELLED"


# Submission -----------------------------------------------------------------------------------------------


async def test_submit_policy_overrides_endpoint_defaults(rig: Rig) -> None:
    await rig.d.create_endpoint(ep(executionTimeout=5000, ttl=60_000, maxRetries=2))
    plain = await submit_one(rig.d)
    policy = {"executionTimeout": 2000, "ttl": 9000, "lowPriority": True}
    custom = await submit_one(rig.d, input={"k": [1]}, policy=policy, webhook="http://h/x")
    a, b = await rig.d.get_job(plain), await rig.d.get_job(custom)
    assert (a["executionTimeout"], a["ttl"], a["lowPriority"], a["maxRetries"]) == (5000, 60_000, False, 2)
    assert (b["executionTimeout"], b["ttl"], b["lowPriority"], b["maxRetries"]) == (2000, 9000, True, 2)
    assert b["input"] == {"k": [1]} and b["webhook"] == "http://h/x" and b["status"] == "IN_QUEUE"
    assert rig.rec.named("submitted") == [("submitted", "ep", 1)] * 2
    (first,) = await rig.d.take("ep", "w1", 1, 0)
    assert first["id"] == plain, "low priority goes after normal"


async def test_submit_is_all_or_nothing_and_unknown_endpoint_is_404(rig: Rig) -> None:
    await rig.d.create_endpoint(ep(maxQueueSize=3))
    await rig.d.submit("ep", [run(), run()])
    with pytest.raises(QueueFull):
        await rig.d.submit("ep", [run(), run()])
    assert (await rig.d.health("ep"))["jobs"]["inQueue"] == 2
    with pytest.raises(NotFound):
        await rig.d.submit("nope", [run()])


async def test_submit_wakes_the_autoscaler_only_without_a_waiting_taker(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    await submit_one(rig.d)
    await submit_one(rig.d)
    assert rig.rec.woken == ["ep"], "at most once per 50 ms per endpoint"
    rig.clock.advance(1)
    await submit_one(rig.d)
    assert rig.rec.woken == ["ep", "ep"]
    await rig.d.take("ep", "w1", 10, 0)
    taker = asyncio.create_task(rig.d.take("ep", "w1", 1, 5))
    await asyncio.sleep(0.05)
    assert (await rig.d.stats())["ep"]["waitingTakers"] == 1
    rig.clock.advance(1)
    job = await submit_one(rig.d)
    assert [j["id"] for j in await taker] == [job], "the long-poll wakes on submission"
    assert rig.rec.woken == ["ep", "ep"], "a waiting taker got it: no autoscaler wake-up"


async def test_submit_wakes_the_autoscaler_only_when_no_replica_has_a_free_slot(rig: Rig) -> None:
    """Replicas take from the store, not through a waiting take here: their heartbeats say whether one
    has room for the job."""
    await rig.d.create_endpoint(ep())
    await rig.d.heartbeat("ep", "r1", [], {"state": "idle", "concurrency": 1})
    await submit_one(rig.d)
    assert rig.rec.woken == [], "an idle replica takes it"
    (taken,) = await rig.d.take("ep", "r1", 1, 0, "ray")
    await rig.d.heartbeat("ep", "r1", [taken["id"]], {"state": "busy", "concurrency": 1})
    rig.clock.advance(1)
    await submit_one(rig.d)
    assert rig.rec.woken == ["ep"], "its one slot is taken: the autoscaler may add a replica"


async def test_creating_an_endpoint_with_a_handler_wakes_the_autoscaler_to_start_its_pool(rig: Rig) -> None:
    await rig.d.create_endpoint(ep("outside"))
    assert rig.rec.woken == [], "no handler: outside workers only, nothing for the autoscaler to start"
    await rig.d.create_endpoint(ep("managed", handler="mod:fn"))
    assert rig.rec.woken == ["managed"]


# Worker protocol ----------------------------------------------------------------------------------------


async def test_take_long_poll_times_out_and_draining_worker_gets_nothing(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    t0 = time.monotonic()
    assert await rig.d.take("ep", "w1", 1, 0.2) == []
    assert time.monotonic() - t0 >= 0.15, "held for wait_s"
    taker = asyncio.create_task(rig.d.take("ep", "w1", 1, 5))
    await asyncio.sleep(0.05)
    view = await rig.d.drain_worker("w1")
    assert view["draining"] is True and view["state"] == "draining"
    assert await taker == [], "draining wakes the taker, which leaves empty-handed"
    await submit_one(rig.d)
    assert await rig.d.take("ep", "w1", 1, 0) == [], "draining is refused inside take"
    assert len(await rig.d.take("ep", "w2", 1, 0)) == 1
    assert await rig.fresh().take("ep", "w1", 1, 0) == [], "draining is durable"
    with pytest.raises(NotFound):
        await rig.d.drain_worker("ghost")


async def test_a_take_called_again_with_its_id_answers_the_jobs_the_first_took(rig: Rig) -> None:
    """A Ray replica calls a take again, with the same call id, when the queue died before replying (a
    restarted queue answers it): the jobs the first call took, those the replica still holds, and no more
    (they would wait on a replica that never got them until their execution timeout failed them)."""
    await rig.d.create_endpoint(ep())
    first, second, third, fourth = await rig.d.submit("ep", [run(1), run(2), run(3), run(4)])
    took = await rig.d.take("ep", "w1", 2, 0, "ray", call_id="c1")
    assert [j["id"] for j in took] == [first, second]
    await rig.d.cancel("ep", second)
    again = await rig.fresh().take("ep", "w1", 2, 0, "ray", call_id="c1")
    assert [(j["id"], j["input"], j["attempt"]) for j in again] == [(first, 1, 1)]
    assert [j["id"] for j in await rig.d.take("ep", "w2", 1, 0, "ray", call_id="c1")] == [third], "its own"
    assert [j["id"] for j in await rig.d.take("ep", "w1", 2, 0, "ray", call_id="c2")] == [fourth], "new"


async def test_done_first_result_wins(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await submit_one(rig.d, webhook="http://h/x")
    rig.clock.advance(2)
    (taken,) = await rig.d.take("ep", "w1", 1, 0)
    assert (taken["id"], taken["input"], taken["attempt"]) == (job, 1, 1)
    rig.clock.advance(3)
    kicks = rig.rec.kicks
    assert await rig.d.done("ep", "w1", job, {"output": {"x": 1}}) == {
        "id": job,
        "accepted": True,
        "status": "COMPLETED",
    }
    assert rig.rec.kicks == kicks + 1, "a job with a webhook kicks the sender"
    again = await rig.d.done("ep", "w1", job, {"error": "late"})
    assert again == {"id": job, "accepted": False, "status": "COMPLETED", "reason": "not_held"}
    assert (await rig.d.status("ep", job))["output"] == {"x": 1}
    assert ("queue_time", "ep", 2.0) in rig.rec.events and ("execution_time", "ep", 3.0) in rig.rec.events
    assert rig.rec.named("finished") == [("finished", "ep", "COMPLETED", 1)]
    assert rig.rec.named("result_dropped") == [("result_dropped", "ep", "not_held")]
    with pytest.raises(NotFound):
        await rig.d.done("ep", "w1", "no-such-job", {"output": 1})


async def test_done_many_mixes_results_failures_and_progress(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    ids = await rig.d.submit("ep", [run(1), run(2), run(3)])
    await rig.d.take("ep", "w1", 3, 0)
    replies = await rig.d.done_many(
        "ep",
        "w1",
        [
            (ids[0], {"output": "ok"}),
            (ids[1], {"error": "boom"}),
            (ids[2], {"status": "IN_PROGRESS", "output": 50}),
        ],
    )
    assert [r.get("status") for r in replies] == ["COMPLETED", "FAILED", None]
    assert replies[2] == {"id": ids[2], "accepted": True, "progress": True}
    s = await rig.d.status("ep", ids[2])
    assert (s["status"], s["output"]) == ("IN_PROGRESS", 50), "progress shows as the running job's output"
    assert (await rig.d.status("ep", ids[1]))["error"] == "boom"
    refused = await rig.d.done("ep", "w2", ids[2], {"status": "IN_PROGRESS", "output": 60})
    assert refused["accepted"] is False, "progress from a worker that does not hold the job is refused"


async def test_stream_push_and_read(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await leased(rig)
    assert await rig.d.stream_push("ep", "w1", job, ["a", {"b": 2}]) == {"id": job, "accepted": True}
    assert await rig.d.stream("ep", job) == {
        "id": job,
        "status": "IN_PROGRESS",
        "stream": [{"output": "a"}, {"output": {"b": 2}}],
    }
    assert (await rig.d.stream("ep", job))["stream"] == [], "each chunk is read once"
    assert (await rig.d.stream_push("ep", "w2", job, ["x"]))["accepted"] is False
    assert rig.rec.named("result_dropped") == [("result_dropped", "ep", "stream_not_held")]
    await rig.d.stream_push("ep", "w1", job, ["c"])
    await rig.d.done("ep", "w1", job, {"output": None}, is_stream=True)
    assert (await rig.d.status("ep", job))["output"] == ["a", {"b": 2}, "c"], "stream aggregated"
    with pytest.raises(NotFound):
        await rig.d.stream("other", job)


async def test_stream_read_holds_until_the_next_chunk_or_the_end(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await leased(rig)
    t0 = time.monotonic()
    assert (await rig.d.stream("ep", job, 0.2))["stream"] == [], "nothing came: empty after the wait"
    assert time.monotonic() - t0 >= 0.15
    read = asyncio.create_task(rig.d.stream("ep", job, 5))
    await asyncio.sleep(0.05)
    assert not read.done(), "held while there is no chunk"
    t0 = time.monotonic()
    await rig.d.stream_push("ep", "w1", job, ["a"])
    assert (await read)["stream"] == [{"output": "a"}] and time.monotonic() - t0 < 1, "woken by the chunk"
    read = asyncio.create_task(rig.d.stream("ep", job, 5))
    await asyncio.sleep(0.05)
    await rig.d.done("ep", "w1", job, {"output": None}, is_stream=True)
    assert await asyncio.wait_for(read, 1) == {"id": job, "status": "COMPLETED", "stream": []}, (
        "woken by the end"
    )
    t0 = time.monotonic()
    await rig.d.stream("ep", job, 5)
    assert time.monotonic() - t0 < 1, "a final job is never held"


async def test_cancel_reaches_the_holder(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await leased(rig)
    poll = asyncio.create_task(rig.d.stop_poll("ep", "w1", 5))
    await asyncio.sleep(0.05)
    assert await rig.d.cancel("ep", job) == {"id": job, "status": "CANCELLED"}
    assert await poll == [job], "the stop channel wakes the holder"
    assert await rig.d.stop_poll("ep", "w1", 0.05) == [], "the stop list is cleared once read"
    assert (await rig.d.done("ep", "w1", job, {"output": 1}))["accepted"] is False, "late result ignored"
    assert await rig.d.cancel("ep", job) == {"id": job, "status": "CANCELLED"}, "idempotent"
    assert (await rig.d.list_workers("ep"))[0]["jobs"] == []
    queued = await submit_one(rig.d)
    assert (await rig.d.cancel("ep", queued))["status"] == "CANCELLED"
    done = await leased(rig)
    await rig.d.done("ep", "w1", done, {"output": 1})
    with pytest.raises(Conflict) as info:
        await rig.d.cancel("ep", done)
    assert info.value.detail == {"id": done, "status": "COMPLETED"}
    assert [e[2] for e in rig.rec.named("finished")] == ["CANCELLED", "CANCELLED", "COMPLETED"]


async def test_retry(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await leased(rig)
    await rig.d.done("ep", "w1", job, {"error": "boom"})
    assert await rig.d.retry("ep", job) == {"id": job, "status": "IN_QUEUE"}
    s = await rig.d.status("ep", job)
    assert (s["status"], s.get("retries"), "error" in s) == ("IN_QUEUE", 1, False)
    with pytest.raises(Conflict):
        await rig.d.retry("ep", job)
    assert rig.rec.named("retried") == [("retried", "ep")]
    (again,) = await rig.d.take("ep", "w2", 1, 0)
    assert (again["id"], again["attempt"]) == (job, 2)


async def test_purge(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    running = await leased(rig)
    await rig.d.submit("ep", [run(), run(), run()])
    assert await rig.d.purge("ep") == {"removed": 3, "status": "completed"}
    assert rig.rec.named("finished") == [("finished", "ep", "CANCELLED", 3)]
    h = (await rig.d.health("ep"))["jobs"]
    assert (h["inQueue"], h["cancelled"], h["inProgress"]) == (0, 3, 1)
    assert (await rig.d.status("ep", running))["status"] == "IN_PROGRESS"
    assert (await rig.d.purge("ep"))["removed"] == 0


async def test_ping_stops_foreign_jobs_and_reclaims_forgotten_leases_after_the_grace(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await leased(rig)
    other = await leased(rig, "w2")
    assert await rig.d.ping("ep", "w1", [job, other]) == [other], "a job it does not hold: stop it"
    rig.clock.advance(4)
    assert await rig.d.ping("ep", "w1", []) == [other]
    assert (await rig.d.status("ep", job))["status"] == "IN_PROGRESS", "within the lease grace"
    rig.clock.advance(2)
    await rig.d.ping("ep", "w1", [])
    assert (await rig.d.status("ep", job))["status"] == "IN_QUEUE", "not reported past the grace: requeued"
    assert rig.rec.named("lease_lost") == [("lease_lost", "ep", "not_reported")]
    await rig.d.take("ep", "w3", 1, 0)  # the requeued job
    ray_job = await leased(rig, "r1")
    rig.clock.advance(60)
    reply = await rig.d.heartbeat("ep", "r1", [], {"state": "idle"})
    assert reply == {"stop": [], "stopDeadlines": {}, "drain": False}
    assert (await rig.d.status("ep", ray_job))["status"] == "IN_PROGRESS", (
        "replicas are not reclaimed by ping"
    )


async def test_heartbeat_returns_stops_once_and_drain(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await leased(rig, "r1")
    started_ms = int(rig.clock.now_s() * 1000)
    rig.clock.advance(5)
    await rig.d.cancel("ep", job)
    # When its code, if still running, counts as hung: the job's start plus its execution timeout.
    deadline = started_ms + ep().execution_timeout
    assert await rig.d.heartbeat("ep", "r1", [job], {"state": "busy"}) == {
        "stop": [job],
        "stopDeadlines": {job: deadline},
        "drain": False,
    }
    assert (await rig.d.heartbeat("ep", "r1", [], {"state": "idle"}))["stop"] == []
    await rig.d.drain_worker("r1")
    assert (await rig.d.heartbeat("ep", "r1", [], {"state": "idle"}))["drain"] is True
    (view,) = await rig.d.list_workers("ep")
    assert (view["workerId"], view["kind"]) == ("r1", "ray")


async def test_report_workers_and_worker_gone(rig: Rig) -> None:
    await rig.d.create_endpoint(ep(maxRetries=0))
    await rig.d.report_workers("ep", [{"workerId": "r9", "state": "starting"}])
    (view,) = await rig.d.list_workers()
    assert (view["workerId"], view["state"]) == ("r9", "starting")
    job = await leased(rig, "r1")
    assert await rig.d.worker_gone("r1", "died: oom") == 1
    s = await rig.d.status("ep", job)
    assert (s["status"], s["error"]) == ("FAILED", "worker r1 lost (died: oom) and no retries left")
    assert ("lease_lost", "ep", "died: oom") in rig.rec.events
    await rig.d.report_workers("ep", [{"workerId": "r9", "state": "stopped"}])
    states = {v["workerId"]: v["state"] for v in await rig.d.list_workers("ep")}
    assert states == {"r1": "stopped", "r9": "stopped"}
    with pytest.raises(NotFound):
        await rig.d.list_workers("nope")


# Sweeps ---------------------------------------------------------------------------------------------------


async def test_sweep_times_out_queued_jobs_past_ttl(rig: Rig) -> None:
    await rig.d.create_endpoint(ep(ttl=5000))
    job = await submit_one(rig.d)
    waiter = asyncio.create_task(rig.d.wait_final("ep", job, 5))
    rig.clock.advance(4)
    await rig.d.sweep_once()
    assert (await rig.d.status("ep", job))["status"] == "IN_QUEUE"
    rig.clock.advance(2)
    await rig.d.sweep_once()
    assert (await waiter)["status"] == "TIMED_OUT", "the sweep wakes wait_final"
    assert rig.rec.named("finished") == [("finished", "ep", "TIMED_OUT", 1)]


async def test_sweep_times_out_running_jobs_and_stops_the_holder(rig: Rig) -> None:
    await rig.d.create_endpoint(ep(executionTimeout=2000))
    job = await leased(rig)
    rig.clock.advance(3)
    await rig.d.sweep_once()
    s = await rig.d.status("ep", job)
    assert s["status"] == "TIMED_OUT"
    assert await rig.d.stop_poll("ep", "w1", 0) == [job], "the holder is told to stop"
    assert ("lease_lost", "ep", "timeout") in rig.rec.events
    assert (await rig.d.list_workers("ep"))[0]["jobs"] == []


async def test_sweep_reclaims_leases_of_silent_workers(rig: Rig) -> None:
    await rig.d.create_endpoint(ep(maxRetries=1))
    job = await leased(rig)
    rig.clock.advance(11)
    await rig.d.sweep_once()
    assert (await rig.d.status("ep", job))["status"] == "IN_QUEUE", "requeued: a retry is left"
    (view,) = await rig.d.list_workers("ep")
    assert (view["state"], view["jobs"]) == ("stopped", [])
    assert rig.rec.named("lease_lost") == [("lease_lost", "ep", "heartbeat")]
    assert rig.rec.named("worker_states"), "workers by state are mirrored"
    with pytest.raises(Conflict):
        await rig.d.drain_worker(view["workerId"])
    assert view["workerId"] not in await rig.store.draining_workers(), "a refused drain leaves no mark"
    (again,) = await rig.d.take("ep", "w2", 1, 0)
    assert again["attempt"] == 2
    rig.clock.advance(11)
    await rig.d.sweep_once()
    s = await rig.d.status("ep", job)
    assert (s["status"], s["error"]) == ("FAILED", "worker w2 lost (heartbeat) and no retries left")


async def test_a_dead_workers_waiting_take_gets_nothing_back(rig: Rig) -> None:
    """Found by the chaos soak: a replica killed while its take long-polled in the queue; the pool reported
    it gone, its job went back to the queue and woke that same take, which leased the job to the dead
    replica again (the job then sat until its execution timeout)."""
    await rig.d.create_endpoint(ep(maxRetries=2))
    job = await leased(rig, "r1")
    waiting = asyncio.create_task(rig.d.take("ep", "r1", 1, 5))  # the dead replica's call, still here
    await asyncio.sleep(0.05)
    assert await rig.d.worker_gone("r1", "died: killed") == 1
    assert await waiting == [], "the requeued job is not leased to the worker that just died"
    assert await rig.d.take("ep", "r1", 1, 0) == [], "nor to a late take of the dead worker"
    (again,) = await rig.d.take("ep", "r2", 1, 0)
    assert again["id"] == job
    detail = await rig.d.get_job(job)
    assert detail["attempts"] == 2 and detail["status"] == "IN_PROGRESS"


async def test_worker_gone_says_why_it_stopped(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await leased(rig)
    assert await rig.d.worker_gone("w1", "died: OOM") == 1
    (view,) = await rig.d.list_workers("ep")
    assert view["state"] == "stopped" and "died: OOM" in (view["reason"] or ""), view
    assert (await rig.d.status("ep", job))["status"] == "IN_QUEUE"


async def test_a_lost_worker_gives_back_what_the_store_says_it_held(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    known, untold = await rig.d.submit("ep", [run(1), run(2)])
    await rig.d.take("ep", "w1", 1, 0)
    (taken,) = await rig.store.take("ep", "w1", 1, rig.d.now_ms())  # a replica's own take, not told yet
    assert taken.id == untold and await rig.store.held_by("w1") in ([known, untold], [untold, known])
    assert await rig.d.worker_gone("w1", "died") == 2
    assert [(await rig.d.status("ep", j))["status"] for j in (known, untold)] == ["IN_QUEUE", "IN_QUEUE"]
    assert await rig.store.held_by("w1") == []


async def test_redeliver_hands_a_replica_every_job_the_store_leased_to_it(rig: Rig) -> None:
    """A replica whose own take from the store failed: the jobs the store leased to it (told to the queue or
    not) come back with their inputs and attempts, still leased to it; the queue's memory follows."""
    await rig.d.create_endpoint(ep())
    known, untold, other = await rig.d.submit("ep", [run({"k": 1}), run({"k": 2}), run({"k": 3})])
    await rig.d.take("ep", "w1", 1, 0)
    (lost,) = await rig.store.take("ep", "w1", 1, rig.d.now_ms())  # a take whose reply never came
    await rig.d.take("ep", "w2", 1, 0)
    assert lost.id == untold
    again = await rig.d.redeliver("ep", "w1")
    assert sorted((j["id"], j["input"], j["attempt"]) for j in again["jobs"]) == sorted(
        [(known, {"k": 1}, 1), (untold, {"k": 2}, 1)]
    )
    assert [(await rig.d.status("ep", j))["status"] for j in (known, untold, other)] == ["IN_PROGRESS"] * 3
    (w1,) = [w for w in await rig.d.list_workers("ep") if w["workerId"] == "w1"]
    assert sorted(w1["jobs"]) == sorted([known, untold]), w1
    assert ("redelivered", "ep") in rig.rec.events, "counted (ripple_redeliveries_total)"
    assert (await rig.d.redeliver("ep", "w1"))["fence"] > again["fence"], "raised by each redelivery"
    assert (await rig.d.redeliver("ep", "w3"))["jobs"] == []
    with pytest.raises(NotFound):
        await rig.d.redeliver("nope", "w1")


async def test_sweep_spares_a_worker_seen_by_another_queue(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await leased(rig)
    await rig.d.sweep_once()  # persists the worker record
    other = rig.fresh()
    rig.clock.advance(8)
    await other.ping("ep", "w1", [job])  # the other instance sees it alive
    await other.sweep_once()
    rig.clock.advance(8)
    await rig.d.sweep_once()
    assert (await rig.d.status("ep", job))["status"] == "IN_PROGRESS"


# Waiting and reading --------------------------------------------------------------------------------------


async def test_runsync_and_wait_final(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    pending = await rig.d.runsync("ep", run(7), 0.1)
    assert pending["status"] == "IN_QUEUE", "as it is when the wait runs out"

    async def worker() -> None:
        (job,) = await rig.d.take("ep", "w1", 1, 5)
        await rig.d.done("ep", "w1", job["id"], {"output": job["input"] * 2})

    w = asyncio.create_task(worker())
    await rig.d.take("ep", "w0", 1, 0)  # takes the first job, so the worker gets the next
    result = await rig.d.runsync("ep", run(21), 5)
    await w
    assert (result["status"], result["output"]) == ("COMPLETED", 42)
    assert (await rig.d.wait_final("ep", result["id"], 0))["output"] == 42
    with pytest.raises(NotFound):
        await rig.d.wait_final("ep", "nope", 0)


async def test_status_statuses_get_job(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    await rig.d.create_endpoint(ep("other"))
    job = await submit_one(rig.d)
    assert (await rig.d.status("ep", job))["status"] == "IN_QUEUE"
    with pytest.raises(NotFound):
        await rig.d.status("other", job)
    got = await rig.d.statuses([job, "nope"])
    assert got[0] is not None and got[0]["id"] == job and got[1] is None
    detail = await rig.d.get_job(job)
    assert detail["endpoint"] == "ep" and detail["createdAt"] == int(T0_S * 1000)
    with pytest.raises(NotFound):
        await rig.d.get_job("nope")


async def test_list_jobs_filters_and_pages_with_a_cursor(rig: Rig) -> None:
    await rig.d.create_endpoint(ep("a"))
    await rig.d.create_endpoint(ep("b"))
    ids = []
    for n in range(7):
        rig.clock.advance(0.01)
        ids.append(await submit_one(rig.d, "a" if n % 2 == 0 else "b"))
    newest_first = ids[::-1]
    page = await rig.d.list_jobs(None, None, 3, None)
    assert [j["id"] for j in page["jobs"]] == newest_first[:3]
    last_listed = page["jobs"][-1]
    assert page["nextCursor"] == f"{last_listed['createdAt']}:{last_listed['id']}", "where the page ended"
    page2 = await rig.d.list_jobs(None, None, 3, page["nextCursor"])
    assert [j["id"] for j in page2["jobs"]] == newest_first[3:6]
    last = await rig.d.list_jobs(None, None, 3, page2["nextCursor"])
    assert [j["id"] for j in last["jobs"]] == newest_first[6:] and last["nextCursor"] is None
    only_a = await rig.d.list_jobs("a", None, 10, None)
    assert [j["id"] for j in only_a["jobs"]] == [ids[6], ids[4], ids[2], ids[0]]
    await rig.d.cancel("b", ids[3])
    cancelled = await rig.d.list_jobs(None, "CANCELLED", 10, None)
    assert [j["id"] for j in cancelled["jobs"]] == [ids[3]] and cancelled["nextCursor"] is None


async def test_stats_health_and_ready(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await leased(rig)
    await submit_one(rig.d)
    rig.clock.advance(2)
    stats = (await rig.d.stats())["ep"]
    assert stats == {
        "queued": 1,
        "running": 1,
        "oldestQueuedAgeS": 2.0,
        "waitingTakers": 0,
        "lastArrivalS": T0_S,
        "waitReason": {"code": "waiting_for_worker", "message": "next in line; all 1 outside worker busy"},
    }
    await rig.d.done("ep", "w1", job, {"error": "x"})
    health = await rig.d.health("ep")
    assert health["jobs"] == {
        "completed": 0,
        "failed": 1,
        "inProgress": 0,
        "inQueue": 1,
        "retried": 0,
        "cancelled": 0,
        "timedOut": 0,
    }
    assert health["workers"]["idle"] == 1
    ready = await rig.d.ready()
    assert ready["store"] == "ok" and ready["recovery"]["endpoints"] == 0, "as found at recovery"
    assert (await rig.fresh().ready())["recovery"]["endpoints"] == 1


async def test_stats_say_what_became_of_webhook_deliveries_until_the_endpoint_goes(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    assert "webhooks" not in (await rig.d.stats())["ep"], "no delivery yet"
    seen = {"delivered": 1, "failed": 1, "refused": 0, "windowS": 3600.0}
    rig.rec.webhook_outcomes["ep"] = seen
    assert (await rig.d.stats())["ep"]["webhooks"] == seen
    await rig.d.delete_endpoint("ep")
    assert "ep" not in rig.rec.webhook_outcomes, "forgotten with the endpoint"


async def test_a_new_dispatcher_recovers_endpoints_leases_and_workers(rig: Rig) -> None:
    await rig.d.create_endpoint(ep(maxRetries=1))
    job = await leased(rig)
    await submit_one(rig.d)
    await rig.d.sweep_once()
    d2 = rig.fresh()
    recovery = await d2.recover()
    assert {k: recovery[k] for k in ("endpoints", "queued", "leases")} == {
        "endpoints": 1,
        "queued": 1,
        "leases": 1,
    }
    assert (await d2.list_workers("ep"))[0]["jobs"] == [job], "the holder is known again"
    assert (await d2.done("ep", "w1", job, {"output": 1}))["accepted"] is True
    rig.clock.advance(11)
    await d2.sweep_once()
    assert (await d2.list_workers("ep"))[0]["state"] == "stopped", "restored workers still go stale"


# Versions --------------------------------------------------------------------------------------------------

GCS_V1 = "gcs://_ray_pkg_" + "1" * 40 + ".zip"
GCS_V2 = "gcs://_ray_pkg_" + "2" * 40 + ".zip"


async def test_versions_created_by_runtime_changes_only(rig: Rig) -> None:
    d = rig.d
    created = await d.create_endpoint(ep(handler="h:f", version=7, runtimeEnv={"working_dir": GCS_V1}))
    assert created["version"] == 1, "the dispatcher numbers versions; a version on input is ignored"
    rig.clock.advance(1)
    scaled = await d.update_endpoint("ep", EndpointPatch.model_validate({"minReplicas": 2, "priority": 9}))
    assert scaled["version"] == 1, "scaling fields apply in place"
    rig.clock.advance(1)
    patch = {"runtimeEnv": {"working_dir": GCS_V2}, "codeDigest": "sha256:ab", "concurrency": 2}
    changed = await d.update_endpoint("ep", EndpointPatch.model_validate(patch))
    assert changed["version"] == 2 and changed["minReplicas"] == 2
    listed = (await d.list_versions("ep"))["versions"]
    assert [v["version"] for v in listed] == [2, 1], "newest first"
    v2, v1 = listed
    assert v2["changed"] == ["codeDigest", "concurrency"], "new code is its digest (its URI moves with it)"
    assert v2["codeDigest"] == "sha256:ab" and v2["runtimeEnv"] == {"working_dir": GCS_V2}
    assert v2["createdAt"] == int((T0_S + 2) * 1000) and v2["state"] == "rolling_out"
    assert v1["changed"] == [] and v1["handler"] == "h:f"
    assert v1["state"] == "retired", "v1 never became active: superseded by v2"
    again = await rig.fresh().list_versions("ep")
    assert again["versions"] == listed, "durable in the store"
    assert (await rig.fresh().get_endpoint("ep"))["version"] == 2


async def test_version_reports_activate_retire_and_fail(rig: Rig) -> None:
    d = rig.d
    await d.create_endpoint(ep(handler="h:f"))
    assert (await d.report_version_state("ep", 1, "active"))["state"] == "active"
    assert (await d.report_version_state("ep", 1, "active"))["state"] == "active", "a repeat is a no-op"
    await d.update_endpoint("ep", EndpointPatch.model_validate({"handler": "h:g"}))
    await d.report_version_state("ep", 2, "active")
    states = {v["version"]: v["state"] for v in (await d.list_versions("ep"))["versions"]}
    assert states == {1: "retired", 2: "active"}
    await d.update_endpoint("ep", EndpointPatch.model_validate({"handler": "h:broken"}))
    failed = await d.report_version_state("ep", 3, "failed", "ImportError: no module named broken")
    assert failed["state"] == "failed" and "ImportError" in failed["error"]
    problem = (await d.get_endpoint("ep"))["problem"]
    assert problem["code"] == "version_failed" and "ImportError" in problem["message"]
    states = {v["version"]: v["state"] for v in (await rig.fresh().list_versions("ep"))["versions"]}
    assert states == {1: "retired", 2: "active", 3: "failed"}, "v2 still serves"
    with pytest.raises(Conflict):
        await d.report_version_state("ep", 1, "active")  # a retired version never comes back
    with pytest.raises(NotFound):
        await d.report_version_state("ep", 9, "active")
    with pytest.raises(InvalidInput):
        await d.report_version_state("ep", 2, "bogus")
    with pytest.raises(NotFound):
        await d.report_version_state("nope", 1, "active")


async def test_rollback_creates_a_version_with_the_target_fields(rig: Rig) -> None:
    d = rig.d
    await d.create_endpoint(ep(handler="h:f", gpus=1, runtimeEnv={"working_dir": GCS_V1}))
    with pytest.raises(Conflict):
        await d.rollback("ep")  # nothing earlier
    await d.report_version_state("ep", 1, "active")
    await d.update_endpoint("ep", EndpointPatch.model_validate({"runtimeEnv": {"working_dir": GCS_V2}}))
    await d.report_version_state("ep", 2, "active")
    await d.update_endpoint("ep", EndpointPatch.model_validate({"maxReplicas": 4}))
    back = await d.rollback("ep")
    assert (back["version"], back["rolledBackTo"]) == (3, 1)
    assert back["endpoint"]["runtimeEnv"] == {"working_dir": GCS_V1}
    assert back["endpoint"]["maxReplicas"] == 4, "scaling fields are kept"
    v3 = (await d.list_versions("ep"))["versions"][0]
    assert v3["version"] == 3 and v3["changed"] == ["runtimeEnv"]
    with pytest.raises(Conflict):
        await d.rollback("ep", 1)  # already runs version 1's fields
    to2 = await d.rollback("ep", 2)
    assert to2["version"] == 4 and to2["endpoint"]["runtimeEnv"] == {"working_dir": GCS_V2}
    with pytest.raises(NotFound):
        await d.rollback("ep", 42)


async def test_failed_version_rolls_back_to_the_serving_one_by_default(rig: Rig) -> None:
    d = rig.d
    await d.create_endpoint(ep(handler="h:f"))
    await d.report_version_state("ep", 1, "active")
    await d.update_endpoint("ep", EndpointPatch.model_validate({"handler": "h:broken"}))
    await d.report_version_state("ep", 2, "failed", "boom")
    back = await d.rollback("ep")
    assert back["rolledBackTo"] == 1 and back["endpoint"]["handler"] == "h:f"
    assert (await d.get_endpoint("ep"))["problem"] is None, "the failed version is no longer the newest"


async def test_an_endpoint_keeps_the_records_of_its_latest_versions_and_the_serving_one(rig: Rig) -> None:
    d = rig.d
    await d.create_endpoint(ep(handler="h:f"))
    await d.report_version_state("ep", 1, "active")  # serves on while every later version fails
    for n in range(2, VERSION_RECORDS_KEPT + 6):
        await d.update_endpoint("ep", EndpointPatch.model_validate({"handler": f"h:v{n}"}))
        await d.report_version_state("ep", n, "failed", "ImportError")
    top = VERSION_RECORDS_KEPT + 5
    for dispatcher in (d, rig.fresh()):  # as cached, and as stored
        numbers = [v["version"] for v in (await dispatcher.list_versions("ep"))["versions"]]
        assert numbers == [*range(top, top - VERSION_RECORDS_KEPT, -1), 1], "the latest, and the serving one"
    with pytest.raises(NotFound, match=f"keeps the records of its latest {VERSION_RECORDS_KEPT} versions"):
        await d.rollback("ep", 2)
    with pytest.raises(NotFound) as unknown:
        await d.rollback("ep", top + 1)
    assert "keeps" not in str(unknown.value), "a version that never existed is just not found"
    back = await d.rollback("ep", 1)
    assert back["version"] == top + 1 and back["endpoint"]["handler"] == "h:f"
    assert 6 not in [v["version"] for v in (await d.list_versions("ep"))["versions"]], "one more went"


def pkg(n: int) -> str:
    return f"gcs://_ray_pkg_{n:040d}.zip"


async def deploy(d: Dispatcher, n: int, name: str = "ep", active: bool = True) -> int:
    """What ``ripple deploy`` does with package ``n``: its arrival, then the endpoint naming it."""
    await d.package_arriving(pkg(n))
    env = {"runtimeEnv": {"working_dir": pkg(n)}, "codeDigest": f"sha256:{n}"}
    if name in d.endpoints:
        got = await d.update_endpoint(name, EndpointPatch.model_validate(env))
    else:
        got = await d.create_endpoint(ep(name, handler="h:f", **env))
    version: int = got["version"]
    if active:
        await d.report_version_state(name, version, "active")
    return version


async def test_packages_of_versions_past_the_kept_ones_are_deleted(rig: Rig) -> None:
    d, hour_s = rig.d, 3601.0  # Settings.keep_versions is 2; a package is kept an hour after it arrived
    for n in (1, 2, 3):
        await deploy(d, n)
    assert rig.shelf.deleted == [], "version 1 is past the kept two, but its package arrived just now"
    rig.clock.advance(hour_s)
    await deploy(d, 4)
    assert rig.shelf.deleted == [pkg(1), pkg(2)], "versions 3 and 4 keep theirs"
    listed = {v["version"]: v for v in (await rig.fresh().list_versions("ep"))["versions"]}
    assert listed[1]["codeDeletedAt"] == listed[2]["codeDeletedAt"] == int(rig.clock.now_s() * 1000)
    assert listed[3]["codeDeletedAt"] is None and listed[4]["codeDeletedAt"] is None
    assert set(await rig.store.load_packages()) == {pkg(3), pkg(4)}, "deleted ones are forgotten"
    with pytest.raises(Conflict) as refused:
        await d.rollback("ep", 2)
    assert "version 2's code package was deleted" in str(refused.value)
    assert "RIPPLE_KEEP_VERSIONS" in str(refused.value)
    assert (await d.rollback("ep"))["rolledBackTo"] == 3, "the version before is still kept"
    assert rig.shelf.deleted == [pkg(1), pkg(2)]


async def test_the_serving_version_keeps_its_package_whatever_failed_after_it(rig: Rig) -> None:
    d = rig.d
    await deploy(d, 1)
    for n in (2, 3, 4):
        version = await deploy(d, n, active=False)
        await d.report_version_state("ep", version, "failed", "boom")
    rig.clock.advance(3601)
    await d.sweep_once()  # the periodic prune
    assert rig.shelf.deleted == [pkg(2)], "1 serves; 3 and 4 are the latest two"
    assert (await d.rollback("ep"))["rolledBackTo"] == 1


async def test_a_version_becoming_active_lets_the_one_it_replaces_go(rig: Rig) -> None:
    d = rig.d
    await deploy(d, 1)
    failed = await deploy(d, 2, active=False)
    await d.report_version_state("ep", failed, "failed", "boom")
    rolling = await deploy(d, 3, active=False)
    rig.clock.advance(3601)
    await d.sweep_once()
    assert rig.shelf.deleted == [], "1 serves, 2 and 3 are the latest two"
    await d.report_version_state("ep", rolling, "active")
    assert rig.shelf.deleted == [pkg(1)], "1 is retired and past the latest two"


async def test_a_package_in_use_elsewhere_or_undeletable_is_kept(rig: Rig) -> None:
    d = rig.d
    await deploy(d, 1, "a")
    await deploy(d, 1, "b")  # the same code on another endpoint
    for n in (2, 3):
        await deploy(d, n, "a")
    await d.package_arriving(pkg(9))  # a deploy that never created its version
    rig.clock.advance(3601)
    rig.shelf.refuse = {pkg(9)}
    await d.delete_endpoint("a")
    assert sorted(rig.shelf.deleted) == [pkg(2), pkg(3)], "b runs 1; 9 could not be deleted"
    assert pkg(9) in await rig.store.load_packages(), "tried again at the next prune"
    rig.shelf.refuse = set()
    await d.delete_endpoint("b")
    assert sorted(rig.shelf.deleted) == [pkg(1), pkg(2), pkg(3), pkg(9)]
    assert await rig.store.load_packages() == {}


async def test_a_prune_that_fails_does_not_fail_the_change_before_it(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = rig.d
    for n in (1, 2, 3):
        await deploy(d, n)
    rig.clock.advance(3601)

    async def unreachable() -> dict[str, int]:
        raise ConnectionError("the store is away")

    monkeypatch.setattr(rig.store, "load_packages", unreachable)
    assert await deploy(d, 4) == 4, "the version is made and active"
    assert rig.shelf.deleted == []
    monkeypatch.undo()
    await d.sweep_once()
    assert rig.shelf.deleted == [pkg(1), pkg(2)], "the periodic prune does it"


async def test_a_package_arriving_again_is_kept_another_grace(rig: Rig) -> None:
    d = rig.d
    for n in (1, 2, 3):
        await deploy(d, n)
    rig.clock.advance(3000)
    await d.package_arriving(pkg(1))  # uploaded again (the same bytes) for a new deploy
    rig.clock.advance(700)
    await d.update_endpoint("ep", EndpointPatch.model_validate({"maxReplicas": 3}))
    assert rig.shelf.deleted == [], "1 arrived again 700 s ago"
    rig.clock.advance(3000)
    await d.update_endpoint("ep", EndpointPatch.model_validate({"maxReplicas": 4}))
    assert rig.shelf.deleted == [pkg(1)]


async def test_endpoint_without_handler_is_active_at_once(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    (v1,) = (await rig.d.list_versions("ep"))["versions"]
    assert v1["state"] == "active"


async def test_take_records_the_version_on_the_job(rig: Rig) -> None:
    d = rig.d
    await d.create_endpoint(ep(handler="h:f"))
    job = await submit_one(d)
    (taken,) = await d.take("ep", "w1", 1, 0, "ray", None, 1)
    assert taken["id"] == job
    assert (await d.status("ep", job))["version"] == 1
    assert (await d.get_job(job))["version"] == 1
    await d.worker_gone("w1", "died")  # back in the queue; an outside worker takes it, version unknown
    (again,) = await d.take("ep", "w2", 1, 0)
    assert again["id"] == job
    assert "version" not in await d.status("ep", job), "only when known"


async def test_delete_endpoint_forgets_versions(rig: Rig) -> None:
    d = rig.d
    await d.create_endpoint(ep(handler="h:f"))
    await d.update_endpoint("ep", EndpointPatch.model_validate({"handler": "h:g"}))
    await d.delete_endpoint("ep")
    await d.create_endpoint(ep(handler="h:f"))
    assert [v["version"] for v in (await rig.fresh().list_versions("ep"))["versions"]] == [1]


async def test_endpoint_stored_before_versions_gets_version_one(rig: Rig) -> None:
    fields = {"name": "ep", "handler": "h:f", "runtimeEnv": {"working_dir": "/home/me/code"}}
    with pytest.raises(ValidationError):
        EndpointSpec.model_validate(fields)  # no longer accepted from a user
    raw = EndpointSpec.model_validate(fields, context={STORED: True}).model_dump_json()
    assert '"version":0' in raw
    await rig.store.put_endpoint("ep", raw)
    d = rig.fresh()
    got = await d.get_endpoint("ep")
    assert got["version"] == 1 and got["runtimeEnv"] == {"working_dir": "/home/me/code"}
    (v1,) = (await d.list_versions("ep"))["versions"]
    assert v1["state"] == "active"


async def test_pool_problem_shows_on_the_endpoint_then_expires(rig: Rig) -> None:
    d = rig.d
    await d.create_endpoint(ep(handler="h:f"))
    assert (await d.get_endpoint("ep"))["problem"] is None
    await d.report_pool_problem("ep", "RuntimeEnvSetupError: pip install failed")
    problem = (await d.get_endpoint("ep"))["problem"]
    assert problem["code"] == "pool_error" and "pip install failed" in problem["message"]
    assert [e["problem"] for e in await d.list_endpoints()] == [problem]
    rig.clock.advance(31)
    assert (await d.get_endpoint("ep"))["problem"] is None


async def test_failed_starts_show_on_the_endpoint_until_a_replica_is_ready(rig: Rig) -> None:
    d = rig.d
    await d.create_endpoint(ep(handler="h:f"))
    await d.report_workers("ep", [{"workerId": "r1", "state": "starting", "reason": "loading handler"}])
    assert (await d.get_endpoint("ep"))["problem"] is None
    rec = {"workerId": "r1", "state": "stopped", "reason": "failed to start: ModuleNotFoundError: x"}
    await d.report_workers("ep", [{**rec, "error": "Traceback ... ModuleNotFoundError: x"}])
    problem = (await d.get_endpoint("ep"))["problem"]
    assert problem["code"] == "start_failed" and "ModuleNotFoundError" in problem["message"]
    assert "Traceback" in problem["detail"]
    rig.clock.advance(1)
    await d.heartbeat("ep", "r2", [], {"state": "idle"})
    assert (await d.get_endpoint("ep"))["problem"] is None


# Why a queued job waits -----------------------------------------------------------------------------------


def published_facts(endpoint: str = "ep", **row: Any) -> dict[str, Any]:
    """Wait facts as the autoscaler publishes them (control_metrics.wait_facts)."""
    return {
        "intervalS": 1.0,
        "enabled": row.pop("enabled", True),
        "gpus": {"total": 1.0, "free": 1.0, "maxGpus": None},
        "gpuTypes": {},
        "endpoints": {endpoint: {"startFailures": 0, "startError": None, "blocked": None, **row}},
    }


async def test_queued_jobs_say_their_place_in_the_queue(rig: Rig) -> None:
    await rig.d.create_endpoint(ep(handler="h:f"))
    await rig.d.report_workers("ep", [{"workerId": "r1", "state": "starting"}])
    await rig.d.heartbeat("ep", "r1", [], {"state": "idle"})  # one replica, ready
    first, second = await rig.d.submit("ep", [run(1), run(2)])
    low = await submit_one(rig.d, policy={"lowPriority": True})
    third = await submit_one(rig.d)
    places = await rig.d.store.queue_positions([("ep", first), ("ep", low), ("ep", "nope"), ("other", first)])
    assert places == [0, 3, None, None]
    s = await rig.d.status("ep", second)
    assert s["waitReason"] == {"code": "queue_position", "message": "1 job ahead in the queue"}
    assert set(s) == {"id", "status", "delayTime", "executionTime", "waitReason"}
    assert (await rig.d.status("ep", first))["waitReason"]["code"] == "dispatching"
    assert (await rig.d.get_job(low))["waitReason"] == {
        "code": "low_priority",
        "message": "low priority: 3 jobs ahead (normal-priority first)",
    }
    got = await rig.d.statuses([third, low, "nope"])  # the bulk read: each job's own reason
    assert [g and g["waitReason"]["message"] for g in got] == [
        "2 jobs ahead in the queue",
        "low priority: 3 jobs ahead (normal-priority first)",
        None,
    ]
    assert (await rig.d.status("ep", third))["waitReason"]["message"] == "2 jobs ahead in the queue"
    (taken,) = await rig.d.take("ep", "r1", 1, 0, kind="ray")
    assert taken["id"] == first
    running = await rig.d.status("ep", first)
    assert "waitReason" not in running and running["status"] == "IN_PROGRESS"
    assert (await rig.d.status("ep", second))["waitReason"] == {
        "code": "waiting_for_worker",
        "message": "next in line; all 1 replica busy, the autoscaler may add one",
    }
    await rig.d.update_endpoint("ep", EndpointPatch.model_validate({"maxReplicas": 1}))
    assert (await rig.d.status("ep", third))["waitReason"] == {
        "code": "max_replicas",
        "message": "all 1 replica busy (maxReplicas 1); 1 job ahead",
    }


async def test_wait_reason_says_what_a_replica_being_set_up_does_as_its_pool_reports_it(rig: Rig) -> None:
    await rig.d.create_endpoint(ep(handler="h:f"))
    job = await submit_one(rig.d)
    setup = "installing torch (runtimeEnv.pip)"  # its version's runtime env, not the endpoint's latest
    views = [
        {"workerId": "r1", "state": "starting", "settingUp": True, "setup": setup},
        {"workerId": "r2", "state": "starting", "pendingPlacement": True},
    ]
    await rig.d.report_workers("ep", views)
    assert (await rig.d.status("ep", job))["waitReason"] == {
        "code": "scaling_up",
        "message": "2 replicas starting: 1 waiting for resources, 1 installing torch (runtimeEnv.pip)",
    }


async def test_wait_reason_of_replicas_that_fail_to_load_the_handler(rig: Rig) -> None:
    await rig.d.create_endpoint(ep(handler="h:f"))
    job = await submit_one(rig.d)
    assert (await rig.d.status("ep", job))["waitReason"]["code"] == "waiting_for_worker"
    await rig.d.report_workers("ep", [{"workerId": "r1", "state": "starting"}])
    assert (await rig.d.status("ep", job))["waitReason"] == {
        "code": "scaling_up",
        "message": "1 replica starting",
    }
    for wid in ("r1", "r2"):
        await rig.d.worker_gone(wid, "failed to start: ModuleNotFoundError")
        stopped = {
            "workerId": wid,
            "state": "stopped",
            "reason": "failed to start: ModuleNotFoundError",
            "error": "Traceback (most recent call last):\nModuleNotFoundError: No module named 'nope'",
        }
        await rig.d.report_workers("ep", [stopped])
    reason = (await rig.d.status("ep", job))["waitReason"]
    assert reason == {
        "code": "handler_fails_to_load",
        "message": "replicas fail to load the handler (2 failed starts in a row): "
        "ModuleNotFoundError: No module named 'nope'",
    }
    assert (await rig.d.get_job(job))["waitReason"] == reason
    assert (await rig.d.stats())["ep"]["waitReason"] == reason  # the head job's, for doctor
    # a replica that loads ends it; so does a changed spec
    await rig.d.report_workers("ep", [{"workerId": "r3", "state": "starting"}])
    await rig.d.heartbeat("ep", "r3", [], {"state": "idle"})
    assert (await rig.d.status("ep", job))["waitReason"]["code"] == "dispatching"
    await rig.d.report_workers("ep", [{**stopped, "workerId": "r4"}])
    await rig.d.update_endpoint("ep", EndpointPatch.model_validate({"handler": "h:g"}))
    assert (await rig.d.status("ep", job))["waitReason"]["code"] == "dispatching"


async def test_wait_reason_of_a_pool_that_cannot_start_replicas(rig: Rig) -> None:
    await rig.d.create_endpoint(ep(handler="h:f"))
    job = await submit_one(rig.d)
    await rig.d.report_pool_problem("ep", "RuntimeEnvSetupError: pip install failed")
    assert (await rig.d.status("ep", job))["waitReason"] == {
        "code": "handler_fails_to_load",
        "message": "the pool cannot start replicas: RuntimeEnvSetupError: pip install failed",
    }
    rig.clock.advance(60)  # the pool reports its error at every failing tick: an old one is over
    assert (await rig.d.status("ep", job))["waitReason"]["code"] == "waiting_for_worker"


async def test_wait_reason_from_the_autoscalers_published_facts_until_they_are_stale(rig: Rig) -> None:
    await rig.d.create_endpoint(ep(handler="h:f", gpus=2))
    job = await submit_one(rig.d)
    rig.d.absorb_wait_facts(published_facts(blocked="not enough GPUs (1 GPUs free)", blockedCause="gpus"))
    reason = (await rig.d.status("ep", job))["waitReason"]
    assert reason == {
        "code": "no_gpu",
        "message": "needs 2 x GPU per replica; 1 free of 1, cluster limit 1 (the cluster does not grow): "
        "it can never fit",
    }
    rig.clock.advance(5)
    assert (await rig.d.status("ep", job))["waitReason"]["code"] == "no_gpu"
    rig.clock.advance(30)  # no tick for 35 s (intervalS 1): the facts are not trusted any more
    assert (await rig.d.status("ep", job))["waitReason"]["code"] == "waiting_for_worker"
    rig.d.absorb_wait_facts(published_facts(enabled=False))
    assert (await rig.d.status("ep", job))["waitReason"] == {
        "code": "autoscaler_disabled",
        "message": "the autoscaler is disabled and no replica; none will be started",
    }
    rig.d.absorb_wait_facts(published_facts(startFailures=3, startError="ValueError: signal only works"))
    assert (await rig.d.status("ep", job))["waitReason"]["code"] == "handler_fails_to_load"


async def test_wait_reason_of_an_endpoint_without_handler(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await submit_one(rig.d)
    assert (await rig.d.status("ep", job))["waitReason"]["code"] == "no_handler"
    assert await rig.d.take("ep", "outside-1", 1, 0) != []  # an outside worker polls: it takes the job
    other = await submit_one(rig.d)
    assert (await rig.d.status("ep", other))["waitReason"] == {
        "code": "waiting_for_worker",
        "message": "next in line; all 1 outside worker busy",
    }
    assert "waitReason" not in await rig.d.wait_final("ep", job, 0)
    assert (await rig.d.wait_final("ep", other, 0))["waitReason"]["code"] == "waiting_for_worker"


# Results awaited on the store, and finished there by the worker (the queue off the per-job path) ---------


async def test_a_caller_waits_on_the_store_for_a_jobs_end(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await submit_one(rig.d, input=3)
    view = await wait_final(rig.store, job, 0.05)
    assert view is not None and view.status is JobStatus.IN_QUEUE, "as it is when the wait runs out"
    waiters = [asyncio.create_task(wait_final(rig.store, job, 10)) for _ in range(2)]
    await asyncio.sleep(0.05)
    assert [j["id"] for j in await rig.d.take("ep", "w1", 1, 0)] == [job]
    assert not any(w.done() for w in waiters), "a taken job is not final"
    await rig.d.done("ep", "w1", job, {"output": 6})
    for view in await asyncio.gather(*waiters):
        assert view is not None and (view.status, view.output) == (JobStatus.COMPLETED, 6), "every waiter"
    again = await wait_final(rig.store, job, 10)
    assert again is not None and again.output == 6, "a final job answers at once"
    assert await wait_final(rig.store, "no-such-job", 1) is None
    assert await rig.store.watch_final("no-such-job") is None


async def test_every_way_to_a_final_state_tells_the_waiting_caller(rig: Rig) -> None:
    await rig.d.create_endpoint(ep(maxRetries=0))
    running = await leased(rig)
    gone = await leased(rig, worker="w2")
    queued = await submit_one(rig.d)
    expired = await submit_one(rig.d, policy={"ttl": 1000})
    ids = [queued, running, gone, expired]
    for job in ids:
        assert await rig.store.watch_final(job) in (JobStatus.IN_QUEUE, JobStatus.IN_PROGRESS)
    waits = {job: asyncio.create_task(rig.store.await_final(job, 10)) for job in ids}
    await asyncio.sleep(0.05)
    await rig.d.cancel("ep", queued)
    await rig.d.cancel("ep", running)
    await rig.d.worker_gone("w2", "killed")  # no retry left: FAILED
    rig.clock.advance(2)
    await rig.d.sweep_once()
    got = {job: await waits[job] for job in ids}
    assert got == {
        queued: JobStatus.CANCELLED,
        running: JobStatus.CANCELLED,
        gone: JobStatus.FAILED,
        expired: JobStatus.TIMED_OUT,
    }


async def test_only_a_watched_job_signals_and_a_retry_clears_its_signal(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    unwatched = await leased(rig)
    await rig.d.done("ep", "w1", unwatched, {"output": 1})
    assert await rig.store.await_final(unwatched, 0.05) is None, "nobody watched: nothing was written"
    job = await leased(rig)
    await rig.store.watch_final(job)
    await rig.d.done("ep", "w1", job, {"error": "boom"})
    assert await rig.store.await_final(job, 1) is JobStatus.FAILED
    await rig.d.retry("ep", job)
    assert await rig.store.await_final(job, 0.05) is None, "the retried job's old end is gone"
    waiter = asyncio.create_task(wait_final(rig.store, job, 10))
    await asyncio.sleep(0.05)
    assert [j["id"] for j in await rig.d.take("ep", "w1", 1, 0)] == [job]
    await rig.d.done("ep", "w1", job, {"output": "second"})
    view = await waiter
    assert view is not None and (view.status, view.output) == (JobStatus.COMPLETED, "second")


async def test_results_finished_in_the_store_keep_the_dispatcher_in_step(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await submit_one(rig.d, webhook="http://h/x")
    rig.clock.advance(2)
    await rig.d.take("ep", "w1", 1, 0)
    rig.clock.advance(3)
    held = asyncio.create_task(rig.d.wait_final("ep", job, 10))
    await asyncio.sleep(0.05)
    kicks = rig.rec.kicks
    item = finish_item(job, "w1", {"output": {"x": 1}}, False)
    assert item is not None and finish_item(job, "w1", {"status": "IN_PROGRESS", "output": 1}, False) is None
    (outcome,) = await rig.store.finish([item], rig.d.now_ms())
    assert outcome.applied
    await rig.d.finished("ep", "w1", [outcome])
    assert (await held)["output"] == {"x": 1}, "the queue's own waiters are woken"
    assert rig.rec.kicks == kicks + 1, "a job with a webhook kicks the sender"
    assert ("queue_time", "ep", 2.0) in rig.rec.events and ("execution_time", "ep", 3.0) in rig.rec.events
    assert rig.rec.named("finished") == [("finished", "ep", "COMPLETED", 1)]
    assert (await rig.d.list_workers("ep"))[0]["jobs"] == [] and job not in rig.d.leased
    late = finish_item(job, "w1", {"error": "late"}, False)
    assert late is not None
    await rig.d.finished("ep", "w1", await rig.store.finish([late], rig.d.now_ms()))
    assert rig.rec.named("result_dropped") == [("result_dropped", "ep", "not_held")], "first result wins"
    unknown = finish_item("no-such-job", "w1", {"output": 1}, False)
    assert unknown is not None
    await rig.d.finished("ep", "w1", await rig.store.finish([unknown], rig.d.now_ms()))  # ignored
    assert (await rig.d.status("ep", job))["output"] == {"x": 1}


async def test_a_reclaimed_job_refuses_its_old_holders_result_finished_in_the_store(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    job = await leased(rig)
    assert await rig.d.worker_gone("w1", "killed") == 1
    stale = finish_item(job, "w1", {"output": "stale"}, False)
    assert stale is not None
    (outcome,) = await rig.store.finish([stale], rig.d.now_ms())
    assert not outcome.applied and outcome.status is JobStatus.IN_QUEUE
    await rig.d.finished("ep", "w1", [outcome])
    (again,) = await rig.d.take("ep", "w2", 1, 0)
    assert (again["id"], again["attempt"]) == (job, 2), "requeued once, its old result refused"
    fresh = finish_item(job, "w2", {"output": "fresh"}, False)
    assert fresh is not None
    await rig.d.finished("ep", "w2", await rig.store.finish([fresh], rig.d.now_ms()))
    assert (await rig.d.wait_final("ep", job, 0))["output"] == "fresh"


async def test_jobs_written_to_the_store_by_the_caller_are_counted_and_taken(rig: Rig) -> None:
    await rig.d.create_endpoint(ep())
    raw = await rig.store.load_endpoint("ep")
    assert raw is not None and await rig.store.load_endpoint("nope") is None
    spec = EndpointSpec.model_validate_json(raw, context={STORED: True})
    taker = asyncio.create_task(rig.d.take("ep", "w1", 1, 5))
    await asyncio.sleep(0.05)
    job = new_job("ep", spec, run(5, policy={"ttl": 5000}))
    await rig.store.submit("ep", [job], spec.max_queue_size, rig.d.now_ms())
    await rig.d.submitted("ep", [job.id])
    assert [j["id"] for j in await taker] == [job.id], "the waiting taker is woken"
    assert rig.rec.named("submitted") == [("submitted", "ep", 1)]
    assert (await rig.d.stats())["ep"]["lastArrivalS"] == rig.clock.now_s()
    woken = len(rig.rec.woken)
    queued = new_job("ep", spec, run(6))
    await rig.store.submit("ep", [queued], spec.max_queue_size, rig.d.now_ms())
    await rig.d.submitted("ep", [queued.id])
    assert len(rig.rec.woken) == woken + 1, "no taker waits: the autoscaler is woken"
    assert (await rig.d.get_job(job.id))["ttl"] == 5000, "the request's policy over the endpoint's"
    await rig.d.create_endpoint(ep("gone"))
    gone = await rig.store.load_endpoint("gone")
    assert gone is not None
    late = new_job("gone", EndpointSpec.model_validate_json(gone, context={STORED: True}), run(7))
    await rig.d.delete_endpoint("gone")  # its queue purged, then the late job is written
    await rig.store.submit("gone", [late], None, rig.d.now_ms())
    await rig.d.submitted("gone", [late.id])
    assert (await rig.d.get_job(late.id))["status"] == "CANCELLED", "a deleted endpoint's late job"
    await rig.d.submitted("gone", ["no-such-job"])  # nothing to cancel


async def test_a_finished_job_is_deleted_once_kept_and_a_retried_one_lives_on(store: JobStore) -> None:
    clock, rec = FakeClock(), Recorder()
    d = make(store, clock, rec, settings=Settings(keep_results_s=0.2))
    await d.create_endpoint(ep())
    done, failed, queued = await d.submit("ep", [run(1), run(2), run(3)])
    assert [j["id"] for j in await d.take("ep", "w1", 2, 0)] == [done, failed]
    await d.stream_push("ep", "w1", done, ["a", "b"])
    await d.done("ep", "w1", done, {"output": ["a", "b"]}, is_stream=True)
    await d.done("ep", "w1", failed, {"error": "CUDA out of memory"})
    await d.retry("ep", failed)  # back in the queue: it lives on
    await d.cancel("ep", queued)
    await asyncio.sleep(0.3)  # Redis deletes on its own clock; the in-memory store on the dispatcher's
    clock.advance(1.0)
    await d.sweep_once()
    for gone in (done, queued):
        assert await store.get(gone) is None, gone
        with pytest.raises(NotFound, match=r"deleted 0.2 s after it ended: RIPPLE_KEEP_RESULTS_S"):
            await d.status("ep", gone)
        with pytest.raises(NotFound, match="RIPPLE_KEEP_RESULTS_S"):
            await d.get_job(gone)
    assert (await d.status("ep", failed))["status"] == "IN_QUEUE"
    assert [job_id for job_id, _ in await store.list_jobs(10, None)] == [failed], "the listing trimmed"
    listed = await d.list_jobs(None, None, 10, None)
    assert [j["id"] for j in listed["jobs"]] == [failed] and listed["nextCursor"] is None
    assert rec.named("finished"), "the counters still count them"


async def test_jobs_are_kept_for_ever_when_told_so(store: JobStore) -> None:
    clock = FakeClock()
    d = make(store, clock, Recorder(), settings=Settings(keep_results_s=0))
    await d.create_endpoint(ep())
    (job,) = await d.submit("ep", [run(1)])
    await d.cancel("ep", job)
    await asyncio.sleep(0.05)
    clock.advance(365 * 86_400.0)
    await d.sweep_once()
    assert (await d.status("ep", job))["status"] == "CANCELLED"


async def test_paging_through_jobs_created_together_lists_each_once(store: JobStore) -> None:
    clock = FakeClock()
    d = make(store, clock, Recorder())
    await d.create_endpoint(ep())
    older = await d.submit("ep", [run(0), run(1)])
    clock.advance(1.0)
    batch = await d.submit("ep", [run(i) for i in range(7)])  # one step: one creation time
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        page = await d.list_jobs(None, None, 3, cursor)
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(older + batch) and len(seen) == 9, "every job once, none skipped"
    assert set(seen[:7]) == set(batch), "newest first"
    created_ms = (await d.get_job(batch[0]))["createdAt"]
    below = await d.list_jobs(None, None, 10, str(created_ms))  # a bare time: strictly before it
    assert {j["id"] for j in below["jobs"]} == set(older)
    with pytest.raises(InvalidInput, match="cursor"):
        await d.list_jobs(None, None, 10, "12:x")


async def test_paging_goes_on_where_it_ended_when_jobs_listed_before_are_deleted(store: JobStore) -> None:
    """The cursor is a place (a time and an id), not a count: jobs of one batch deleted between two pages
    (kept ``keep_results_s`` after they ended) do not make the next page skip or repeat one."""
    clock = FakeClock()
    d = make(store, clock, Recorder(), settings=Settings(keep_results_s=0.2))
    await d.create_endpoint(ep())
    older = await d.submit("ep", [run(0), run(1)])
    clock.advance(1.0)
    batch = await d.submit("ep", [run(i) for i in range(9)])  # one creation time
    page = await d.list_jobs(None, None, 4, None)
    seen = [j["id"] for j in page["jobs"]]
    for job_id in seen[:3]:
        await d.cancel("ep", job_id)
    await asyncio.sleep(0.3)  # Redis deletes on its own clock; the in-memory store on the dispatcher's
    clock.advance(1.0)
    await d.sweep_once()
    assert len(await store.list_jobs(20, None)) == 8, "three deleted, and trimmed from the listing"
    cursor = page["nextCursor"]
    while cursor is not None:
        page = await d.list_jobs(None, None, 4, cursor)
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["nextCursor"]
    assert sorted(seen) == sorted(batch + older) and len(seen) == 11, "every job once, none skipped"
