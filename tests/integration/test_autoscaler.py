"""The autoscaler actor on a real local Ray (2 logical GPUs) with a real embedded Redis.

Endpoints ``hi``, ``mid`` and ``lo`` (priorities 90, 50, 10; one GPU per replica) compete for the two GPUs.
Timings are shortened: a 0.5 s tick, a 2 s starvation step and a 4 s starvation reclaim.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import ray

from tests.integration.ray_fixtures import (
    Ripple,
    local_ray,
    module_redis,
    ripple,
    rp,
    start_ripple,
    stop_control_actors,
    wait_for,
)

__all__ = ["local_ray", "module_redis", "ripple", "rp"]

pytestmark = pytest.mark.timeout(120)

RAY_INIT = {"num_cpus": 4, "num_gpus": 2}
AUTOSCALER = {
    "enabled": True,
    "interval_s": 0.5,
    "starvation_step_s": 2.0,
    "starvation_boost_per_step": 10,
    "starvation_max_boost": 30,
    "starvation_reclaim_after_s": 4.0,
}
SETTINGS = {"drain_timeout_s": 30.0}
PRIORITY = {"hi": 90, "mid": 50, "lo": 10}
ACTIONS = {"scale_up", "drain", "prewarm"}


def _endpoint(rp: Ripple, name: str, **fields: Any) -> None:
    base = {"gpus": 1, "priority": PRIORITY[name], "concurrency": 1, "maxReplicas": 2}
    rp.create_endpoint(name, "work_async", **{**base, **fields})


def _actions(rp: Ripple, endpoint: str, since_ms: float = 0) -> list[dict[str, Any]]:
    return [h for h in rp.history(endpoint) if h["kind"] in ACTIONS and h["at"] >= since_ms]


def _check_reasons(rp: Ripple, *endpoints: str) -> None:
    for ep in endpoints:
        for entry in rp.history(ep):
            assert entry["at"] > 0 and entry["reason"], entry


def test_scale_from_zero_on_the_first_job_and_back_to_zero_after_idle_time(rp: Ripple) -> None:
    _endpoint(rp, "hi", scaleDownIdleTime=3, scaleDownCooldown=0)
    submitted = time.time()
    (job,) = rp.submit("hi", [{"sleep_s": 0.2}])
    (final,) = rp.wait_final([job], 60)
    assert final["status"] == "COMPLETED"
    (worker,) = [w for w in rp.workers("hi", live_only=False) if w["workerId"] == final["workerId"]]
    to_start_s = (final["startedAt"] - final["createdAt"]) / 1000
    cold_s = float(worker["coldStartS"])
    print(
        f"scale from zero: submit to job start {to_start_s:.2f} s, of which handler init {cold_s:.3f} s: "
        f"{to_start_s - cold_s:.2f} s of scheduling and actor start (submitted at {submitted:.0f})"
    )
    assert to_start_s < 45
    ups = [h for h in rp.history("hi") if h["kind"] == "scale_up"]
    assert ups and "queued" in ups[-1]["reason"]

    rp.wait_replicas("hi", 0, 40)
    drains = [h for h in rp.history("hi") if h["kind"] == "drain"]
    assert drains and "idle >= 3 s" in drains[0]["reason"]
    assert drains[0]["at"] - final["finishedAt"] >= 2500  # not before its idle time
    _check_reasons(rp, "hi")


def test_min_replicas_held_with_no_work(rp: Ripple) -> None:
    _endpoint(rp, "mid", minReplicas=1, scaleDownIdleTime=1, scaleDownCooldown=0)
    (first,) = rp.wait_replicas("mid", 1, 60)
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:  # idle well past scaleDownIdleTime: still there
        assert [r["id"] for r in rp.pool_replicas("mid")] == [first["id"]]
        time.sleep(0.5)
    assert not [h for h in rp.history("mid") if h["kind"] == "drain"]
    (done,) = rp.wait_final(rp.submit("mid", [{"value": 1}]), 30)
    assert done["status"] == "COMPLETED" and done["workerId"] == first["id"]


def test_idle_low_priority_replicas_are_preempted_for_blocked_higher_priorities(rp: Ripple) -> None:
    # Both GPUs free first (the previous test's replicas may still be releasing theirs), and lo's jobs long
    # enough that its second replica is still wanted when it starts.
    wait_for(lambda: rp.gpus_free() == 2, 60, "both GPUs free")
    for name in ("hi", "mid", "lo"):
        _endpoint(rp, name, scaleDownIdleTime=300, scaleUpCooldown=1)
    lo_jobs = rp.submit("lo", [{"sleep_s": 3, "value": k} for k in range(2)])
    rp.wait_final(lo_jobs, 60)
    rp.wait_replicas("lo", 2, 60)  # both GPUs held by idle lo replicas
    assert rp.gpus_free() == 0

    (hi_job,) = rp.submit("hi", [{"value": "hi"}])
    (hi_done,) = rp.wait_final([hi_job], 60)
    assert hi_done["status"] == "COMPLETED"
    preempted = [h for h in rp.history("lo") if h["kind"] == "drain" and h.get("preempted_by") == "hi"]
    assert len(preempted) == 1 and len(preempted[0]["replica_ids"]) == 1
    assert "preempted for hi" in preempted[0]["reason"]
    blocked = [h for h in rp.history("hi") if h["kind"] == "blocked"]
    assert blocked and "GPUs" in blocked[-1]["reason"]

    (mid_job,) = rp.submit("mid", [{"value": "mid"}])
    (mid_done,) = rp.wait_final([mid_job], 60)
    assert mid_done["status"] == "COMPLETED"
    by_mid = [h for h in rp.history("lo") if h["kind"] == "drain" and h.get("preempted_by") == "mid"]
    assert by_mid
    rp.wait_replicas("lo", 0, 30)
    assert len(rp.pool_replicas("hi")) == 1  # the higher priority keeps its replica
    _check_reasons(rp, "hi", "mid", "lo")


def test_starvation_relief_gives_a_low_priority_endpoint_a_gpu_under_constant_high_load(rp: Ripple) -> None:
    _endpoint(rp, "hi", scaleDownIdleTime=300, scaleUpCooldown=0)
    _endpoint(rp, "lo", scaleDownIdleTime=300)
    hi_jobs = rp.submit("hi", [{"sleep_s": 1.5, "value": k} for k in range(40)])
    wait_for(
        lambda: sum(1 for r in rp.pool_replicas("hi") if r["state"] == "busy") == 2, 60, "hi on both GPUs"
    )
    submitted = time.time()
    (lo_job,) = rp.submit("lo", [{"value": "starving"}])
    started = rp.wait_status(lo_job, "COMPLETED", 60)
    waited_s = (started["startedAt"] / 1000) - submitted
    print(f"starvation relief: the low-priority job started {waited_s:.1f} s after submission")
    assert waited_s < 50
    relief = [h for h in rp.history("hi") if h["kind"] == "drain" and "starvation relief" in h["reason"]]
    assert relief and relief[0].get("preempted_by") == "lo"
    assert rp.job(hi_jobs[0])["status"] in ("IN_PROGRESS", "COMPLETED")
    finals = [j for j in rp.jobs(hi_jobs) if j["status"] not in ("IN_QUEUE", "IN_PROGRESS")]
    assert finals and all(j["status"] == "COMPLETED" and j["attempts"] == 1 for j in finals)  # none cut
    _check_reasons(rp, "hi", "lo")


def test_autoscaler_restart_resumes_from_saved_state_without_churn(rp: Ripple) -> None:
    _endpoint(rp, "mid", minReplicas=1, scaleDownIdleTime=300)
    _endpoint(rp, "lo", scaleDownIdleTime=300)
    rp.wait_final(rp.submit("lo", [{"value": 1}]), 60)
    mid = rp.wait_replicas("mid", 1, 60)
    lo = rp.wait_replicas("lo", 1, 60)
    before = {r["id"] for r in mid + lo}
    last_up = {row["endpoint"]: row["lastScaleUpAt"] for row in rp.status()["endpoints"]}
    assert last_up["lo"] is not None

    ticks_before = rp.status()["ticks"]
    restarted_ms = time.time() * 1000
    ray.kill(rp.autoscaler, no_restart=False)
    # The new instance acts once the old one's leadership lease expires (at most 10 s).
    wait_for(lambda: _ticking(rp, ticks_before), 60, "the restarted autoscaler ticking as leader", 0.5)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # a few ticks of the new instance
        time.sleep(0.5)
    after = {r["id"] for ep in ("mid", "lo") for r in rp.pool_replicas(ep)}
    assert after == before
    assert not _actions(rp, "mid", restarted_ms) and not _actions(rp, "lo", restarted_ms)
    resumed = {row["endpoint"]: row["lastScaleUpAt"] for row in rp.status()["endpoints"]}
    assert resumed["lo"] == last_up["lo"]  # its memory came back from the store


def _ticking(rp: Ripple, ticks_before: int) -> bool:
    try:
        status = rp.status()
    except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):  # restarting
        return False
    return status.get("leader") is not False and 2 <= int(status["ticks"]) < ticks_before


def test_disable_stops_decisions_and_enable_resumes_them(rp: Ripple) -> None:
    began_ms = time.time() * 1000
    _endpoint(rp, "mid", scaleDownIdleTime=300)
    rp.call(rp.autoscaler.set_enabled.remote(False))
    try:
        assert rp.status()["enabled"] is False
        (job,) = rp.submit("mid", [{"value": "waits"}])
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline:  # several ticks: no decision is applied
            assert rp.pool_replicas("mid") == []
            time.sleep(0.5)
        assert not _actions(rp, "mid", began_ms)
        assert rp.job(job)["status"] == "IN_QUEUE"
    finally:
        rp.call(rp.autoscaler.set_enabled.remote(True))
    (done,) = rp.wait_final([job], 60)
    assert done["status"] == "COMPLETED"
    assert [h["kind"] for h in _actions(rp, "mid", began_ms)] == ["scale_up"]
    _check_reasons(rp, "mid")


def test_cpu_cap_setting_reaches_the_policy(rp: Ripple, module_redis: str, tmp_path: Path) -> None:
    """``max_cpus`` (RIPPLE_AUTOSCALER__MAX_CPUS) caps a CPU endpoint's replicas: a second Ripple on the same
    Ray, capped at 1 CPU, runs three queued jobs on one replica and says why it adds no other."""
    namespace = f"cap{uuid.uuid4().hex[:8]}"
    capped = start_ripple(module_redis, tmp_path, namespace, None, {"max_cpus": 1})
    try:
        capped.create_endpoint("cpu", "work_async", gpus=0, cpus=1, concurrency=1, maxReplicas=3)
        jobs = capped.submit("cpu", [{"sleep_s": 1.0, "value": k} for k in range(3)])
        seen = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            seen = max(seen, len(capped.pool_replicas("cpu")))
            if all(j["status"] == "COMPLETED" for j in capped.jobs(jobs)):
                break
            time.sleep(0.2)
        assert [j["status"] for j in capped.jobs(jobs)] == ["COMPLETED"] * 3
        assert seen == 1, f"{seen} replicas under a 1-CPU cap"
        blocked = [h for h in capped.history("cpu") if h["kind"] == "blocked"]
        assert blocked and "CPUs" in blocked[0]["reason"], blocked
    finally:
        with contextlib.suppress(Exception):
            capped.delete_all(timeout_s=30.0)
        stop_control_actors(namespace)


def test_pool_ready_answers_once_the_new_endpoints_pool_is_up(rp: Ripple) -> None:
    _endpoint(rp, "hi")
    assert rp.call(rp.autoscaler.pool_ready.remote("hi", 30.0), 40) is True
    summary = rp.call(rp.pool("hi").summary.remote())  # the pool actor exists and answers
    assert summary["endpoint"] == "hi" and summary["replicas"] == []
    # An endpoint the queue does not know gets no pool: False once the wait is over.
    assert rp.call(rp.autoscaler.pool_ready.remote("no-such-endpoint", 1.0), 30) is False
    with pytest.raises(ValueError):
        rp.pool("no-such-endpoint")


def test_a_standby_worker_process_is_accepted_by_the_raylet(rp: Ripple) -> None:
    import asyncio

    from actors import warm_workers

    node = next(n for n in warm_workers.nodes() if n.alive)
    assert asyncio.run(warm_workers.prestart(node, 1, keep_alive_s=5)) is True
    # A job runs as before: its replica starts (from a standby process or a new one) and serves.
    _endpoint(rp, "mid", scaleDownIdleTime=300)
    (final,) = rp.wait_final(rp.submit("mid", [{"value": 1}]), 60)
    assert final["status"] == "COMPLETED"
