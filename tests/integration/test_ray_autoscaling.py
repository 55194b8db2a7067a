"""Ripple's autoscaler driving Ray's autoscaler on one machine (the fake multi-node provider).

The head has no GPUs; Ray's autoscaler (v2) may add up to two 1-GPU nodes, and Ripple's GPU budget
(``RIPPLE_AUTOSCALER__MAX_GPUS=2``) says so. Jobs arrive for a GPU endpoint at zero replicas: Ripple adds
replicas for the queue, they wait for placement, Ray adds nodes, the replicas start and take the jobs. As the
queue empties, Ripple drains and removes its idle replicas (the busy one keeps its long job), the nodes go
idle, and Ray removes them. Every job completes exactly once, never interrupted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.integration.cluster_fixtures import (
    LocalCluster,
    RippleOnCluster,
    fake_autoscaling_config,
    wait_for,
)

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

FAST_SETTINGS = {
    "RIPPLE_AUTOSCALER__INTERVAL_S": "1",
    # No replica is lost here: a heartbeat timeout well above a loaded machine's stalls (a node starting
    # beside a busy replica), so a job never runs twice for a late heartbeat.
    "RIPPLE_HEARTBEAT_TIMEOUT_S": "40",
    "RIPPLE_TAKE_WAIT_S": "2",
    "RIPPLE_DRAIN_TIMEOUT_S": "120",
    "RIPPLE_AUTOSCALER__MAX_GPUS": "2",  # the cluster may grow to 2 GPUs: plan replicas beyond today's 0
}
IDLE_TIMEOUT_S = 10.0


@dataclass
class Timeline:
    """Samples of the cluster and the endpoint's workers, once a second, from a background thread."""

    cluster: LocalCluster
    ripple: RippleOnCluster
    endpoint: str
    t0: float = field(default_factory=time.monotonic)
    rows: list[dict[str, Any]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        try:
            nodes = self.cluster.alive_nodes()
            workers = [w for w in self.ripple.workers(self.endpoint) if w["state"] != "stopped"]
        except Exception as exc:  # a slow GCS or HTTP answer: skip this sample
            self.rows.append({"t": time.monotonic() - self.t0, "error": repr(exc)})
            return
        self.rows.append(
            {
                "t": round(time.monotonic() - self.t0, 1),
                "gpuNodes": sum(1 for r in nodes.values() if r.get("GPU", 0) > 0),
                "replicas": len(workers),
                "pending": sum(1 for w in workers if w.get("pendingPlacement")),
                "states": sorted(w["state"] for w in workers),
            }
        )

    def run(self) -> None:
        while not self.stop.is_set():
            self.sample()
            self.stop.wait(1.0)

    def first(self, key: str) -> float | None:
        return next((r["t"] for r in self.rows if r.get(key)), None)

    def table(self) -> str:
        return "\n".join(str(r) for r in self.rows)


@pytest.fixture(scope="module")
def autoscaling_ripple() -> Iterator[RippleOnCluster]:
    cluster = LocalCluster()
    ripple = RippleOnCluster(cluster, settings_env=FAST_SETTINGS)
    try:
        config = fake_autoscaling_config(max_gpu_nodes=2, idle_timeout_s=IDLE_TIMEOUT_S)
        cluster.start_head(autoscaling=config)
        ripple.deploy()
        yield ripple
    finally:
        ripple.stop_store()
        cluster.teardown()


def test_queued_jobs_bring_gpu_nodes_from_zero_and_drained_replicas_release_them(
    autoscaling_ripple: RippleOnCluster,
) -> None:
    ripple, cluster = autoscaling_ripple, autoscaling_ripple.cluster
    assert cluster.gpus_total() == 0, cluster.alive_nodes()
    timeline = Timeline(cluster, ripple, "scaler")
    sampler = threading.Thread(target=timeline.run, daemon=True)
    ripple.create_endpoint(
        "scaler",
        minReplicas=0,
        maxReplicas=2,
        concurrency=2,
        scaleDownIdleTime=4,
        scaleUpCooldown=0,
        scaleDownCooldown=0,
    )
    sampler.start()
    try:
        inputs: list[dict[str, Any]] = [{"i": i, "sleep_s": 1} for i in range(6)] + [{"i": 6, "sleep_s": 15}]
        with ripple.client() as c:
            r = c.post("/v2/scaler/run-batch", json={"jobs": [{"input": x} for x in inputs]})
            assert r.status_code == 200, r.text
            ids: list[str] = r.json()["ids"]

        def all_done() -> list[dict[str, Any]] | None:
            jobs = [ripple.job(j) for j in ids]
            final = [j for j in jobs if j["status"] not in ("IN_QUEUE", "IN_PROGRESS")]
            return jobs if len(final) == len(jobs) else None

        jobs = wait_for(all_done, 120, "every job to finish", 2.0)
        gone = lambda: not [w for w in ripple.workers("scaler") if w["state"] != "stopped"]  # noqa: E731
        wait_for(gone, 120, "Ripple to drain and remove its idle replica", 1.0)
        wait_for(lambda: cluster.gpus_total() == 0, 180, "Ray's autoscaler to remove the idle GPU node", 2.0)
    finally:
        timeline.stop.set()
        sampler.join(timeout=10)
        print(timeline.table())
        print(ripple.get("/api/v1/autoscaler/history/scaler?limit=20"))
    for job, x in zip(jobs, inputs, strict=True):
        assert job["status"] == "COMPLETED", job
        assert job["output"] == {"echo": x}, job
        assert job["attempts"] == 1, (job["id"], job.get("workerId"), job["history"])
        assert len([h for h in job["history"] if h["to"] == "IN_PROGRESS"]) == 1, job["history"]
    # The chain: Ripple's replicas came first and waited for GPUs (seen as Ray's pending demand), Ray added
    # nodes for them, and removed them only after Ripple had drained the replicas (the long job finished
    # where it ran). Sampled once a second: Ray may add a node within one sample of the first demand, so the
    # pending demand is seen by then or later (a second replica waiting for the second node), not always
    # before the first node.
    first_replica, first_node = timeline.first("replicas"), timeline.first("gpuNodes")
    assert first_replica is not None and first_node is not None, timeline.table()
    assert timeline.first("pending") is not None, timeline.table()
    assert first_replica <= first_node, timeline.table()
    last_node = max(r["t"] for r in timeline.rows if r.get("gpuNodes"))
    last_replica = max(r["t"] for r in timeline.rows if r.get("replicas"))
    assert last_replica <= last_node, timeline.table()
