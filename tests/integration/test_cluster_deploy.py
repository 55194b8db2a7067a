"""Ripple deployed onto a real multi-node Ray cluster the documented way, as a Ray job.

The cluster is ``ray start --block`` processes on this machine: a head with the ``ripple-control`` resource
and no GPUs, and two worker nodes with one (logical) GPU each that drain for up to 30 s on SIGTERM, as
KubeRay's pods do. ``python -m orchestrator deploy`` and ``python -m orchestrator.batch`` are submitted
through the job API with the repository as working dir. The tests share the cluster and run in order: the
last one takes a worker node away.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cluster_fixtures import LocalCluster, NodeProc, RippleOnCluster, wait_for

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

DRAIN_TIMEOUT_S = 30.0
FAST_SETTINGS = {
    "RIPPLE_AUTOSCALER__INTERVAL_S": "1",
    "RIPPLE_HEARTBEAT_TIMEOUT_S": "15",
    "RIPPLE_TAKE_WAIT_S": "2",
    "RIPPLE_DRAIN_TIMEOUT_S": "120",
}


class Deployed:
    """The shared cluster, Ripple on it, and the worker nodes by Ray node id."""

    def __init__(self, cluster: LocalCluster, ripple: RippleOnCluster, workers: dict[str, NodeProc]) -> None:
        self.cluster = cluster
        self.ripple = ripple
        self.workers = workers

    def control_actors(self) -> list[dict[str, Any]]:
        """Alive Ripple control actors (queue, autoscaler), from Ray's state API."""
        from ray.util.state import list_actors

        rows = list_actors(address=self.cluster.dashboard_url, filters=[("state", "=", "ALIVE")], limit=1000)
        return [
            {"name": a.name, "actor_id": a.actor_id, "node_id": a.node_id}
            for a in rows
            if a.name in ("ripple-queue", "ripple-autoscaler")
        ]

    def live_workers(self, endpoint: str) -> list[dict[str, Any]]:
        """The endpoint's workers not yet stopped (from the list of all workers: the endpoint may be gone)."""
        rows = self.ripple.get("/api/v1/workers")["workers"]
        return [w for w in rows if w.get("endpoint") == endpoint and w["state"] != "stopped"]


@pytest.fixture(scope="module")
def deployed() -> Iterator[Deployed]:
    cluster = LocalCluster()
    ripple = RippleOnCluster(cluster, settings_env=FAST_SETTINGS)
    try:
        cluster.start_head()
        workers = dict(
            (node_id, node)
            for node, node_id in (cluster.add_worker(drain_timeout_s=DRAIN_TIMEOUT_S) for _ in range(2))
        )
        ripple.deploy()
        yield Deployed(cluster, ripple, workers)
    finally:
        ripple.stop_store()
        cluster.teardown()


