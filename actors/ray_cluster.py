"""Thin adapters over the Ray internals the pools need: draining nodes, actor placement, GPUs.

Kept in one place because they are private Ray APIs (read from Ray 2.60's own Serve controller, which
polls draining nodes the same way).
"""

from __future__ import annotations

import logging
from typing import Any

import ray

from orchestrator.core.cluster import shape_demand
from orchestrator.core.gpu_types import TypeCapacity, inventory

log = logging.getLogger("ripple.cluster")
_gcs: Any = None


def _client() -> Any:
    global _gcs
    if _gcs is None:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]

        _gcs = GcsClient(address=ray.get_runtime_context().gcs_address)
    return _gcs


def draining_nodes() -> dict[str, int]:
    """Node id (hex) to drain deadline (ms since the epoch, 0 when none) of every draining node."""
    try:
        return {str(k): int(v) for k, v in _client().get_draining_nodes(timeout=5).items()}
    except Exception:
        log.warning("could not read draining nodes from the GCS", exc_info=True)
        return {}


def actor_state(actor_id_hex: str) -> str:
    """The GCS state of an actor: DEPENDENCIES_UNREADY, PENDING_CREATION, ALIVE, RESTARTING or DEAD."""
    try:
        info = ray._private.state.actors(actor_id=actor_id_hex)
    except Exception:
        return "UNKNOWN"
    return str(info.get("State", "UNKNOWN")) if info else "UNKNOWN"


def actor_placement(actor_id_hex: str) -> tuple[str, bool]:
    """The GCS state of an actor and whether it has a process yet (placed on a node: a PENDING_CREATION
    actor with a process is running its constructor, one without waits for resources)."""
    try:
        info = ray._private.state.actors(actor_id=actor_id_hex)
    except Exception:
        return "UNKNOWN", False
    if not info:
        return "UNKNOWN", False
    return str(info.get("State", "UNKNOWN")), bool(info.get("Pid"))


def resource_demands() -> list[dict[str, float]] | None:
    """The cluster's pending resource demand, one bundle per kind of request (tasks, actors, placement
    groups): what waits for a node to grant it, as Ray's autoscaler sees it. None when unreadable."""
    try:
        from ray.autoscaler.v2.sdk import get_cluster_status

        status = get_cluster_status(ray.get_runtime_context().gcs_address, timeout=5)
    except Exception:
        log.debug("could not read the cluster's pending resource demand", exc_info=True)
        return None
    return [dict(d["resources"]) for d in shape_demand(status)]


def gpus() -> tuple[float, float]:
    """(total, available) GPUs of the cluster."""
    return float(ray.cluster_resources().get("GPU", 0.0)), float(ray.available_resources().get("GPU", 0.0))


def node_available(node_id_hex: str, resource: str) -> float:
    """How much of ``resource`` is free on one node right now (0.0 when unknown)."""
    try:
        per_node = ray._private.state.available_resources_per_node()
    except Exception:
        return 0.0
    return float(per_node.get(node_id_hex, {}).get(resource, 0.0))


def gpu_inventory() -> dict[str, TypeCapacity]:
    """GPUs of each type over the alive nodes: total and free (``{}`` when unknown or untyped)."""
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        per_node = ray._private.state.available_resources_per_node()
    except Exception:
        log.warning("could not read the nodes' GPU types", exc_info=True)
        return {}
    return inventory((n.get("Resources") or {}, per_node.get(n["NodeID"], {})) for n in nodes)


def node_resources(node_id_hex: str) -> dict[str, float]:
    """The total resources of one node (``{}`` when unknown)."""
    try:
        for n in ray.nodes():
            if n.get("NodeID") == node_id_hex:
                return {str(k): float(v) for k, v in (n.get("Resources") or {}).items()}
    except Exception:
        log.debug("could not read node %s", node_id_hex, exc_info=True)
    return {}
