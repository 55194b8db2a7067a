"""Worker pools and replicas on a real local Ray (2 logical GPUs, 4 CPUs) with a real embedded Redis.

The autoscaler runs (it creates and removes the pools) but is switched off, so every replica count here is
set by hand through ``minReplicas``: what the pool does is deterministic.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest
import ray
import redis

from orchestrator.core.health import DEFAULT_HEALTH_POLICY
from tests.integration.ray_fixtures import Ripple, local_ray, module_redis, ripple, rp, wait_for

__all__ = ["local_ray", "module_redis", "ripple", "rp"]

pytestmark = pytest.mark.timeout(90)

RAY_INIT = {"num_cpus": 4, "num_gpus": 2}
AUTOSCALER = {"enabled": False, "interval_s": 0.5}
SETTINGS = {"drain_timeout_s": 40.0}


def _log_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_replicas_get_logical_gpus_and_a_short_one_waits_for_placement(rp: Ripple) -> None:
    rp.create_endpoint("gpu", "work_sync", gpus=1, minReplicas=3, maxReplicas=3)

    def two_placed_one_pending() -> list[dict[str, Any]] | None:
        ws = rp.workers("gpu")
        idle = [w for w in ws if w["state"] == "idle"]
        pending = [w for w in ws if w.get("pendingPlacement")]
        return ws if len(idle) == 2 and len(pending) == 1 and len(ws) == 3 else None

    ws = wait_for(two_placed_one_pending, 60, "two replicas placed and one pending")
    idle = [w for w in ws if w["state"] == "idle"]
    assert sorted(g for w in idle for g in w["gpuIds"]) == ["0", "1"]
    (pending,) = [w for w in ws if w.get("pendingPlacement")]
    assert pending["state"] == "starting"
    assert "waiting for resources" in pending["reason"]

    ids = rp.submit("gpu", [{"value": k, "sleep_s": 0.2} for k in range(2)])
    done = rp.wait_final(ids, 30)
    assert {j["status"] for j in done} == {"COMPLETED"}
    seen = {j["workerId"]: j["output"]["cuda"] for j in done}
    for w in idle:
        if w["workerId"] in seen:
            assert seen[w["workerId"]] == w["gpuIds"][0]  # CUDA_VISIBLE_DEVICES is the replica's GPU


def test_cold_start_is_timed_and_reported_per_replica(rp: Ripple) -> None:
    env = {"env_vars": {"RIPPLE_TEST_INIT_S": "1.5"}}
    rp.create_endpoint("cold", "work_async", gpus=0, minReplicas=2, runtimeEnv=env)
    ws = wait_for(
        lambda: len(ready := [w for w in rp.workers("cold") if w["state"] == "idle"]) == 2 and ready,
        60,
        "two loaded replicas",
    )
    pool = {r["id"]: r for r in rp.pool_replicas("cold")}
    for w in ws:
        print(f"cold start of {w['workerId']}: {w['coldStartS']:.3f} s (handler init 1.5 s)")
        assert 1.5 <= w["coldStartS"] < 30
        assert pool[w["workerId"]]["coldStartS"] == w["coldStartS"]


def test_handler_import_error_is_reported_with_its_traceback_and_retried_with_backoff(rp: Ripple) -> None:
    env = {"env_vars": {"RIPPLE_TEST_FAIL_IMPORT": "1"}}
    rp.create_endpoint("broken", "work_async", gpus=0, minReplicas=1, runtimeEnv=env)
    errors = wait_for(lambda: rp.pool_summary("broken")["errors"], 60, "a start error in the pool summary")
    first_at = errors[0]["at"]
    assert "import failed on purpose" in errors[0]["error"]
    assert 'handlers_for_tests.py", line' in errors[0]["error"]  # the traceback, with the failing frame

    # The pool reports the stopped replica to the queue's registry just after it notes the error: first
    # that it is gone (its leases back at once), then its record with the error.
    def failed_with_error() -> list[dict[str, Any]]:
        ws = rp.workers("broken", live_only=False)
        return [w for w in ws if w["state"] == "stopped" and w.get("error")]

    failed = wait_for(
        failed_with_error,
        10,
        "the failed replica with its error in the queue's registry",
    )
    assert "import failed on purpose" in failed[0]["error"]
    # Failed starts are retried, but with a growing backoff (1, 2, 4, ... s between them), not in a loop:
    # watch three of them.
    wait_for(lambda: len(rp.pool_summary("broken")["errors"]) >= 3, 30, "three failed starts", 0.2)
    summary = rp.pool_summary("broken")
    at = [e["at"] for e in summary["errors"]]
    assert at[0] == first_at
    gaps = [b - a for a, b in itertools.pairwise(at)]
    starts = [w for w in rp.workers("broken", live_only=False) if w["state"] == "stopped"]
    print(f"failed starts {len(starts)}; gaps {[round(g, 1) for g in gaps]} s")
    assert len(gaps) >= 2 and all(g >= 2.0**k for k, g in enumerate(gaps))  # 1, 2, 4, ... s between attempts
    assert len(starts) <= len(at) + 1  # no start beyond those (one may have begun since)
    assert summary["startFailures"] >= len(at)


def _overlap(outputs: list[dict[str, Any]]) -> float:
    """Seconds during which all of these runs were running at once (<= 0: they never all overlapped)."""
    return float(min(o["end"] for o in outputs) - max(o["start"] for o in outputs))


def test_sync_async_and_generator_handlers_run_jobs_concurrently_and_stream(rp: Ripple) -> None:
    kinds = {"c-sync": "work_sync", "c-async": "work_async", "c-gen": "chunks"}
    for name, fn in kinds.items():
        rp.create_endpoint(name, fn, gpus=0, concurrency=3, minReplicas=1)
    for name in kinds:
        rp.wait_replicas(name, 1, 60)
    # A new replica's first job is its health check (one slot); after it the replica serves 3 at once.
    warm = {name: rp.submit(name, [{"sleep_s": 0, "n": 1, "value": "warm"}])[0] for name in kinds}
    rp.wait_final(list(warm.values()), 30)
    # 3 s each: they overlap by more than 0.5 s even when a loaded machine holds up the replica's second
    # take (a job handed to a parked replica comes alone; it takes the other two from the queue next).
    ids = {name: rp.submit(name, [{"sleep_s": 3.0, "n": 3, "value": k} for k in range(3)]) for name in kinds}

    # Stream: chunks of a running generator job arrive before it finishes.
    gen_id = ids["c-gen"][0]
    streamed: list[dict[str, Any]] = []
    while_running = 0
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        reply = rp.call(rp.queue.stream.remote("c-gen", gen_id))
        streamed += [c["output"] for c in reply["stream"]]
        if reply["stream"] and reply["status"] == "IN_PROGRESS":
            while_running += len(reply["stream"])
        if reply["status"] == "COMPLETED":
            break
        time.sleep(0.2)
    assert while_running >= 1
    assert [c["i"] for c in streamed] == [0, 1, 2]

    for name, job_ids in ids.items():
        done = rp.wait_final(job_ids, 40)
        assert {j["status"] for j in done} == {"COMPLETED"}, done
        assert len({j["workerId"] for j in done}) == 1  # one replica ran all three
        if name == "c-gen":
            assert done[0]["output"] == streamed  # the final output aggregates the stream
            runs = [{"start": o[0]["start"], "end": o[-1]["at"]} for o in (j["output"] for j in done)]
        else:
            runs = [j["output"] for j in done]
        print(f"{name}: three 3 s jobs overlapped for {_overlap(runs):.2f} s")
        assert _overlap(runs) > 0.5, runs


def test_min_replicas_by_hand_converges_up_and_down_idle_first_busy_last(rp: Ripple, tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    rp.create_endpoint("manual", "work_async", gpus=1, minReplicas=2, maxReplicas=4)
    rp.wait_replicas("manual", 2, 60)
    (job,) = rp.submit("manual", [{"sleep_s": 10, "log": str(log)}])
    busy = rp.wait_status(job, "IN_PROGRESS", 20)["workerId"]

    rp.update_endpoint("manual", minReplicas=1)  # the idle one goes, the busy one stays
    left = wait_for(
        lambda: [r["id"] for r in rp.pool_replicas("manual")] == [busy], 30, "only the busy replica left"
    )
    assert left
    assert rp.job(job)["status"] == "IN_PROGRESS"

    rp.update_endpoint("manual", minReplicas=0)  # now the busy one drains: it finishes its job first
    wait_for(
        lambda: [w["state"] for w in rp.workers("manual") if w["workerId"] == busy] == ["draining"],
        20,
        "the busy replica draining",
    )
    assert rp.job(job)["status"] == "IN_PROGRESS"
    (final,) = rp.wait_final([job], 30)
    assert final["status"] == "COMPLETED" and final["attempts"] == 1, final
    rp.wait_replicas("manual", 0, 30)
    assert [e["event"] for e in _log_lines(log)] == ["start", "end"]

    rp.update_endpoint("manual", minReplicas=2)  # and up again
    rp.wait_replicas("manual", 2, 60)


def test_killed_replica_job_returns_to_the_queue_and_completes_once_elsewhere(
    rp: Ripple, tmp_path: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    rp.create_endpoint("killme", "work_async", gpus=1, minReplicas=1, maxRetries=2)
    rp.wait_replicas("killme", 1, 60)
    (job,) = rp.submit("killme", [{"sleep_s": 4, "log": str(log)}])
    victim = rp.wait_status(job, "IN_PROGRESS", 20)["workerId"]
    ray.kill(rp.replica_actor(victim), no_restart=True)

    (final,) = rp.wait_final([job], 60)
    assert final["status"] == "COMPLETED"
    assert final["workerId"] != victim
    assert final["attempts"] == 2
    events = _log_lines(log)
    assert [e["event"] for e in events].count("end") == 1
    assert [e["event"] for e in events].count("start") == 2
    stopped = [w for w in rp.workers("killme", live_only=False) if w["workerId"] == victim]
    assert stopped and stopped[0]["state"] == "stopped"


def test_hanging_sync_handler_times_out_and_its_replica_is_replaced(rp: Ripple) -> None:
    rp.create_endpoint("hangs", "hang", gpus=0, minReplicas=1, concurrency=1, executionTimeout=2000)
    (first,) = rp.wait_replicas("hangs", 1, 60)
    (job,) = rp.submit("hangs", [{"value": 1}])
    (final,) = rp.wait_final([job], 30)
    assert final["status"] == "TIMED_OUT"
    assert final["workerId"] == first["id"]

    def replaced() -> bool:
        ws = rp.workers("hangs", live_only=False)
        old = [w for w in ws if w["workerId"] == first["id"]]
        new = [w for w in ws if w["workerId"] != first["id"] and w["state"] == "idle"]
        return bool(old and old[0]["state"] == "stopped" and "hung" in (old[0]["reason"] or "") and new)

    wait_for(replaced, 40, "the hung replica stopped and a new one idle")


def test_a_cancelled_sync_job_keeps_its_replica_which_serves_on_once_its_code_returns(rp: Ripple) -> None:
    """Sync code cannot be interrupted: a cancelled job's thread runs on until the handler returns. The
    replica (its model loaded) is kept, as a RunPod worker is, and takes its next job once the thread is
    free; it is replaced only when that code runs past the job's execution timeout (the test above).
    Meanwhile a queued job says what it waits for (before: "a worker is free: being handed over")."""
    rp.create_endpoint("cancels", "work_sync", gpus=1, minReplicas=1, maxReplicas=1, concurrency=1)
    (first,) = rp.wait_replicas("cancels", 1, 60)
    (long_job,) = rp.submit("cancels", [{"value": 1, "sleep_s": 6}])
    rp.wait_status(long_job, "IN_PROGRESS", 20)
    cancelled_s = time.time()
    assert rp.call(rp.queue.cancel.remote("cancels", long_job))["status"] == "CANCELLED"
    (next_job,) = rp.submit("cancels", [{"value": 2}])

    def waits_for_the_slot() -> dict[str, str] | None:
        reason: dict[str, str] | None = rp.call(rp.queue.status.remote("cancels", next_job)).get("waitReason")
        return reason if reason and "stopped job's code" in reason["message"] else None

    reason = wait_for(waits_for_the_slot, 5, "the queued job to say what holds the replica")
    assert reason == {
        "code": "autoscaler_disabled",  # in this module
        "message": "the autoscaler is disabled and all 1 replica busy; none will be started; 1 held by a "
        "stopped job's code until it returns",
    }, reason
    (done,) = rp.wait_final([next_job], 30)
    assert done["status"] == "COMPLETED" and done["workerId"] == first["id"], done
    started_s = done["startedAt"] / 1000
    print(f"next job started {started_s - cancelled_s:.1f} s after the cancel (the cancelled code ran 6 s)")
    assert started_s >= cancelled_s + 3, "it waited for the thread, not run beside the cancelled code"
    assert [w["workerId"] for w in rp.workers("cancels", live_only=False)] == [first["id"]]
    assert rp.job(long_job)["status"] == "CANCELLED", "its late result is ignored"


def test_an_async_handler_blocking_its_loop_past_the_heartbeat_timeout_keeps_its_lease(rp: Ripple) -> None:
    """An async handler that never awaits (a RunPod worker file calling its model synchronously) blocks the
    replica's event loop for 10 s, past the heartbeat timeout (4 s here): a thread heartbeats for the loop,
    as the worker SDK's does, so the job keeps its lease and completes once, and the replica serves on."""
    rp.create_endpoint("blocking", "blocks_loop", gpus=1, minReplicas=1, maxRetries=1)
    (first,) = rp.wait_replicas("blocking", 1, 60)
    (job,) = rp.submit("blocking", [{"block_s": 10}])
    (final,) = rp.wait_final([job], 40)
    assert final["status"] == "COMPLETED" and final["attempts"] == 1, final
    assert final["workerId"] == first["id"] and final["output"]["blocked_s"] == 10
    (again,) = rp.wait_final(rp.submit("blocking", [{"block_s": 0}]), 20)
    assert again["status"] == "COMPLETED" and again["workerId"] == first["id"], again
    assert [w["workerId"] for w in rp.workers("blocking", live_only=False)] == [first["id"]]


