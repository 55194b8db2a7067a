"""Pure glue between what the autoscaler actor gathers and the policy: building the :class:`Snapshot`
from endpoint specs, queue stats and pool summaries, and turning decisions into per-pool actions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.core.autoscale.model import (
    AutoscaleConfig,
    Decision,
    Drain,
    EndpointView,
    Override,
    Prewarm,
    ReplicaState,
    ReplicaView,
    ScaleUp,
    Snapshot,
)
from orchestrator.core.gpu_types import TypeCapacity
from orchestrator.core.models import EndpointSpec
from orchestrator.core.workers import (
    WorkerState,
    held_by_stopped_code,
    is_active,
    is_unhealthy,
    parse_health,
    parse_state,
)

_POLICY_STATES: dict[WorkerState, ReplicaState] = {
    WorkerState.STARTING: "starting",
    WorkerState.IDLE: "idle",
    WorkerState.BUSY: "busy",
    WorkerState.DRAINING: "draining",
    WorkerState.STOPPED: "draining",
}
"""The policy's name of each lifecycle state: a STOPPED replica the pool still lists is leaving (its GPUs
are not released yet), like a DRAINING one."""


def replica_state(r: Mapping[str, Any]) -> ReplicaState:
    """The policy's state of a pool's replica summary: a replica that is leaving (``not is_active``) is
    ``draining`` whatever its health; one that ``is_unhealthy`` is ``unhealthy``; else its lifecycle
    state. A missing state is ``starting``; an unknown one ``idle``."""
    state = parse_state(r.get("state", WorkerState.STARTING.value)) or WorkerState.IDLE
    health = parse_health(r.get("health"))
    if is_active(state) and health is not None and is_unhealthy(state, health):
        return "unhealthy"
    return _POLICY_STATES[state]


def replica_view(r: Mapping[str, Any]) -> ReplicaView:
    """A pool's replica summary as the policy sees it."""
    return ReplicaView(
        id=str(r["id"]),
        state=replica_state(r),
        jobs_held=int(r.get("jobsHeld") or 0),
        idle_since_s=r.get("idleSince"),
        gpu_type=r.get("gpuType"),
    )


def build_snapshot(
    now_s: float,
    specs: Mapping[str, EndpointSpec],
    stats: Mapping[str, Mapping[str, Any]],
    pools: Mapping[str, Mapping[str, Any]],
    *,
    gpus_total: float,
    gpus_available: float,
    max_gpus: float | None,
    enabled: bool,
    config: AutoscaleConfig,
    overrides: Mapping[str, Override] | None = None,
    max_cpus: float | None = None,
    max_memory_mb: float | None = None,
    gpu_types: Mapping[str, TypeCapacity] | None = None,
    gpus_growth: float = 0.0,
) -> Snapshot:
    """The policy's input. Only endpoints with a handler (Ray replicas) are sized; GPUs held by anything
    that is not a placed Ripple replica count as used elsewhere, cluster-wide and per GPU type.
    ``max_cpus``/``max_memory_mb`` cap the CPUs and memory of Ripple's replicas as a whole (None: no cap).

    ``gpu_types``: the typed GPUs of alive nodes (:func:`orchestrator.core.gpu_types.inventory`);
    ``gpus_growth``: GPUs the cluster may still add (already part of ``gpus_total``).
    """
    views = []
    placed_gpus = 0.0
    placed_by_type: dict[str, float] = {}
    for name, spec in sorted(specs.items()):
        if spec.handler is None:
            continue
        pool = pools.get(name, {})
        # A replica the pool still lists holds its GPUs, even once it reports "stopped": the pool drops it
        # only after Ray has released them. Leaving it out would count its GPUs as used elsewhere for a
        # moment, and a blocked endpoint would preempt a second replica for the same want.
        replicas = tuple(replica_view(r) for r in pool.get("replicas", ()))
        for r in pool.get("replicas", ()):
            if not r.get("pendingPlacement"):
                placed_gpus += spec.gpus
                if r.get("gpuType"):
                    t = str(r["gpuType"])
                    placed_by_type[t] = placed_by_type.get(t, 0.0) + spec.gpus
        s = stats.get(name, {})
        colds = [r["coldStartS"] for r in pool.get("replicas", ()) if r.get("coldStartS")]
        views.append(
            EndpointView(
                name=name,
                priority=spec.priority,
                min_replicas=spec.min_replicas,
                max_replicas=spec.max_replicas,
                scale_up_threshold=spec.scale_up_threshold,
                scale_down_idle_s=spec.scale_down_idle_time,
                scale_up_cooldown_s=spec.scale_up_cooldown,
                scale_down_cooldown_s=spec.scale_down_cooldown,
                gpus_per_replica=spec.gpus,
                cpus_per_replica=spec.cpus,
                memory_mb_per_replica=float(spec.memory_mb or 0),
                concurrency=spec.concurrency,
                keep_alive=spec.keep_alive,
                queued=int(s.get("queued", 0)),
                # A stopped job's code still running holds its replica's slot as a running job would.
                running=int(s.get("running", 0))
                + sum(held_by_stopped_code(r) for r in pool.get("replicas", ())),
                oldest_queued_age_s=s.get("oldestQueuedAgeS"),
                replicas=replicas,
                override=(overrides or {}).get(name),
                last_arrival_s=s.get("lastArrivalS"),
                cold_start_s=max(colds) if colds else 30.0,
                gpu_types=tuple(spec.gpu_types) if spec.gpu_types else None,
            )
        )
    elsewhere = max(0.0, gpus_total - gpus_available - placed_gpus)
    types = gpu_types or {}
    elsewhere_by_type = {
        t: max(0.0, c.total - c.free - placed_by_type.get(t, 0.0)) for t, c in sorted(types.items())
    }
    return Snapshot(
        now_s=now_s,
        endpoints=tuple(views),
        gpus_total=gpus_total,
        gpus_used_elsewhere=elsewhere,
        max_gpus=max_gpus,
        cpus_total=max_cpus,
        memory_mb_total=max_memory_mb,
        enabled=enabled,
        config=config,
        gpus_by_type={t: c.total for t, c in sorted(types.items())},
        gpus_used_elsewhere_by_type=elsewhere_by_type,
        gpus_growth=max(0.0, gpus_growth),
    )


@dataclass(frozen=True)
class PoolAction:
    """What to tell one pool: drain these replicas, then hold ``target`` replicas."""

    endpoint: str
    target: int
    drain: tuple[str, ...]


def pool_actions(snapshot: Snapshot, decisions: Sequence[Decision]) -> list[PoolAction]:
    """Per-pool targets: the replicas that count as capacity now, plus scale-ups and pre-warms, minus
    drains. Endpoints the decisions do not touch keep their current count (so a restart causes no churn)."""
    current = {v.name: sum(1 for r in v.replicas if r.state != "draining") for v in snapshot.endpoints}
    add: dict[str, int] = {}
    drains: dict[str, list[str]] = {}
    for d in decisions:
        if isinstance(d, (ScaleUp, Prewarm)):
            add[d.endpoint] = add.get(d.endpoint, 0) + d.count
        elif isinstance(d, Drain):
            drains.setdefault(d.endpoint, []).extend(d.replica_ids)
    out = []
    for name in current:
        drained = tuple(dict.fromkeys(drains.get(name, ())))
        target = max(0, current[name] + add.get(name, 0) - len(drained))
        out.append(PoolAction(name, target, drained))
    return out
