"""Losing the Ray head: GPU replicas on worker nodes survive it, and the restarted control actors adopt them.

A multi-node local cluster with GCS fault tolerance (:class:`GcsRedis`: the GCS's tables in an external
redis-server, as the KubeRay manifests configure): a head with the ``ripple-control`` resource and no GPU
(Ripple's control actors run there), and one worker node with a logical GPU. Ripple's own store is an
embedded Redis outside the cluster (it outlives the head, as a separate Redis does on Kubernetes). One
replica runs a long job with more queued behind it when every process of the head node is SIGKILLed; a new
head then starts on the same GCS port and store. The replica keeps its actor and process, the restarted pool
adopts it instead of starting another, the running job completes under its first attempt and the queued
ones after it; each runs exactly once (the handler's side-channel log of runs).

Ray drivers die with their head, so the test drives Ripple through short-lived driver subprocesses
(``head_loss_driver.py``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from orchestrator.ops import embedded_redis
from orchestrator.ops.procs import alive
from tests.integration.cluster_fixtures import REPO, GcsRedis, LocalCluster, base_env

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

# The leases must outlast the head's absence (restart plus control actors' recovery), or the restarted queue
# reclaims the running job and it runs twice: a heartbeat timeout longer than the gap, as docs/head-loss.md
# asks of a real deployment.
SETTINGS = {"heartbeat_timeout_s": 90.0, "take_wait_s": 1.0, "drain_timeout_s": 30.0}
AUTOSCALER = {"enabled": False, "interval_s": 0.5}
SLEEPS_S = [20.0, 1.0, 1.0, 1.0]  # the first runs through the head's loss; the others wait in the queue


def _drive(cluster: LocalCluster, command: str, args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    env = base_env({"PYTHONPATH": str(REPO)})
    proc = subprocess.run(
        [sys.executable, "-m", "tests.integration.head_loss_driver", command, json.dumps(args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            out: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return out
    raise AssertionError(
        f"driver {command} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    )


def _runs(path: Path) -> list[dict[str, Any]]:
    return (
        [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    )


def test_replicas_survive_a_head_restart_and_are_adopted_with_no_job_lost_or_run_twice(
    tmp_path: Path,
) -> None:
    os.environ["RAY_AUTH_MODE"] = "disabled"
    store_dir = tmp_path / "store"
    store = embedded_redis.start(store_dir, detach=False)
    log = tmp_path / "runs.jsonl"
    try:
        with GcsRedis() as gcs_store:
            env = {**gcs_store.env(f"hl{uuid.uuid4().hex[:8]}"), "PYTHONPATH": str(REPO)}
            with LocalCluster(env_extra=env) as cluster:
                head = cluster.start_head(num_cpus=1)
                worker, worker_node = cluster.add_worker(num_gpus=1, num_cpus=1)
                args = {
                    "address": cluster.address,
                    "namespace": f"hl{uuid.uuid4().hex[:8]}",
                    "redis_url": store.url,
                    "data_dir": str(tmp_path / "data"),
                    "settings": SETTINGS,
                    "autoscaler": AUTOSCALER,
                    "log": str(log),
                    "sleeps": SLEEPS_S,
                }
                before = _drive(cluster, "setup", args, 150)
                print("before", json.dumps(before))
                replica_pid = before["replica"]["pid"]
                assert replica_pid and alive(replica_pid)

                cluster.restart_head(head)
                assert worker.running() and worker_node in cluster.alive_nodes()
                after = _drive(cluster, "check", {**args, "jobs": before["jobs"], "timeout_s": 120}, 170)
                print("after", json.dumps({k: v for k, v in after.items() if k != "jobs"}))
    finally:
        embedded_redis.stop(store_dir)

    # The control actors did die with the head: the pool is the same actor in a new process.
    assert after["pool"]["actorId"] == before["pool"]["actorId"]
    assert after["pool"]["pid"] != before["pool"]["pid"]
    # The replica did not: same actor, same process, adopted by the restarted pool, and no other started.
    (replica,) = after["replicas"]
    assert replica["actorId"] == before["replica"]["actorId"]
    assert replica["id"] == before["replica"]["id"]
    assert replica["adopted"] is True
    assert after["replicaPids"][replica["actorId"]] == replica_pid
    assert {w["workerId"] for w in after["workers"]} == {replica["id"]}
    # Every job completed once, under its first attempt, on that replica.
    jobs = after["jobs"]
    assert [j["status"] for j in jobs] == ["COMPLETED"] * len(SLEEPS_S), jobs
    assert [j["attempts"] for j in jobs] == [1] * len(SLEEPS_S), jobs
    assert {j["workerId"] for j in jobs} == {replica["id"]}
    runs = Counter((e["job"], e["event"]) for e in _runs(log))
    for job_id in before["jobs"]:
        assert runs[(job_id, "start")] == 1 and runs[(job_id, "end")] == 1, (job_id, runs)
    assert {e["pid"] for e in _runs(log)} == {replica_pid}