def test_a_replica_blocked_in_a_stopped_job_is_replaced_and_says_why(rp: Ripple) -> None:
    """Blocked past the job's execution timeout: the job TIMED_OUT, and nothing can stop it on a blocked
    loop, so the pool replaces the replica (as one whose threads all hang), saying what to change."""
    rp.create_endpoint("blocked", "blocks_loop", gpus=1, minReplicas=1, maxRetries=0, executionTimeout=3000)
    (first,) = rp.wait_replicas("blocked", 1, 60)
    (job,) = rp.submit("blocked", [{"block_s": 3600}])
    (final,) = rp.wait_final([job], 30)
    assert final["status"] == "TIMED_OUT", final

    def replaced() -> bool:
        ws = rp.workers("blocked", live_only=False)
        old = [w for w in ws if w["workerId"] == first["id"]]
        new = [w for w in ws if w["workerId"] != first["id"] and w["state"] == "idle"]
        gone = bool(old) and old[0]["state"] == "stopped" and "event loop blocked" in (old[0]["reason"] or "")
        return gone and bool(new)

    wait_for(replaced, 40, "the blocked replica stopped and a new one idle")
    (old,) = [w for w in rp.workers("blocked", live_only=False) if w["workerId"] == first["id"]]
    assert "asyncio.to_thread" in (old.get("error") or ""), old


