"""A replica's take from the store that never reaches it (real local Ray, real Redis): the store leased a job
to a replica whose step's reply was lost, and Redis then stops answering the replica's next step (paused
writes, as a partition hangs a step with no error). The step fails at its time limit, the queue delivers
again every job the store leased to the replica, and the replica runs the lost one, once, instead of the job
waiting IN_PROGRESS for its execution timeout. Meanwhile the replica reports why it cannot use the store
(``storeTrouble``, which ``ripple doctor`` shows), and stops reporting it once a step succeeds again.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from actors.queue_direct import STEP_TIMEOUT_S
from orchestrator.store.redis import RedisStore
from tests.integration.ray_fixtures import Ripple, local_ray, module_redis, ripple, rp, wait_for

__all__ = ["local_ray", "module_redis", "ripple", "rp"]

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]

RAY_INIT = {"num_cpus": 4, "num_gpus": 1}
AUTOSCALER = {"enabled": False, "interval_s": 0.5}
BUSY_S = 1.0
PAUSE_S = BUSY_S + STEP_TIMEOUT_S + 4.0  # the replica's step after its busy job hangs past its limit


async def _lease_then_pause(rp: Ripple, endpoint: str, worker_id: str) -> str:
    """Take the next queued job of ``endpoint`` as ``worker_id`` (a take whose reply never reached it), then
    pause Redis's writes for ``PAUSE_S``; returns the job's id."""
    store = RedisStore.connect(rp.redis_url, f"{rp.namespace}:")
    try:
        (lost,) = await store.take(endpoint, worker_id, 1, int(time.time() * 1000))
        await store.r.execute_command("CLIENT", "PAUSE", str(int(PAUSE_S * 1000)), "WRITE")
        return lost.id
    finally:
        await store.close()


def _events(path: Path, job_id: str) -> list[str]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [e["event"] for e in map(json.loads, lines) if e["job"] == job_id]


def test_a_job_leased_to_a_replica_that_never_received_it_runs_there_once(rp: Ripple, tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    rp.create_endpoint("cut", "work_async", gpus=1, minReplicas=1, maxReplicas=1, concurrency=1)
    (replica,) = rp.wait_replicas("cut", 1, 60)
    # The replica busy with its one slot, so the next job queues instead of being handed to it.
    (busy,) = rp.submit("cut", [{"value": "busy", "sleep_s": BUSY_S, "log": str(log)}])
    rp.wait_status(busy, "IN_PROGRESS", 20)
    (job,) = rp.submit("cut", [{"value": "lost", "log": str(log)}])
    assert asyncio.run(_lease_then_pause(rp, "cut", replica["id"])) == job
    t0_s = time.monotonic()
    actor = rp.replica_actor(replica["id"])
    state = wait_for(
        lambda: (s := rp.call(actor.status.remote()))["storeTrouble"] and s, PAUSE_S + 10, "its trouble"
    )
    assert state["storeTrouble"]["error"] == f"no answer within {STEP_TIMEOUT_S:g} s", state
    assert state["reason"].startswith("serving through the queue: the job store fails"), state
    (done, first) = rp.wait_final([job, busy], PAUSE_S + 40)
    took_s = time.monotonic() - t0_s
    wait_for(lambda: rp.call(actor.status.remote())["storeTrouble"] is None, 30, "the trouble to clear")
    assert done["status"] == "COMPLETED" and done["output"]["echo"] == "lost", done
    assert (done["workerId"], done["attempts"]) == (replica["id"], 1), done
    assert _events(log, job) == ["start", "end"], "run once, by the replica it was leased to"
    assert first["status"] == "COMPLETED" and _events(log, busy) == ["start", "end"], first
    assert took_s < PAUSE_S + 30, f"{took_s:.1f} s: delivered again, not left to its execution timeout"
    history: list[dict[str, Any]] = done["history"]
    assert [h["to"] for h in history] == ["IN_PROGRESS", "COMPLETED"], "never handed back: no retry spent"
