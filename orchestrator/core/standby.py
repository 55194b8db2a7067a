"""Standby worker processes: which nodes get a Python worker process started ahead of an actor.

Creating a Ray actor in a new worker process costs a Python start and ``import ray`` (0.3-0.5 s on a small
machine) before its constructor runs; a process the raylet started ahead of time (its ``PrestartWorkers``
call, with the same runtime env) takes the actor at once. Ripple asks for one such process:

- on the control node, for the next pool actor (when the autoscaler starts, and after each pool it creates);
- on each node that can host a replica of a new endpoint, for its first replica (when its pool is created);
- on a replica's own node, by the replica once started, for the next replica there.

Every worker process a Ripple node starts, a standby included, imports :data:`PRELOADED_MODULES` before it
takes any work (Ray's ``preload_python_modules`` setting, ``RAY_preload_python_modules`` in the node's
environment: ``ripple up`` sets it, the KubeRay manifests too), so an actor created in a standby does not
import its class's module (and the queue's, which a replica resolves as it starts) on its way to serving:
0.25-0.5 s of a replica's start on a small machine.

How many stay idle: a replica start takes one standby (when there is one) and leaves one, so a node keeps
about as many as the largest burst of replica starts it saw, plus one per endpoint created; the raylet
stops idle processes beyond its soft limit (its CPU count) once their keep-alive has passed. A standby
process holds no Ray resource (no GPU, no CPU).

Pure: the nodes are passed in as :class:`NodeFacts`; :mod:`actors.warm_workers` makes the calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

PRELOADED_MODULES = ("actors.replica", "actors.job_queue")
"""What every worker process of a Ripple node imports as it starts, before any work: a replica's actor class
and the queue's, which the replica's handle to the queue needs (``ray.get_actor`` imports its class)."""

STANDBY_KEEP_ALIVE_S = 600
"""How long the raylet keeps a standby process it started for us, while unused (then, beyond the node's
soft limit of idle workers, it may stop it)."""


@dataclass(frozen=True)
class NodeFacts:
    """One Ray node as the standby plan needs it: its raylet's address and port, whether it is alive, its
    total GPUs."""

    node_id: str
    address: str
    port: int
    alive: bool
    gpus: float


def node_facts(nodes: Iterable[dict[str, object]]) -> list[NodeFacts]:
    """:class:`NodeFacts` from the rows of ``ray.nodes()`` (rows without a raylet address are skipped)."""
    out: list[NodeFacts] = []
    for n in nodes:
        address, port = n.get("NodeManagerAddress"), n.get("NodeManagerPort")
        if not address or not isinstance(port, int) or port <= 0:
            continue
        resources = n.get("Resources")
        gpus = resources.get("GPU", 0.0) if isinstance(resources, dict) else 0.0
        out.append(
            NodeFacts(
                node_id=str(n.get("NodeID", "")),
                address=str(address),
                port=port,
                alive=bool(n.get("Alive")),
                gpus=float(gpus) if isinstance(gpus, int | float) else 0.0,
            )
        )
    return out


def replica_standby_nodes(
    nodes: Iterable[NodeFacts], gpus_per_replica: float, has_runtime_env: bool
) -> list[NodeFacts]:
    """The nodes where a new endpoint's first replica may land, to start one standby process each: every
    alive node with GPUs when a replica needs some (every alive node otherwise). None when the endpoint
    has its own runtime env: a process started with the control actors' env would not fit its replicas."""
    if has_runtime_env:
        return []
    return [n for n in nodes if n.alive and (gpus_per_replica <= 0 or n.gpus > 0)]


def node_by_id(nodes: Iterable[NodeFacts], node_id: str) -> NodeFacts | None:
    """The alive node with this id, or None."""
    return next((n for n in nodes if n.alive and n.node_id == node_id), None)