def test_a_closing_pool_starts_no_replica_in_a_tick_already_under_way(rp: Ripple) -> None:
    """``ripple down`` closes every pool. A reconcile tick under way when the close began must not replace
    the replicas the close drains (it did: the new one was never drained, and the close waited out its
    whole drain timeout)."""
    rp.create_endpoint("closing", "work_async", gpus=0, minReplicas=1)
    rp.wait_replicas("closing", 1, 60)
    pool = rp.pool("closing")
    tick = pool.tick.remote()  # awaits the queue first: the close below runs meanwhile
    closed = pool.close.remote(20.0)
    assert rp.call(tick, 30)["started"] == 0
    assert rp.call(closed, 40) == 0  # every replica drained and gone before the deadline
    ids = [r["workerId"] for r in rp.call(pool.workers.remote())]
    assert ids == [], ids


def test_drained_worker_takes_nothing_new_and_finishes_what_it_holds(rp: Ripple, tmp_path: Path) -> None:
    log = tmp_path / "runs.jsonl"
    rp.create_endpoint("drainme", "work_async", gpus=0, minReplicas=2, concurrency=1)
    rp.wait_replicas("drainme", 2, 60)
    ids = rp.submit("drainme", [{"sleep_s": 1.5, "value": k, "log": str(log)} for k in range(8)])
    running = wait_for(
        lambda: len(r := [j for j in rp.jobs(ids) if j["status"] == "IN_PROGRESS"]) == 2 and r,
        30,
        "both replicas busy",
    )
    victim = running[0]["workerId"]
    held = running[0]["id"]
    rp.call(rp.queue.drain_worker.remote(victim))
    drained_at_ms = time.time() * 1000

    done = rp.wait_final(ids, 60)
    assert {j["status"] for j in done} == {"COMPLETED"}
    assert all(j["attempts"] == 1 for j in done)
    by_victim = [j for j in done if j["workerId"] == victim]
    assert [j["id"] for j in by_victim] == [held] or all(j["startedAt"] <= drained_at_ms for j in by_victim)
    events = _log_lines(log)
    assert sorted(e["job"] for e in events if e["event"] == "start") == sorted(ids)
    assert sorted(e["job"] for e in events if e["event"] == "end") == sorted(ids)
    wait_for(
        lambda: (
            [w["state"] for w in rp.workers("drainme", live_only=False) if w["workerId"] == victim]
            == ["stopped"]
        ),
        30,
        "the drained replica stopped",
    )


