"""GPU types on a real multi-node local Ray: each endpoint's replicas land on its ``gpuTypes``, fall back
down the list when the first type is full, never take another type's GPU, and an endpoint whose types no
node offers (on a cluster that cannot grow) is blocked with a reason instead of waiting silently.

The cluster (``ray.cluster_utils.Cluster``), with logical GPUs only:
- the head: the ``ripple-control`` resource and typed logical GPUs ``T4=1,V100=1`` declared as
  ``ripple up --gpus T4=1,V100=1`` declares them (2 GPUs, ``accelerator_type:T4: 1``,
  ``accelerator_type:V100: 1``): replicas ask for units of their type's resource;
- an ``A100`` node with 1 GPU and a ``L4`` node with 2 GPUs marked as Ray marks a real GPU node
  (``accelerator_type:<T>: 1`` whatever the count): replicas ask ``accelerator_type=<T>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import ray
from ray.cluster_utils import Cluster

from orchestrator.core.gpu_types import head_resources
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

pytestmark = pytest.mark.timeout(180)

AUTOSCALER = {"enabled": True, "interval_s": 0.5}
SETTINGS = {"drain_timeout_s": 10.0}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Cluster]:
    num_gpus, typed = head_resources({"T4": 1, "V100": 1})
    head = {"num_cpus": 2, "num_gpus": num_gpus, "resources": {CONTROL_RESOURCE: 1000, **typed}}
    nodes = [
        {"num_cpus": 1, "num_gpus": 1, "resources": {"accelerator_type:A100": 1}},
        {"num_cpus": 1, "num_gpus": 2, "resources": {"accelerator_type:L4": 1}},
    ]
    with cluster_of(head, nodes) as cluster:
        yield cluster


def _node_types() -> dict[str, set[str]]:
    """Node id -> the GPU types it offers."""
    return {
        n["NodeID"]: {k.split(":", 1)[1] for k in n["Resources"] if k.startswith("accelerator_type:")}
        for n in ray.nodes()  # type: ignore[no-untyped-call]
        if n["Alive"]
    }


def _placed(rp: Ripple, endpoint: str, n: int, timeout_s: float = 90.0) -> list[dict[str, Any]]:
    """The endpoint's ``n`` replicas once all are placed and serving (idle or busy)."""
    return rp.wait_replicas(endpoint, n, timeout_s, states=("idle", "busy"))


def _records(rp: Ripple, endpoint: str, worker_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The worker records of ``worker_ids`` once each names its node (a replica's first heartbeat brings
    its node id; the pool's own report of a replica it started may come first)."""

    def named() -> dict[str, dict[str, Any]] | None:
        records = {w["workerId"]: w for w in rp.workers(endpoint)}
        return records if all(records.get(i, {}).get("nodeId") for i in worker_ids) else None

    found: dict[str, dict[str, Any]] = wait_for(named, 30, f"{endpoint}'s worker records to name their nodes")
    return found


def test_each_endpoint_on_its_type_falling_back_down_the_list(rp: Ripple) -> None:
    # Three jobs of 20 s and three replicas wanted: the one A100 first, then the L4s.
    rp.create_endpoint("pref", "work_async", gpus=1, gpuTypes=["A100", "L4"], maxReplicas=3, concurrency=1)
    jobs = rp.submit("pref", [{"sleep_s": 20} for _ in range(3)])
    reps = _placed(rp, "pref", 3)
    assert sorted(r["gpuType"] for r in reps) == ["A100", "L4", "L4"]
    types = _node_types()
    workers = _records(rp, "pref", [r["id"] for r in reps])
    for r in reps:
        w = workers[r["id"]]
        assert w["gpuType"] == r["gpuType"], w  # the worker record shows it, as the replica reports it
        assert types[w["nodeId"]] == {r["gpuType"]}, (w, types)
    ups = [h for h in rp.history("pref") if h["kind"] == "scale_up"]
    assert any("on A100" in h["reason"] for h in ups), ups

    # The typed logical GPUs of one node: V100 goes to the V100 endpoint; a second one waits for it and
    # does not take the free T4 (Ray keeps the types apart: the replica holds 1 unit of its type).
    rp.create_endpoint("v100", "work_async", gpus=1, gpuTypes=["V100"], minReplicas=1, maxReplicas=1)
    (v,) = _placed(rp, "v100", 1)
    assert v["gpuType"] == "V100"
    (vw,) = _records(rp, "v100", [v["id"]]).values()
    assert vw["gpuType"] == "V100" and types[vw["nodeId"]] == {"T4", "V100"}
    rp.create_endpoint("v100b", "work_async", gpus=1, gpuTypes=["V100"], minReplicas=1, maxReplicas=1)
    pending = wait_for(
        lambda: [r for r in rp.pool_replicas("v100b") if r["pendingPlacement"]],
        30,
        "v100b's replica waiting for a V100",
    )
    assert pending[0]["gpuType"] == "V100"
    (waiting,) = rp.workers("v100b")  # the worker record says what it waits for
    assert waiting["gpuType"] == "V100" and "a V100 GPU" in waiting["reason"], waiting
    avail = ray.available_resources()  # type: ignore[no-untyped-call]
    assert avail.get("accelerator_type:T4", 0) == 1 and avail.get("accelerator_type:V100", 0) == 0

    # A T4-or-V100 endpoint falls back to the T4.
    rp.create_endpoint("t4", "work_async", gpus=1, gpuTypes=["V100", "T4"], minReplicas=1, maxReplicas=1)
    (t,) = _placed(rp, "t4", 1)
    assert t["gpuType"] == "T4"
    finals = rp.wait_final(jobs, 90)
    assert {j["status"] for j in finals} == {"COMPLETED"}


def test_types_no_node_offers_are_blocked_with_a_reason(rp: Ripple) -> None:
    rp.create_endpoint("h100", "work_async", gpus=1, gpuTypes=["H100"])
    rp.submit("h100", [{"sleep_s": 0.1}])

    def blocked() -> str | None:
        rows = {r["endpoint"]: r for r in rp.status()["endpoints"]}
        row = rows.get("h100")
        return row["blocked"] if row and row.get("blocked") else None

    reason = wait_for(blocked, 30, "h100 blocked")
    assert "no node offers GPU type H100" in reason and "cannot grow" in reason
    assert not rp.pool_replicas("h100")
    status = rp.status()
    assert status["gpus"]["byType"]["A100"]["total"] == 1
    assert status["gpus"]["byType"]["L4"]["total"] == 2
