"""A Ray node drained through the GCS (a preemption, as KubeRay or a spot loss does it) drains its replicas
through the same path as a scale-down: they take nothing new, finish what they hold, and a replacement
starts on another node. No job is interrupted.

A multi-node local cluster (``ray.cluster_utils.Cluster``): a head with the ``ripple-control`` resource and
no GPU (the control actors live there), and two worker nodes with one logical GPU each.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from orchestrator.names import CONTROL_RESOURCE
from tests.integration.ray_fixtures import (
    Ripple,
    cluster_of,
    module_redis,
    ripple,
    rp,
    wait_for,
)

__all__ = ["module_redis", "ripple", "rp"]

pytestmark = pytest.mark.timeout(150)

AUTOSCALER = {"enabled": False, "interval_s": 0.5}
SETTINGS = {"drain_timeout_s": 60.0}
JOB_S = 3.0


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Cluster]:
    head = {"num_cpus": 2, "num_gpus": 0, "resources": {CONTROL_RESOURCE: 1000}}
    with cluster_of(head, [{"num_cpus": 1, "num_gpus": 1}] * 2) as cluster:
        yield cluster


def _drain_node(gcs_address: str, node_id_hex: str, deadline_s: float) -> None:
    from ray.core.generated.autoscaler_pb2 import DrainNodeReason  # type: ignore[attr-defined]

    client = ray._raylet.GcsClient(address=gcs_address)  # type: ignore[attr-defined]
    accepted, why = client.drain_node(
        node_id_hex,
        DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),
        "integration test: node preempted",
        int((time.time() + deadline_s) * 1000),
    )
    assert accepted, why


def _runs(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_drained_node_hands_its_replica_over_without_interrupting_a_job(
    rp: Ripple, ray_cluster: Cluster, tmp_path: Path
) -> None:
    gpu_nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")}  # type: ignore[no-untyped-call]
    assert len(gpu_nodes) == 2
    log = tmp_path / "runs.jsonl"
    rp.create_endpoint("preempt", "work_async", gpus=1, minReplicas=1, concurrency=1, maxRetries=3)
    (first,) = rp.wait_replicas("preempt", 1, 60)

    def placed_node() -> str | None:
        # The worker record learns its node from the replica's first heartbeat, which may trail readiness.
        node = next((w.get("nodeId") for w in rp.workers("preempt") if w["workerId"] == first["id"]), None)
        return node if node in gpu_nodes else None

    node_a = wait_for(placed_node, 30, "the replica's node in its worker record")
    (node_b,) = gpu_nodes - {node_a}

    ids = rp.submit("preempt", [{"sleep_s": JOB_S, "value": k, "log": str(log)} for k in range(4)])
    held = rp.wait_status(ids[0], "IN_PROGRESS", 30)
    assert held["workerId"] == first["id"]
    _drain_node(ray_cluster.gcs_address, node_a, 60)
    drained_at_ms = time.time() * 1000

    wait_for(
        lambda: [w["state"] for w in rp.workers("preempt") if w["workerId"] == first["id"]] == ["draining"],
        20,
        "the replica on the drained node draining",
    )
    assert rp.job(ids[0])["status"] == "IN_PROGRESS"  # it finishes its job first

    done = rp.wait_final(ids, 90)
    assert [j["status"] for j in done] == ["COMPLETED"] * 4, done
    assert all(j["attempts"] == 1 for j in done), [j["attempts"] for j in done]
    on_a = [j for j in done if j["workerId"] == first["id"]]
    assert all(j["startedAt"] <= drained_at_ms for j in on_a)  # nothing new after the drain
    others = {j["workerId"] for j in done} - {first["id"]}
    assert others
    replacements = [w for w in rp.workers("preempt", live_only=False) if w["workerId"] in others]
    assert {w["nodeId"] for w in replacements} == {node_b}
    events = _runs(log)
    assert sorted(e["job"] for e in events if e["event"] == "start") == sorted(ids)  # each ran once
    assert sorted(e["job"] for e in events if e["event"] == "end") == sorted(ids)
    wait_for(
        lambda: (
            [w["state"] for w in rp.workers("preempt", live_only=False) if w["workerId"] == first["id"]]
            == ["stopped"]
        ),
        30,
        "the drained replica stopped",
    )