def test_failing_handler_quarantines_the_replica_with_backoff_and_it_recovers(rp: Ripple) -> None:
    rp.create_endpoint("flaky", "work_async", gpus=0, minReplicas=1, concurrency=1, maxRetries=0)
    (w,) = rp.wait_replicas("flaky", 1, 60)
    rp.wait_final(rp.submit("flaky", [{"value": "ok"}]), 30)  # healthy once: established backoff
    # One handler error fails its job only: the replica stays healthy and serves the next job.
    (bad,) = rp.wait_final(rp.submit("flaky", [{"fail": "bad input"}]), 30)
    assert bad["status"] == "FAILED" and "bad input" in bad["error"] and "Traceback" in bad["error"]
    time.sleep(1.5)  # the pool's view is at most a tick old; a quarantine would show (or be on probation)
    assert [r["health"] for r in rp.pool_replicas("flaky") if r["id"] == w["id"]] == ["healthy"]
    (fine,) = rp.wait_final(rp.submit("flaky", [{"value": "fine"}]), 30)
    assert fine["status"] == "COMPLETED" and fine["workerId"] == w["id"]
    # Every one of the last N jobs failing counts against it: quarantine, then a longer one on probation.
    n = DEFAULT_HEALTH_POLICY.failed_jobs_to_quarantine
    fails = rp.submit("flaky", [{"fail": f"bad {k}"} for k in range(n + 2)])

    def quarantined() -> bool:
        return any(x["health"] == "quarantined" for x in rp.workers("flaky") if x["workerId"] == w["id"])

    wait_for(quarantined, 30, "the replica quarantined", 0.1)
    done = rp.wait_final(fails, 40)
    assert {j["status"] for j in done} == {"FAILED"}
    gaps_s = [(b["startedAt"] - a["finishedAt"]) / 1000 for a, b in itertools.pairwise(done)]
    print(f"quarantine gaps between failing jobs: {[round(g, 2) for g in gaps_s]} s")
    assert gaps_s[n - 1] >= 0.9 and gaps_s[n] >= 1.9  # after the Nth failure: backoff 1 s, then 2 s

    (ok,) = rp.wait_final(rp.submit("flaky", [{"value": "ok again"}]), 30)
    assert ok["status"] == "COMPLETED" and ok["workerId"] == w["id"]
    wait_for(
        lambda: [x["health"] for x in rp.workers("flaky") if x["workerId"] == w["id"]] == ["healthy"],
        15,
        "the replica healthy again",
    )


