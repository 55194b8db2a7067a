"""A job store that stops answering for longer than a command's retries last (real local Ray, real embedded
Redis, stopped and started again on its data): the replica lives through it (its takes fail and are tried
again, rather than end it and start a new one cold), a job that finished meanwhile keeps its result
(recorded once the store is back, not left to its execution timeout), and the replica says why it waits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors.queue_direct import STEP_TIMEOUT_S
from orchestrator.ops import embedded_redis
from tests.integration.ray_fixtures import Ripple, local_ray, ripple, rp, wait_for

__all__ = ["local_ray", "module_redis", "ripple", "rp"]

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

RAY_INIT = {"num_cpus": 4, "num_gpus": 1}
AUTOSCALER = {"enabled": False, "interval_s": 0.5}
STORE_RETRY_S = 5.0
"""A command is tried again for 5 s while the store does not answer (``RIPPLE_STORE_RETRY_S``, 30 s by
default): the outage outlasts every retry in half the time."""
SETTINGS = {"store_retry_s": STORE_RETRY_S}
OUTAGE_S = 45.0
"""Long enough for the job's result to be refused by both ways it has (the store itself, past its step's
time limit; the queue, past a command's retries of a store that does not answer, ``STORE_RETRY_S``), and then
the replica's take through the queue (which ended the replica before, as soon as its retries ran out)."""
REDIS_DIRS: list[Path] = []


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """This module's embedded Redis, whose data dir the test stops and starts again."""
    data_dir = tmp_path_factory.mktemp("redis")
    REDIS_DIRS.append(data_dir)
    server = embedded_redis.start(data_dir, detach=False)
    try:
        yield server.url
    finally:
        embedded_redis.stop(data_dir)


def test_replicas_live_through_a_long_store_outage_and_no_result_is_lost(rp: Ripple) -> None:
    assert OUTAGE_S > 2 * STEP_TIMEOUT_S + 2 * STORE_RETRY_S * 1.5 + 5.0
    rp.create_endpoint("outage", "work_async", gpus=1, minReplicas=1, maxReplicas=1, concurrency=2)
    (replica,) = rp.wait_replicas("outage", 1, 60)
    (job,) = rp.submit("outage", [{"value": "through", "sleep_s": 1.0}])
    rp.wait_status(job, "IN_PROGRESS", 20)
    data_dir = REDIS_DIRS[0]
    assert embedded_redis.stop(data_dir)
    actor = rp.replica_actor(replica["id"])
    t0_s = time.monotonic()
    try:
        while time.monotonic() - t0_s < OUTAGE_S:
            time.sleep(2.0)
        state = rp.call(actor.status.remote())
    finally:
        assert embedded_redis.start(data_dir, detach=False).url == rp.redis_url
    print(f"replica during the outage: {state['state']}, {state['reason']!r}")
    assert state["state"] in ("idle", "busy") and state["unrecorded"] == 1, state
    said = (
        "1 finished job(s) not recorded yet, sent again until they are: the job store (Redis) does not answer"
    )
    assert said in state["reason"], state
    (done,) = rp.wait_final([job], 60)
    assert done["status"] == "COMPLETED" and done["output"]["echo"] == "through", done
    assert (done["workerId"], done["attempts"]) == (replica["id"], 1), done
    (after,) = rp.wait_final(rp.submit("outage", [{"value": "after"}]), 60)
    assert after["status"] == "COMPLETED" and after["workerId"] == replica["id"], after
    wait_for(lambda: rp.pool_replicas("outage")[0]["id"] == replica["id"], 10, "the same replica")