def _wait_final(ripple: RippleOnCluster, ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
    def done() -> list[dict[str, Any]] | None:
        jobs = [ripple.job(j) for j in ids]
        return jobs if all(j["status"] not in ("IN_QUEUE", "IN_PROGRESS") for j in jobs) else None

    return wait_for(done, timeout_s, f"{len(ids)} jobs to finish", 1.0)


def test_deploy_again_changes_nothing_but_the_app(deployed: Deployed) -> None:
    ripple = deployed.ripple
    before = deployed.control_actors()
    assert sorted(a["name"] for a in before) == ["ripple-autoscaler", "ripple-queue"], before
    head_id = next(iter(deployed.cluster.alive_nodes().keys() - deployed.workers.keys()))
    assert {a["node_id"] for a in before} == {head_id}, "control actors must sit on the head (ripple-control)"
    with ripple.client() as c:
        r = c.post("/api/v1/endpoints", json={"name": "outside", "handler": None})
        assert r.status_code == 201, r.text
        r = c.post("/v2/outside/run-batch", json={"jobs": [{"input": {"k": k}} for k in range(3)]})
        assert r.status_code == 200, r.text
    queued = r.json()["ids"]

    logs = ripple.deploy()

    assert "Ripple deployed" in logs, logs[-2000:]
    after = deployed.control_actors()
    assert sorted((a["name"], a["actor_id"]) for a in after) == sorted(
        (a["name"], a["actor_id"]) for a in before
    ), "a second deploy must reuse the control actors"
    for job_id, k in zip(queued, range(3), strict=True):
        job = ripple.job(job_id)
        assert (job["status"], job["input"]) == ("IN_QUEUE", {"k": k}), job
    with ripple.client() as c:
        assert c.delete("/api/v1/endpoints/outside").status_code == 200


def test_batch_job_runs_200_jobs_in_order_and_resumes(deployed: Deployed) -> None:
    ripple, cluster = deployed.ripple, deployed.cluster
    ripple.create_endpoint("bulk", minReplicas=0, maxReplicas=2, concurrency=8, scaleUpCooldown=0)
    work = Path(tempfile.mkdtemp(prefix="rb", dir="/tmp"))
    inputs = [{"n": i, "tag": f"job-{i}"} for i in range(200)]
    (work / "jobs.jsonl").write_text("".join(json.dumps({"input": x}) + "\n" for x in inputs))
    entry = (
        f"python -m orchestrator.batch --endpoint bulk --input {work / 'jobs.jsonl'} "
        f"--output {work / 'results.jsonl'}"
    )

    status, logs = cluster.run_job(entry, timeout_s=300)

    assert status == "SUCCEEDED", logs[-3000:]
    assert "200 jobs in" in logs and "submitting 200" in logs, logs[-3000:]
    rows = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(200))
    assert {r["status"] for r in rows} == {"COMPLETED"}
    assert [r["output"] for r in rows] == [{"echo": x} for x in inputs]

    status, logs = cluster.run_job(entry, timeout_s=300)

    assert status == "SUCCEEDED", logs[-3000:]
    assert "200 already submitted; submitting 0" in logs, logs[-3000:]
    again = [json.loads(line) for line in (work / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in again] == [r["id"] for r in rows], "a resumed run must not submit again"
    with ripple.client() as c:
        assert c.delete("/api/v1/endpoints/bulk").status_code == 200
    wait_for(lambda: not deployed.live_workers("bulk"), 120, "the bulk replicas to stop", 1.0)


def test_logs_of_a_replica_on_a_worker_node_read_through_the_ingress_on_the_head(deployed: Deployed) -> None:
    ripple = deployed.ripple
    ripple.create_endpoint("talky", handler="tests.integration.handlers_for_tests:work_sync", minReplicas=1)
    say = f"talky says {uuid.uuid4().hex}"
    with ripple.client(timeout_s=200) as c:
        r = c.post("/v2/talky/runsync?wait=180000", json={"input": {"say": say}})
    assert r.status_code == 200 and r.json()["status"] == "COMPLETED", r.text
    worker_id = r.json()["workerId"]
    (worker,) = [w for w in ripple.workers("talky") if w["workerId"] == worker_id]
    assert worker["nodeId"] in deployed.workers, "the replica runs on a worker node, not the head"

    logs = ripple.get(f"/api/v1/workers/{worker_id}/logs?tail=20")

    assert isinstance(logs, dict), logs
    assert logs["lines"][-1] == say and logs["nodeId"] == worker["nodeId"], logs
    with ripple.client() as c:
        assert c.delete("/api/v1/endpoints/talky").status_code == 200
    wait_for(lambda: not deployed.live_workers("talky"), 120, "the talky replica to stop", 1.0)


def test_sigterm_to_a_node_drains_its_replica_and_no_job_is_interrupted(deployed: Deployed) -> None:
    ripple, cluster = deployed.ripple, deployed.cluster
    ripple.create_endpoint("drainy", minReplicas=1, maxReplicas=1, concurrency=2, scaleDownIdleTime=600)
    first = wait_for(
        lambda: [w for w in deployed.live_workers("drainy") if w["state"] == "idle"],
        180,
        "the drainy replica to start",
        1.0,
    )[0]
    doomed_node = first["nodeId"]
    assert doomed_node in deployed.workers, (doomed_node, list(deployed.workers))
    other_node = next(n for n in deployed.workers if n != doomed_node)
    with ripple.client() as c:
        r = c.post(
            "/v2/drainy/run-batch", json={"jobs": [{"input": {"i": i, "sleep_s": 3}} for i in range(8)]}
        )
    assert r.status_code == 200, r.text
    ids: list[str] = r.json()["ids"]
    wait_for(
        lambda: sum(ripple.job(j)["status"] == "IN_PROGRESS" for j in ids) == 2, 60, "two jobs to run", 0.3
    )

    node = deployed.workers[doomed_node]
    sent_s = time.monotonic()
    node.sigterm()  # Kubernetes deleting the pod: Ray 2.60 turns it into a preemption drain
    wait_for(lambda: doomed_node in cluster.draining_nodes(), 20, "the node to be DRAINING", 0.2)
    jobs = _wait_final(ripple, ids, 240)
    node.proc.wait(timeout=DRAIN_TIMEOUT_S + 30)
    exited_after_s = time.monotonic() - sent_s

    for job in jobs:
        assert job["status"] == "COMPLETED", job
        assert job["attempts"] == 1, job
        assert len([h for h in job["history"] if h["to"] == "IN_PROGRESS"]) == 1, job["history"]
    on_old = [j for j in jobs if j["workerId"] == first["workerId"]]
    on_new = [j for j in jobs if j["workerId"] != first["workerId"]]
    assert len(on_old) >= 2, "the jobs the drained replica held finish there"
    assert on_new, "the rest run on the replacement"
    replacement = [w for w in deployed.live_workers("drainy") if w["workerId"] != first["workerId"]]
    assert [w["nodeId"] for w in replacement] == [other_node], replacement
    # The raylet left once the drained replica had stopped, before Ray's kill at the drain timeout.
    assert exited_after_s < DRAIN_TIMEOUT_S, f"ray start exited {exited_after_s:.1f} s after SIGTERM"
    assert doomed_node not in cluster.alive_nodes()
    print(f"node drained and exited {exited_after_s:.1f} s after SIGTERM; {len(on_old)} jobs finished on it")