def test_streams_a_full_store_refuses_fail_in_words_and_the_replica_is_not_charged(rp: Ripple) -> None:
    """A full job store refuses stream chunks (it still runs and finishes jobs: see the store's tests):
    each streaming job stops at its first refused chunk, FAILED with the store's words rather than a Ray
    traceback, and the replica is not quarantined for it however many fail; once the store has room, the
    same replica streams again."""
    rp.create_endpoint("streamfull", "chunks", gpus=0, minReplicas=1, concurrency=1, maxRetries=0)
    (w,) = rp.wait_replicas("streamfull", 1, 60)
    rp.wait_final(rp.submit("streamfull", [{"n": 1, "sleep_s": 0}]), 30)  # healthy once
    n = DEFAULT_HEALTH_POLICY.failed_jobs_to_quarantine + 1
    ids = rp.submit("streamfull", [{"n": 20, "sleep_s": 0.2} for _ in range(n)])
    rp.wait_status(ids[0], "IN_PROGRESS", 30)
    store = redis.Redis.from_url(rp.redis_url)
    store.config_set("maxmemory-policy", "noeviction")
    store.config_set("maxmemory", "1")  # full: every write that adds is refused
    try:
        done = rp.wait_final(ids, 60)
        health = [r["health"] for r in rp.pool_replicas("streamfull") if r["id"] == w["id"]]
    finally:
        store.config_set("maxmemory", "0")
        store.close()
    for job in done:
        assert job["status"] == "FAILED", job
        said = "could not be stored, so the job stopped: the job store (Redis) is out of memory"
        assert said in job["error"], job["error"]
        assert "Traceback" not in job["error"], job["error"]
    assert health == ["healthy"]
    (ok,) = rp.wait_final(rp.submit("streamfull", [{"n": 2, "sleep_s": 0}]), 30)
    assert ok["status"] == "COMPLETED" and ok["workerId"] == w["id"]


