"""The in-cluster client (``Client.in_cluster()``) against the real JobQueue actor on a local Ray: it
validates each job into the RunRequest the actor takes, so a bad policy fails at the caller naming the field
and the actor never sees it."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from orchestrator.client import Client
from orchestrator.core.errors import InvalidInput, NotFound, NotReady, QueueFull
from orchestrator.store.failures import STORE_FULL
from tests.integration.ray_fixtures import Ripple, local_ray, module_redis, ripple, rp

__all__ = ["local_ray", "module_redis", "ripple", "rp"]

pytestmark = pytest.mark.timeout(120)

RAY_INIT = {"num_cpus": 2, "num_gpus": 0}
AUTOSCALER = {"enabled": False, "interval_s": 0.5}


def test_in_cluster_client_round_trip(rp: Ripple) -> None:
    rp.create_endpoint("inc", "work_async", gpus=0, cpus=0, minReplicas=1, concurrency=4)
    c = Client.in_cluster(rp.namespace)
    out = c.runsync("inc", {"value": 1}, timeout_s=60)
    assert (out["status"], out["output"]["echo"]) == ("COMPLETED", 1)
    job = c.submit("inc", {"value": 2}, execution_timeout_s=30, ttl_s=60, low_priority=True)
    assert c.result(job, "inc", timeout_s=60)["output"]["echo"] == 2
    detail = rp.job(job)
    assert (detail["executionTimeout"], detail["ttl"], detail["lowPriority"]) == (30_000, 60_000, True)
    many = c.submit_many("inc", [{"value": n} for n in range(5)], chunk=2)
    assert [c.result(j, "inc", timeout_s=60)["output"]["echo"] for j in many] == list(range(5))
    assert [s and s["status"] for s in c.statuses([many[0], "nope"])] == ["COMPLETED", None]

    async def run_async() -> list[int]:
        ids = await c.asubmit_many("inc", [{"value": 7}, {"value": 8}])
        one = await c.asubmit("inc", {"value": 9})
        return [(await c.aresult(j, "inc", 60.0))["output"]["echo"] for j in [*ids, one]]

    assert asyncio.run(run_async()) == [7, 8, 9]


def test_in_cluster_client_validates_before_calling_the_actor(rp: Ripple) -> None:
    rp.create_endpoint("inv", "work_async", gpus=0, cpus=0, minReplicas=0)
    c = Client.in_cluster(rp.namespace)
    with pytest.raises(InvalidInput) as info:
        c.submit("inv", {"value": 1}, execution_timeout_s=0.5)  # executionTimeout must be >= 1000 ms
    assert info.value.detail[0]["loc"] == ["policy", "executionTimeout"]
    with pytest.raises(InvalidInput) as info:
        c.submit("inv", None)
    assert info.value.detail[0]["loc"] == ["input"]
    assert rp.call(rp.queue.health.remote("inv"))["jobs"]["inQueue"] == 0, "nothing reached the queue"
    with pytest.raises(NotFound):
        c.submit("no-such-endpoint", {"value": 1})
    # Raised in the queue actor, and raised here as itself (as over HTTP), not as Ray's task error
    with pytest.raises(NotFound) as missing:
        c.submit_many("no-such-endpoint", [{"value": 1}])
    assert type(missing.value) is NotFound and str(missing.value) == "endpoint 'no-such-endpoint' not found"
    with pytest.raises(NotFound) as missing:
        asyncio.run(c.asubmit("no-such-endpoint", {"value": 1}))
    assert type(missing.value) is NotFound


def test_in_cluster_client_awaits_results_on_the_store(rp: Ripple) -> None:
    rp.create_endpoint("ins", "work_async", gpus=0, cpus=0, minReplicas=0)
    rp.create_endpoint("other", "work_async", gpus=0, cpus=0, minReplicas=0)
    c = Client.in_cluster(rp.namespace)
    assert c.waits_on_store, "the embedded Redis is reachable from this process"
    job = c.submit("ins", {"value": 1})
    queued = c.result(job, "ins", timeout_s=0.3)
    assert queued["status"] == "IN_QUEUE" and "waitReason" in queued, "not final: the queue answers"
    second = c.submit("ins", {"value": 2})
    places = [s and s.get("waitReason", {}).get("message") for s in c.statuses([job, second, "nope"])]
    assert places[0] == queued["waitReason"]["message"] and places[2] is None, places
    assert places[1] is not None and places[1] != places[0], "each job's own place in the queue"
    c.cancel(second, "ins")
    asked_s = time.monotonic()
    with pytest.raises(NotFound):
        c.result(job, "other", timeout_s=30)
    assert time.monotonic() - asked_s < 10, "another endpoint's job: refused at once, not after the wait"
    c.cancel(job, "ins")
    assert c.result(job, "ins", timeout_s=5)["status"] == "CANCELLED"
    assert asyncio.run(c.aresult(job, "ins", 5.0))["status"] == "CANCELLED"
    with pytest.raises(NotFound):
        c.result("no-such-job", "ins", timeout_s=0.3)


def test_in_cluster_submit_to_the_store_enforces_the_queue_limit(rp: Ripple) -> None:
    rp.create_endpoint("full", "work_async", gpus=0, cpus=0, minReplicas=0, maxQueueSize=1)
    c = Client.in_cluster(rp.namespace)
    assert c.waits_on_store
    job = c.submit("full", {"value": 1}, ttl_s=60)
    with pytest.raises(QueueFull):
        c.submit("full", {"value": 2})
    assert rp.job(job)["ttl"] == 60_000, "the request's policy over the endpoint's"
    health = rp.call(rp.queue.health.remote("full"))
    assert health["jobs"]["inQueue"] == 1, "the refused job was never written"


def test_a_full_store_refuses_in_cluster_submits_saying_so(rp: Ripple) -> None:
    """Redis at its maxmemory: a submit written to the store by the client, and one sent through the queue
    actor, both raise NotReady in Ripple's words, not Redis's error; once Redis has room, they are taken."""
    rp.create_endpoint("roomy", "work_async", gpus=0, cpus=0, minReplicas=0)
    c = Client.in_cluster(rp.namespace)
    assert c.waits_on_store
    admin = redis.Redis.from_url(rp.redis_url)
    try:
        admin.config_set("maxmemory", "1")  # below what Redis uses already: every write is refused
        with pytest.raises(NotReady) as to_store:
            c.submit("roomy", {"value": 1})
        with pytest.raises(NotReady) as through_queue:
            c.submit_many("roomy", [{"value": 2}])
        assert str(to_store.value) == str(through_queue.value) == STORE_FULL
    finally:
        admin.config_set("maxmemory", "0")
        admin.close()
    assert c.submit("roomy", {"value": 3}) and c.submit_many("roomy", [{"value": 4}])
    health = rp.call(rp.queue.health.remote("roomy"))
    assert health["jobs"]["inQueue"] == 2, "only the two accepted once Redis had room"
