"""Replicas outlive their pool: they are detached actors, a restarted pool adopts them by name instead of
starting new ones, and what no pool holds any more is killed (real local Ray, 2 logical GPUs, real Redis).

The autoscaler runs (it creates, closes and sweeps) but is switched off: replica counts are set by hand
through ``minReplicas``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import ray

from actors.pool import drain_all_pools
from actors.pool_replicas import named_replicas
from tests.integration.ray_fixtures import Ripple, local_ray, module_redis, ripple, rp, wait_for

__all__ = ["local_ray", "module_redis", "ripple", "rp"]

pytestmark = pytest.mark.timeout(120)

RAY_INIT = {"num_cpus": 4, "num_gpus": 2}
AUTOSCALER = {"enabled": False, "interval_s": 0.5}
SETTINGS = {"drain_timeout_s": 20.0, "heartbeat_timeout_s": 10.0}


def _runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _actor_ids(rp: Ripple, endpoint: str) -> dict[str, str]:
    return {r["id"]: r["actorId"] for r in rp.pool_replicas(endpoint)}


def _replica_names(rp: Ripple, endpoint: str) -> set[str]:
    return {name for name, ep, _ in named_replicas(rp.namespace) if ep == endpoint}


def test_a_restarted_pool_adopts_its_running_replicas_and_their_jobs_finish_once(
    rp: Ripple, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    rp.create_endpoint("adopt", "work_async", gpus=1, minReplicas=2, maxReplicas=2, maxRetries=2)
    rp.wait_replicas("adopt", 2, 60)
    before = _actor_ids(rp, "adopt")
    pids = {wid: rp.call(rp.replica_actor(wid).status.remote())["actorId"] for wid in before}
    # Two jobs running (one per replica) and four queued behind them.
    ids = rp.submit("adopt", [{"value": k, "sleep_s": 3, "log": str(log)} for k in range(6)])
    wait_for(lambda: sum(1 for j in rp.jobs(ids) if j["status"] == "IN_PROGRESS") == 2, 20, "2 jobs running")

    pool = rp.pool("adopt")
    old_pool_actor = pool._actor_id.hex()
    ray.kill(pool, no_restart=False)  # the pool's process dies; Ray restarts the (detached) pool

    def adopted() -> list[dict[str, Any]] | None:
        try:
            rs = rp.pool_replicas("adopt")
        except ray.exceptions.RayActorError:  # restarting
            return None
        return rs if len(rs) == 2 and all(r["adopted"] for r in rs) else None

    rs = wait_for(adopted, 40, "the restarted pool to adopt both replicas")
    assert rp.pool("adopt")._actor_id.hex() == old_pool_actor  # the same actor, restarted
    assert {r["id"]: r["actorId"] for r in rs} == before  # the same replica actors: none started anew
    done = rp.wait_final(ids, 60)
    assert [j["status"] for j in done] == ["COMPLETED"] * 6, done
    assert all(j["attempts"] == 1 for j in done), [j["attempts"] for j in done]
    assert {j["workerId"] for j in done} <= set(before)
    runs = _runs(log)
    for job_id in ids:
        assert [e["event"] for e in runs if e["job"] == job_id] == ["start", "end"], (job_id, runs)
    # Still the same two replicas afterwards: the adopted ones count toward minReplicas.
    assert _actor_ids(rp, "adopt") == before
    assert {wid: rp.call(rp.replica_actor(wid).status.remote())["actorId"] for wid in before} == pids


def test_a_replica_serves_on_without_its_pool_and_is_swept_once_its_endpoint_is_gone(
    rp: Ripple, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    rp.create_endpoint("orphan", "work_async", gpus=1, minReplicas=1, maxReplicas=1)
    (replica,) = rp.wait_replicas("orphan", 1, 60)
    ray.kill(rp.pool("orphan"), no_restart=True)  # no pool restarts: nothing adopts or follows it

    # Its ``run`` keeps going after its caller (the pool) died: it still takes and finishes jobs.
    ids = rp.submit("orphan", [{"value": k, "sleep_s": 0.2, "log": str(log)} for k in range(3)])
    done = rp.wait_final(ids, 30)
    assert [j["status"] for j in done] == ["COMPLETED"] * 3
    assert {j["workerId"] for j in done} == {replica["id"]}

    assert _replica_names(rp, "orphan")
    rp.call(rp.queue.delete_endpoint.remote("orphan"))
    # The autoscaler closes the (dead) pool, then its sweep kills the replica no pool holds.
    wait_for(lambda: not _replica_names(rp, "orphan"), 30, "the orphaned replica to be killed")
    total = float(ray.cluster_resources().get("GPU", 0.0))  # type: ignore[no-untyped-call]
    wait_for(lambda: rp.gpus_free() >= total, 20, "its GPU released")


def test_drain_all_pools_kills_every_replica_also_those_no_pool_holds(rp: Ripple) -> None:
    rp.create_endpoint("held", "work_async", gpus=1, minReplicas=1, maxReplicas=1)
    rp.create_endpoint("loose", "work_async", gpus=1, minReplicas=1, maxReplicas=1)
    rp.wait_replicas("held", 1, 60)
    rp.wait_replicas("loose", 1, 60)
    ray.kill(rp.pool("loose"), no_restart=True)
    # Keep the autoscaler from closing or re-creating pools meanwhile.
    ray.kill(rp.autoscaler, no_restart=False)
    assert _replica_names(rp, "held") and _replica_names(rp, "loose")
    drain_all_pools(rp.namespace, timeout_s=20.0)
    assert not _replica_names(rp, "held") and not _replica_names(rp, "loose")
    with pytest.raises(ValueError):
        rp.pool("held")