def test_a_deleted_endpoint_leaves_no_replica_alive_and_its_gpus_go_to_the_next(rp: Ripple) -> None:
    """Deleting an endpoint stops its replicas' actors within seconds (detached actors live until killed:
    one left alive would hold its GPU for good), and another endpoint gets the GPUs."""
    rp.create_endpoint("leaving", "work_async", gpus=1, minReplicas=2, maxReplicas=2)
    actors = [r["actorId"] for r in rp.wait_replicas("leaving", 2, 60)]
    rp.call(rp.queue.delete_endpoint.remote("leaving"))
    wait_for(lambda: {_actor_state(a) for a in actors} == {"DEAD"}, 5, "the deleted endpoint's replicas dead")
    rp.create_endpoint("arriving", "work_async", gpus=1, minReplicas=2, maxReplicas=2)
    ids = rp.submit("arriving", [{"value": k, "sleep_s": 0.5} for k in range(4)])
    assert {j["status"] for j in rp.wait_final(ids, 30)} == {"COMPLETED"}
    assert len(rp.wait_replicas("arriving", 2, 10)) == 2


def _actor_state(actor_id_hex: str) -> str:
    """The GCS state of an actor (ALIVE, DEAD, ...)."""
    info = ray._private.state.actors(actor_id=actor_id_hex)  # type: ignore[no-untyped-call]
    return str((info or {}).get("State", "UNKNOWN"))
