"""The Ray cluster as ``ripple doctor`` and ``GET /api/v1/cluster`` report it: nodes, GPUs per node and
type, draining nodes and pending resource demand. Pure shaping of what Ray returns; the route gathers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.core.gpu_types import node_gpu_type, node_types


def shape_nodes(nodes: Sequence[Mapping[str, Any]], draining: Mapping[str, int]) -> list[dict[str, Any]]:
    """One row per node (``ray.nodes()``), alive or not, with GPUs, their type and whether it drains.

    ``draining`` maps node id (hex) to its drain deadline in ms (0: none).
    """
    out = []
    for n in nodes:
        res = n.get("Resources") or {}
        node_id = str(n.get("NodeID", ""))
        out.append(
            {
                "nodeId": node_id,
                "address": n.get("NodeManagerAddress"),
                "alive": bool(n.get("Alive")),
                "head": "node:__internal_head__" in res,
                "gpus": float(res.get("GPU", 0.0)),
                "gpuType": node_gpu_type(res),
                "gpusByType": node_types(res),
                "cpus": float(res.get("CPU", 0.0)),
                "memoryMb": int(float(res.get("memory", 0.0)) / 2**20),
                "draining": node_id in draining,
                "drainDeadlineMs": draining.get(node_id) or None,
            }
        )
    return out


def shape_specs(nodes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``GET /api/v1/specs``: one row per alive node (``ray.nodes()``) with its GPUs, their type, CPUs and
    memory. ``gpuType`` is the node's type (the first by name when it declares several, as typed logical
    GPUs on one machine do); ``gpusByType`` gives every type's count."""
    out = []
    for n in nodes:
        if not n.get("Alive"):
            continue
        res = n.get("Resources") or {}
        out.append(
            {
                "nodeId": n.get("NodeID"),
                "gpuType": node_gpu_type(res),
                "gpusByType": node_types(res),
                "gpus": res.get("GPU", 0),
                "cpus": res.get("CPU", 0),
                "memoryMb": int(res.get("memory", 0) / 2**20),
            }
        )
    return out


def shape_demand(status: Any) -> list[dict[str, Any]]:
    """Pending resource demand from Ray's cluster status (``ray.autoscaler.v2.sdk.get_cluster_status``):
    ``[{"resources": {...}, "count": n, "kind": "task_actor" | "placement_group"}]``."""
    demands = getattr(status, "resource_demands", None)
    if demands is None:
        return []
    out: list[dict[str, Any]] = []
    for kind, items in (
        ("task_actor", getattr(demands, "ray_task_actor_demand", None) or []),
        ("placement_group", getattr(demands, "placement_group_demand", None) or []),
    ):
        for item in items:
            for b in getattr(item, "bundles_by_count", None) or []:
                bundle = getattr(b, "bundle", None) or {}
                out.append({"kind": kind, "resources": dict(bundle), "count": int(getattr(b, "count", 1))})
    return out


def summarize(nodes: list[dict[str, Any]], demand: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The route's reply: nodes, totals over alive nodes, draining node ids and the pending demand."""
    alive = [n for n in nodes if n["alive"]]
    return {
        "nodes": nodes,
        "aliveNodes": len(alive),
        "gpusTotal": sum(n["gpus"] for n in alive),
        "maxGpusPerNode": max((n["gpus"] for n in alive), default=0.0),
        "gpuTypes": sorted({t for n in alive for t in n["gpusByType"]}),
        "draining": [n["nodeId"] for n in alive if n["draining"]],
        "pendingDemand": demand,
    }
